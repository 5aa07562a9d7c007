//! Small maps kept up to date from a watch, in place of a reflector cache of whole objects:
//! the operator keeps only what it looks things up by, so memory does not grow with the size
//! of the watched objects.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{ResourceExt, api::PartialObjectMeta, runtime::watcher};

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

/// The resourceVersion of every Secret labelled as ours, by (namespace, name): all the write
/// memo needs to know that nobody touched a target since our write, and the managed-Secrets
/// gauge's count.
#[derive(Debug, Default)]
pub struct ResourceVersions(HashMap<(String, String), String>);

impl Follow<PartialObjectMeta<Secret>> for ResourceVersions {
    fn insert(&mut self, obj: &PartialObjectMeta<Secret>) {
        if let (Some(ns), Some(rv)) = (obj.namespace(), obj.resource_version()) {
            self.0.insert((ns, obj.name_any()), rv);
        }
    }

    fn remove(&mut self, obj: &PartialObjectMeta<Secret>) {
        if let Some(ns) = obj.namespace() {
            self.0.remove(&(ns, obj.name_any()));
        }
    }
}

/// The target Secrets' resourceVersions, shared by the watch that feeds them and the reconciles.
#[derive(Clone, Debug, Default)]
pub struct TargetVersions(Arc<Watched<ResourceVersions>>);

impl TargetVersions {
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        self.0.apply(event);
    }

    /// The resourceVersion of target `namespace/name`, if it exists and is labelled as ours.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.0
            .read(|v| v.0.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    pub fn len(&self) -> usize {
        self.0.read(|v| v.0.len())
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
        assert_eq!(v.get("ns", "a").as_deref(), Some("3"));
        v.apply(&watcher::Event::Delete(meta("b", "4")));
        assert_eq!((v.get("ns", "b"), v.len()), (None, 1));
        v.apply(&watcher::Event::Init);
        v.apply(&watcher::Event::InitApply(meta("c", "5")));
        assert_eq!(
            v.get("ns", "a").as_deref(),
            Some("3"),
            "the old view serves until the re-list completes"
        );
        v.apply(&watcher::Event::InitDone);
        assert_eq!(
            (v.get("ns", "a"), v.get("ns", "c").as_deref(), v.len()),
            (None, Some("5"), 1)
        );
    }
}
