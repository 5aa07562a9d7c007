//! The secretref side of the benchmark: the release binary, run as a process.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{GroupVersionKind, PartialObjectMeta},
    runtime::watcher,
};
use secretref::api::SecretRef;

use crate::{
    Args,
    cluster::{self, STORE_NS, wait_until},
    measure,
    operator::{Process, free_port},
    report::{Operator, Restart},
};

pub const NS: &str = "bench-sr";

/// The operator under test: the release build, or `SECRETREF_BENCH_OPERATOR` (a build with
/// symbols, say, to profile it with `perf record -p`).
fn binary() -> PathBuf {
    std::env::var_os("SECRETREF_BENCH_OPERATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/secretref"))
}

fn spawn(args: &Args, label: &'static str) -> anyhow::Result<Process> {
    let port = free_port();
    let argv: Vec<String> = [
        "run",
        "--concurrency",
        &args.concurrency.to_string(),
        "--operator-namespace",
        NS,
        "--metrics-bind-address",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-{label}.log"));
    Process::spawn(&binary(), &argv, port, &log, &[])
}

async fn wait_leading(p: &Process) -> anyhow::Result<()> {
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "the operator to lead",
        || async { p.metric_sum("secretref_leader", &[]) == 1.0 },
    )
    .await
}

/// Creates a SecretRef with a plain POST, as the raw creates do.
async fn create(client: &Client, namespace: &str, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    let api: Api<SecretRef> = Api::namespaced(client.clone(), namespace);
    let obj: SecretRef = serde_json::from_value(serde_json::json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name }, "spec": spec
    }))?;
    api.create(&kube::api::PostParams::default(), &obj).await?;
    Ok(())
}

/// SecretRef `i`: one of the M store secrets, refreshed every cycle.
pub fn spec(args: &Args, i: usize) -> serde_json::Value {
    serde_json::json!({
        "storeRef": { "name": "bench" },
        "secrets": [{ "name": cluster::store_secret(i % args.store_secrets) }],
        "refreshInterval": format!("{}s", args.cycle.as_secs()),
    })
}

/// The API server's rate for creating the N SecretRefs alone (no operator running): what the
/// cold sync's own creates cost, for comparison with the raw Secret creates.
pub async fn raw_create_rate(client: &Client, args: &Args) -> anyhow::Result<f64> {
    const RAW_NS: &str = "bench-raw-sr";
    cluster::namespace(client, RAW_NS).await?;
    let took = cluster::create_all(args.refs, args.concurrency, |i| async move {
        create(client, RAW_NS, &format!("sr-{i}"), spec(args, i)).await
    })
    .await?;
    cluster::delete_namespace_and_wait(client, RAW_NS).await?;
    Ok(args.refs as f64 / took.as_secs_f64())
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<Operator> {
    cluster::namespace(client, NS).await?;
    let store =
        serde_json::json!({ "namespaces": ["bench-*"], "provider": { "kubernetes": { "namespace": STORE_NS } } });
    let store = serde_json::json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": { "name": "bench" }, "spec": store });
    cluster::apply(client, store).await?;
    let op = spawn(args, "secretref-cold")?;
    wait_leading(&op).await?;
    let ready = measure::track_ready(
        client,
        &GroupVersionKind::gvk("secretref.dev", "v1alpha1", "SecretRef"),
        NS,
    );
    let mut result = measure::cold_sync(client, "secretref", &op, args, ready.clone(), |i| async move {
        create(client, NS, &format!("sr-{i}"), spec(args, i)).await
    })
    .await?;
    measure::steady(
        client,
        &op,
        args,
        |op| op.metric_sum("secretref_backend_reads_total", &[]),
        &mut result,
    )
    .await?;
    let refs: Api<SecretRef> = Api::namespaced(client.clone(), NS);
    measure::ready_after_create(
        &ready,
        async |name| create(client, NS, &name, spec(args, args.store_secrets - 1)).await,
        async |name| Ok(refs.delete(&name, &Default::default()).await.map(|_| ())?),
        &mut result,
    )
    .await?;
    measure::propagation(&mut result, propagation(client, &op, args).await?);
    result.peak_rss_bytes = result.peak_rss_bytes.max(op.peak_rss());
    op.stop().await;
    Ok(result)
}

/// Changes store secrets one at a time and times, for every target using each, the moment its
/// data-hash annotation changes. Milliseconds.
async fn propagation(client: &Client, op: &Process, args: &Args) -> anyhow::Result<Vec<f64>> {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), NS);
    let mut samples = Vec::new();
    let mut targets = measure::TargetWatch::start(watcher(api, watcher::Config::default())).await?;
    let hash = |s: &PartialObjectMeta<Secret>| s.annotations().get("secretref.dev/data-hash").cloned();
    for round in 0..args.store_secrets.min(5) {
        targets.settle();
        let baseline: HashMap<String, Option<String>> = (0..args.refs)
            .filter(|i| i % args.store_secrets == round)
            .map(|i| format!("sr-{i}"))
            .map(|name| (name.clone(), targets.latest(&name).and_then(hash)))
            .collect();
        let requests_before = cluster::apiserver_requests(client).await?;
        let runtime_before = cluster::ApiserverRuntime::now(client).await?;
        let store_gets = || op.metric_sum("secretref_backend_calls_total", &["operation=\"get\""]);
        let reads_before = (op.metric_sum("secretref_target_reads_total", &[]), store_gets());
        let profile = measure::apiserver_profile(
            client,
            args,
            &format!("secretref-round{round}-apiserver.pprof"),
            measure::ROUND_PROFILE_SECONDS,
        );
        let changed_at = Instant::now();
        cluster::touch_store_secret(client, round, args.value_offset + round + 1).await?;
        let (mut seen, from) = (HashSet::new(), samples.len());
        let deadline = changed_at + Duration::from_secs(120);
        while seen.len() < baseline.len() && Instant::now() < deadline {
            let Some((arrived, s)) = targets.next(Duration::from_secs(5)).await else {
                continue;
            };
            let name = s.name_any();
            let now = hash(&s);
            let changed = now.is_some() && baseline.get(&name).is_some_and(|before| now != *before);
            if changed && seen.insert(name) {
                samples.push(arrived.duration_since(changed_at).as_secs_f64() * 1000.0);
            }
        }
        eprintln!(
            "bench: propagation round {round}: {}/{} targets updated; {}",
            seen.len(),
            baseline.len(),
            measure::round_spread(samples[from..].to_vec())
        );
        // What else the API server served meanwhile (statuses and Events of earlier rounds?):
        // the round's own writes are the M targets.
        let runtime = cluster::ApiserverRuntime::now(client).await?.since(&runtime_before);
        let requests = cluster::requests_between(&requests_before, &cluster::apiserver_requests(client).await?);
        let target_reads = op.metric_sum("secretref_target_reads_total", &[]) - reads_before.0;
        eprintln!(
            "bench: round {round}'s API requests: {}; the operator's target reads: {target_reads}, store reads: {}; {runtime}",
            requests.join(", "),
            store_gets() - reads_before.1
        );
        if let Some(profile) = profile {
            let _ = profile.await;
        }
    }
    Ok(samples)
}

