//! A namespace, a store namespace, a default SecretStore and a running operator.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secretref::{
    api::{SecretRef, condition::find_ready},
    backend::{SecretBackend, kubernetes::KubernetesBackend},
    model::secret_data,
};
use serde_json::{Value, json};

use crate::support::{Operator, TestNamespace, apply_json, client, eventually, install_crds};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Fixture {
    pub client: Client,
    pub ns: TestNamespace,
    pub store_ns: TestNamespace,
    pub store: KubernetesBackend,
    pub operator: Option<Operator>,
}

impl Fixture {
    /// A namespace with a default SecretStore (`store`) over a store namespace of its own, and
    /// an operator watching the namespace.
    pub async fn new(prefix: &str) -> Fixture {
        let mut f = Self::without_operator(prefix).await;
        f.start_operator();
        f
    }

    /// The same, with no operator running yet.
    pub async fn without_operator(prefix: &str) -> Fixture {
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let store_ns = TestNamespace::new(&client, &format!("{prefix}-store")).await;
        let f = Fixture {
            store: KubernetesBackend::new(client.clone(), &store_ns.name),
            client,
            ns,
            store_ns,
            operator: None,
        };
        let provider = json!({ "kubernetes": { "namespace": f.store_ns.name } });
        f.apply("SecretStore", "store", json!({ "default": true, "provider": provider }))
            .await;
        f
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// Writes a Modal-style secret to the store, replacing it whole.
    pub async fn put(&self, environment: &str, name: &str, pairs: &[(&str, &str)]) {
        let data = secret_data(pairs);
        self.store.replace(environment, name, data).await.expect("store write");
    }

    /// Server-side applies a secretref.dev object in the test namespace (ClusterSecretStores
    /// are cluster-wide).
    pub async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let metadata = if kind == "ClusterSecretStore" {
            json!({ "name": name })
        } else {
            json!({ "name": name, "namespace": self.ns() })
        };
        apply_json(
            &self.client,
            json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec }),
        )
        .await;
    }

    pub fn secretrefs(&self) -> Api<SecretRef> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Waits until the SecretRef's Ready condition has `reason` for its current generation.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> SecretRef {
        let api = self.secretrefs();
        eventually(WAIT, &format!("SecretRef {name} to be {reason}"), || async {
            let sr = api.get_opt(name).await.ok()??;
            let status = sr.status.as_ref()?;
            let ready = find_ready(&status.conditions)?;
            (ready.reason == reason && status.observed_generation == sr.metadata.generation).then_some(sr.clone())
        })
        .await
    }

    /// Waits until the SecretRef's status reports the target's current data (its dataHash is
    /// the target's data-hash annotation). Statuses are written after the targets, coalesced,
    /// so a test that reads a status after seeing a target change must wait for this first.
    pub async fn wait_status_caught_up(&self, name: &str) -> SecretRef {
        eventually(
            WAIT,
            &format!("SecretRef {name}'s status to report its target"),
            || async {
                let secret = self.secrets().get_opt(name).await.ok()??;
                let hash = secret.metadata.annotations?.get("secretref.dev/data-hash")?.clone();
                let sr = self.secretrefs().get_opt(name).await.ok()??;
                (sr.status.as_ref()?.data_hash.as_deref() == Some(hash.as_str())).then_some(sr)
            },
        )
        .await
    }

    /// The target's data as strings, or `None` if it does not exist.
    pub async fn target(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.secrets().get_opt(name).await.expect("get target")?;
        Some(data_of(&secret))
    }

    /// Waits until the target holds exactly `pairs`.
    pub async fn wait_target(&self, name: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let want: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        eventually(WAIT, &format!("target {name} to hold {:?}", want.keys()), || async {
            self.target(name).await.filter(|d| *d == want)
        })
        .await
    }

    /// The Events recorded for a SecretRef: (type, reason, note, how many times).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String, i32)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), self.ns());
        let list = api.list(&Default::default()).await.expect("events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                let count = e.series.as_ref().map_or(1, |s| s.count);
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    count,
                )
            })
            .collect()
    }

    /// Every Event in the namespace, as JSON text.
    pub async fn events_json(&self) -> String {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), self.ns());
        serde_json::to_string(&api.list(&Default::default()).await.expect("events").items).expect("json")
    }

    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
    }

    pub fn start_operator(&mut self) {
        self.start_operator_as(self.client.clone());
    }

    /// Starts the operator with another identity's client.
    pub fn start_operator_as(&mut self, client: Client) {
        self.operator = Some(Operator::start(&client, &self.ns.name));
    }
}

pub fn data_of(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

pub fn ready_message(sr: &SecretRef) -> String {
    sr.status
        .as_ref()
        .and_then(|s| find_ready(&s.conditions))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
