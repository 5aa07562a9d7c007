//! `ClusterSecretRef`: one SecretRef, from one template, in every namespace a selector picks
//! (registry credentials, a shared API key), and the fleet's state at a glance.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{condition::Condition, secretref::SecretRefSpec};
use crate::model::DNS_SUBDOMAIN_PATTERN;

/// How many failing namespaces the status lists at most (the counts are always complete).
pub const MAX_LISTED_FAILURES: usize = 20;

/// Keeps one SecretRef, made from a template, in every namespace it selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretref.dev",
    version = "v1alpha1",
    kind = "ClusterSecretRef",
    doc = "Keeps one SecretRef, made from a template, in every namespace it selects (by labels and/or name globs): created when a namespace comes into the selection, removed when it leaves, updated when the template changes.",
    status = "ClusterSecretRefStatus",
    shortname = "csref",
    category = "secretref-all",
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.selected"),
    printcolumn(name = "Provisioned", type_ = "integer", json_path = ".status.provisioned"),
    printcolumn(name = "Failing", type_ = "integer", json_path = ".status.failing"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("has(self.spec.namespaceSelector) || has(self.spec.namespaces)")
        .message("set spec.namespaceSelector, spec.namespaces or both")
        .field_path(".spec.namespaces")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretRefSpec {
    /// Namespaces whose labels match this selector are selected (for example
    /// `matchLabels: {team: shop}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Glob patterns (`*` and `?`) of namespace names that are selected, for example
    /// `["team-*"]`. With `namespaceSelector` too, a namespace matching either is selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[-a-z0-9*?]{1,63}$")))]
    pub namespaces: Option<Vec<String>>,
    /// The SecretRef to keep in each selected namespace.
    pub template: SecretRefTemplate,
}

/// The SecretRef each selected namespace gets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRefTemplate {
    /// Its name, labels and annotations.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// Its spec: any SecretRef spec, validated by the same rules.
    pub spec: SecretRefSpec,
}

/// Metadata of the SecretRefs a ClusterSecretRef keeps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// The SecretRefs' name. Defaults to the ClusterSecretRef's name. A SecretRef of that name
    /// that this ClusterSecretRef does not own is never touched: its namespace is reported as
    /// a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: Option<String>,
    /// Labels for the SecretRefs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the SecretRefs (`secretref.dev/force-sync` forces a sync everywhere).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The observed state of a ClusterSecretRef.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretRefStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many namespaces the selector and globs select.
    #[serde(default)]
    pub selected: u32,
    /// How many of them hold an up-to-date SecretRef of this ClusterSecretRef.
    #[serde(default)]
    pub provisioned: u32,
    /// How many of them fail: the SecretRef could not be written (a conflict with one this
    /// ClusterSecretRef does not own, a refused write) or is not Ready.
    #[serde(default)]
    pub failing: u32,
    /// The failing namespaces (at most 20, sorted by name) and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NamespaceFailure>,
    /// `Ready` is `True` (reason `Provisioned`) when every selected namespace holds a Ready
    /// SecretRef, else `False` (reason `NamespacesFailing`).
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A namespace where the ClusterSecretRef's SecretRef is not in place and Ready.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    pub namespace: String,
    /// `Conflict`, `WriteFailed`, or the SecretRef's own Ready reason.
    pub reason: String,
    /// What went wrong; names objects, never values.
    pub message: String,
}

impl ClusterSecretRef {
    /// The name of the SecretRefs it keeps: the template's, else its own.
    pub fn secretref_name(&self) -> String {
        self.spec
            .template
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
