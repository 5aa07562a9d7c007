//! Shared backend reads: however many SecretRefs use a secret, it is read once per cache
//! lifetime (and concurrent misses for one secret share a single read). Entries are bounded in
//! number and age. Change detection keeps them honest: a watched store reports each secret's
//! newest version (`note_version`) and a cached entry of another version is never served; a
//! polled store confirms unchanged entries (`confirm`) and refills changed ones (`insert`), so
//! with nothing changed the SecretRefs' own resyncs never reach the backend.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use moka::{future::Cache, ops::compute::Op};

use crate::backend::{BackendError, SecretBackend, SecretId, StoredSecret};

/// (store identity, secret).
type Key = (String, SecretId);

/// The version a watch last reported for a secret; empty: deleted.
type Versions = Arc<RwLock<HashMap<Key, String>>>;

/// A read, and when it was made or last confirmed current.
type Entry = (Option<StoredSecret>, Instant);

/// How many times a read that returned an older version than the watch reported is repeated
/// (it joined a read started before the change).
const STALE_RETRIES: usize = 3;

/// What a poll learned of a secret by comparing its version with the cached read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The cached read has that version: it is confirmed current.
    Same,
    /// The cached read has another version (or existence): it is dropped.
    Changed,
    /// Nothing is cached to compare with.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct SharedReads {
    cache: Cache<Key, Entry>,
    latest: Versions,
}

fn key(identity: &str, id: &SecretId) -> Key {
    (identity.to_string(), id.clone())
}

fn version_of(read: &Option<StoredSecret>) -> Option<&str> {
    read.as_ref().map(|s| s.version.as_str())
}

