//! The `vault` provider: HashiCorp Vault's KV version 2 secrets engine, and how secretref logs
//! in to it.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Keeps each Modal-style secret as one KV version 2 secret at
/// `<mount>/data/<prefix>/<environment>/<name>`, its data the secret's key-value map.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// The Vault server's address, for example `https://vault.example:8200`.
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"), length(max = 2048))]
    pub server: String,
    /// The path of the KV version 2 secrets engine. Defaults to `secret`.
    #[serde(default = "default_mount")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"), length(max = 256))]
    pub mount: String,
    /// The folder under the mount that holds secretref's secrets, one subfolder per environment.
    /// Defaults to `secretref`; empty: the mount's top level.
    #[serde(default = "default_prefix")]
    #[schemars(regex(pattern = r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$"), length(max = 256))]
    pub prefix: String,
    /// PEM certificates, base64-encoded, of the authorities that sign the server's certificate:
    /// only these are trusted. Absent: the system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub ca_bundle: Option<String>,
    /// The Vault Enterprise namespace to work in (sent as `X-Vault-Namespace`). Absent: the
    /// root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$"), length(max = 256))]
    pub namespace: Option<String>,
    /// How secretref logs in: exactly one method.
    pub auth: VaultAuth,
}

/// How secretref authenticates to Vault. Exactly one method must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.token), has(self.kubernetes), has(self.appRole)].filter(m, m).size() == 1"
).message("exactly one auth method (token, kubernetes or appRole) must be set"))]
pub struct VaultAuth {
    /// A Vault token kept in a Secret. It is used as it is (never renewed): give it a long or
    /// periodic TTL, and replace the Secret's value to rotate it (read again within 30 s, at
    /// once after Vault refused the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<VaultTokenAuth>,
    /// Vault's Kubernetes auth method: secretref requests a token of `serviceAccountRef` from the
    /// API server (TokenRequest) and logs in with it, again before Vault's token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// Vault's AppRole auth method: a role ID and a secret ID kept in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRoleAuth>,
}

/// A Vault token kept in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultTokenAuth {
    /// The Secret key holding the token.
    pub secret_ref: SecretKeySelector,
}

/// Logs in with a Kubernetes ServiceAccount token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Where the Kubernetes auth method is enabled in Vault. Defaults to `kubernetes`.
    #[serde(default = "default_kubernetes_mount")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"), length(max = 256))]
    pub mount_path: String,
    /// The Vault role to log in as (it binds ServiceAccount names, namespaces and policies).
    #[schemars(length(min = 1, max = 256))]
    pub role: String,
    /// The ServiceAccount whose token secretref presents.
    pub service_account_ref: ServiceAccountSelector,
}

/// A ServiceAccount secretref requests tokens for (it needs `create` on
/// `serviceaccounts/token` for it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// The ServiceAccount's name.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub name: String,
    /// Its namespace: required in a ClusterSecretStore; in a SecretStore it must be the store's
    /// own namespace, which is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: Option<String>,
    /// The audiences of the requested token; the Vault role's `audience` must be one of them.
    /// Absent: the API server's default audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub audiences: Vec<String>,
}

/// Logs in with an AppRole role ID and secret ID.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRoleAuth {
    /// Where the AppRole auth method is enabled in Vault. Defaults to `approle`.
    #[serde(default = "default_approle_mount")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"), length(max = 256))]
    pub mount_path: String,
    /// The role ID (not a secret by itself: it names the role).
    #[schemars(length(min = 1, max = 256))]
    pub role_id: String,
    /// The Secret key holding the secret ID.
    pub secret_ref: SecretKeySelector,
}

/// A key of a Kubernetes Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub name: String,
    /// The Secret's namespace: required in a ClusterSecretStore; in a SecretStore it must be the
    /// store's own namespace, which is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: Option<String>,
    /// The key within the Secret.
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(max = 253))]
    pub key: String,
}

fn default_mount() -> String {
    "secret".to_string()
}

fn default_prefix() -> String {
    "secretref".to_string()
}

fn default_kubernetes_mount() -> String {
    "kubernetes".to_string()
}

fn default_approle_mount() -> String {
    "approle".to_string()
}
