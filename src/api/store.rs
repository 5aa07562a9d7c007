//! `SecretStore` and `ClusterSecretStore`: where Modal-style secrets live and who may read them.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{condition::Condition, vault::VaultProvider};
use crate::model::{DEFAULT_ENVIRONMENT, ENVIRONMENT_PATTERN};

/// A store of Modal-style secrets that serves SecretRefs in its own namespace only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretref.dev",
    version = "v1alpha1",
    kind = "SecretStore",
    doc = "A store of Modal-style secrets (named, environment-scoped sets of environment variables) that serves SecretRefs in its own namespace.",
    namespaced,
    status = "StoreStatus",
    category = "secretref-all",
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// Use this store for SecretRefs in this namespace that name no store. At most one store
    /// per namespace should say so; when several do, the oldest wins.
    #[serde(default)]
    pub default: bool,
    /// The environment a SecretRef reads when it names none. Defaults to `main`.
    #[serde(default = "default_environment")]
    #[schemars(regex(pattern = ENVIRONMENT_PATTERN))]
    pub default_environment: String,
    /// Where the secrets are kept: exactly one provider.
    pub provider: Provider,
}

/// A store of Modal-style secrets shared across namespaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretref.dev",
    version = "v1alpha1",
    kind = "ClusterSecretStore",
    doc = "A store of Modal-style secrets (named, environment-scoped sets of environment variables) shared by SecretRefs across namespaces.",
    status = "StoreStatus",
    category = "secretref-all",
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// Use this store for SecretRefs that name no store and have no default SecretStore in
    /// their own namespace. At most one ClusterSecretStore should say so; when several do, the
    /// oldest wins.
    #[serde(default)]
    pub default: bool,
    /// The environment a SecretRef reads when it names none. Defaults to `main`.
    #[serde(default = "default_environment")]
    #[schemars(regex(pattern = ENVIRONMENT_PATTERN))]
    pub default_environment: String,
    /// Glob patterns (`*` and `?`) of the namespaces whose SecretRefs may use this store, for
    /// example `["team-*", "shop"]`. Absent: every namespace. Empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^[-a-z0-9*?]{1,63}$")))]
    pub namespaces: Option<Vec<String>>,
    /// Where the secrets are kept: exactly one provider.
    pub provider: Provider,
}

/// The backend a store reads. Exactly one provider must be set; a provider the operator does
/// not know is rejected by the API server as an unknown field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.kubernetes), has(self.vault)].filter(p, p).size() == 1").message("exactly one provider must be set"))]
pub struct Provider {
    /// The embedded store: each Modal-style secret is one native Secret in `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProvider>,
    /// HashiCorp Vault's KV version 2 secrets engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
}

/// Keeps Modal-style secrets as native Secrets in one namespace of this cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesProvider {
    /// The namespace holding the secrets (for example `secretref-store`). Only the operator
    /// and the people managing secrets should be able to read it.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: String,
}

/// The observed state of a store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` says whether the store can serve (reason `Valid`) or why not.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

fn default_environment() -> String {
    DEFAULT_ENVIRONMENT.to_string()
}
