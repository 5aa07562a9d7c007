//! What every reconcile shares: the client, caches of the stores, the Event publisher, the hash
//! key and the per-object backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, runtime::reflector::Store};

use crate::{
    api::{ClusterSecretStore, SecretStore},
    hash::HashKey,
    metrics::Metrics,
};

pub struct Context {
    pub client: Client,
    pub events: super::events::Publisher,
    pub hash_key: HashKey,
    pub secret_stores: Store<SecretStore>,
    pub cluster_stores: Store<ClusterSecretStore>,
    /// Flip to true once each store cache has listed (see `wait_for_stores`).
    pub stores_synced: [tokio::sync::watch::Receiver<bool>; 2],
    /// False in a namespace-scoped install: cluster-scoped kinds are neither watched nor used.
    pub cluster_scoped: bool,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    /// The resourceVersion of each Secret labelled as ours.
    pub targets: super::watched::TargetVersions,
    /// Backend reads shared by all SecretRefs.
    pub reads: super::reads::SharedReads,
    /// Which SecretRefs read which secrets (change detection wakes them by it).
    pub usage: super::usage::Usage,
    /// Each store's backend, and change detection for them.
    pub backends: Arc<super::backends::Backends>,
    /// Cache lifetime of a shared read when a SecretRef's refresh interval is 0.
    pub read_ttl: Duration,
    /// What was last written to each target, to skip reading unchanged ones.
    pub written: super::target::WriteMemo,
    /// The status last decided for each SecretRef, until the watch shows it written.
    pub statuses: Arc<super::status::StatusMemo>,
    /// Writes the decided statuses behind the syncs.
    pub status_queue: super::status_queue::StatusQueue,
    /// Counts the syncs running: statuses and Events wait for them.
    pub gate: Arc<super::priority::Gate>,
    /// When each SecretRef syncs again at its refresh interval.
    pub refresh: super::refresh::Refresh,
}

impl Context {
    /// Waits until both store caches have listed once, so that "store not found" is true.
    /// (Not `Store::wait_until_ready`: its one-waker channel can lose the wake-up of all but
    /// one concurrent waiter, and the controllers already wait on it.)
    pub async fn wait_for_stores(&self) {
        for synced in &self.stores_synced {
            let _ = synced.clone().wait_for(|ready| *ready).await;
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Exponential backoff per object for transient failures: 1 s, 2 s, 4 s ... capped at 5 min,
/// reset by a success. Keyed by `namespace/name`.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(1);
    pub const CAP: Duration = Duration::from_secs(300);

    /// Records a failure and returns how long to wait before the next try.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = Self::BASE.saturating_mul(1u32 << (*n).min(16)).min(Self::CAP);
        *n = n.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.next("ns/a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.next("ns/b").as_secs(), 1, "per object");
        b.reset("ns/a");
        assert_eq!(b.next("ns/a").as_secs(), 1);
    }
}