impl SharedReads {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        SharedReads {
            cache: Cache::builder().max_capacity(max_entries).time_to_live(ttl).build(),
            latest: Versions::default(),
        }
    }

    /// Records the newest version of a secret seen by a watch (`None`: it was deleted).
    /// Returns whether that is news: another version than the last one reported or, for the
    /// first report, than the one cached.
    pub async fn note_version(&self, identity: &str, id: &SecretId, version: Option<&str>) -> bool {
        let key = key(identity, id);
        let previous = self
            .latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), version.unwrap_or_default().to_string());
        match previous {
            Some(previous) => previous != version.unwrap_or_default(),
            None => self
                .cache
                .get(&key)
                .await
                .is_some_and(|(cached, _)| version_of(&cached) != version),
        }
    }

    /// Compares a polled version with the cached read: an equal one is confirmed current (and
    /// kept for another lifetime), another one is dropped so the next caller reads again.
    pub async fn confirm(&self, identity: &str, id: &SecretId, version: Option<&str>) -> Observed {
        let key = key(identity, id);
        match self.cache.get(&key).await {
            None => Observed::Unknown,
            Some((cached, _)) if version_of(&cached) == version => {
                self.cache.insert(key, (cached, Instant::now())).await;
                Observed::Same
            }
            Some(_) => {
                self.cache.invalidate(&key).await;
                Observed::Changed
            }
        }
    }

    /// Stores a fresh read made on the callers' behalf (a poll's batch read of what changed).
    pub async fn insert(&self, identity: &str, id: &SecretId, read: Option<StoredSecret>) {
        self.cache.insert(key(identity, id), (read, Instant::now())).await;
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

    /// The secret, from the cache if read or confirmed less than `max_age` ago (a SecretRef's
    /// refresh interval, with an eighth more so that a poll confirming at that same interval
    /// always lands in time) or else, once for all concurrent callers, from the backend.
    /// Returns whether the backend was actually read. Errors are not cached.
    pub async fn get(
        &self,
        backend: &Arc<dyn SecretBackend>,
        environment: &str,
        name: &str,
        max_age: Duration,
    ) -> Result<(Option<StoredSecret>, bool), BackendError> {
        let id = SecretId::new(environment, name);
        let key = key(&backend.identity(), &id);
        let max_age = max_age + max_age / 8;
        if let Some((cached, at)) = self.cache.get(&key).await {
            if at.elapsed() < max_age && !self.is_stale(&key, &cached) {
                return Ok((cached, false));
            }
            self.drop_if_unchanged(&key, at).await;
        }
        let mut attempts = 0;
        loop {
            let read = std::sync::atomic::AtomicBool::new(false);
            let (value, at) = self
                .cache
                .try_get_with(key.clone(), async {
                    read.store(true, std::sync::atomic::Ordering::Relaxed);
                    backend.get(environment, name).await.map(|v| (v, Instant::now()))
                })
                .await
                .map_err(|e| (*e).clone())?;
            attempts += 1;
            if attempts < STALE_RETRIES && self.is_stale(&key, &value) {
                self.drop_if_unchanged(&key, at).await;
                continue;
            }
            return Ok((value, read.into_inner()));
        }
    }

    /// Drops the entry made at `at`, unless another caller has already replaced it. An
    /// unconditional drop would lose the fresh read of whichever concurrent caller found the same
    /// outdated entry first, and each of them would then read the backend again (a fan-out's
    /// callers all find the changed secret's old entry at once).
    async fn drop_if_unchanged(&self, key: &Key, at: Instant) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                std::future::ready(match entry {
                    Some(entry) if entry.value().1 == at => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backend::memory::MemoryBackend, model::SecretValue};

    #[tokio::test]
    async fn one_read_for_many_callers_until_invalidated() {
        let (memory, backend) = with_secret_a().await;
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
        assert!(
            reads
                .note_version(&backend.identity(), &SecretId::new("main", "a"), Some(&fresh))
                .await
        );
        let (value, was_read) = reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        assert!(was_read);
        assert_eq!(value.expect("exists").data["K"].expose(), "2");
        assert_eq!(memory.reads(), 4);
        assert!(
            !reads.get(&backend, "main", "a", MINUTE).await.expect("read").1,
            "the fresh entry is served"
        );

        memory.set_unavailable(true);
        reads
            .note_version(&backend.identity(), &SecretId::new("main", "a"), None)
            .await;
        assert!(reads.get(&backend, "main", "a", MINUTE).await.is_err());
        memory.set_unavailable(false);
        assert!(
            reads.get(&backend, "main", "a", MINUTE).await.is_ok(),
            "errors are not cached"
        );
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A memory backend holding secret `a` of environment `main` (K=1), and it as the trait object.
    async fn with_secret_a() -> (Arc<MemoryBackend>, Arc<dyn SecretBackend>) {
        let memory = Arc::new(MemoryBackend::new());
        memory
            .create("main", "a", [("K".to_string(), SecretValue::new("1"))].into())
            .await
            .expect("create");
        let backend: Arc<dyn SecretBackend> = memory.clone();
        (memory, backend)
    }

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
    async fn polls_confirm_unchanged_reads_and_drop_changed_ones() {
        let (memory, backend) = with_secret_a().await;
        let (identity, a) = (backend.identity(), SecretId::new("main", "a"));
        let reads = SharedReads::new(100, MINUTE);
        let short = Duration::from_millis(40);
        assert_eq!(reads.confirm(&identity, &a, Some("x")).await, Observed::Unknown);
        reads.get(&backend, "main", "a", short).await.expect("read");
        let v1 = memory.get("main", "a").await.expect("get").expect("exists").version;
        tokio::time::sleep(short).await;
        assert_eq!(reads.confirm(&identity, &a, Some(&v1)).await, Observed::Same);
        assert!(
            !reads.get(&backend, "main", "a", short).await.expect("read").1,
            "a confirmed entry is served past the age of its read"
        );
        assert_eq!(reads.confirm(&identity, &a, Some("other")).await, Observed::Changed);
        assert!(reads.get(&backend, "main", "a", MINUTE).await.expect("read").1);
        let fresh = memory.get("main", "a").await.expect("get");
        reads.insert(&identity, &a, fresh).await;
        assert!(!reads.get(&backend, "main", "a", MINUTE).await.expect("read").1);
    }

    #[tokio::test]
    async fn the_first_watch_report_is_news_only_if_it_differs_from_the_cache() {
        let (memory, backend) = with_secret_a().await;
        let (identity, a) = (backend.identity(), SecretId::new("main", "a"));
        let reads = SharedReads::new(100, MINUTE);
        reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        let v1 = memory.get("main", "a").await.expect("get").expect("exists").version;
        assert!(!reads.note_version(&identity, &a, Some(&v1)).await);
        assert!(!reads.note_version(&identity, &a, Some(&v1)).await);
        assert!(reads.note_version(&identity, &a, Some("later")).await);
        assert!(
            !reads
                .note_version(&identity, &SecretId::new("main", "b"), Some("1"))
                .await
        );
    }

    /// Many callers find the same outdated entry at once (a fan-out after a change, or the
    /// refresh of many SecretRefs after its age): one of them reads, the others share that read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_finding_an_outdated_entry_share_one_read() {
        let (memory, backend) = with_secret_a().await;
        memory.set_read_delay(Duration::from_millis(5));
        let (identity, a) = (backend.identity(), SecretId::new("main", "a"));
        let reads = SharedReads::new(100, MINUTE);
        reads.get(&backend, "main", "a", MINUTE).await.expect("read");
        let callers = |max_age: Duration| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    let (reads, backend) = (reads.clone(), backend.clone());
                    tokio::spawn(async move { reads.get(&backend, "main", "a", max_age).await })
                })
                .collect();
            futures::future::join_all(handles)
        };
        for round in 1..=5u64 {
            memory
                .replace("main", "a", [("K".to_string(), SecretValue::new("2"))].into())
                .await
                .expect("replace");
            let fresh = memory.get("main", "a").await.expect("get").expect("exists").version;
            let before = memory.reads();
            reads.note_version(&identity, &a, Some(&fresh)).await;
            for result in callers(MINUTE).await {
                let (value, _) = result.expect("joined").expect("read");
                assert_eq!(value.expect("exists").version, fresh, "round {round}");
            }
            assert_eq!(
                memory.reads() - before,
                1,
                "changed, round {round}: one read for 64 callers"
            );
        }
        // The age is long against the read's 5 ms, so that no caller delayed by a busy machine
        // finds the round's fresh read too old in turn.
        let max_age = Duration::from_millis(200);
        for round in 1..=5u64 {
            tokio::time::sleep(max_age * 2).await;
            let before = memory.reads();
            for result in callers(max_age).await {
                result.expect("joined").expect("read");
            }
            assert_eq!(
                memory.reads() - before,
                1,
                "expired, round {round}: one read for 64 callers"
            );
        }
    }

    /// The interleaving the shared read above cannot force: a caller finds the outdated entry,
    /// another reads meanwhile, then the first drops what it found. The fresh read survives.
    #[tokio::test]
    async fn dropping_an_outdated_entry_keeps_a_fresher_one() {
        let (memory, backend) = with_secret_a().await;
        let key = key(&backend.identity(), &SecretId::new("main", "a"));
        let reads = SharedReads::new(100, MINUTE);
        let short = Duration::from_millis(10);
        reads.get(&backend, "main", "a", short).await.expect("read");
        let (_, found) = reads.cache.get(&key).await.expect("cached");
        tokio::time::sleep(short * 2).await;
        reads
            .get(&backend, "main", "a", short)
            .await
            .expect("read again, too old");
        assert_eq!(memory.reads(), 2);
        reads.drop_if_unchanged(&key, found).await;
        assert!(!reads.get(&backend, "main", "a", MINUTE).await.expect("read").1);
        assert_eq!(memory.reads(), 2, "the fresh entry was kept");
        let (_, fresh) = reads.cache.get(&key).await.expect("cached");
        reads.drop_if_unchanged(&key, fresh).await;
        assert!(reads.get(&backend, "main", "a", MINUTE).await.expect("read").1);
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
