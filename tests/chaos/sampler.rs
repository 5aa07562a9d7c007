//! The independent sampler: its own client and watches (not the operator's code) record every
//! change of every target Secret during a scenario and check the invariant as they come. A
//! target that existed never disappears (nor is replaced by a new object), and every version
//! of it holds exactly one of the values its store secret held, never going back to an older
//! one; so it never loses a key, and never holds a value the store never had.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use secretref::api::SecretRef;

use crate::{cluster::ChaosCluster, support::eventually};

/// A Secret's data, as bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// What the store held and what each target mirrors. The test records a store value before it
/// writes it, so the sampler can never see a target holding a value not yet recorded.
#[derive(Debug, Default)]
pub struct Truth {
    /// Every value of each store secret (`environment/name`), oldest first.
    history: HashMap<String, Vec<Data>>,
    /// The store secret each target (`namespace/name`) mirrors.
    sources: HashMap<String, String>,
}

impl Truth {
    pub fn record(&mut self, secret: &str, data: Data) {
        self.history.entry(secret.to_string()).or_default().push(data);
    }

    pub fn mirror(&mut self, target: &str, secret: &str) {
        self.sources.insert(target.to_string(), secret.to_string());
    }

    pub fn newest(&self, secret: &str) -> Option<&Data> {
        self.history.get(secret)?.last()
    }

    pub fn source(&self, target: &str) -> Option<&str> {
        self.sources.get(target).map(String::as_str)
    }

    pub fn targets(&self) -> impl Iterator<Item = (&String, &String)> {
        self.sources.iter()
    }

    /// The newest index in the history of `secret` holding exactly `data`.
    fn index_of(&self, secret: &str, data: &Data) -> Option<usize> {
        self.history.get(secret)?.iter().rposition(|d| d == data)
    }
}

pub type SharedTruth = Arc<Mutex<Truth>>;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Track {
    uid: String,
    version: String,
    index: usize,
}

/// What the sampler saw.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Broken invariants, described by object and key names (never values).
    pub violations: Vec<String>,
    /// Target versions seen: creations plus changes (each one a real write).
    pub target_writes: u64,
    /// Changes of SecretRef status (each one a real status write).
    pub status_writes: u64,
    /// Times a watch of the sampler had to list again (after a gap or a 410).
    pub relists: u64,
}

#[derive(Default)]
struct State {
    observed: Observed,
    targets: HashMap<String, Track>,
    relisted: Option<HashSet<String>>,
    statuses: HashMap<String, String>,
}

