//! `SecretStore` and `ClusterSecretStore`: where Modal-style secrets live and who may read them.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{condition::Condition, vault::VaultProvider};
use crate::model::{DEFAULT_ENVIRONMENT, DNS_SUBDOMAIN_PATTERN, ENVIRONMENT_PATTERN, SECRET_DATA_KEY_PATTERN};

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
#[x_kube(validation = kube::core::Rule::new("!has(self.provider.aws) || !has(self.provider.aws.auth) || !has(self.provider.aws.auth.secretRef) || has(self.provider.aws.auth.secretRef.namespace)").message("provider.aws.auth.secretRef.namespace is required in a ClusterSecretStore"))]
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
#[x_kube(validation = kube::core::Rule::new("[has(self.kubernetes), has(self.aws), has(self.vault)].filter(p, p).size() == 1").message("exactly one provider must be set"))]
pub struct Provider {
    /// The embedded store: each Modal-style secret is one native Secret in `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProvider>,
    /// AWS Secrets Manager: each Modal-style secret is one AWS secret named
    /// `<prefix>/<environment>/<name>` whose SecretString is a flat JSON object of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
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

/// Keeps Modal-style secrets in AWS Secrets Manager, one AWS secret per Modal-style secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// The AWS region of the secrets, for example `eu-west-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z0-9]+)+$"), length(max = 32))]
    pub region: String,
    /// The first part of every AWS secret name: a secret is `<prefix>/<environment>/<name>`.
    /// Slash-separated segments of `[A-Za-z0-9_+=.@-]`. Defaults to `secretref`. IAM policies
    /// scope secretref to `arn:aws:secretsmanager:<region>:<account>:secret:<prefix>/*`.
    #[serde(default = "default_aws_prefix")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_+=.@-]+(/[A-Za-z0-9_+=.@-]+)*$"), length(max = 256))]
    pub prefix: String,
    /// A Secrets Manager compatible endpoint URL instead of the region's own (moto or
    /// LocalStack in tests, a VPC endpoint without private DNS). It also serves STS when
    /// `auth.roleArn` is set. Absent: the SDK's resolution (which honours
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` and `AWS_ENDPOINT_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/$.?#][^\s]*$"), length(max = 2048))]
    pub endpoint: Option<String>,
    /// How to authenticate. Absent: the SDK's default chain (IRSA web identity, EKS Pod
    /// Identity, `AWS_*` environment variables, the instance role), all with the operator's
    /// own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
}

/// Credentials for AWS: static keys from a Secret, a role to assume, or both (the role is
/// assumed with the keys).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretRef) || has(self.roleArn)").message("auth needs secretRef, roleArn or both (omit auth for the default credential chain)"))]
pub struct AwsAuth {
    /// Static access keys kept in a Kubernetes Secret. The operator re-reads them at most
    /// every 30 s and at once when AWS refuses them, so a rotated key is used without a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// An IAM role to assume (with STS AssumeRole) on top of the static keys or the default
    /// chain, for example `arn:aws:iam::123456789012:role/secretref-reader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"),
        length(max = 2048)
    )]
    pub role_arn: Option<String>,
}

/// A Secret holding an AWS access key id and secret access key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// The Secret's name.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: String,
    /// The Secret's namespace: required in a ClusterSecretStore; a SecretStore reads its own
    /// namespace and may leave it out (naming another namespace makes the store not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: Option<String>,
    /// The key holding the access key id. Defaults to `access-key-id`.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(regex(pattern = SECRET_DATA_KEY_PATTERN), length(max = 253))]
    pub access_key_id_key: String,
    /// The key holding the secret access key. Defaults to `secret-access-key`.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(regex(pattern = SECRET_DATA_KEY_PATTERN), length(max = 253))]
    pub secret_access_key_key: String,
}

fn default_aws_prefix() -> String {
    "secretref".to_string()
}

fn default_access_key_id_key() -> String {
    "access-key-id".to_string()
}

fn default_secret_access_key_key() -> String {
    "secret-access-key".to_string()
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
