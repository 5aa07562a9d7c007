//! Kubernetes Events for SecretRefs. secretref publishes only on a real change or a new
//! failure reason, so it needs no client-side de-duplication: each Event is one create, and
//! nothing is cached (kube's `Recorder` keeps every Event it sent for minutes, which at tens of
//! thousands of SecretRefs is most of the operator's memory).

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::warn;

#[derive(Clone, Debug, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("instance", &self.instance).finish()
    }
}

/// The reporting controller's name on every Event.
pub const CONTROLLER: &str = "secretref";

impl Publisher {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Publisher {
            client,
            instance: instance.unwrap_or_else(|| CONTROLLER.to_string()),
        }
    }

    /// Creates the Event in the background: an Event is a report, not a step of the sync.
    pub fn publish(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: String) {
        let Some(namespace) = regarding.namespace.clone() else {
            return;
        };
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(CONTROLLER),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Sync".into()),
            reason: Some(reason.to_string()),
            note: Some(note),
            type_: Some(format!("{type_:?}")),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                warn!(error = %e, "event not published");
            }
        });
    }
}