pub struct Sampler {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    /// Starts watching every target Secret (labelled as secretref's) and every SecretRef of the
    /// cluster, and returns once both watches have listed.
    pub async fn start(cluster: &ChaosCluster, truth: SharedTruth) -> Sampler {
        let client = crate::cluster::client_for(&cluster.kubeconfig, None).await;
        let state = Arc::new(Mutex::new(State::default()));
        let targets = watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=secretref"),
        )
        .default_backoff();
        let secretrefs = watcher(Api::<SecretRef>::all(client), watcher::Config::default()).default_backoff();
        let (listed_tx, listed) = tokio::sync::watch::channel(0u32);
        let listed_tx = Arc::new(listed_tx);
        let tasks = vec![
            tokio::spawn({
                let (state, listed) = (state.clone(), listed_tx.clone());
                async move {
                    let mut events = std::pin::pin!(targets);
                    while let Some(event) = events.next().await {
                        if let Ok(event) = event {
                            let done = matches!(event, watcher::Event::InitDone);
                            on_target(&mut lock(&state), &lock(&truth), event);
                            if done {
                                listed.send_modify(|n| *n += 1);
                            }
                        }
                    }
                }
            }),
            tokio::spawn({
                let (state, listed) = (state.clone(), listed_tx);
                async move {
                    let mut events = std::pin::pin!(secretrefs.applied_objects());
                    let mut first = true;
                    while let Some(event) = events.next().await {
                        if let Ok(sr) = event {
                            on_secretref(&mut lock(&state), &sr);
                        }
                        if first {
                            first = false;
                            listed.send_modify(|n| *n += 1);
                        }
                    }
                }
            }),
        ];
        let sampler = Sampler { state, tasks };
        let mut listed = listed;
        tokio::time::timeout(Duration::from_secs(60), listed.wait_for(|n| *n >= 1))
            .await
            .expect("the sampler's watches list")
            .expect("sampler running");
        sampler
    }

    /// Waits until the sampler has seen `n` target writes in all (to strike mid-sync).
    pub async fn wait_writes(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while self.observed().target_writes < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} target writes never happened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn observed(&self) -> Observed {
        lock(&self.state).observed.clone()
    }

    /// Waits until the sampler has seen every target at its current version (it may lag the
    /// API server), then checks the invariant held throughout.
    pub async fn assert_invariant(&self, targets: &BTreeMap<String, String>) {
        let state = self.state.clone();
        eventually(
            Duration::from_secs(60),
            "the sampler to catch up with every target",
            || {
                let state = state.clone();
                async move {
                    let s = lock(&state);
                    targets
                        .iter()
                        .all(|(key, version)| s.targets.get(key).is_some_and(|t| &t.version == version))
                        .then_some(())
                }
            },
        )
        .await;
        let observed = self.observed();
        assert!(
            observed.violations.is_empty(),
            "the invariant was broken {} times:\n{}",
            observed.violations.len(),
            observed.violations.join("\n")
        );
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn data_of(secret: &Secret) -> Data {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Keys and sizes: what a message may say about data.
fn shape(data: &Data) -> String {
    let keys: Vec<String> = data
        .iter()
        .take(8)
        .map(|(k, v)| format!("{k}({} bytes)", v.len()))
        .collect();
    format!(
        "{} keys [{}{}]",
        data.len(),
        keys.join(", "),
        if data.len() > 8 { ", ..." } else { "" }
    )
}

fn on_target(state: &mut State, truth: &Truth, event: watcher::Event<Secret>) {
    match event {
        watcher::Event::Init => {
            state.observed.relists += 1;
            state.relisted = Some(HashSet::new());
        }
        watcher::Event::InitApply(secret) => {
            let key = key_of(&secret);
            observe(state, truth, &secret);
            if let Some(seen) = state.relisted.as_mut() {
                seen.insert(key);
            }
        }
        watcher::Event::InitDone => {
            if let Some(seen) = state.relisted.take() {
                let gone: Vec<String> = state.targets.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                for key in gone {
                    state.targets.remove(&key);
                    state
                        .observed
                        .violations
                        .push(format!("target {key} disappeared (missing from a relist)"));
                }
            }
        }
        watcher::Event::Apply(secret) => observe(state, truth, &secret),
        watcher::Event::Delete(secret) => {
            let key = key_of(&secret);
            if state.targets.remove(&key).is_some() {
                state.observed.violations.push(format!("target {key} was deleted"));
            }
        }
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

fn observe(state: &mut State, truth: &Truth, secret: &Secret) {
    let key = key_of(secret);
    let Some(source) = truth.source(&key) else {
        return;
    };
    let uid = secret.uid().unwrap_or_default();
    let version = secret.resource_version().unwrap_or_default();
    let data = data_of(secret);
    let index = truth.index_of(source, &data);
    if let Some(track) = state.targets.get(&key) {
        if track.version == version {
            return;
        }
        if track.uid != uid {
            state.observed.violations.push(format!(
                "target {key} was replaced by a new object (it disappeared in between)"
            ));
        }
    }
    state.observed.target_writes += 1;
    let Some(index) = index else {
        state.observed.violations.push(format!(
            "target {key} holds {} that its store secret {source} never held",
            shape(&data)
        ));
        return;
    };
    if let Some(track) = state.targets.get(&key)
        && index < track.index
    {
        state.observed.violations.push(format!(
            "target {key} went back from value #{} to the older #{index} of {source}",
            track.index
        ));
    }
    state.targets.insert(key, Track { uid, version, index });
}

fn on_secretref(state: &mut State, sr: &SecretRef) {
    let status = serde_json::to_string(&sr.status).unwrap_or_default();
    let key = key_of(sr);
    if state.statuses.get(&key) != Some(&status) {
        if sr.status.is_some() {
            state.observed.status_writes += 1;
        }
        state.statuses.insert(key, status);
    }
}
