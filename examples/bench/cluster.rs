//! Cluster-side helpers: namespaces, bulk creates, the store, API server write counts.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use secretref::{
    backend::{SecretBackend, kubernetes::KubernetesBackend},
    model::{SecretData, SecretValue},
};

pub const STORE_NS: &str = "bench-store";

pub async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Server-side applies any manifest (its apiVersion and kind pick the resource).
pub async fn apply(client: &Client, manifest: serde_json::Value) -> anyhow::Result<()> {
    let api_version = manifest["apiVersion"].as_str().context("apiVersion")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, manifest["kind"].as_str().context("kind")?);
    let ar = ApiResource::from_gvk(&gvk);
    let name = manifest["metadata"]["name"].as_str().context("name")?.to_string();
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("secretref-bench").force(),
        &Patch::Apply(&manifest),
    )
    .await?;
    Ok(())
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
}

/// Creates `count` objects with `concurrency` requests in flight; returns the elapsed time.
pub async fn create_all<F, Fut>(count: usize, concurrency: usize, make: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    stream::iter(0..count)
        .map(make)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

fn secret(name: &str, bytes: usize) -> anyhow::Result<Secret> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "stringData": { "VALUE": "x".repeat(bytes) }
    }))?)
}

/// The API server's own rates for creating `count` Secrets at `concurrency`, and then for
/// server-side applying a new value to each (the write a store change costs per target).
pub async fn raw_rates(client: &Client, count: usize, concurrency: usize) -> anyhow::Result<(f64, f64)> {
    namespace(client, "bench-raw").await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), "bench-raw");
    let took = create_all(count, concurrency, |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &secret(&format!("raw-{i}"), 64)?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let applied = create_all(count, concurrency, |i| {
        let api = api.clone();
        async move {
            let name = format!("raw-{i}");
            let patch = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
                "stringData": { "VALUE": "y".repeat(64) }
            });
            api.patch(&name, &PatchParams::apply("secretref-bench"), &Patch::Apply(&patch))
                .await?;
            Ok(())
        }
    })
    .await?;
    delete_namespace_and_wait(client, "bench-raw").await?;
    Ok((count as f64 / took.as_secs_f64(), count as f64 / applied.as_secs_f64()))
}

/// Deletes a namespace and waits until it is gone, so that its objects' deletion does not
/// load the API server during the next measurement.
///
/// Its Secrets go first, while their owners (SecretRefs, ExternalSecrets) still exist: a Secret
/// deleted before its owner leaves the garbage collector nothing to do, whereas deleting an
/// owner sends the collector to GET each of its dependents (404s, once the namespace
/// controller has deleted them) at the collector's own rate limit, some 45 a second for as long
/// as N / 45 seconds after the namespace is gone: under the next measurement.
pub async fn delete_namespace_and_wait(client: &Client, name: &str) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), name);
    // Asked again until none is left: one request deletes only what it can within the API
    // server's request timeout (a minute; 100,000 Secrets take longer).
    wait_until(
        Duration::from_secs(3600),
        Duration::from_millis(500),
        &format!("the Secrets of namespace {name} to be deleted"),
        || async {
            let _ = secrets
                .delete_collection(&DeleteParams::background(), &Default::default())
                .await;
            secrets
                .list_metadata(&ListParams::default().limit(1))
                .await
                .is_ok_and(|l| l.items.is_empty())
        },
    )
    .await?;
    delete_namespace(client, name).await;
    let api: Api<Namespace> = Api::all(client.clone());
    wait_until(
        Duration::from_secs(600),
        Duration::from_millis(500),
        &format!("namespace {name} to be deleted"),
        || async { matches!(api.get_opt(name).await, Ok(None)) },
    )
    .await
}

/// `count` Modal-style secrets `s0..` in environment main of the store namespace.
pub async fn seed_store(client: &Client, count: usize) -> anyhow::Result<()> {
    namespace(client, STORE_NS).await?;
    let backend = KubernetesBackend::new(client.clone(), STORE_NS);
    for i in 0..count {
        backend.replace("main", &store_secret(i), store_data(i, 0)).await?;
    }
    Ok(())
}

pub fn store_secret(i: usize) -> String {
    format!("s{i}")
}

pub fn store_data(i: usize, round: usize) -> SecretData {
    [
        ("API_KEY".to_string(), SecretValue::new(format!("key-{i}-{round}"))),
        (
            "DB_URL".to_string(),
            SecretValue::new(format!("postgres://db-{i}/{round}")),
        ),
        ("TOKEN".to_string(), SecretValue::new("t".repeat(32))),
    ]
    .into()
}

