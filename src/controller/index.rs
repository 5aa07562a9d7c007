//! Which SecretRefs use which secret name: kept up to date from the SecretRef watch, so that a
//! store-secret change finds its dependants by lookup instead of scanning every SecretRef.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use kube::{
    ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};

use super::watched::{Follow, Watched};
use crate::api::SecretRef;

#[derive(Debug, Default)]
struct Maps {
    by_secret: HashMap<String, HashSet<ObjectRef<SecretRef>>>,
    by_ref: HashMap<ObjectRef<SecretRef>, Vec<String>>,
}

/// A reference by namespace and name only (no resourceVersion or uid to keep).
fn object_ref(sr: &SecretRef) -> ObjectRef<SecretRef> {
    let r = ObjectRef::new(&sr.name_any());
    match sr.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

impl Follow<SecretRef> for Maps {
    fn insert(&mut self, sr: &SecretRef) {
        let r = object_ref(sr);
        self.remove_ref(&r);
        let names: Vec<String> = sr.spec.secrets.iter().map(|s| s.name.clone()).collect();
        for name in &names {
            self.by_secret.entry(name.clone()).or_default().insert(r.clone());
        }
        self.by_ref.insert(r, names);
    }

    fn remove(&mut self, sr: &SecretRef) {
        self.remove_ref(&object_ref(sr));
    }
}

impl Maps {
    fn remove_ref(&mut self, r: &ObjectRef<SecretRef>) {
        for name in self.by_ref.remove(r).unwrap_or_default() {
            if let Some(set) = self.by_secret.get_mut(&name) {
                set.remove(r);
                if set.is_empty() {
                    self.by_secret.remove(&name);
                }
            }
        }
    }
}

/// The index, shared between the watch that feeds it and the mappers that read it.
#[derive(Clone, Debug, Default)]
pub struct SecretIndex(Arc<Watched<Maps>>);

impl SecretIndex {
    /// Applies one watcher event.
    pub fn apply(&self, event: &watcher::Event<SecretRef>) {
        self.0.apply(event);
    }

    /// The SecretRefs that name `secret`.
    pub fn users(&self, secret: &str) -> Vec<ObjectRef<SecretRef>> {
        self.0.read(|maps| {
            maps.by_secret
                .get(secret)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(name: &str, secrets: &[&str]) -> SecretRef {
        let secrets: Vec<serde_json::Value> = secrets.iter().map(|s| serde_json::json!({ "name": s })).collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
            "metadata": { "name": name, "namespace": "ns" }, "spec": { "secrets": secrets }
        }))
        .expect("secretref")
    }

    fn names(index: &SecretIndex, secret: &str) -> Vec<String> {
        let mut v: Vec<String> = index.users(secret).into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(sr("a", &["db", "api"])));
        index.apply(&watcher::Event::Apply(sr("b", &["db"])));
        assert_eq!(names(&index, "db"), ["a", "b"]);
        index.apply(&watcher::Event::Apply(sr("a", &["api"])));
        assert_eq!(names(&index, "db"), ["b"], "a spec change moves the entry");
        index.apply(&watcher::Event::Delete(sr("b", &["db"])));
        assert!(names(&index, "db").is_empty());
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(sr("c", &["db"])));
        assert_eq!(
            names(&index, "api"),
            ["a"],
            "the old view serves until the re-list completes"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "db"), ["c"]);
        assert!(names(&index, "api").is_empty());
    }
}
