//! Small maps kept up to date from a watch, in place of a reflector cache of whole objects:
//! the operator keeps only what it looks things up by, so memory does not grow with the size
//! of the watched objects.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, RwLock},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{ResourceExt, api::PartialObjectMeta, runtime::watcher};

use super::target::FIELD_MANAGER;

/// What a [`Watched`] map does with one object.
pub trait Follow<K>: Default {
    fn insert(&mut self, obj: &K);
    fn remove(&mut self, obj: &K);
}

/// A map fed by a watch. A re-list builds a fresh map that replaces the live one when it
/// completes, so objects deleted while the watch was down disappear, and the old view serves
/// until then.
#[derive(Debug, Default)]
pub struct Watched<M> {
    live: RwLock<M>,
    pending: RwLock<Option<M>>,
}

impl<M> Watched<M> {
    /// Applies one watcher event.
    pub fn apply<K>(&self, event: &watcher::Event<K>)
    where
        M: Follow<K>,
    {
        match event {
            watcher::Event::Apply(obj) => self.write().insert(obj),
            watcher::Event::Delete(obj) => self.write().remove(obj),
            watcher::Event::Init => *self.pending.write().unwrap_or_else(|p| p.into_inner()) = Some(M::default()),
            watcher::Event::InitApply(obj) => {
                if let Some(m) = self.pending.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    m.insert(obj);
                }
            }
            watcher::Event::InitDone => {
                if let Some(m) = self.pending.write().unwrap_or_else(|p| p.into_inner()).take() {
                    *self.write() = m;
                }
            }
        }
    }

    /// Reads the live map.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, M> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the target watch tells of one target Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub version: String,
    /// [`digest`] of what its metadata proves it holds, or `None` when the metadata cannot
    /// prove it (another field manager owns some of its data, or none is ours).
    pub digest: Option<u64>,
}

/// A fingerprint of a target Secret as far as its metadata shows it: labels, annotations (our
/// data-hash, which covers the type and every key and value we applied, among them), owners,
/// and the data keys. Equal for the Secret we would apply and for a target that holds exactly
/// that, so an operator that remembers nothing (just restarted) needs no read to know a target
/// is in step. Process-local: never stored or compared across processes.
pub fn digest<'a>(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    owners: &[OwnerReference],
    data_keys: impl Iterator<Item = &'a str>,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    annotations.hash(&mut h);
    for o in owners {
        (&o.uid, o.controller.unwrap_or(false)).hash(&mut h);
    }
    data_keys.collect::<BTreeSet<_>>().hash(&mut h);
    h.finish()
}

/// The digest a watched target's metadata proves, if it proves one: our field manager (its
/// applies, or the create of a new target) owns its data keys and no other manager owns any of
/// them. (A write by anyone else to a key moves that key's ownership to them, so the values are
/// still those of our last write, which the data-hash annotation names.)
fn proven_digest(obj: &PartialObjectMeta<Secret>) -> Option<u64> {
    let mut ours: Option<BTreeSet<&str>> = None;
    for entry in obj.managed_fields() {
        let data = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:data"));
        let mine = entry.manager.as_deref() == Some(FIELD_MANAGER)
            && matches!(entry.operation.as_deref(), Some("Apply" | "Update"))
            && entry.subresource.is_none();
        if mine {
            let keys = data
                .and_then(|d| d.as_object())
                .into_iter()
                .flat_map(|d| d.keys().filter_map(|k| k.strip_prefix("f:")));
            ours.get_or_insert_default().extend(keys);
        } else if data.is_some() {
            return None;
        }
    }
    let keys = ours?;
    Some(digest(
        obj.labels(),
        obj.annotations(),
        obj.owner_references(),
        keys.into_iter(),
    ))
}

/// What the watch tells of every Secret labelled as ours, by (namespace, name): all the write
/// memo needs to know that nobody touched a target since our write (its resourceVersion), all a
/// restarted operator needs to know a target is in step (its digest), and the managed-Secrets
/// gauge's count.
#[derive(Debug, Default)]
pub struct ResourceVersions(HashMap<(String, String), Seen>);

impl Follow<PartialObjectMeta<Secret>> for ResourceVersions {
    fn insert(&mut self, obj: &PartialObjectMeta<Secret>) {
        if let (Some(ns), Some(version)) = (obj.namespace(), obj.resource_version()) {
            let seen = Seen {
                version,
                digest: proven_digest(obj),
            };
            self.0.insert((ns, obj.name_any()), seen);
        }
    }

    fn remove(&mut self, obj: &PartialObjectMeta<Secret>) {
        if let Some(ns) = obj.namespace() {
            self.0.remove(&(ns, obj.name_any()));
        }
    }
}

/// The target Secrets' resourceVersions, shared by the watch that feeds them and the reconciles.
#[derive(Clone, Debug)]
pub struct TargetVersions {
    map: Arc<Watched<ResourceVersions>>,
    /// Whether the watch listed once: until then an absent target may exist.
    listed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Whether a sync stopped waiting for that list.
    gave_up: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for TargetVersions {
    fn default() -> Self {
        TargetVersions {
            map: Default::default(),
            listed: Arc::new(tokio::sync::watch::Sender::new(false)),
            gave_up: Default::default(),
        }
    }
}

impl TargetVersions {
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        self.map.apply(event);
        if matches!(event, watcher::Event::InitDone) {
            self.listed.send_replace(true);
        }
    }

