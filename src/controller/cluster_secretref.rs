//! ClusterSecretRef reconciliation: one owned SecretRef per selected namespace, created,
//! updated and removed as namespaces and the template change; a SecretRef it does not own is
//! never touched. Reads come from the caches of namespaces and SecretRefs; only differences
//! are written.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions},
    core::{Selector, SelectorExt},
    runtime::{controller::Action, reflector::ObjectRef, reflector::Store},
};
use tracing::{instrument, warn};

use super::{FIELD_MANAGER, resolve::glob_match};
use crate::{
    api::{
        ClusterSecretRef, ClusterSecretRefSpec, ClusterSecretRefStatus, Condition, MAX_LISTED_FAILURES,
        NamespaceFailure, Reason, SecretRef, condition::find_ready,
    },
    error::SyncError,
    metrics::Metrics,
};

/// Label on every SecretRef a ClusterSecretRef keeps: the ClusterSecretRef's name.
pub const CLUSTER_SECRETREF_LABEL: &str = "secretref.dev/cluster-secretref";

/// How often a ClusterSecretRef is looked at again with nothing changed.
const RECHECK: Duration = Duration::from_secs(300);
/// SecretRef writes in flight at once for one ClusterSecretRef.
const PARALLEL_WRITES: usize = 8;

pub struct FleetContext {
    pub client: Client,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub secretrefs: Store<SecretRef>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for FleetContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetContext").finish_non_exhaustive()
    }
}

/// Whether the ClusterSecretRef selects namespace `name` with `labels`: by the label selector
/// or by a name glob (either one). A selector that cannot be parsed selects nothing.
pub fn selects(spec: &ClusterSecretRefSpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = spec
        .namespace_selector
        .clone()
        .is_some_and(|s| Selector::try_from(s).is_ok_and(|selector| selector.matches(labels)));
    let by_name = spec
        .namespaces
        .iter()
        .flatten()
        .any(|pattern| glob_match(pattern, name));
    by_labels || by_name
}

/// Whether `sr` is kept by `csr` (its controller ownerReference).
fn owned_by(sr: &SecretRef, csr: &ClusterSecretRef) -> bool {
    sr.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == csr.metadata.uid.as_ref())
}

