//! One scenario's world: its own control plane, a default ClusterSecretStore over the `store`
//! namespace, the operator binary, the sampler, and the record of every value the store held.
//! Every value carries [`MARKER`], which must never appear anywhere but in Secrets.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use secretref::{
    api::{ClusterSecretStore, SecretRef, SecretStore, condition::find_ready},
    backend::{SecretBackend, kubernetes::KubernetesBackend},
    model::{SecretData, SecretValue},
};
use serde_json::json;

use crate::{
    cluster::ChaosCluster,
    operator::OperatorProcess,
    sampler::{Data, Sampler, SharedTruth, lock},
};

/// In every value a scenario writes, and nowhere else: found in a log line, an Event, a
/// status or a metric, it is a leak.
pub const MARKER: &str = "sv7Zq";
/// The namespace of the targets.
pub const APPS: &str = "apps";
/// The store namespace of the default ClusterSecretStore.
pub const STORE: &str = "store";
pub const ENV: &str = "main";

/// `SECRETREF_CHAOS=full` runs every scenario at the sizes (`scripts/chaos`).
pub fn full() -> bool {
    std::env::var("SECRETREF_CHAOS").as_deref() == Ok("full")
}

/// A scenario parameter: `small` in `scripts/test`, `full` under `SECRETREF_CHAOS=full`.
pub fn size(small: usize, full_size: usize) -> usize {
    if full() { full_size } else { small }
}

/// Scenarios run one at a time: each has a control plane of its own, and two at once would
/// only slow each other down on a small machine and blur the figures.
pub async fn exclusive() -> tokio::sync::SemaphorePermit<'static> {
    static ONE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    ONE.acquire().await.expect("semaphore")
}

