//! The scale benchmark behind `scripts/bench` (not part of the test suite). On a local control
//! plane of its own it measures, in one run and side by side:
//! - `limit.raw_create_per_s`: the API server's own rate for creating N Secrets from a tight
//!   client at the operator's concurrency (and, for comparison, its rate for creating the N
//!   SecretRefs alone, with no operator running, and for server-side applying a new value to
//!   each Secret, the write a store change costs per target);
//! - `limit.min_writes_per_s` and `limit.fanout_apply_s`: the floors of a cold sync and of a
//!   fan-out, a raw client doing only the writes that cannot be avoided (floors.rs);
//! - for secretref (and, with `--peer eso`, External Secrets Operator): cold sync rate, peak
//!   RSS with and without K unrelated Secrets, backend reads and writes over one refresh cycle
//!   in steady state, and store-change propagation latency (p50, p99).
//! - for secretref, an operator restart with everything in step: its time and the API
//!   server's requests meanwhile.
//!
//! With `--backend vault` it measures instead what the vault provider costs HashiCorp Vault
//! (`vault.rs`), next to ESO's vault provider with `--peer eso`. With `--growth N1,N2,...` it
//! runs the floors and secretref (and ESO with `--peer eso`) at each N in turn (growth.rs).
//!
//! Usage: `bench --refs N [--store-secrets M] [--unrelated K] [--peer eso] [--concurrency C]
//! [--cycle SECONDS] [--profile-dir DIR] [--backend kubernetes|aws|vault] --json FILE` with `KUBECONFIG` (and, for the peer, `SECRETREF_BENCH_ESO`,
//! the ESO binary, and `SECRETREF_BENCH_ESO_CRDS`, its CRD folder; for vault,
//! `SECRETREF_BENCH_VAULT`, the vault binary) set by scripts/bench.

mod aws;
mod cluster;
mod eso;
mod floors;
mod growth;
mod measure;
mod operator;
mod report;
mod secretref;
mod vault;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

#[derive(Debug, Clone)]
pub struct Args {
    pub refs: usize,
    pub store_secrets: usize,
    pub unrelated: usize,
    pub peer_eso: bool,
    /// `kubernetes` (the embedded store, the default), `aws` (AWS calls against moto) or
    /// `vault` (requests to HashiCorp Vault, see vault.rs).
    pub backend: String,
    pub concurrency: usize,
    pub cycle: Duration,
    pub json: PathBuf,
    /// Where to write kube-apiserver CPU profiles (`go tool pprof -top`): of each cold sync's
    /// first 20 s, and of each fan-out round, the floor's and secretref's (`-diff_base`).
    pub profile_dir: Option<PathBuf>,
    /// `--growth N1,N2,...`: the growth curve (growth.rs) instead of the single run.
    pub growth: Vec<usize>,
    /// Added to the store values the propagation rounds write, so that each N of a growth run
    /// writes values the store never held before (a repeated value changes nothing).
    pub value_offset: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        refs: 1000,
        store_secrets: 10,
        unrelated: 0,
        peer_eso: false,
        backend: "kubernetes".to_string(),
        concurrency: 16,
        cycle: Duration::from_secs(30),
        json: PathBuf::from("bench.json"),
        profile_dir: None,
        growth: Vec::new(),
        value_offset: 0,
    };
    let given: Vec<String> = std::env::args().skip(1).collect();
    let mut it = given.clone().into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--refs" => args.refs = value()?.parse().context("--refs")?,
            "--store-secrets" => args.store_secrets = value()?.parse().context("--store-secrets")?,
            "--unrelated" => args.unrelated = value()?.parse().context("--unrelated")?,
            "--concurrency" => args.concurrency = value()?.parse().context("--concurrency")?,
            "--cycle" => args.cycle = Duration::from_secs(value()?.parse().context("--cycle")?),
            "--json" => args.json = PathBuf::from(value()?),
            "--backend" => match value()?.as_str() {
                b @ ("kubernetes" | "aws" | "vault") => args.backend = b.to_string(),
                other => bail!("unknown backend {other:?} (kubernetes, aws or vault)"),
            },
            "--profile-dir" => args.profile_dir = Some(PathBuf::from(value()?)),
            "--growth" => {
                args.growth = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("--growth takes N1,N2,..."))
                    .collect::<anyhow::Result<_>>()?;
                if args.growth.contains(&0) {
                    bail!("--growth sizes must be positive");
                }
            }
            // Drawn by scripts/bench from the JSON afterwards (examples/bench-plot).
            "--plot" => drop(value()?),
            "--peer" => match value()?.as_str() {
                "eso" => args.peer_eso = true,
                other => bail!("unknown peer {other:?} (only eso)"),
            },
            other => bail!("unknown argument {other:?}"),
        }
    }
    // The aws run's defaults are the issue's: M = 100 secrets, a 60 s refresh.
    if args.backend == "aws" {
        if !given.iter().any(|a| a == "--store-secrets") {
            args.store_secrets = 100;
        }
        if !given.iter().any(|a| a == "--cycle") {
            args.cycle = Duration::from_secs(60);
        }
    }
    if args.refs == 0 || args.store_secrets == 0 || args.concurrency == 0 {
        bail!("--refs, --store-secrets and --concurrency must be positive");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    ::secretref::install_crypto_provider();
    let client = kube::Client::try_default().await.context("connecting (KUBECONFIG)")?;
    if args.backend == "aws" {
        return aws::run(&client, &args).await;
    }
    if args.backend == "vault" {
        return vault::run(&client, &args).await;
    }
    if !args.growth.is_empty() {
        return growth::run(&client, &args).await;
    }
    let mut report = report::Report::new(&args);

    eprintln!(
        "bench: raw create rate of {} Secrets at concurrency {}",
        args.refs, args.concurrency
    );
    (report.raw_create_per_s, report.raw_apply_per_s) =
        cluster::raw_rates(&client, args.refs, args.concurrency).await?;
    eprintln!(
        "bench: {:.0} Secrets/s created, {:.0}/s server-side applied",
        report.raw_create_per_s, report.raw_apply_per_s
    );
    report.raw_secretref_create_per_s = secretref::raw_create_rate(&client, &args).await?;
    eprintln!(
        "bench: {:.0} SecretRefs/s (created alone)",
        report.raw_secretref_create_per_s
    );

    let floors = floors::measure(&client, &args).await?;
    report.set_floors(&floors);

    cluster::seed_store(&client, args.store_secrets).await?;
    let mut ours = secretref::run(&client, &args).await?;
    let (restart, settled) = secretref::restart(&client, &args).await?;
    (ours.settled_rss_bytes, ours.restart) = (settled, Some(restart));
    report.secretref = Some(ours);
    if args.peer_eso {
        let mut peer = eso::run(&client, &args).await?;
        peer.settled_rss_bytes = eso::settled_rss(&args).await?;
        report.eso = Some(peer);
    }
    // Unrelated Secrets last: they stay in the cluster for the RSS-with-unrelated runs only.
    if args.unrelated > 0 {
        eprintln!("bench: creating {} unrelated Secrets", args.unrelated);
        cluster::create_unrelated(&client, args.unrelated, args.concurrency).await?;
        if let Some(r) = report.secretref.as_mut() {
            r.peak_rss_bytes_with_unrelated = Some(secretref::settled_rss(&args).await?);
        }
        if let Some(r) = report.eso.as_mut() {
            r.peak_rss_bytes_with_unrelated = Some(eso::settled_rss(&args).await?);
        }
    }
    report.finish();
    report.write(&args.json)?;
    print!("{}", report.table());
    Ok(())
}
