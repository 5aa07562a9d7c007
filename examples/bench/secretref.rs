//! The secretref side of the benchmark: the release binary, run as a process.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, GroupVersionKind, PartialObjectMeta, Patch, PatchParams},
    discovery::ApiResource,
    runtime::{WatchStreamExt, watcher},
};
use secretref::api::{SecretRef, condition::find_ready};

use crate::{
    Args,
    cluster::{self, STORE_NS, wait_until},
    operator::{Process, control_plane_cpu, free_port},
    report::Operator,
};

const NS: &str = "bench-sr";

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/secretref")
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
    Process::spawn(&binary(), &argv, port, &log)
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

async fn apply(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("secretref.dev", "v1alpha1", kind));
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let obj = serde_json::json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec });
    api.patch(
        name,
        &PatchParams::apply("secretref-bench").force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

/// Creates a SecretRef with a plain POST, as cheap for the API server as the raw creates.
async fn create(client: &Client, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    let api: Api<SecretRef> = Api::namespaced(client.clone(), NS);
    let obj: SecretRef = serde_json::from_value(serde_json::json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name }, "spec": spec
    }))?;
    api.create(&kube::api::PostParams::default(), &obj).await?;
    Ok(())
}

/// Names of the SecretRefs in `NS` whose Ready condition is True, kept up to date by a watch.
fn track_ready(client: &Client) -> Arc<Mutex<HashSet<String>>> {
    let ready = Arc::new(Mutex::new(HashSet::new()));
    let api: Api<SecretRef> = Api::namespaced(client.clone(), NS);
    let set = ready.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(sr)) = events.next().await {
            let is_ready = sr
                .status
                .as_ref()
                .and_then(|s| find_ready(&s.conditions))
                .is_some_and(|c| c.status == "True");
            if is_ready && let Ok(mut s) = set.lock() {
                s.insert(sr.name_any());
            }
        }
    });
    ready
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<Operator> {
    cluster::namespace(client, NS).await?;
    let store =
        serde_json::json!({ "namespaces": ["bench-*"], "provider": { "kubernetes": { "namespace": STORE_NS } } });
    apply(client, "ClusterSecretStore", None, "bench", store).await?;
    let op = spawn(args, "secretref-cold")?;
    wait_leading(&op).await?;
    let ready = track_ready(client);

    eprintln!("bench: secretref cold sync of {} SecretRefs", args.refs);
    let started = Instant::now();
    let (op_cpu, api_cpu, etcd_cpu) = (op.cpu_seconds(), control_plane_cpu().0, control_plane_cpu().1);
    let cycle = format!("{}s", args.cycle.as_secs());
    cluster::create_all(args.refs, args.concurrency, |i| {
        let spec = serde_json::json!({
            "storeRef": { "name": "bench" },
            "secrets": [{ "name": cluster::store_secret(i % args.store_secrets) }],
            "refreshInterval": cycle,
        });
        async move { create(client, &format!("sr-{i}"), spec).await }
    })
    .await?;
    let n = args.refs;
    wait_until(
        Duration::from_secs(3600),
        Duration::from_millis(50),
        "every SecretRef to be Ready",
        || async { ready.lock().map(|s| s.len() >= n).unwrap_or(false) },
    )
    .await?;
    let cold = started.elapsed();
    let mut result = Operator {
        cold_sync_seconds: cold.as_secs_f64(),
        cold_sync_per_s: args.refs as f64 / cold.as_secs_f64(),
        peak_rss_bytes: op.peak_rss(),
        cold_sync_cpu_seconds_operator: op.cpu_seconds() - op_cpu,
        cold_sync_cpu_seconds_apiserver: control_plane_cpu().0 - api_cpu,
        cold_sync_cpu_seconds_etcd: control_plane_cpu().1 - etcd_cpu,
        ..Default::default()
    };
    eprintln!(
        "bench: secretref cold sync {:.1}s ({:.0}/s)",
        result.cold_sync_seconds, result.cold_sync_per_s
    );

    // One refresh cycle (plus the 10% jitter) with nothing changing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = args.cycle.mul_f64(1.15);
    let (w0, l0) = cluster::apiserver_writes(client).await?;
    let r0 = op.metric_sum("secretref_backend_reads_total", &[]);
    tokio::time::sleep(window).await;
    let (w1, l1) = cluster::apiserver_writes(client).await?;
    let r1 = op.metric_sum("secretref_backend_reads_total", &[]);
    let per_cycle = args.cycle.as_secs_f64() / window.as_secs_f64();
    result.steady_writes_per_cycle = (w1 - w0) * per_cycle;
    result.steady_lease_writes_per_cycle = (l1 - l0) * per_cycle;
    result.backend_reads_per_cycle = (r1 - r0) * per_cycle;

    let mut samples = propagation(client, args).await?;
    result.propagation_samples = samples.len();
    result.propagation_p50_ms = cluster::percentile(&mut samples, 0.50);
    result.propagation_p99_ms = cluster::percentile(&mut samples, 0.99);
    result.peak_rss_bytes = result.peak_rss_bytes.max(op.peak_rss());
    op.stop().await;
    Ok(result)
}

/// Changes store secrets one at a time and times, for every target using each, the moment its
/// data-hash annotation changes. Milliseconds.
async fn propagation(client: &Client, args: &Args) -> anyhow::Result<Vec<f64>> {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), NS);
    let mut samples = Vec::new();
    for round in 0..args.store_secrets.min(5) {
        let baseline: BTreeMap<String, String> = api
            .list_metadata(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|s| Some((s.name_any(), s.annotations().get("secretref.dev/data-hash")?.clone())))
            .collect();
        let expected: HashSet<String> = (0..args.refs)
            .filter(|i| i % args.store_secrets == round)
            .map(|i| format!("sr-{i}"))
            .collect();
        let mut events = watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        // Let the watch start before the change.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let changed_at = Instant::now();
        cluster::touch_store_secret(client, round, round + 1).await?;
        let mut seen = HashSet::new();
        let deadline = changed_at + Duration::from_secs(120);
        while seen.len() < expected.len() && Instant::now() < deadline {
            let Ok(Some(Ok(s))) = tokio::time::timeout(Duration::from_secs(5), events.next()).await else {
                continue;
            };
            let name = s.name_any();
            let hash = s.annotations().get("secretref.dev/data-hash").cloned();
            if expected.contains(&name) && hash.is_some() && hash.as_ref() != baseline.get(&name) && seen.insert(name) {
                samples.push(changed_at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        eprintln!(
            "bench: propagation round {round}: {}/{} targets updated",
            seen.len(),
            expected.len()
        );
    }
    Ok(samples)
}

/// Peak RSS of a freshly started operator once it has resynced every SecretRef and settled.
pub async fn settled_rss(client: &Client, args: &Args) -> anyhow::Result<u64> {
    let _ = client;
    let op = spawn(args, "secretref-settled")?;
    wait_leading(&op).await?;
    let n = args.refs as f64;
    wait_until(
        Duration::from_secs(1800),
        Duration::from_millis(500),
        "a full resync",
        || async { op.metric_sum("secretref_reconciles_total", &["kind=\"SecretRef\""]) >= n },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = op.peak_rss();
    op.stop().await;
    Ok(rss)
}
