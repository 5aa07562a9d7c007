//! The `Ready` condition shared by every secretref kind, and the fixed set of reasons it carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type every secretref kind reports.
pub const READY: &str = "Ready";

/// A standard Kubernetes condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition; secretref sets `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why the condition is in this state (a fixed set, see `Reason`).
    pub reason: String,
    /// A human-readable explanation. It names objects and keys, never secret values.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    pub last_transition_time: Time,
}

/// Every reason a `Ready` condition can carry. The set is closed: reasons double as Event
/// reasons and metric labels, so a new one is a deliberate API change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// SecretRef: the target matches the backend.
    Synced,
    /// Store: the spec is valid and the store can serve.
    Valid,
    StoreNotFound,
    StoreNotReady,
    StoreNotAllowed,
    SecretNotFound,
    MissingRequiredKeys,
    InvalidKeys,
    /// A secret in the backend is not a flat map of string values (binary data, nested JSON,
    /// text that is not UTF-8): it is never half-read.
    InvalidSecret,
    TargetConflict,
    TooLarge,
    TemplateError,
    BackendUnavailable,
    /// Store: the provider configuration cannot work (for example a bad namespace name).
    InvalidProvider,
    /// ClusterSecretRef: every selected namespace holds its SecretRef, Ready.
    Provisioned,
    /// ClusterSecretRef: some selected namespaces do not (see `status.failures`).
    NamespacesFailing,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::Valid => "Valid",
            Reason::StoreNotFound => "StoreNotFound",
            Reason::StoreNotReady => "StoreNotReady",
            Reason::StoreNotAllowed => "StoreNotAllowed",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::MissingRequiredKeys => "MissingRequiredKeys",
            Reason::InvalidKeys => "InvalidKeys",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::TargetConflict => "TargetConflict",
            Reason::TooLarge => "TooLarge",
            Reason::TemplateError => "TemplateError",
            Reason::BackendUnavailable => "BackendUnavailable",
            Reason::InvalidProvider => "InvalidProvider",
            Reason::Provisioned => "Provisioned",
            Reason::NamespacesFailing => "NamespacesFailing",
        }
    }

    /// Whether the condition is `True` with this reason.
    pub const fn is_ready(self) -> bool {
        matches!(self, Reason::Synced | Reason::Valid | Reason::Provisioned)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Condition {
    /// A `Ready` condition for `reason`, keeping `lastTransitionTime` from `previous` when the
    /// status did not change (Kubernetes convention: the time marks a status flip, not a write).
    pub fn ready(
        reason: Reason,
        message: impl Into<String>,
        generation: Option<i64>,
        previous: Option<&Condition>,
        now: Time,
    ) -> Self {
        let status = if reason.is_ready() { "True" } else { "False" }.to_string();
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now,
        };
        Condition {
            type_: READY.to_string(),
            status,
            reason: reason.as_str().to_string(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time,
        }
    }
}

/// Finds the `Ready` condition in a list.
pub fn find_ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}