/// The SecretRef `csr` wants in `namespace`.
fn desired(csr: &ClusterSecretRef, namespace: &str) -> SecretRef {
    let template = &csr.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(CLUSTER_SECRETREF_LABEL.to_string(), csr.name_any());
    SecretRef {
        metadata: ObjectMeta {
            name: Some(csr.secretref_name()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: (!template.metadata.annotations.is_empty()).then(|| template.metadata.annotations.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: ClusterSecretRef::api_version(&()).into_owned(),
                kind: ClusterSecretRef::kind(&()).into_owned(),
                name: csr.name_any(),
                uid: csr.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Whether `existing` already is what `desired` says (extra labels or annotations others added
/// do not count).
fn up_to_date(existing: &SecretRef, desired: &SecretRef) -> bool {
    let contains = |have: &BTreeMap<String, String>, want: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    existing.spec == desired.spec
        && contains(existing.labels(), &desired.metadata.labels)
        && contains(existing.annotations(), &desired.metadata.annotations)
}

/// What happened in one selected namespace.
enum Outcome {
    /// The SecretRef is in place (and Ready, or not yet synced).
    Provisioned,
    /// In place but not Ready, or not in place: why.
    Failing {
        provisioned: bool,
        reason: String,
        message: String,
    },
}

#[instrument(skip_all, fields(clustersecretref = %csr.name_any()))]
pub async fn reconcile(csr: Arc<ClusterSecretRef>, ctx: Arc<FleetContext>) -> Result<Action, SyncError> {
    let started = std::time::Instant::now();
    let name = csr.secretref_name();
    let mut selected: Vec<String> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| selects(&csr.spec, &ns.name_any(), ns.labels()))
        .map(|ns| ns.name_any())
        .collect();
    selected.sort();

    let outcomes: Vec<(String, Outcome)> = stream::iter(selected.iter().cloned())
        .map(|ns| {
            let (csr, ctx, name) = (csr.clone(), ctx.clone(), name.clone());
            async move {
                let outcome = provision(&csr, &ctx, &ns, &name).await;
                (ns, outcome)
            }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .collect()
        .await;

    // Namespaces that left the selection (or are going away) lose their SecretRef; its target
    // then follows its own deletionPolicy.
    for sr in ctx.secretrefs.state() {
        let ns = sr.namespace().unwrap_or_default();
        if owned_by(&sr, &csr) && selected.binary_search(&ns).is_err() {
            remove(&ctx.client, &sr).await;
        }
    }

    let mut status = ClusterSecretRefStatus {
        observed_generation: csr.metadata.generation,
        selected: selected.len() as u32,
        ..Default::default()
    };
    let mut failures = Vec::new();
    for (namespace, outcome) in outcomes {
        match outcome {
            Outcome::Provisioned => status.provisioned += 1,
            Outcome::Failing {
                provisioned,
                reason,
                message,
            } => {
                status.provisioned += u32::from(provisioned);
                failures.push(NamespaceFailure {
                    namespace,
                    reason,
                    message,
                });
            }
        }
    }
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    status.failing = failures.len() as u32;
    failures.truncate(MAX_LISTED_FAILURES);
    status.failures = failures;
    let (reason, message) = if status.failing == 0 {
        (
            Reason::Provisioned,
            format!(
                "SecretRef {name:?} is in place in {} selected namespaces",
                status.selected
            ),
        )
    } else {
        (
            Reason::NamespacesFailing,
            format!(
                "{} of {} selected namespaces failing (see status.failures)",
                status.failing, status.selected
            ),
        )
    };
    let previous = csr.status.clone().unwrap_or_default();
    status.conditions = vec![Condition::ready(
        reason,
        message,
        csr.metadata.generation,
        find_ready(&previous.conditions),
        super::status::now(),
    )];
    if csr.status.as_ref() != Some(&status) {
        let api: Api<ClusterSecretRef> = Api::all(ctx.client.clone());
        api.patch_status(
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|e| SyncError::kube(format!("writing status of ClusterSecretRef {:?}", csr.name_any()), e))?;
    }
    ctx.metrics
        .reconciled("ClusterSecretRef", reason.as_str(), started.elapsed());
    Ok(Action::requeue(RECHECK))
}

/// Puts the SecretRef in place in one namespace, unless one it does not own is there.
async fn provision(csr: &ClusterSecretRef, ctx: &FleetContext, namespace: &str, name: &str) -> Outcome {
    let want = desired(csr, namespace);
    let existing = ctx.secretrefs.get(&ObjectRef::new(name).within(namespace));
    if let Some(existing) = &existing {
        if !owned_by(existing, csr) {
            return Outcome::Failing {
                provisioned: false,
                reason: "Conflict".into(),
                message: format!(
                    "SecretRef {namespace}/{name} exists and is not owned by this ClusterSecretRef: it is left alone"
                ),
            };
        }
        if up_to_date(existing, &want) {
            return match existing.status.as_ref().and_then(|s| find_ready(&s.conditions)) {
                Some(ready) if ready.status == "False" && ready.observed_generation == existing.metadata.generation => {
                    Outcome::Failing {
                        provisioned: true,
                        reason: ready.reason.clone(),
                        message: ready.message.clone(),
                    }
                }
                _ => Outcome::Provisioned,
            };
        }
    }
    let api: Api<SecretRef> = Api::namespaced(ctx.client.clone(), namespace);
    // A new SecretRef is created, never applied: one somebody made since our cache saw the
    // namespace must not be taken over.
    let written = match existing {
        None => api.create(&PostParams::default(), &want).await.map(drop),
        Some(_) => api
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&want))
            .await
            .map(drop),
    };
    match written {
        Ok(()) => Outcome::Provisioned,
        Err(kube::Error::Api(s)) if s.code == 409 => Outcome::Failing {
            provisioned: false,
            reason: "Conflict".into(),
            message: format!(
                "SecretRef {namespace}/{name} appeared meanwhile and is not owned by this ClusterSecretRef"
            ),
        },
        Err(e) => {
            let err = SyncError::kube(format!("writing SecretRef {namespace}/{name}"), e);
            warn!(namespace, error = %err, "SecretRef not written");
            Outcome::Failing {
                provisioned: false,
                reason: "WriteFailed".into(),
                message: err.to_string(),
            }
        }
    }
}

/// Deletes exactly the SecretRef we looked at (never one made since under the same name).
async fn remove(client: &Client, sr: &SecretRef) {
    let api: Api<SecretRef> = Api::namespaced(client.clone(), &sr.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: sr.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&sr.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => warn!(secretref = %sr.name_any(), error = %e, "SecretRef not removed"),
    }
}

pub fn error_policy(_: Arc<ClusterSecretRef>, err: &SyncError, _: Arc<FleetContext>) -> Action {
    warn!(error = %err, "ClusterSecretRef reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> ClusterSecretRefSpec {
        let mut v = v;
        v["template"] = serde_json::json!({ "spec": { "secrets": [ { "name": "registry" } ] } });
        serde_json::from_value(v).expect("spec")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn namespaces_are_selected_by_labels_or_by_name() {
        let by_labels = spec(serde_json::json!({ "namespaceSelector": { "matchLabels": { "team": "shop" } } }));
        assert!(selects(&by_labels, "a", &labels(&[("team", "shop")])));
        assert!(!selects(&by_labels, "a", &labels(&[("team", "ops")])));
        let by_name = spec(serde_json::json!({ "namespaces": ["team-*"] }));
        assert!(selects(&by_name, "team-a", &labels(&[])));
        assert!(!selects(&by_name, "teams", &labels(&[])));
        let both = spec(serde_json::json!({
            "namespaceSelector": { "matchExpressions": [ { "key": "tier", "operator": "In", "values": ["prod"] } ] },
            "namespaces": ["shop"]
        }));
        assert!(selects(&both, "shop", &labels(&[])), "by name");
        assert!(selects(&both, "x", &labels(&[("tier", "prod")])), "by labels");
        assert!(!selects(&both, "x", &labels(&[("tier", "dev")])));
        let everything = spec(serde_json::json!({ "namespaceSelector": {} }));
        assert!(
            selects(&everything, "any", &labels(&[])),
            "an empty selector selects all"
        );
    }
}
