//! Shared backend reads: however many SecretRefs use a secret, it is read once per cache
//! lifetime (and concurrent misses for one secret share a single read). Entries are bounded in
//! number and age. A store that can be watched reports each secret's newest version
//! (`note_version`, called synchronously from the watch), and a cached entry of another version
//! is never served: an event-driven sync always reads the data that triggered it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use moka::future::Cache;

use crate::backend::{BackendError, SecretBackend, StoredSecret};

/// (store identity, environment, secret name).
type Key = (String, String, String);

/// The version a watch last reported for a secret; empty: deleted.
type Versions = Arc<RwLock<HashMap<Key, String>>>;

/// A read and when it was made.
type Entry = (Option<StoredSecret>, Instant);

#[derive(Clone, Debug)]
pub struct SharedReads {
    cache: Cache<Key, Entry>,
    latest: Versions,
}

impl SharedReads {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        SharedReads {
            cache: Cache::builder().max_capacity(max_entries).time_to_live(ttl).build(),
            latest: Versions::default(),
        }
    }

    /// Records the newest version of a secret seen by a watch (`None`: it was deleted).
    pub fn note_version(&self, store_identity: &str, environment: &str, name: &str, version: Option<&str>) {
        let key = (store_identity.to_string(), environment.to_string(), name.to_string());
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, version.unwrap_or_default().to_string());
    }

    /// Whether a cached value is older than what the watch last reported.
    fn is_stale(&self, key: &Key, cached: &Option<StoredSecret>) -> bool {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        match (latest.get(key), cached) {
            (None, _) => false,
            (Some(v), Some(s)) => *v != s.version,
            (Some(v), None) => !v.is_empty(),
        }
    }

    /// The secret, from the cache if read less than `max_age` ago (a SecretRef's refresh
    /// interval: one read per secret per refresh, however many SecretRefs share it) or else,
    /// once for all concurrent callers, from the backend. Returns whether the backend was
    /// actually read. Errors are not cached.
    pub async fn get(
        &self,
        backend: &Arc<dyn SecretBackend>,
        environment: &str,
        name: &str,
        max_age: Duration,
    ) -> Result<(Option<StoredSecret>, bool), BackendError> {
        let key = (backend.identity(), environment.to_string(), name.to_string());
        if let Some((cached, at)) = self.cache.get(&key).await {
            if at.elapsed() < max_age && !self.is_stale(&key, &cached) {
                return Ok((cached, false));
            }
            self.cache.invalidate(&key).await;
        }
        let read = std::sync::atomic::AtomicBool::new(false);
        let value = self
            .cache
            .try_get_with(key, async {
                read.store(true, std::sync::atomic::Ordering::Relaxed);
                backend.get(environment, name).await.map(|v| (v, Instant::now()))
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok((value.0, read.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backend::memory::MemoryBackend, model::SecretValue};

    #[tokio::test]
    async fn one_read_for_many_callers_until_invalidated() {
        let memory = Arc::new(MemoryBackend::new());
        memory
            .create("main", "a", [("K".to_string(), SecretValue::new("1"))].into())
            .await
            .expect("create");
        let backend: Arc<dyn SecretBackend> = memory.clone();
        let reads = SharedReads::new(100, Duration::from_secs(60));
        let results = futures::future::join_all((0..50).map(|_| reads.get(&backend, "main", "a", MINUTE))).await;
        assert!(results.iter().all(|r| r.as_ref().is_ok_and(|(v, _)| v.is_some())));
        assert_eq!(memory.reads(), 1, "50 concurrent callers, one backend read");
        reads
            .get(&backend, "main", "missing", MINUTE)
            .await
            .expect("absent is cached too");
        reads.get(&backend, "main", "missing", MINUTE).await.expect("absent");
        assert_eq!(memory.reads(), 2);

        // A watch reports a newer version: the cached entry is not served again.
        memory
            .replace("main", "a", [("K".to_string(), SecretValue::new("2"))].into())
            .await
            .expect("replace");
        let fresh = memory.get("main", "a").await.expect("get").expect("exists").version;
        reads.note_version(&backend.identity(), "main", "a", Some(&fresh));
        let (value, was_read) = reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        assert!(was_read);
        assert_eq!(value.expect("exists").data["K"].expose(), "2");
        assert_eq!(memory.reads(), 4);
        assert!(
            !reads.get(&backend, "main", "a", MINUTE).await.expect("read").1,
            "the fresh entry is served"
        );

        memory.set_unavailable(true);
        reads.note_version(&backend.identity(), "main", "a", None);
        assert!(reads.get(&backend, "main", "a", MINUTE).await.is_err());
        memory.set_unavailable(false);
        assert!(
            reads.get(&backend, "main", "a", MINUTE).await.is_ok(),
            "errors are not cached"
        );
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn entries_older_than_the_callers_refresh_interval_are_read_again() {
        let memory = Arc::new(MemoryBackend::new());
        let backend: Arc<dyn SecretBackend> = memory.clone();
        let reads = SharedReads::new(100, MINUTE);
        reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        tokio::time::sleep(Duration::from_millis(30)).await;
        reads.get(&backend, "main", "a", MINUTE).await.expect("cached");
        assert_eq!(memory.reads(), 1);
        reads
            .get(&backend, "main", "a", Duration::from_millis(10))
            .await
            .expect("too old for this caller");
        assert_eq!(memory.reads(), 2);
    }

    #[tokio::test]
    async fn entries_expire() {
        let memory = Arc::new(MemoryBackend::new());
        let backend: Arc<dyn SecretBackend> = memory.clone();
        let reads = SharedReads::new(100, Duration::from_millis(50));
        reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        tokio::time::sleep(Duration::from_millis(120)).await;
        reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        assert_eq!(memory.reads(), 2);
    }
}