    /// What the watch tells of target `namespace/name`, if it exists and is labelled as ours.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Seen> {
        self.map
            .read(|v| v.0.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    pub fn len(&self) -> usize {
        self.map.read(|v| v.0.len())
    }

    /// Whether the watch has listed the targets once: until then an absent one may exist.
    pub fn listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// Waits (at most `limit`) for the first list: a sync that ran before it would read every
    /// target the map does not show yet (an operator restart at 10,000 SecretRefs read a hundred).
    /// Once a wait timed out (the watch cannot list: no permission, say), later syncs no longer
    /// wait and read the targets instead.
    pub async fn wait_listed(&self, limit: Duration) {
        if self.gave_up.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut listed = self.listed.subscribe();
        if tokio::time::timeout(limit, listed.wait_for(|l| *l)).await.is_err() {
            tracing::warn!("the target watch has not listed yet: syncs read their targets meanwhile");
            self.gave_up.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": "ns", "resourceVersion": rv }
        }))
        .expect("metadata")
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let v = TargetVersions::default();
        v.apply(&watcher::Event::Apply(meta("a", "1")));
        v.apply(&watcher::Event::Apply(meta("b", "2")));
        v.apply(&watcher::Event::Apply(meta("a", "3")));
        assert_eq!(v.get("ns", "a").map(|s| s.version).as_deref(), Some("3"));
        v.apply(&watcher::Event::Delete(meta("b", "4")));
        assert_eq!((v.get("ns", "b"), v.len()), (None, 1));
        v.apply(&watcher::Event::Init);
        v.apply(&watcher::Event::InitApply(meta("c", "5")));
        assert_eq!(
            v.get("ns", "a").map(|s| s.version).as_deref(),
            Some("3"),
            "the old view serves until the re-list completes"
        );
        v.apply(&watcher::Event::InitDone);
        assert_eq!(
            (
                v.get("ns", "a"),
                v.get("ns", "c").map(|s| s.version).as_deref(),
                v.len()
            ),
            (None, Some("5"), 1)
        );
    }

    fn managed(entries: serde_json::Value) -> PartialObjectMeta<Secret> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "t", "namespace": "ns", "resourceVersion": "7",
                "labels": { "l": "1" }, "annotations": { "secretref.dev/data-hash": "h" },
                "managedFields": entries
            }
        }))
        .expect("metadata")
    }

    fn applied(manager: &str, operation: &str, keys: &[&str]) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> =
            keys.iter().map(|k| (format!("f:{k}"), serde_json::json!({}))).collect();
        serde_json::json!({ "manager": manager, "operation": operation, "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": { "f:data": data } })
    }

    #[test]
    fn a_digest_is_proven_only_while_our_writes_alone_own_the_data() {
        let labels = BTreeMap::from([("l".to_string(), "1".to_string())]);
        let annotations = BTreeMap::from([("secretref.dev/data-hash".to_string(), "h".to_string())]);
        let want = digest(&labels, &annotations, &[], ["A", "B"].into_iter());
        let ours = managed(serde_json::json!([applied(FIELD_MANAGER, "Apply", &["A", "B"])]));
        assert_eq!(proven_digest(&ours), Some(want));
        let metadata_only = serde_json::json!({ "manager": "kubectl-label", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:labels": {} } } });
        let labelled = managed(serde_json::json!([
            applied(FIELD_MANAGER, "Apply", &["A", "B"]),
            metadata_only
        ]));
        assert_eq!(
            proven_digest(&labelled),
            Some(want),
            "others' metadata writes show in the digest itself"
        );
        let edited = managed(serde_json::json!([
            applied(FIELD_MANAGER, "Apply", &["A"]),
            applied("kubectl-edit", "Update", &["B"])
        ]));
        assert_eq!(proven_digest(&edited), None, "someone else wrote a key");
        let added = managed(serde_json::json!([
            applied(FIELD_MANAGER, "Apply", &["A", "B"]),
            applied("other", "Apply", &["C"])
        ]));
        assert_eq!(proven_digest(&added), None);
        let created = managed(serde_json::json!([applied(FIELD_MANAGER, "Update", &["A", "B"])]));
        assert_eq!(proven_digest(&created), Some(want), "our create of the target counts");
        let created_then_applied = managed(serde_json::json!([
            applied(FIELD_MANAGER, "Update", &["A"]),
            applied(FIELD_MANAGER, "Apply", &["B"])
        ]));
        assert_eq!(proven_digest(&created_then_applied), Some(want), "both are ours");
        assert_eq!(
            proven_digest(&managed(serde_json::json!([]))),
            None,
            "no managedFields, no proof"
        );
        let fewer = managed(serde_json::json!([applied(FIELD_MANAGER, "Apply", &["A"])]));
        assert_ne!(
            proven_digest(&fewer),
            Some(want),
            "a key removed by someone no longer matches"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn syncs_wait_for_the_first_list_but_only_once_in_vain() {
        let targets = TargetVersions::default();
        let start = tokio::time::Instant::now();
        targets.wait_listed(Duration::from_secs(30)).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(30),
            "waited for a list that did not come"
        );
        targets.wait_listed(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30), "then no more");
        let listed = TargetVersions::default();
        listed.apply(&watcher::Event::Init);
        listed.apply(&watcher::Event::InitDone);
        assert!(listed.listed());
        let start = tokio::time::Instant::now();
        listed.wait_listed(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
