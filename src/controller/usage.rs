//! Which SecretRefs read which secrets of which store. Each sync records its reads once the
//! store is resolved (whatever the outcome, so a SecretRef waiting for a missing secret is
//! woken when it appears). A change of one secret then wakes exactly the SecretRefs that read
//! it, and a poller knows which secrets are in use and how often to look.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{api::SecretRef, backend::SecretId};

/// A SecretRef by namespace and name only (no resourceVersion or uid to keep).
pub type Ref = ObjectRef<SecretRef>;

pub fn object_ref(sr: &SecretRef) -> Ref {
    let r = ObjectRef::new(&sr.name_any());
    match sr.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// A SecretRef as the maps keep it: `namespace/name` in one allocation, shared by both maps
/// (an `ObjectRef` is 96 bytes and two more allocations, for each of tens of thousands).
type Name = Arc<str>;

fn name_of(r: &Ref) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    }
}

fn ref_of(name: &str) -> Ref {
    match name.split_once('/') {
        Some((ns, name)) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(name),
    }
}

/// A secret of a store: the store's identity and the secret. One shared copy per secret,
/// however many SecretRefs read it.
type Key = Arc<(String, SecretId)>;

#[derive(Debug, PartialEq)]
struct Reads {
    keys: Vec<Key>,
    refresh: Duration,
}

/// Both directions of the relation. A SecretRef is one shared `Arc<Ref>` and each secret one
/// shared [`Key`], so at tens of thousands of SecretRefs the maps hold pointers, not copies
/// of names.
#[derive(Debug, Default)]
struct Maps {
    by_ref: HashMap<Name, Reads>,
    by_secret: HashMap<Key, HashSet<Name>>,
}

impl Maps {
    fn forget(&mut self, r: &str) {
        let Some(reads) = self.by_ref.remove(r) else { return };
        for key in reads.keys {
            if let Some(set) = self.by_secret.get_mut(&key) {
                set.remove(r);
                if set.is_empty() {
                    self.by_secret.remove(&key);
                }
            }
        }
    }

    /// The shared copy of a key, if some SecretRef reads it already.
    fn key(&self, identity: &str, id: SecretId) -> Key {
        let key = (identity.to_string(), id);
        self.by_secret
            .get_key_value(&key)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::new(key))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Usage(Arc<RwLock<Maps>>);

impl Usage {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what `r` reads: `ids` of the store `identity`, every `refresh` (zero: only on
    /// changes).
    pub fn record(&self, r: &Ref, identity: &str, ids: Vec<SecretId>, refresh: Duration) {
        let name = name_of(r);
        let reads = {
            let maps = self.read();
            let reads = Reads {
                keys: ids.into_iter().map(|id| maps.key(identity, id)).collect(),
                refresh,
            };
            if maps.by_ref.get(name.as_str()) == Some(&reads) {
                return;
            }
            reads
        };
        let mut maps = self.write();
        maps.forget(&name);
        let shared: Name = name.into();
        for key in &reads.keys {
            maps.by_secret.entry(key.clone()).or_default().insert(shared.clone());
        }
        maps.by_ref.insert(shared, reads);
    }

    /// Forgets a SecretRef that was deleted (or whose store went away).
    pub fn forget(&self, r: &Ref) {
        self.write().forget(&name_of(r));
    }

    /// Keeps only the SecretRefs `keep` accepts (after a re-list of SecretRefs).
    pub fn retain(&self, keep: impl Fn(&Ref) -> bool) {
        let mut maps = self.write();
        let gone: Vec<Name> = maps.by_ref.keys().filter(|n| !keep(&ref_of(n))).cloned().collect();
        for r in &gone {
            maps.forget(r);
        }
    }

    /// The SecretRefs that read `id` from the store `identity`.
    pub fn users(&self, identity: &str, id: &SecretId) -> Vec<Ref> {
        self.read()
            .by_secret
            .get(&(identity.to_string(), id.clone()))
            .map(|set| set.iter().map(|n| ref_of(n)).collect())
            .unwrap_or_default()
    }

    /// The secrets of store `identity` that some SecretRef reads, and the shortest non-zero
    /// refresh interval among those SecretRefs (`None`: all refresh only on changes).
    pub fn in_use(&self, identity: &str) -> (Vec<SecretId>, Option<Duration>) {
        let maps = self.read();
        let mut ids: Vec<SecretId> = maps
            .by_secret
            .keys()
            .filter(|k| k.0 == identity)
            .map(|k| k.1.clone())
            .collect();
        ids.sort();
        let refresh = maps
            .by_ref
            .values()
            .filter(|r| r.keys.iter().any(|k| k.0 == identity) && !r.refresh.is_zero())
            .map(|r| r.refresh)
            .min();
        (ids, refresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> Ref {
        ObjectRef::new(name).within("ns")
    }

    fn ids(names: &[&str]) -> Vec<SecretId> {
        names.iter().map(|n| SecretId::new("main", *n)).collect()
    }

    fn users(u: &Usage, identity: &str, name: &str) -> Vec<String> {
        let mut v: Vec<String> = u
            .users(identity, &SecretId::new("main", name))
            .into_iter()
            .map(|r| r.name)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_moves_and_forgets() {
        let u = Usage::default();
        let minute = Duration::from_secs(60);
        u.record(&r("a"), "s1", ids(&["db", "api"]), minute);
        u.record(&r("b"), "s1", ids(&["db"]), Duration::ZERO);
        u.record(&r("c"), "s2", ids(&["db"]), Duration::from_secs(5));
        assert_eq!(users(&u, "s1", "db"), ["a", "b"]);
        assert_eq!(users(&u, "s2", "db"), ["c"], "stores are apart");
        assert_eq!(u.in_use("s1"), (ids(&["api", "db"]), Some(minute)));
        u.record(&r("a"), "s1", ids(&["api"]), minute);
        assert_eq!(users(&u, "s1", "db"), ["b"], "a spec change moves the entry");
        u.forget(&r("b"));
        assert!(users(&u, "s1", "db").is_empty());
        assert_eq!(u.in_use("s1"), (ids(&["api"]), Some(minute)));
        u.retain(|r| r.name != "c");
        assert_eq!(u.in_use("s2"), (vec![], None));
    }

    #[test]
    fn a_kept_name_gives_back_the_same_reference() {
        for r in [r("a"), ObjectRef::new("cluster-wide")] {
            assert_eq!(ref_of(&name_of(&r)), r);
        }
    }
}