/// An operator restart with every SecretRef already in step (an upgrade, a failover): a fresh
/// process, timed from its start until it has reconciled every SecretRef once, with the API
/// server's requests meanwhile by verb and resource (from kube-apiserver's own
/// `apiserver_request_total`, not the operator's metrics). Returns it with the process's
/// settled peak RSS.
pub async fn restart(client: &Client, args: &Args) -> anyhow::Result<(Restart, u64)> {
    // Let the previous process's last writes (its final statuses) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cluster::apiserver_requests(client).await?;
    let started = Instant::now();
    let op = spawn(args, "secretref-restart")?;
    wait_leading(&op).await?;
    let lead_seconds = started.elapsed().as_secs_f64();
    let n = args.refs as f64;
    wait_until(
        Duration::from_secs(3600),
        Duration::from_millis(100),
        "every SecretRef to be checked after a restart",
        || async { op.metric_sum("secretref_reconciles_total", &["kind=\"SecretRef\""]) >= n },
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = cluster::apiserver_requests(client).await?;
    let reads = (
        op.metric_sum("secretref_target_reads_total", &[]),
        op.metric_sum("secretref_backend_calls_total", &["operation=\"get\""]),
    );
    let restart = Restart::from_requests((seconds, lead_seconds), reads, &before, &after);
    eprintln!(
        "bench: secretref restart: {seconds:.1}s to check {} SecretRefs, {} writes, {} target reads, {} store reads ({} GETs of Secrets in all)",
        args.refs, restart.writes, restart.target_reads, restart.store_reads, restart.secret_gets
    );
    let rss = measure::settled_rss(op, args, "secretref_reconciles_total", &["kind=\"SecretRef\""]).await?;
    Ok((restart, rss))
}

/// Peak RSS of a freshly started operator once it has resynced every SecretRef and settled.
pub async fn settled_rss(args: &Args) -> anyhow::Result<u64> {
    let op = spawn(args, "secretref-settled")?;
    wait_leading(&op).await?;
    measure::settled_rss(op, args, "secretref_reconciles_total", &["kind=\"SecretRef\""]).await
}
