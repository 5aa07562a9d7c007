//! `SecretRef`: an application's request for Modal-style secrets, and the Secret it produces.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use crate::model::{
    DNS_SUBDOMAIN_PATTERN, ENV_KEY_PATTERN, ENVIRONMENT_PATTERN, SECRET_DATA_KEY_PATTERN, SECRET_NAME_PATTERN,
};

/// Asks for Modal-style secrets by name and keeps a native Secret in step with them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretref.dev",
    version = "v1alpha1",
    kind = "SecretRef",
    doc = "Asks for Modal-style secrets by name, merges them in order (later wins) and keeps a native Secret in step for pods to consume with envFrom or a secret volume.",
    namespaced,
    status = "SecretRefStatus",
    shortname = "sref",
    category = "secretref-all",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keyCount", priority = 1),
    printcolumn(name = "Store", type_ = "string", json_path = ".status.store", priority = 1),
    printcolumn(name = "Environment", type_ = "string", json_path = ".status.environment", priority = 1),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The target defaults to metadata.name, so immutability covers the effective name: setting
    // target.name later to anything else would silently abandon the old Secret.
    validation = kube::core::Rule::new(
        "(has(self.spec.target) && has(self.spec.target.name) ? self.spec.target.name : self.metadata.name) == \
         (has(oldSelf.spec.target) && has(oldSelf.spec.target.name) ? oldSelf.spec.target.name : oldSelf.metadata.name)"
    ).message("spec.target.name is immutable: create a new SecretRef for a new target").field_path(".spec.target.name")
)]
#[serde(rename_all = "camelCase")]
pub struct SecretRefSpec {
    /// The store to read. Absent: the namespace's default SecretStore, else the default
    /// ClusterSecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<StoreRef>,
    /// The environment to read the secrets from (for example `prod`). Absent: the store's
    /// `defaultEnvironment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ENVIRONMENT_PATTERN))]
    pub environment: Option<String>,
    /// The Modal-style secrets to merge, in order: on a key clash the later secret wins.
    #[schemars(length(min = 1, max = 64))]
    pub secrets: Vec<SecretSource>,
    /// Keys that must be present after the merge; a missing one fails the sync and leaves the
    /// target as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = ENV_KEY_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub required_keys: Vec<String>,
    /// The Secret to write.
    #[serde(default)]
    pub target: Target,
    /// Extra keys holding whole files (a `.env`, a JSON document, a template), for `secret`
    /// volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["key".into()]))]
    pub files: Vec<FileSpec>,
    /// How often to re-read the backend, as a Go duration (`30s`, `5m`, `1h30m`). `0s`: only on
    /// changes. Defaults to `60s`.
    #[serde(default = "default_refresh_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub refresh_interval: Duration,
    /// Workloads in this namespace to restart (by stamping `secretref.dev/restartedAt` on their
    /// pod template) when the synced data really changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart: Vec<WorkloadRef>,
}

/// Names a SecretStore (in the SecretRef's namespace) or a ClusterSecretStore.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreRef {
    /// `SecretStore` or `ClusterSecretStore` (the default).
    #[serde(default)]
    pub kind: StoreKind,
    /// The store's name.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: String,
}

/// The kinds of store a SecretRef can name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    SecretStore,
    #[default]
    ClusterSecretStore,
}

/// One Modal-style secret to read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// The secret's exact name (1–64 characters of `[A-Za-z0-9._-]`, case-sensitive).
    #[schemars(regex(pattern = SECRET_NAME_PATTERN))]
    pub name: String,
    /// Take only these keys from the secret. Absent: all of them. A listed key the secret
    /// lacks is simply absent; use `requiredKeys` to insist on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = ENV_KEY_PATTERN)))]
    pub keys: Option<Vec<String>>,
    /// Skip this secret when it does not exist, instead of failing the sync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// The native Secret secretref writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The Secret's name. Defaults to the SecretRef's name; immutable once the SecretRef exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: Option<String>,
    /// The Secret's `type`. Defaults to `Opaque`. `kubernetes.io/service-account-token` is
    /// refused (the token controller would fill such a Secret with a ServiceAccount's token).
    #[serde(default = "default_secret_type")]
    #[schemars(length(min = 1, max = 253))]
    pub r#type: String,
    /// Extra labels for the Secret (secretref's own labels always win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `Owner` (default): create the Secret and own it; refuse a Secret someone else made.
    /// `Merge`: write secretref's keys into an existing Secret whose owner allows it with the
    /// annotation `secretref.dev/merge: allow`; never create or delete it.
    /// `Orphan`: create the Secret without an ownerReference.
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// `Delete` (default): the Secret goes with the SecretRef. `Retain`: it stays.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// How secretref comes to write the target Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreationPolicy {
    #[default]
    Owner,
    Merge,
    Orphan,
}

/// What happens to the target Secret when the SecretRef is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// An extra Secret key holding a whole file built from the merged keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.format == 'template' ? has(self.template) : !has(self.template)")
        .message("template is required for, and only for, format: template")
        .field_path(".template")
)]
pub struct FileSpec {
    /// The Secret key (and so the file name in a volume), for example `.env`.
    #[schemars(regex(pattern = SECRET_DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
    /// `dotenv` (`KEY="value"` lines), `json` (a flat object) or `template`.
    pub format: FileFormat,
    /// A Jinja template; every merged key is a variable, for example
    /// `stripe_key: {{ STRIPE_KEY }}`. Required for, and only for, `format: template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// How a `files` entry is rendered.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Dotenv,
    Json,
    Template,
}

/// A workload to restart when the synced data changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// The workload's name, in the SecretRef's namespace.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: String,
}

/// The workload kinds `rolloutRestart` can restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The observed state of a SecretRef.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRefStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the target was last confirmed to match the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// A keyed hash (`hmac-sha256:...`) of the synced data. It changes exactly when the data
    /// does, and reveals nothing about the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    /// The secrets read in the last successful sync, with their backend versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
    /// The store read in the last successful sync (`ClusterSecretStore/<name>` or
    /// `SecretStore/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The environment read in the last successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// How many keys the target holds from this SecretRef (merged keys and `files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<u32>,
    /// `Ready` says whether the target matches the backend (reason `Synced`) or why not.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A secret read in the last successful sync.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The secret's name.
    pub name: String,
    /// The backend's version of it; absent for an optional secret that does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            name: None,
            r#type: default_secret_type(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            creation_policy: CreationPolicy::default(),
            deletion_policy: DeletionPolicy::default(),
        }
    }
}

impl SecretRef {
    /// The target Secret's name: `spec.target.name`, else the SecretRef's own name.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

fn default_secret_type() -> String {
    "Opaque".to_string()
}

fn default_refresh_interval() -> Duration {
    std::time::Duration::from_secs(60).into()
}
