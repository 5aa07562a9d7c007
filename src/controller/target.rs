//! The target Secret: who may write it (ownership) and writing it only when it differs.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use prometheus_client::metrics::counter::Counter;

use super::{
    created,
    watched::{self, TargetVersions},
};
use crate::{
    api::{CreationPolicy, SecretRef},
    desired::{DATA_HASH_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, SECRETREF_LABEL, desired_secret, target_labels},
    error::SyncError,
    model::SecretData,
};

pub const FIELD_MANAGER: &str = "secretref";

/// The annotation by which a Secret's owner lets `creationPolicy: Merge` write into it: a
/// namespace's SecretRefs must not reach Secrets that whoever creates SecretRefs could not
/// write (a ServiceAccount token, a Helm release).
pub const MERGE_ANNOTATION: &str = "secretref.dev/merge";
/// The value of [`MERGE_ANNOTATION`] that allows it.
pub const MERGE_ALLOW: &str = "allow";
/// A target type secretref never creates: the token controller fills such a Secret with a
/// ServiceAccount's token, which would give whoever may create SecretRefs the token of any
/// ServiceAccount in the namespace.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Whether a Secret's owner lets `creationPolicy: Merge` write into it.
pub fn allows_merge(existing: &Secret) -> bool {
    existing.annotations().get(MERGE_ANNOTATION).map(String::as_str) == Some(MERGE_ALLOW)
}

/// Whether an existing Secret was written by this SecretRef (our labels, and no controller
/// ownerReference to anything else).
pub fn is_ours(existing: &Secret, sr: &SecretRef) -> bool {
    let labels = existing.labels();
    let expected = target_labels(&sr.name_any());
    let labelled = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(SECRETREF_LABEL) == expected.get(SECRETREF_LABEL);
    let foreign_controller = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && (o.kind != "SecretRef" || o.name != sr.name_any()));
    labelled && !foreign_controller
}

/// Refuses to touch a Secret the policy does not allow us to write.
pub fn ensure_writable(existing: Option<&Secret>, sr: &SecretRef) -> Result<(), SyncError> {
    let target = sr.target_name();
    let conflict = |why: String| {
        Err(SyncError::TargetConflict {
            target: target.clone(),
            why,
        })
    };
    let merge = sr.spec.target.creation_policy == CreationPolicy::Merge;
    if !merge && sr.spec.target.r#type == SERVICE_ACCOUNT_TOKEN_TYPE {
        return conflict(format!(
            "type {SERVICE_ACCOUNT_TOKEN_TYPE} is refused: the token controller would fill it with a ServiceAccount's token"
        ));
    }
    match (merge, existing) {
        (true, None) => conflict("does not exist, and creationPolicy Merge only writes into an existing Secret".into()),
        (true, Some(existing)) if allows_merge(existing) => Ok(()),
        (true, Some(_)) => conflict(format!(
            "exists but does not let creationPolicy Merge write into it: whoever owns it must annotate it \
             {MERGE_ANNOTATION}={MERGE_ALLOW}"
        )),
        (false, None) => Ok(()),
        // Labels alone do not make it ours: a Merge write labels the Secret too, and taking it
        // over (with an ownerReference) would let garbage collection delete someone's Secret.
        (false, Some(existing)) if allows_merge(existing) => conflict(format!(
            "belongs to someone else (it carries {MERGE_ANNOTATION}={MERGE_ALLOW}): only creationPolicy Merge writes into it"
        )),
        (false, Some(existing)) if is_ours(existing, sr) => Ok(()),
        (false, Some(_)) => conflict(format!(
            "exists and was not created by this SecretRef (to write into it, its owner annotates it \
             {MERGE_ANNOTATION}={MERGE_ALLOW} and the SecretRef uses creationPolicy Merge)"
        )),
    }
}

