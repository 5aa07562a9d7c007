//! Change detection, one task per store identity in use: the backend's push feed where it has
//! one (the kubernetes store watches its own namespace), else a poll of its versions once per
//! refresh. A changed secret is read once for everyone (refilling the shared reads) and wakes
//! exactly the SecretRefs that read it; an unchanged one is confirmed, so the SecretRefs' own
//! resyncs cost the backend nothing. Tasks start and stop as stores come and go.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures::{StreamExt, channel::mpsc, stream::BoxStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{
    reads::{Observed, SharedReads},
    usage::{Ref, Usage},
};
use crate::{
    backend::{Change, SecretBackend, SecretId},
    metrics::{Metrics, PollLabels},
};

/// The backends in use, by identity.
pub type Current = HashMap<String, Arc<dyn SecretBackend>>;

struct Shared {
    usage: Usage,
    reads: SharedReads,
    trigger: mpsc::UnboundedSender<Ref>,
    /// How often to poll a store whose SecretRefs all refresh only on changes.
    idle_interval: Duration,
    metrics: Arc<Metrics>,
    current: RwLock<Current>,
}

impl Shared {
    fn wake_users(&self, identity: &str, id: &SecretId) {
        let users = self.usage.users(identity, id);
        debug!(store = %identity, secret = %id.name, users = users.len(), "waking the SecretRefs that read it");
        for r in users {
            // The receiver lives as long as the SecretRef controller; after it, nobody listens.
            let _ = self.trigger.unbounded_send(r);
        }
    }
}

/// The change-detection tasks.
pub struct Feeds {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds").finish_non_exhaustive()
    }
}

impl Feeds {
    /// The feeds, and the stream of SecretRefs they wake.
    pub fn new(
        usage: Usage,
        reads: SharedReads,
        metrics: Arc<Metrics>,
        idle_interval: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<Ref>) {
        let (trigger, woken) = mpsc::unbounded();
        let shared = Arc::new(Shared {
            usage,
            reads,
            trigger,
            idle_interval,
            metrics,
            current: RwLock::default(),
        });
        let feeds = Feeds {
            shared,
            tasks: Mutex::default(),
        };
        (feeds, woken)
    }

    /// Runs one task for each backend identity in `current` and none for any other.
    pub fn sync(&self, current: Current) {
        *self.shared.current.write().unwrap_or_else(|p| p.into_inner()) = current.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|identity, task| {
            let keep = current.contains_key(identity) && !task.is_finished();
            if !keep {
                debug!(store = %identity, "stopping change detection");
                task.abort();
            }
            keep
        });
        for (identity, backend) in current {
            if tasks.contains_key(&identity) {
                continue;
            }
            let shared = self.shared.clone();
            let task = match backend.watch() {
                Some(feed) => {
                    debug!(store = %identity, "watching for changes");
                    tokio::spawn(follow(shared, identity.clone(), feed))
                }
                None => {
                    debug!(store = %identity, "polling for changes");
                    tokio::spawn(poll(shared, identity.clone()))
                }
            };
            tasks.insert(identity, task);
        }
    }

    /// Stops every task.
    pub fn stop(&self) {
        self.sync(Current::new());
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).values() {
            task.abort();
        }
    }
}

async fn follow(shared: Arc<Shared>, identity: String, mut feed: BoxStream<'static, Change>) {
    while let Some(change) = feed.next().await {
        let news = shared
            .reads
            .note_version(&identity, &change.id, change.version.as_deref())
            .await;
        debug!(store = %identity, secret = %change.id.name, environment = %change.id.environment, news, "secret reported by the store's feed");
        if news {
            shared.wake_users(&identity, &change.id);
        }
    }
    debug!(store = %identity, "the store's feed ended");
}

/// How often a waiting poller looks again at how often it should poll (a SecretRef with a
/// shorter refresh interval may have appeared).
const RECHECK: Duration = Duration::from_secs(5);

/// Polls at a fixed rate: the shortest refresh interval among the store's SecretRefs.
async fn poll(shared: Arc<Shared>, identity: String) {
    // The versions seen by the last poll: a change is also noticed for a secret whose cached
    // read has expired meanwhile.
    let mut seen: HashMap<SecretId, Option<String>> = HashMap::new();
    let mut last = tokio::time::Instant::now();
    loop {
        let (_, refresh) = shared.usage.in_use(&identity);
        let period = refresh.unwrap_or(shared.idle_interval);
        let due = last + period;
        let now = tokio::time::Instant::now();
        if due > now {
            tokio::time::sleep((due - now).min(RECHECK)).await;
            continue;
        }
        // A fixed rate, unless a whole period was missed.
        last = if now - due < period { due } else { now };
        let backend = shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&identity)
            .cloned();
        let Some(backend) = backend else { return };
        let (ids, _) = shared.usage.in_use(&identity);
        if ids.is_empty() {
            continue;
        }
        let result = poll_once(&shared, &identity, backend.as_ref(), &ids, &mut seen).await;
        shared.metrics.change_polls.get_or_create(&PollLabels { result }).inc();
    }
}