pub struct World {
    pub cluster: ChaosCluster,
    pub truth: SharedTruth,
    pub store: KubernetesBackend,
    pub operator: Option<OperatorProcess>,
    pub sampler: Sampler,
    counter: AtomicU64,
    started: Instant,
    name: String,
    /// SecretRefs (`namespace/name`) meant to fail now: their targets must still hold the
    /// newest good value, but they are not expected to be Synced.
    failing: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl World {
    /// The world of scenario `name`, with the sampler running and no operator yet.
    pub async fn new(name: &str) -> World {
        let cluster = ChaosCluster::up(name).await;
        for ns in [APPS, STORE, "secretref-system"] {
            cluster.namespace(ns).await;
        }
        let css = json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore",
            "metadata": { "name": "default" },
            "spec": { "default": true, "provider": { "kubernetes": { "namespace": STORE } } }
        });
        let api: Api<ClusterSecretStore> = Api::all(cluster.client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(css).expect("store"))
            .await
            .expect("ClusterSecretStore");
        let truth = SharedTruth::default();
        let sampler = Sampler::start(&cluster, truth.clone()).await;
        World {
            store: KubernetesBackend::new(cluster.client.clone(), STORE),
            cluster,
            truth,
            operator: None,
            sampler,
            counter: AtomicU64::new(0),
            started: Instant::now(),
            name: name.to_string(),
            failing: Default::default(),
        }
    }

    pub async fn start_operator(&mut self) {
        self.operator = Some(OperatorProcess::start(&self.cluster).await);
    }

    pub fn operator(&mut self) -> &mut OperatorProcess {
        self.operator.as_mut().expect("the operator was started")
    }

    /// A fresh value: unique, and carrying the marker.
    pub fn value(&self, tag: &str) -> String {
        format!("{MARKER}-{tag}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Fresh values for `keys`.
    pub fn fresh(&self, keys: &[&str]) -> Data {
        keys.iter()
            .map(|k| (k.to_string(), self.value(k).into_bytes()))
            .collect()
    }

    /// Records `data` as a value of store secret `name`, then writes it through the store's
    /// own backend code, retrying while the control plane is down (a write that fails midway
    /// may still have landed: it was recorded first).
    pub async fn put(&self, name: &str, data: Data) {
        lock(&self.truth).record(&format!("{ENV}/{name}"), data.clone());
        let values: SecretData = data
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(String::from_utf8(v).expect("text values"))))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(180);
        while let Err(e) = self.store.replace(ENV, name, values.clone()).await {
            assert!(Instant::now() < deadline, "store write of {name} kept failing: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Records `data` as a value of store secret `name` (to mirror), without writing it: for
    /// scenarios that write the store Secret by hand.
    pub fn record(&self, name: &str, data: Data) {
        lock(&self.truth).record(&format!("{ENV}/{name}"), data);
    }

    /// Says that target `namespace/name` (written by the SecretRef of the same name) mirrors
    /// store secret `secret`.
    pub fn mirror(&self, namespace: &str, name: &str, secret: &str) {
        lock(&self.truth).mirror(&format!("{namespace}/{name}"), &format!("{ENV}/{secret}"));
    }

    /// Marks a SecretRef as meant to fail from now on (its target keeps the last good value).
    pub fn failing(&self, namespace: &str, name: &str) {
        lock(&self.failing).insert(format!("{namespace}/{name}"));
    }

    /// Creates or replaces a Secret exactly as given (a store Secret made or edited by hand).
    pub async fn write_raw(&self, namespace: &str, mut secret: Secret) {
        let api: Api<Secret> = Api::namespaced(self.cluster.client.clone(), namespace);
        let name = secret.name_any();
        match api.get_opt(&name).await.expect("read") {
            Some(existing) => {
                secret.metadata.resource_version = existing.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &secret)
                    .await
                    .expect("replace");
            }
            None => {
                api.create(&PostParams::default(), &secret).await.expect("create");
            }
        }
    }

    /// Applies a SecretRef (server-side, as its namespace's tenant or the admin).
    pub async fn apply_secretref(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let api: Api<SecretRef> = Api::namespaced(client.clone(), namespace);
        let obj = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name }, "spec": spec });
        api.patch(
            name,
            &kube::api::PatchParams::apply("chaos-tests").force(),
            &kube::api::Patch::Apply(&obj),
        )
        .await
        .map(drop)
    }

    /// Waits until a SecretRef reports `reason` for its generation; returns its message.
    pub async fn wait_reason(&self, namespace: &str, name: &str, reason: &str) -> String {
        let api: Api<SecretRef> = Api::namespaced(self.cluster.client.clone(), namespace);
        crate::support::eventually(
            Duration::from_secs(120),
            &format!("SecretRef {namespace}/{name} to be {reason}"),
            || async {
                let sr = api.get_opt(name).await.ok()??;
                let status = sr.status.as_ref()?;
                let ready = find_ready(&status.conditions)?;
                (ready.reason == reason && status.observed_generation == sr.metadata.generation)
                    .then(|| ready.message.clone())
            },
        )
        .await
    }

    /// Creates SecretRefs `prefix-<i>` in `namespace` for each i in `range`, each reading store
    /// secret `source(i)` into a target of its own name, and records what each target mirrors.
    pub async fn secretrefs(
        &self,
        namespace: &str,
        prefix: &str,
        range: std::ops::Range<usize>,
        source: impl Fn(usize) -> String,
        refresh: &str,
    ) {
        let api: Api<SecretRef> = Api::namespaced(self.cluster.client.clone(), namespace);
        let items: Vec<(String, String)> = range.map(|i| (format!("{prefix}-{i}"), source(i))).collect();
        {
            let mut truth = lock(&self.truth);
            for (name, secret) in &items {
                truth.mirror(&format!("{namespace}/{name}"), &format!("{ENV}/{secret}"));
            }
        }
        futures::stream::iter(items)
            .map(|(name, secret)| {
                let api = api.clone();
                async move {
                    let sr: SecretRef = serde_json::from_value(json!({
                        "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                        "metadata": { "name": name },
                        "spec": { "secrets": [{ "name": secret }], "refreshInterval": refresh }
                    }))
                    .expect("secretref");
                    let deadline = Instant::now() + Duration::from_secs(180);
                    loop {
                        match api.create(&PostParams::default(), &sr).await {
                            Ok(_) => break,
                            Err(kube::Error::Api(s)) if s.code == 409 => break,
                            Err(e) => {
                                assert!(Instant::now() < deadline, "creating SecretRef {name}: {e}");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<()>()
            .await;
    }

    /// How many mirrored targets hold their store secret's newest value, and which SecretRefs
    /// are not yet Synced for their generation (with their reasons). `None` while the
    /// control plane does not answer.
    pub async fn progress(&self) -> Option<(usize, Vec<String>, BTreeMap<String, String>)> {
        let secrets: Api<Secret> = Api::all(self.cluster.client.clone());
        let labels = ListParams::default().labels("app.kubernetes.io/managed-by=secretref");
        let targets = secrets.list(&labels).await.ok()?;
        let srs: Api<SecretRef> = Api::all(self.cluster.client.clone());
        let srs = srs.list(&ListParams::default()).await.ok()?;
        let truth = lock(&self.truth);
        let failing = lock(&self.failing);
        let mut current = 0;
        let mut versions = BTreeMap::new();
        for target in &targets.items {
            let key = format!("{}/{}", target.namespace().unwrap_or_default(), target.name_any());
            let Some(source) = truth.source(&key) else { continue };
            versions.insert(key, target.resource_version().unwrap_or_default());
            let data: Data = target
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            if truth.newest(source) == Some(&data) {
                current += 1;
            }
        }
        let not_synced = srs
            .items
            .iter()
            .filter(|sr| {
                let key = format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any());
                truth.source(&key).is_some() && !failing.contains(&key)
            })
            .filter_map(|sr| {
                let status = sr.status.as_ref();
                let ready = status.and_then(|s| find_ready(&s.conditions));
                let synced = ready.is_some_and(|c| c.reason == "Synced")
                    && status.and_then(|s| s.observed_generation) == sr.metadata.generation;
                (!synced).then(|| {
                    format!(
                        "{}: {}",
                        sr.name_any(),
                        ready.map_or("no status", |c| c.reason.as_str())
                    )
                })
            })
            .collect();
        Some((current, not_synced, versions))
    }

    /// Waits until every mirrored target holds its store secret's newest value and every
    /// SecretRef is Synced for its generation; then checks the sampler saw no broken
    /// invariant. Returns how long convergence took.
    pub async fn converge(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let expected = lock(&self.truth).targets().count();
        let mut last = String::new();
        loop {
            if let Some((current, not_synced, versions)) = self.progress().await {
                if current == expected && not_synced.is_empty() {
                    self.sampler.assert_invariant(&versions).await;
                    return started.elapsed();
                }
                last = format!(
                    "{current} of {expected} targets current; {} SecretRefs not Synced, e.g. {:?}",
                    not_synced.len(),
                    &not_synced[..not_synced.len().min(5)]
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{}: not converged after {timeout:?}: {last}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// No value reached the operator's logs, any Event, any status or the operator's metrics.
    pub async fn assert_no_leaks(&self) {
        let client = self.cluster.client.clone();
        let mut places: Vec<(&str, String)> = Vec::new();
        if let Some(op) = &self.operator {
            places.push(("the operator's logs", op.logs()));
            places.push(("the operator's metrics", op.metrics().await));
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
        places.push((
            "an Event",
            json_of(events.list(&ListParams::default()).await.expect("events").items),
        ));
        let core_events: Api<k8s_openapi::api::core::v1::Event> = Api::all(client.clone());
        places.push((
            "an Event",
            json_of(core_events.list(&ListParams::default()).await.expect("events").items),
        ));
        let srs: Api<SecretRef> = Api::all(client.clone());
        places.push((
            "a SecretRef",
            json_of(srs.list(&ListParams::default()).await.expect("srs").items),
        ));
        let stores: Api<SecretStore> = Api::all(client.clone());
        places.push((
            "a SecretStore",
            json_of(stores.list(&ListParams::default()).await.expect("ss").items),
        ));
        let cluster_stores: Api<ClusterSecretStore> = Api::all(client);
        places.push((
            "a ClusterSecretStore",
            json_of(cluster_stores.list(&ListParams::default()).await.expect("css").items),
        ));
        for (place, text) in places {
            assert!(!text.contains(MARKER), "{}: a value reached {place}", self.name);
        }
        if let Some(op) = &self.operator {
            assert!(!op.logs().contains("panicked"), "{}: the operator panicked", self.name);
        }
    }

    /// Prints one line of figures (`chaos-report {...}`) and appends it to
    /// `target/chaos/report.jsonl`, where the README's table comes from.
    pub fn report(&self, mut figures: serde_json::Value) {
        figures["scenario"] = json!(self.name);
        figures["full_size"] = json!(full());
        figures["took_s"] = json!(self.started.elapsed().as_secs());
        let line = figures.to_string();
        println!("chaos-report {line}");
        let path = crate::support::repo_root().join("target/chaos/report.jsonl");
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
    }
}

fn json_of<T: serde::Serialize>(items: Vec<T>) -> String {
    serde_json::to_string(&items).unwrap_or_default()
}
