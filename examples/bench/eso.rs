//! The peer: External Secrets Operator v0.16.2 (built by `tools/build eso`), started outside
//! the cluster with its client QPS and burst raised, reading the same store namespace through
//! its own kubernetes provider (client-certificate auth against the same API server).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, GroupVersionKind},
    discovery::{self, ApiResource},
    runtime::watcher,
};
use secretref::backend::kubernetes::object_name;

use crate::{
    Args,
    cluster::{self, STORE_NS, wait_until},
    measure,
    operator::{Process, free_port},
    report::Operator,
};

pub const NS: &str = "bench-eso";

fn env_path(var: &str) -> anyhow::Result<PathBuf> {
    std::env::var(var)
        .map(PathBuf::from)
        .with_context(|| format!("{var} is not set (scripts/bench sets it)"))
}

pub fn spawn(args: &Args, label: &'static str) -> anyhow::Result<Process> {
    let port = free_port();
    let argv: Vec<String> = vec![
        format!("--metrics-addr=127.0.0.1:{port}"),
        format!("--concurrent={}", args.concurrency),
        "--client-qps=10000".into(),
        "--client-burst=20000".into(),
        "--enable-leader-election=false".into(),
        "--enable-cluster-external-secret-reconciler=false".into(),
        "--enable-push-secret-reconciler=false".into(),
        "--enable-cluster-push-secret-reconciler=false".into(),
        "--loglevel=error".into(),
    ];
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-{label}.log"));
    Process::spawn(&env_path("SECRETREF_BENCH_ESO")?, &argv, port, &log, &[])
}

fn external_secrets() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"))
}

/// Creates an ExternalSecret with a plain POST, as cheap as the raw creates.
async fn create(client: &Client, manifest: serde_json::Value) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &external_secrets());
    let obj: DynamicObject = serde_json::from_value(manifest)?;
    api.create(&kube::api::PostParams::default(), &obj).await?;
    Ok(())
}

/// Installs ESO's CRDs from its module source and waits for ExternalSecret to be served.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let dir = env_path("SECRETREF_BENCH_ESO_CRDS")?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            let text = std::fs::read_to_string(&path)?;
            for doc in text.split("\n---") {
                if let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(doc)
                    && value.get("kind").is_some()
                {
                    cluster::apply(client, value)
                        .await
                        .with_context(|| format!("applying {}", path.display()))?;
                }
            }
        }
    }
    let gvk = GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret");
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "ESO's CRDs",
        || async { discovery::pinned_kind(client, &gvk).await.is_ok() },
    )
    .await
}