async fn poll_once(
    shared: &Shared,
    identity: &str,
    backend: &dyn SecretBackend,
    ids: &[SecretId],
    seen: &mut HashMap<SecretId, Option<String>>,
) -> &'static str {
    let versions = match backend.versions(ids).await {
        Ok(v) => v,
        Err(e) => {
            // The SecretRefs' own resyncs then read for themselves and report the failure.
            warn!(store = %identity, error = %e, "polling secret versions failed");
            return "error";
        }
    };
    seen.retain(|id, _| ids.binary_search(id).is_ok());
    let mut changed = Vec::new();
    for (id, version) in versions {
        let observed = shared.reads.confirm(identity, &id, version.as_deref()).await;
        let before = seen.insert(id.clone(), version.clone());
        let news =
            observed == Observed::Changed || (observed == Observed::Unknown && before.is_some_and(|b| b != version));
        if news {
            changed.push((id, version));
        }
    }
    if changed.is_empty() {
        return "unchanged";
    }
    // One batch read of what changed, for all its users, before they are woken.
    let present: Vec<SecretId> = changed
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    match backend.get_many(&present).await {
        Ok(read) => {
            for (id, secret) in read {
                shared.reads.insert(identity, &id, secret).await;
            }
        }
        Err(e) => warn!(store = %identity, error = %e, "reading changed secrets failed"),
    }
    for (id, version) in &changed {
        if version.is_none() {
            shared.reads.insert(identity, id, None).await;
        }
        shared.wake_users(identity, id);
    }
    debug!(store = %identity, changed = changed.len(), "secrets changed");
    "changed"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::{SecretBackend, memory::MemoryBackend},
        model::secret_data,
    };

    fn sr(name: &str) -> Ref {
        kube::runtime::reflector::ObjectRef::new(name).within("ns")
    }

    /// With nothing changed a poll confirms the cached reads (no value is read); a change is
    /// read once and wakes only the SecretRefs that read that secret.
    #[tokio::test]
    async fn a_poll_reads_only_what_changed_and_wakes_only_its_users() {
        let memory = Arc::new(MemoryBackend::new());
        memory.create("main", "a", secret_data(&[("K", "1")])).await.expect("a");
        memory.create("main", "b", secret_data(&[("K", "1")])).await.expect("b");
        let backend: Arc<dyn SecretBackend> = memory.clone();
        let identity = backend.identity();
        let usage = Usage::default();
        let minute = Duration::from_secs(60);
        usage.record(&sr("uses-a"), &identity, vec![SecretId::new("main", "a")], minute);
        usage.record(&sr("uses-b"), &identity, vec![SecretId::new("main", "b")], minute);
        let reads = SharedReads::new(100, minute);
        let (feeds, mut woken) = Feeds::new(usage, reads.clone(), Arc::default(), minute);
        for name in ["a", "b"] {
            reads.get(&backend, "main", name, minute).await.expect("first read");
        }
        let ids = vec![SecretId::new("main", "a"), SecretId::new("main", "b")];
        let mut seen = HashMap::new();
        let before = memory.reads();
        let result = poll_once(&feeds.shared, &identity, backend.as_ref(), &ids, &mut seen).await;
        assert_eq!(result, "unchanged");
        // MemoryBackend has no cheaper `versions` than reading: count only what follows it.
        let after_versions = memory.reads();
        assert_eq!(after_versions - before, 2);
        assert!(woken.try_recv().is_err(), "nothing woken");

        memory
            .replace("main", "b", secret_data(&[("K", "2")]))
            .await
            .expect("change");
        let result = poll_once(&feeds.shared, &identity, backend.as_ref(), &ids, &mut seen).await;
        assert_eq!(result, "changed");
        let woken_ref = woken.try_recv().expect("one woken");
        assert_eq!(woken_ref.name, "uses-b");
        assert!(woken.try_recv().is_err(), "only the user of b");
        let (read, from_backend) = reads.get(&backend, "main", "b", minute).await.expect("read");
        assert!(!from_backend, "the poll refilled the cache");
        assert_eq!(read.expect("exists").data["K"].expose(), "2");

        memory.delete("main", "a").await.expect("delete");
        poll_once(&feeds.shared, &identity, backend.as_ref(), &ids, &mut seen).await;
        assert_eq!(woken.try_recv().expect("woken").name, "uses-a");
        let (read, from_backend) = reads.get(&backend, "main", "a", minute).await.expect("read");
        assert!(read.is_none() && !from_backend, "a deletion is cached as absent");
    }

    #[tokio::test]
    async fn tasks_follow_the_stores_in_use() {
        let backend: Arc<dyn SecretBackend> = Arc::new(MemoryBackend::new());
        let minute = Duration::from_secs(60);
        let (feeds, _woken) = Feeds::new(Usage::default(), SharedReads::new(10, minute), Arc::default(), minute);
        feeds.sync([(backend.identity(), backend.clone())].into());
        assert_eq!(feeds.tasks.lock().expect("lock").len(), 1);
        feeds.sync([(backend.identity(), backend.clone())].into());
        assert_eq!(feeds.tasks.lock().expect("lock").len(), 1, "one task per identity");
        feeds.stop();
        assert!(feeds.tasks.lock().expect("lock").is_empty());
    }
}