/// Whether `existing` already holds everything `desired` says (our keys and values, labels,
/// annotations, type and owner). Keys others added are left alone and do not count.
fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let has_all = |want: &Option<std::collections::BTreeMap<String, String>>,
                   have: &Option<std::collections::BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data_same = desired
        .data
        .iter()
        .flatten()
        .all(|(k, v)| existing.data.as_ref().and_then(|d| d.get(k)) == Some(v));
    let type_same = desired.type_.is_none() || desired.type_ == existing.type_;
    let owner_same = desired.metadata.owner_references.iter().flatten().all(|o| {
        existing
            .owner_references()
            .iter()
            .any(|e| e.uid == o.uid && e.controller == o.controller)
    });
    data_same
        && type_same
        && owner_same
        && has_all(&desired.metadata.labels, &existing.metadata.labels)
        && has_all(&desired.metadata.annotations, &existing.metadata.annotations)
}

/// What we last wrote to each target: its resourceVersion after our write and a fingerprint
/// of the Secret we applied. While the target still carries that resourceVersion nobody has
/// touched it since, so an unchanged desired Secret needs neither a read nor a write. (The
/// fingerprint stays in memory; it is never logged or stored.)
///
/// It also remembers writes the API server refused (422): the same Secret against the same
/// target would be refused again, so it is not sent again for [`REFUSAL_MEMORY`] unless the
/// target or the desired Secret changes. Otherwise every refresh would re-send it, a retry
/// storm of one request per SecretRef per refresh interval.
#[derive(Debug, Default)]
pub struct WriteMemo {
    written: Mutex<HashMap<(String, String), Written>>,
    refused: Mutex<HashMap<(String, String), Refusal>>,
}

/// Our last write to a target: its resourceVersion after the write, the fingerprint of the
/// Secret we applied, and of the policy it was allowed under ([`policy_print`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    version: String,
    print: u64,
    policy: u64,
}

/// A refused write: the target's version then (as the target watch saw it), the fingerprint of
/// the refused Secret, the API server's reason and when.
#[derive(Debug, Clone)]
struct Refusal {
    version: Option<String>,
    print: u64,
    why: String,
    at: Instant,
}

/// How long a refused write is not re-sent unchanged. The target watch follows only Secrets
/// labelled as ours, so a change to another Secret under the name (which could make the write
/// acceptable) is noticed no later than this.
const REFUSAL_MEMORY: Duration = Duration::from_secs(300);

impl WriteMemo {
    fn get(&self, key: &(String, String)) -> Option<Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn set(&self, key: (String, String), value: Option<Written>) {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let mut memo = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => memo.insert(key, v),
            None => memo.remove(&key),
        };
    }

    /// The refusal of this very write, if it was refused recently against the same target.
    fn refusal(&self, key: &(String, String), version: Option<&str>, print: u64) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .get(key)
            .filter(|r| r.print == print && r.version.as_deref() == version && r.at.elapsed() < REFUSAL_MEMORY)
            .map(|r| r.why.clone())
    }

    /// Remembers a write the API server refused as invalid (422) and returns the sync's error.
    fn refused(&self, key: (String, String), version: Option<String>, print: u64, message: &str) -> SyncError {
        let why = format!("the API server refused it: {message}");
        let target = key.1.clone();
        self.refuse(key, version, print, why.clone());
        SyncError::TargetConflict { target, why }
    }

    fn refuse(&self, key: (String, String), version: Option<String>, print: u64, why: String) {
        let refusal = Refusal {
            version,
            print,
            why,
            at: Instant::now(),
        };
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, refusal);
    }
}

/// The [`watched::digest`] of the Secret we would apply.
fn desired_digest(desired: &Secret) -> u64 {
    watched::digest(
        desired.labels(),
        desired.annotations(),
        desired.owner_references(),
        desired.data.iter().flatten().map(|(k, _)| k.as_str()),
    )
}

