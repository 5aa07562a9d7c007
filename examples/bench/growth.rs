//! `--growth N1,N2,...`: the same measurements at each N in turn (M = N / 10 targets per store
//! secret with the default 10 store secrets), so that the cost curve shows: peak RSS, cold
//! sync against its floor, propagation against its floor, and the restart. The marginal RSS
//! per SecretRef is the least-squares slope of RSS over N.

use std::collections::BTreeMap;

use kube::Client;
use serde::Serialize;

use crate::{
    Args, cluster, eso, floors,
    report::{Operator, RequestCost, Restart},
    secretref,
};

/// One N.
#[derive(Debug, Default, Serialize)]
pub struct Point {
    pub refs: usize,
    pub peak_rss_bytes: u64,
    pub settled_rss_bytes: u64,
    pub cold_sync_per_s: f64,
    pub min_writes_per_s: f64,
    /// The same floor taken again after the operators ran at this N.
    pub min_writes_per_s_after: f64,
    pub cold_sync_vs_min_writes: f64,
    /// Against the mean of the floors taken before and after: the API server's rate drifts by
    /// 10 % and more within one run at these sizes, so the two that bracket the cold sync are
    /// the fairer reference for how the fraction moves with N.
    pub cold_sync_vs_min_writes_mean: f64,
    pub fanout_apply_s: f64,
    pub propagation_p50_ms: f64,
    pub propagation_p99_ms: f64,
    pub propagation_p99_vs_fanout_apply: f64,
    pub fanout_apply_p99_s: f64,
    pub propagation_p99_vs_fanout_apply_p99: f64,
    pub steady_writes_per_cycle: f64,
    pub steady_cpu_seconds_per_cycle: f64,
    /// Where the cold sync's CPU went (seconds; see `Operator`).
    pub cold_sync_cpu_seconds_operator: f64,
    pub cold_sync_cpu_seconds_apiserver: f64,
    pub cold_sync_cpu_seconds_etcd: f64,
    /// What each object cost the API server in the cold sync and in the floor's raw writes.
    pub cold_sync_requests_per_object: BTreeMap<String, RequestCost>,
    pub min_writes_requests_per_object: BTreeMap<String, RequestCost>,
    pub restart: Option<Restart>,
    /// ESO at the same N (with `--peer eso`).
    pub eso: Option<Operator>,
}

