//! Kubernetes Events for SecretRefs. secretref publishes only on a real change or a new
//! failure reason, so it needs no client-side de-duplication: each Event is one create, and
//! nothing is cached (kube's `Recorder` keeps every Event it sent for minutes, which at tens of
//! thousands of SecretRefs is most of the operator's memory).
//!
//! Events go through a bounded queue to a few senders, like client-go's broadcaster: a burst
//! (a store change used by thousands of SecretRefs) does not hold thousands of requests in
//! memory, and the senders wait for the syncs to run first ([`Gate`], each Event as long as its
//! [`Urgency`] allows), so Events never compete with the target writes for the API server;
//! when the queue is full an Event is dropped and counted, never the sync.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use super::priority::{Gate, Lanes, Urgency};

#[derive(Clone, Debug, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Events waiting to be sent, at most; more are dropped.
const QUEUE: usize = 1024;
/// Events sent at once, per lane.
const SENDERS: usize = 4;

/// An Event waiting to be sent: what it says, not the Event itself (an Event object is about
/// 1 KiB before its strings; a fan-out queues a thousand of them).
struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: &'static str,
    note: String,
    at: jiff::Timestamp,
}

impl Pending {
    /// The Event to create, in the regarding object's namespace.
    fn event(self, namespace: &str, instance: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    self.regarding.name.as_deref().unwrap_or(CONTROLLER),
                    self.at.as_nanosecond()
                )),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            event_time: Some(MicroTime(self.at)),
            action: Some("Sync".into()),
            reason: Some(self.reason.to_string()),
            note: Some(self.note),
            type_: Some(format!("{:?}", self.type_)),
            regarding: Some(self.regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(instance.to_string()),
            ..Default::default()
        }
    }
}

#[derive(Clone)]
pub struct Publisher {
    queue: Lanes<Pending>,
    /// Events queued or being sent, both lanes together.
    queued: Arc<AtomicUsize>,
    dropped: Counter,
    instance: Arc<str>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("instance", &self.instance).finish()
    }
}

/// The reporting controller's name on every Event.
pub const CONTROLLER: &str = "secretref";

impl Publisher {
    /// Starts the senders (they stop when every Publisher is dropped).
    pub fn start(client: Client, instance: Option<String>, dropped: Counter, gate: Arc<Gate>) -> Self {
        let instance: Arc<str> = instance.as_deref().unwrap_or(CONTROLLER).into();
        let queued = Arc::new(AtomicUsize::new(0));
        let (sent, reporter) = (queued.clone(), instance.clone());
        let queue = Lanes::start(gate, SENDERS, std::future::pending(), move |pending: Pending| {
            let namespace = pending.regarding.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            let event = pending.event(&namespace, &reporter);
            let sent = sent.clone();
            async move {
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    warn!(error = %e, "event not published");
                }
                sent.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Publisher {
            queue,
            queued,
            dropped,
            instance,
        }
    }

    /// Queues the Event: an Event is a report, not a step of the sync.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        note: String,
        urgency: Urgency,
    ) {
        if regarding.namespace.is_none() {
            return;
        }
        let pending = Pending {
            regarding,
            type_,
            reason,
            note,
            at: jiff::Timestamp::now(),
        };
        if self.queued.fetch_add(1, Ordering::SeqCst) >= QUEUE || !self.queue.send(urgency, pending) {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.dropped.inc();
        }
    }

    /// Waits until every queued Event is sent, for at most `limit`: on shutdown, once the syncs
    /// stopped (so the senders wait no longer than [`QUIET`](super::priority::QUIET)).
    pub async fn flush(&self, limit: Duration) {
        let all_sent = async {
            while self.queued.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limit, all_sent).await.is_err() {
            let unsent = self.queued.load(Ordering::SeqCst);
            warn!(unsent, "Events not all sent before shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_event_becomes_the_event_it_describes() {
        let regarding = ObjectReference {
            namespace: Some("ns".into()),
            name: Some("sr".into()),
            ..Default::default()
        };
        let at = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let pending = Pending {
            regarding: regarding.clone(),
            type_: EventType::Warning,
            reason: "SecretNotFound",
            note: "note".into(),
            at,
        };
        let event = pending.event("ns", "secretref-0");
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert!(event.metadata.name.as_deref().is_some_and(|n| n.starts_with("sr.")));
        assert_eq!(event.regarding, Some(regarding));
        assert_eq!(
            (event.type_.as_deref(), event.reason.as_deref(), event.note.as_deref()),
            (Some("Warning"), Some("SecretNotFound"), Some("note"))
        );
        assert_eq!(event.event_time, Some(MicroTime(at)));
        assert_eq!(event.reporting_controller.as_deref(), Some(CONTROLLER));
        assert_eq!(event.reporting_instance.as_deref(), Some("secretref-0"));
    }

    #[tokio::test]
    async fn flush_waits_until_every_queued_event_was_sent() {
        // Nothing listens there: each send fails at once, which still ends it.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let publisher = Publisher::start(client, None, Counter::default(), Default::default());
        let regarding = ObjectReference {
            namespace: Some("ns".into()),
            name: Some("sr".into()),
            ..Default::default()
        };
        for urgency in [Urgency::Prompt, Urgency::Lazy, Urgency::Lazy] {
            publisher.publish(regarding.clone(), EventType::Normal, "Synced", "note".into(), urgency);
        }
        assert_eq!(publisher.queued.load(Ordering::SeqCst), 3);
        publisher.flush(Duration::from_secs(10)).await;
        assert_eq!(
            publisher.queued.load(Ordering::SeqCst),
            0,
            "all sent (or failed) before it returned"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // Nothing listens there: the senders' requests fail, which is fine for this test.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let dropped = Counter::default();
        let publisher = Publisher::start(client, None, dropped.clone(), Default::default());
        let regarding = ObjectReference {
            namespace: Some("ns".into()),
            name: Some("sr".into()),
            ..Default::default()
        };
        // The single-threaded test runtime does not run the senders until this test yields,
        // so exactly the queue's capacity is accepted.
        for _ in 0..QUEUE + 10 {
            publisher.publish(
                regarding.clone(),
                EventType::Normal,
                "Synced",
                "note".into(),
                Urgency::Prompt,
            );
        }
        assert_eq!(dropped.get(), 10);
    }
}
