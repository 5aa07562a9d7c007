//! When each SecretRef syncs again though nothing it watches changed: its refreshInterval.
//!
//! kube's Controller can requeue an object itself, but its scheduler keeps each request whole
//! (the object's reference with name, namespace, resourceVersion and uid, once in a map and once
//! in a delay queue, with the reason): about 650 bytes per SecretRef, the second largest part of
//! the operator's heap at 10,000 SecretRefs (README, "Benchmark"). Here a refresh is one entry
//! holding the SecretRef's `namespace/name` once, handed to the controller as a trigger when
//! it is due. kube's requeue stays for retries after a failure: few objects, briefly.
//!
//! Refreshes fall due on ticks: at 100,000 SecretRefs refreshing every 30 s, one wake-up per
//! refresh would be 3,333 a second; on ticks of 100 ms it is ten, each running the refreshes
//! due in it, none of them more than a tick late.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    task::Poll,
    time::Duration,
};

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::api::SecretRef;

/// The refreshes due, by `namespace/name`; at most one per SecretRef.
#[derive(Debug, Default, Clone)]
pub struct Refresh(Arc<Mutex<Queue>>);

/// The length of a tick.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Queue {
    due: DelayQueue<Arc<str>>,
    keys: HashMap<Arc<str>, delay_queue::Key>,
    /// Where the ticks are counted from.
    epoch: Instant,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            due: DelayQueue::new(),
            keys: HashMap::new(),
            epoch: Instant::now(),
        }
    }
}

impl Queue {
    /// The first tick at or after `after` from now.
    fn tick_after(&self, after: Duration) -> Instant {
        let since = (Instant::now() + after).duration_since(self.epoch);
        let ticks = since.as_nanos().div_ceil(TICK.as_nanos());
        self.epoch + TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
    }
}

impl Refresh {
    /// Syncs `key` again `after` from now (at the tick that follows), instead of when it was
    /// due before.
    pub fn schedule(&self, key: &str, after: Duration) {
        let mut queue = self.lock();
        let at = queue.tick_after(after);
        let Queue { due, keys, .. } = &mut *queue;
        match keys.get(key) {
            Some(k) => due.reset_at(k, at),
            None => {
                let key: Arc<str> = Arc::from(key);
                let k = due.insert_at(key.clone(), at);
                keys.insert(key, k);
            }
        }
    }

    /// A deleted SecretRef is not refreshed.
    pub fn forget(&self, key: &str) {
        let mut queue = self.lock();
        if let Some(k) = queue.keys.remove(key) {
            queue.due.remove(&k);
        }
    }

    /// How many refreshes are scheduled.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// The SecretRefs whose refresh is due, as they fall due (for the controller's
    /// `reconcile_on`; one stream per [`Refresh`]: the queue wakes one task).
    pub fn triggers(&self) -> impl Stream<Item = ObjectRef<SecretRef>> + Send + 'static {
        let refresh = self.clone();
        futures::stream::poll_fn(move |cx| {
            let mut queue = refresh.lock();
            match queue.due.poll_expired(cx) {
                Poll::Ready(Some(expired)) => {
                    let key = expired.into_inner();
                    queue.keys.remove(&key);
                    let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
                    Poll::Ready(Some(ObjectRef::new(name).within(namespace)))
                }
                // Empty: the next insert wakes this task (the queue keeps its waker).
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_secretref_is_due_once_at_its_latest_schedule() {
        let refresh = Refresh::default();
        let mut due = Box::pin(refresh.triggers());
        let start = Instant::now();
        refresh.schedule("ns/a", Duration::from_secs(30));
        refresh.schedule("ns/b", Duration::from_secs(10));
        refresh.schedule("ns/a", Duration::from_secs(20));
        refresh.schedule("ns/gone", Duration::from_secs(5));
        refresh.forget("ns/gone");
        assert_eq!(refresh.len(), 2, "one entry per SecretRef");

        let b = due.next().await.expect("b");
        assert_eq!((b.name.as_str(), b.namespace.as_deref()), ("b", Some("ns")));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let a = due.next().await.expect("a");
        assert_eq!(a.name, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(20), "rescheduled, not twice");
        assert_eq!(refresh.len(), 0, "a refresh that fell due is gone");

        // Refreshes due within one tick come due together, at its end, none early.
        let tick_start = Instant::now();
        refresh.schedule("ns/d", Duration::from_millis(1_010));
        refresh.schedule("ns/e", Duration::from_millis(1_090));
        let (d, e) = (due.next().await.expect("d"), due.next().await.expect("e"));
        let mut names = [d.name, e.name];
        names.sort();
        assert_eq!(names, ["d", "e"]);
        assert_eq!(tick_start.elapsed(), Duration::from_millis(1_100), "both at the tick");

        // An empty queue waits for the next schedule, then wakes.
        let waiter = tokio::spawn(async move { due.next().await.map(|r| r.name) });
        tokio::time::sleep(Duration::from_secs(60)).await;
        refresh.schedule("ns/c", Duration::from_secs(1));
        assert_eq!(waiter.await.expect("join"), Some("c".to_string()));
    }
}
