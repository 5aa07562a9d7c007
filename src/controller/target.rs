//! The target Secret: who may write it (ownership) and writing it only when it differs.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use super::watched::TargetVersions;
use crate::{
    api::{CreationPolicy, SecretRef},
    desired::{DATA_HASH_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, SECRETREF_LABEL, desired_secret, target_labels},
    error::SyncError,
    model::SecretData,
};

pub const FIELD_MANAGER: &str = "secretref";

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
    match (sr.spec.target.creation_policy, existing) {
        (CreationPolicy::Merge, None) => Err(SyncError::TargetConflict {
            target,
            why: "does not exist, and creationPolicy Merge only writes into an existing Secret".into(),
        }),
        (CreationPolicy::Merge, Some(_)) | (_, None) => Ok(()),
        (_, Some(existing)) if is_ours(existing, sr) => Ok(()),
        (_, Some(_)) => Err(SyncError::TargetConflict {
            target,
            why: "exists and was not created by this SecretRef (use creationPolicy Merge to write into it)".into(),
        }),
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
#[derive(Debug, Default)]
pub struct WriteMemo(Mutex<HashMap<(String, String), (String, u64)>>);

impl WriteMemo {
    fn get(&self, key: &(String, String)) -> Option<(String, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn set(&self, key: (String, String), value: Option<(String, u64)>) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => memo.insert(key, v),
            None => memo.remove(&key),
        };
    }
}

fn fingerprint(desired: &Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(desired).unwrap_or_default().hash(&mut h);
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
) -> Result<bool, SyncError> {
    let target = sr.target_name();
    let namespace = sr.namespace().unwrap_or_default();
    let key = (namespace.clone(), target.clone());
    let desired = desired_secret(sr, data, data_hash);
    let print = fingerprint(&desired);
    let current_version = targets.get(&namespace, &target);
    if let (Some(version), Some((written, written_print))) = (current_version, memo.get(&key))
        && version == written
        && written_print == print
    {
        return Ok(false);
    }

    let existing = api
        .get_opt(&target)
        .await
        .map_err(|e| SyncError::kube(format!("reading target Secret {target:?}"), e))?;
    ensure_writable(existing.as_ref(), sr)?;
    if let Some(existing) = &existing
        && up_to_date(existing, &desired)
        && existing.annotations().get(DATA_HASH_ANNOTATION).map(String::as_str) == Some(data_hash)
    {
        memo.set(key, existing.resource_version().map(|v| (v, print)));
        return Ok(false);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&target, &params, &Patch::Apply(&desired)).await {
        Ok(written) => {
            memo.set(key, written.resource_version().map(|v| (v, print)));
            Ok(true)
        }
        // The API server refuses what cannot be (an immutable type changed, an invalid label):
        // the user must change something; retrying will not help.
        Err(kube::Error::Api(s)) if s.code == 422 => Err(SyncError::TargetConflict { target, why: s.message }),
        Err(e) => Err(SyncError::kube(format!("writing target Secret {target:?}"), e)),
    }
}