fn fingerprint(desired: &Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(desired).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// What [`ensure_writable`] decides by on the SecretRef's side: a target our write left
/// untouched stays writable while these are unchanged.
fn policy_print(sr: &SecretRef) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (format!("{:?}", sr.spec.target.creation_policy), &sr.spec.target.r#type).hash(&mut h);
    h.finish()
}

/// Server-side applies the target unless it is already up to date. Returns whether it wrote.
/// The data hash annotation holds the hash of what we last applied, so a key we stopped
/// producing is noticed (the hash changes) and dropped by the apply.
pub async fn apply(
    api: &Api<Secret>,
    targets: &TargetVersions,
    memo: &WriteMemo,
    sr: &SecretRef,
    data: &SecretData,
    data_hash: &str,
    reads: &Counter,
) -> Result<bool, SyncError> {
    let target = sr.target_name();
    let namespace = sr.namespace().unwrap_or_default();
    let key = (namespace.clone(), target.clone());
    let desired = desired_secret(sr, data, data_hash);
    let print = fingerprint(&desired);
    let policy = policy_print(sr);
    let written = |version: Option<String>| version.map(|version| Written { version, print, policy });
    let seen = targets.get(&namespace, &target);
    let current_version = seen.as_ref().map(|s| s.version.clone());
    // Nobody touched the target since our last write: what it holds is what we applied then.
    let untouched = memo
        .get(&key)
        .filter(|w| current_version.as_ref() == Some(&w.version) && w.policy == policy);
    if untouched.as_ref().is_some_and(|w| w.print == print) {
        return Ok(false);
    }
    if let Some(why) = memo.refusal(&key, current_version.as_deref(), print) {
        return Err(SyncError::TargetConflict { target, why });
    }
    // Nothing remembered of it (the operator just started): the target watch's metadata proves
    // the target holds exactly what we would apply, which spares the read. The policy checks
    // give the same answer for `desired` as for the target, whose labels, annotations and
    // owners the digest covers.
    if let Some(seen) = &seen
        && sr.spec.target.creation_policy != CreationPolicy::Merge
        && seen.digest == Some(desired_digest(&desired))
        && ensure_writable(Some(&desired), sr).is_ok()
    {
        memo.set(key, written(Some(seen.version.clone())));
        return Ok(false);
    }

    // Absent as far as the listed target watch knows: create it, one request where a read and
    // an apply were two. The API server refuses the create if any Secret has the name (one not
    // labelled as ours is not watched); then the read and the ownership checks below decide.
    if seen.is_none()
        && untouched.is_none()
        && targets.listed()
        && sr.spec.target.creation_policy != CreationPolicy::Merge
    {
        ensure_writable(None, sr)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, &desired).await {
            Ok(created) => {
                memo.set(key, written(created.resource_version()));
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 422 => {
                return Err(memo.refused(key, current_version, print, &s.message));
            }
            Err(e) => return Err(SyncError::kube(format!("creating target Secret {target:?}"), e)),
        }
    }
    // A target our write left untouched, under the same policy, passed the ownership checks
    // then and would pass them now: a new value needs no read first (a change of value fans
    // out to every SecretRef that uses the secret, one apply each).
    if untouched.is_none() {
        reads.inc();
        let existing = api
            .get_opt(&target)
            .await
            .map_err(|e| SyncError::kube(format!("reading target Secret {target:?}"), e))?;
        ensure_writable(existing.as_ref(), sr)?;
        if let Some(existing) = &existing
            && up_to_date(existing, &desired)
            && existing.annotations().get(DATA_HASH_ANNOTATION).map(String::as_str) == Some(data_hash)
        {
            memo.set(key, written(existing.resource_version()));
            return Ok(false);
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&target, &params, &Patch::Apply(&desired)).await {
        Ok(applied) => {
            let applied = match created::leftovers(&applied, &desired) {
                Some(patch) => api
                    .patch(&target, &PatchParams::default(), &Patch::<()>::Json(patch))
                    .await
                    .map_err(|e| SyncError::kube(format!("dropping old fields of target Secret {target:?}"), e))?,
                None => applied,
            };
            memo.set(key, written(applied.resource_version()));
            Ok(true)
        }
        // The API server refuses what cannot be (an immutable type changed, an invalid label):
        // the user must change something; retrying will not help.
        Err(kube::Error::Api(s)) if s.code == 422 => Err(memo.refused(key, current_version, print, &s.message)),
        Err(e) => Err(SyncError::kube(format!("writing target Secret {target:?}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    fn secret_ref(policy: &str, type_: &str) -> SecretRef {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
            "metadata": { "name": "app", "namespace": "ns", "uid": "u1" },
            "spec": { "secrets": [{ "name": "a" }], "target": { "name": "t", "creationPolicy": policy, "type": type_ } }
        }))
        .expect("secretref")
    }

    fn secret(labels: serde_json::Value, annotations: serde_json::Value) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "t", "namespace": "ns", "labels": labels, "annotations": annotations }
        }))
        .expect("secret")
    }

    fn refusal(existing: Option<&Secret>, sr: &SecretRef) -> String {
        let err = ensure_writable(existing, sr).expect_err("refused");
        assert_eq!(err.reason(), Reason::TargetConflict);
        err.to_string()
    }

    #[test]
    fn merge_writes_only_into_a_secret_that_opts_in() {
        let merge = secret_ref("Merge", "Opaque");
        let plain = secret(serde_json::json!({}), serde_json::json!({}));
        let message = refusal(Some(&plain), &merge);
        assert!(
            message.contains("secretref.dev/merge=allow"),
            "says how to opt in: {message}"
        );
        let opted_in = secret(
            serde_json::json!({}),
            serde_json::json!({ MERGE_ANNOTATION: MERGE_ALLOW }),
        );
        ensure_writable(Some(&opted_in), &merge).expect("opted in");
        let other_value = secret(serde_json::json!({}), serde_json::json!({ MERGE_ANNOTATION: "yes" }));
        refusal(Some(&other_value), &merge);
        assert!(refusal(None, &merge).contains("does not exist"));
        // A Secret a Merge write already labelled as ours still needs the opt-in.
        let labelled = secret(target_labels("app").into_iter().collect(), serde_json::json!({}));
        refusal(Some(&labelled), &merge);
    }

    #[test]
    fn owner_never_takes_over_a_secret_that_opted_in_to_merge() {
        // Labelled by an earlier Merge write of this very SecretRef: switching the policy to
        // Owner must not adopt it (garbage collection would then delete someone's Secret).
        let labels: serde_json::Map<String, serde_json::Value> =
            target_labels("app").into_iter().map(|(k, v)| (k, v.into())).collect();
        let merged_into = secret(
            labels.clone().into(),
            serde_json::json!({ MERGE_ANNOTATION: MERGE_ALLOW }),
        );
        for policy in ["Owner", "Orphan"] {
            let message = refusal(Some(&merged_into), &secret_ref(policy, "Opaque"));
            assert!(message.contains("only creationPolicy Merge"), "{message}");
        }
        let ours = secret(labels.into(), serde_json::json!({}));
        ensure_writable(Some(&ours), &secret_ref("Owner", "Opaque")).expect("ours");
        ensure_writable(None, &secret_ref("Owner", "Opaque")).expect("new");
        let foreign = secret(serde_json::json!({}), serde_json::json!({}));
        assert!(refusal(Some(&foreign), &secret_ref("Owner", "Opaque")).contains("not created by this SecretRef"));
    }

    #[test]
    fn a_refused_write_is_not_resent_until_something_changes() {
        let memo = WriteMemo::default();
        let key = ("ns".to_string(), "t".to_string());
        memo.refuse(key.clone(), None, 7, "refused".into());
        assert_eq!(memo.refusal(&key, None, 7).as_deref(), Some("refused"));
        assert_eq!(memo.refusal(&key, None, 8), None, "another desired Secret is sent");
        assert_eq!(
            memo.refusal(&key, Some("12"), 7),
            None,
            "a changed target is tried again"
        );
        let written = Written {
            version: "13".into(),
            print: 8,
            policy: 1,
        };
        memo.set(key.clone(), Some(written));
        assert_eq!(memo.refusal(&key, None, 7), None, "a good write forgets the refusal");
    }

    #[test]
    fn service_account_token_targets_are_refused() {
        let message = refusal(None, &secret_ref("Owner", SERVICE_ACCOUNT_TOKEN_TYPE));
        assert!(message.contains(SERVICE_ACCOUNT_TOKEN_TYPE), "{message}");
        refusal(None, &secret_ref("Orphan", SERVICE_ACCOUNT_TOKEN_TYPE));
    }
}