/// A ClusterSecretStore of ESO's own kubernetes provider over the store namespace, with the
/// admin client certificate (the same identity power as secretref's admin runs).
async fn store(client: &Client) -> anyhow::Result<()> {
    let kubeconfig = std::fs::read_to_string(env_path("KUBECONFIG")?)?;
    let field = |key: &str| {
        kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
    };
    let server = field("server:").context("server in kubeconfig")?;
    let read = |key: &str| -> anyhow::Result<String> {
        let path = field(key).with_context(|| format!("{key} in kubeconfig"))?;
        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    };
    let (ca, cert, key) = (
        read("certificate-authority:")?,
        read("client-certificate:")?,
        read("client-key:")?,
    );
    cluster::apply(
        client,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "eso-auth", "namespace": NS },
            "stringData": { "tls.crt": cert, "tls.key": key }
        }),
    )
    .await?;
    let b64 = data_encoding::BASE64.encode(ca.as_bytes());
    cluster::apply(
        client,
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": { "name": "bench" },
            "spec": { "provider": { "kubernetes": {
                "remoteNamespace": STORE_NS,
                "server": { "url": server, "caBundle": b64 },
                "auth": { "cert": {
                    "clientCert": { "name": "eso-auth", "key": "tls.crt", "namespace": NS },
                    "clientKey": { "name": "eso-auth", "key": "tls.key", "namespace": NS }
                } }
            } } }
        }),
    )
    .await
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<Operator> {
    cluster::namespace(client, NS).await?;
    install_crds(client).await?;
    store(client).await?;
    let op = spawn(args, "eso-cold")?;
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "ESO's metrics endpoint",
        || async { !op.metrics().is_empty() },
    )
    .await?;
    let ready = measure::track_ready(
        client,
        &GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
        NS,
    );
    let cycle = format!("{}s", args.cycle.as_secs());
    // ExternalSecret `name` reading store secret `i`, into a target of its own name.
    let manifest = |name: &str, i: usize| {
        let key = object_name("main", &cluster::store_secret(i % args.store_secrets));
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": { "name": name, "namespace": NS },
            "spec": {
                "refreshInterval": cycle,
                "secretStoreRef": { "kind": "ClusterSecretStore", "name": "bench" },
                "target": { "name": name },
                "dataFrom": [ { "extract": { "key": key } } ]
            }
        })
    };
    let mut result = measure::cold_sync(client, "eso", &op, args, ready.clone(), |i| {
        let manifest = manifest(&format!("es-{i}"), i);
        async move { create(client, manifest).await }
    })
    .await?;
    let reads = |op: &Process| op.metric_sum("externalsecret_provider_api_calls_count", &["call=\"GetSecret\""]);
    measure::steady(client, &op, args, reads, &mut result).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &external_secrets());
    measure::ready_after_create(
        &ready,
        async |name| create(client, manifest(&name, args.store_secrets - 1)).await,
        async |name| Ok(api.delete(&name, &Default::default()).await.map(|_| ())?),
        &mut result,
    )
    .await?;
    measure::propagation(&mut result, propagation(client, args).await?);
    result.peak_rss_bytes = result.peak_rss_bytes.max(op.peak_rss());
    op.stop().await;
    Ok(result)
}

/// Like secretref's: time from a store change to each target's data changing. ESO has no
/// store watch, so changes arrive at its next refresh.
async fn propagation(client: &Client, args: &Args) -> anyhow::Result<Vec<f64>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut samples = Vec::new();
    let mut targets = measure::TargetWatch::start(watcher(api, watcher::Config::default())).await?;
    // Rounds 10.. so the values differ from secretref's rounds.
    for round in 0..args.store_secrets.min(5) {
        targets.settle();
        let baseline: HashMap<String, Option<String>> = (0..args.refs)
            .filter(|i| i % args.store_secrets == round)
            .map(|i| format!("es-{i}"))
            .map(|name| (name.clone(), targets.latest(&name).and_then(|s| s.resource_version())))
            .collect();
        let changed_at = Instant::now();
        let value = args.value_offset + round + 10;
        cluster::touch_store_secret(client, round, value).await?;
        let want = format!("key-{round}-{value}");
        let (mut seen, from) = (HashSet::new(), samples.len());
        let deadline = changed_at + args.cycle.mul_f64(1.5) + Duration::from_secs(30);
        while seen.len() < baseline.len() && Instant::now() < deadline {
            let Some((arrived, s)) = targets.next(Duration::from_secs(5)).await else {
                continue;
            };
            let name = s.name_any();
            let updated = s
                .data
                .as_ref()
                .and_then(|d| d.get("API_KEY"))
                .is_some_and(|v| v.0 == want.as_bytes());
            if updated
                && baseline
                    .get(&name)
                    .is_some_and(|before| s.resource_version() != *before)
                && seen.insert(name)
            {
                samples.push(arrived.duration_since(changed_at).as_secs_f64() * 1000.0);
            }
        }
        eprintln!(
            "bench: eso propagation round {round}: {}/{} targets updated; {}",
            seen.len(),
            baseline.len(),
            measure::round_spread(samples[from..].to_vec())
        );
    }
    Ok(samples)
}

pub async fn settled_rss(args: &Args) -> anyhow::Result<u64> {
    let op = spawn(args, "eso-settled")?;
    measure::settled_rss(
        op,
        args,
        "controller_runtime_reconcile_total",
        &["controller=\"externalsecret\""],
    )
    .await
}