/// Changes store secret `i` (a new value, so every consumer must write).
pub async fn touch_store_secret(client: &Client, i: usize, round: usize) -> anyhow::Result<()> {
    KubernetesBackend::new(client.clone(), STORE_NS)
        .replace("main", &store_secret(i), store_data(i, round))
        .await?;
    Ok(())
}

pub async fn create_unrelated(client: &Client, count: usize, concurrency: usize) -> anyhow::Result<()> {
    namespace(client, "bench-unrelated").await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), "bench-unrelated");
    create_all(count, concurrency, |i| {
        let api = api.clone();
        async move {
            match api
                .create(&PostParams::default(), &secret(&format!("unrelated-{i}"), 1024)?)
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await?;
    Ok(())
}

/// Mutating requests the API server has served so far: (all but Leases, Leases).
pub async fn apiserver_writes(client: &Client) -> anyhow::Result<(f64, f64)> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    let (mut writes, mut leases) = (0.0, 0.0);
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let mutating = ["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"]
            .iter()
            .any(|v| line.contains(&format!("verb=\"{v}\"")));
        if !mutating {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if line.contains("resource=\"leases\"") {
            leases += value;
        } else {
            writes += value;
        }
    }
    Ok((writes, leases))
}

/// Requests the API server has served so far, by "VERB resource[/subresource]" (with
/// " (code)" for failed ones), with the seconds it spent on them (the sum of its
/// request-duration histogram).
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
    let text = apiserver_metrics(client).await?;
    let label = |line: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        line.split_once(&key)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let count = line.starts_with("apiserver_request_total{");
        let seconds = line.starts_with("apiserver_request_duration_seconds_sum{");
        if !count && !seconds {
            continue;
        }
        let mut key = format!("{} {}", label(line, "verb"), label(line, "resource"));
        let sub = label(line, "subresource");
        if !sub.is_empty() {
            key = format!("{key}/{sub}");
        }
        // Failed requests apart: a client's 404s are another client's than its successes.
        let code = label(line, "code");
        if !code.starts_with('2') && !code.is_empty() {
            key = format!("{key} ({code})");
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let entry = out.entry(key).or_default();
        if count {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    Ok(out)
}

async fn apiserver_metrics(client: &Client) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")
}

/// kube-apiserver's own CPU seconds so far: what a round that took the API server longer for
/// the same requests cost it. (Not its count of garbage collections: a collection's marking
/// runs for seconds and is counted when it ends, often after the round it slowed. The per-round
/// CPU profiles of `--profile-dir` show the marking where it happens.)
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiserverRuntime {
    cpu_seconds: f64,
}

impl ApiserverRuntime {
    pub async fn now(client: &Client) -> anyhow::Result<Self> {
        let text = apiserver_metrics(client).await?;
        let cpu_seconds = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total ")?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        Ok(ApiserverRuntime { cpu_seconds })
    }

    /// `kube-apiserver: C s CPU` since `before`.
    pub fn since(&self, before: &Self) -> String {
        format!("kube-apiserver: {:.1} s CPU", self.cpu_seconds - before.cpu_seconds)
    }
}

/// The requests served between two [`apiserver_requests`] snapshots, as `VERB resource:
/// count (seconds spent)`, most served first, ten at most.
pub fn requests_between(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> Vec<String> {
    let mut served: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(k, (n, s))| {
            let (n0, s0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), n - n0, s - s0)
        })
        .filter(|(_, n, _)| *n >= 1.0)
        .collect();
    served.sort_by(|a, b| b.1.total_cmp(&a.1));
    served
        .into_iter()
        .take(10)
        .map(|(k, n, s)| format!("{k}: {n:.0} ({s:.1} s)"))
        .collect()
}

/// A CPU profile of kube-apiserver over `seconds` (pprof format), for `go tool pprof`.
pub async fn apiserver_cpu_profile(client: &Client, seconds: u64) -> anyhow::Result<Vec<u8>> {
    let request =
        http::Request::get(format!("/debug/pprof/profile?seconds={seconds}")).body(kube::client::Body::empty())?;
    let response = client.send(request).await.context("profiling kube-apiserver")?;
    Ok(response.into_body().collect_bytes().await?.to_vec())
}

/// The `q`-quantile (0..=1) of `samples`, nearest rank.
pub fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Polls `check` every `every` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, every: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}