#[derive(Debug, Default, Serialize)]
pub struct Growth {
    pub store_secrets: usize,
    pub concurrency: usize,
    pub cycle_seconds: u64,
    pub growth: Vec<Point>,
    /// Marginal RSS per SecretRef: the slope of peak (cold sync) and settled (after a fresh
    /// resync) RSS over N, in bytes.
    pub rss_bytes_per_ref_peak: f64,
    pub rss_bytes_per_ref_settled: f64,
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    cov / var
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<()> {
    let mut out = Growth {
        store_secrets: args.store_secrets,
        concurrency: args.concurrency,
        cycle_seconds: args.cycle.as_secs(),
        ..Default::default()
    };
    cluster::seed_store(client, args.store_secrets).await?;
    for (k, &refs) in args.growth.iter().enumerate() {
        let args = Args {
            refs,
            value_offset: 1000 * k,
            ..args.clone()
        };
        eprintln!("bench: growth: N = {refs}");
        let floors = floors::measure(client, &args).await?;
        let mut ours = secretref::run(client, &args).await?;
        let (restart, settled) = secretref::restart(client, &args).await?;
        ours.against(&floors);
        let eso = if args.peer_eso {
            let mut peer = eso::run(client, &args).await?;
            peer.against(&floors);
            Some(peer)
        } else {
            None
        };
        // Each N ends with an empty cluster (the next N starts from one, the floor is taken again
        // on one).
        cluster::delete_namespace_and_wait(client, secretref::NS).await?;
        if args.peer_eso {
            cluster::delete_namespace_and_wait(client, eso::NS).await?;
        }
        let min_writes_per_s_after = floors::min_writes_again(client, &args).await?;
        out.growth.push(Point {
            refs,
            peak_rss_bytes: ours.peak_rss_bytes,
            settled_rss_bytes: settled,
            cold_sync_per_s: ours.cold_sync_per_s,
            min_writes_per_s: floors.min_writes_per_s,
            min_writes_per_s_after,
            cold_sync_vs_min_writes: ours.cold_sync_vs_min_writes,
            cold_sync_vs_min_writes_mean: ours.cold_sync_per_s
                / ((floors.min_writes_per_s + min_writes_per_s_after) / 2.0),
            fanout_apply_s: floors.fanout_apply_s,
            propagation_p50_ms: ours.propagation_p50_ms,
            propagation_p99_ms: ours.propagation_p99_ms,
            propagation_p99_vs_fanout_apply: ours.propagation_p99_vs_fanout_apply,
            fanout_apply_p99_s: floors.fanout_apply_p99_s,
            propagation_p99_vs_fanout_apply_p99: ours.propagation_p99_vs_fanout_apply_p99,
            steady_writes_per_cycle: ours.steady_writes_per_cycle,
            steady_cpu_seconds_per_cycle: ours.steady_cpu_seconds_per_cycle,
            cold_sync_cpu_seconds_operator: ours.cold_sync_cpu_seconds_operator,
            cold_sync_cpu_seconds_apiserver: ours.cold_sync_cpu_seconds_apiserver,
            cold_sync_cpu_seconds_etcd: ours.cold_sync_cpu_seconds_etcd,
            cold_sync_requests_per_object: std::mem::take(&mut ours.cold_sync_requests_per_object),
            min_writes_requests_per_object: floors.min_writes_requests_per_object.clone(),
            restart: Some(restart),
            eso,
        });
        let peak: Vec<(f64, f64)> = out
            .growth
            .iter()
            .map(|p| (p.refs as f64, p.peak_rss_bytes as f64))
            .collect();
        let settled: Vec<(f64, f64)> = out
            .growth
            .iter()
            .map(|p| (p.refs as f64, p.settled_rss_bytes as f64))
            .collect();
        out.rss_bytes_per_ref_peak = slope(&peak);
        out.rss_bytes_per_ref_settled = slope(&settled);
        // Written after every N, so the smaller sizes survive a larger one that does not finish.
        std::fs::write(&args.json, serde_json::to_string_pretty(&out)? + "\n")?;
        eprint!("{}", table(&out));
    }
    print!("{}", table(&out));
    Ok(())
}

pub fn table(g: &Growth) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = format!(
        "\ngrowth (store secrets {}, concurrency {})\n{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}{:>8}{:>10}{:>10}{:>8}{:>10}{:>9}{:>9}{:>9}\n",
        g.store_secrets,
        g.concurrency,
        "N",
        "peak MiB",
        "settl MiB",
        "cold /s",
        "floor /s",
        "after /s",
        "frac",
        "f.mean",
        "fanout s",
        "p99 ms",
        "x floor",
        "restart s",
        "r.writes",
        "r.reads",
        "r.store"
    );
    for p in &g.growth {
        let r = p.restart.as_ref();
        out.push_str(&format!(
            "{:>8}{:>10.1}{:>10.1}{:>10.0}{:>10.0}{:>10.0}{:>8.2}{:>8.2}{:>10.2}{:>10.0}{:>8.2}{:>10.1}{:>9.0}{:>9.0}{:>9.0}\n",
            p.refs,
            mib(p.peak_rss_bytes),
            mib(p.settled_rss_bytes),
            p.cold_sync_per_s,
            p.min_writes_per_s,
            p.min_writes_per_s_after,
            p.cold_sync_vs_min_writes,
            p.cold_sync_vs_min_writes_mean,
            p.fanout_apply_s,
            p.propagation_p99_ms,
            p.propagation_p99_vs_fanout_apply,
            r.map_or(f64::NAN, |r| r.seconds),
            r.map_or(f64::NAN, |r| r.writes),
            r.map_or(f64::NAN, |r| r.target_reads),
            r.map_or(f64::NAN, |r| r.store_reads),
        ));
    }
    out.push_str(&format!(
        "marginal RSS per SecretRef: {:.0} bytes (peak), {:.0} bytes (settled)\n",
        g.rss_bytes_per_ref_peak, g.rss_bytes_per_ref_settled
    ));
    out
}
