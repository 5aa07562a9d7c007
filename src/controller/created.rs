//! Targets secretref created with a plain create (a POST: one request, where a read and a
//! server-side apply were two). The create's fields belong to a managedFields entry of its own
//! (`secretref`, operation `Update`), so a later apply that leaves a key, label or annotation
//! out does not drop it: the apply only drops what the apply itself owned. After such an apply,
//! [`leftovers`] finds what only the create still holds and removes it, with the create's entry,
//! in one JSON patch guarded by the resourceVersion the apply returned. That costs a second
//! request only when something was left out, and only once per target: afterwards the target
//! is an ordinary server-side-applied object.

use std::collections::BTreeSet;

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry};
use kube::ResourceExt;
use serde_json::{Value, json};

use super::target::FIELD_MANAGER;

fn is_our_create(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
        && entry.operation.as_deref() == Some("Update")
        && entry.subresource.is_none()
}

/// The keys an entry's fieldsV1 lists under `path` (e.g. `["f:metadata", "f:labels"]`).
fn owned<'a>(entry: &'a ManagedFieldsEntry, path: &[&str]) -> BTreeSet<&'a str> {
    let mut node = entry.fields_v1.as_ref().map(|f| &f.0);
    for step in path {
        node = node.and_then(|n| n.get(*step));
    }
    node.and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().filter_map(|k| k.strip_prefix("f:")))
        .collect()
}

/// A JSON pointer segment (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch that removes what only our create still holds of `applied` (a target just
/// server-side applied with `desired`) and the create's managedFields entry, or `None` when the
/// create left nothing behind.
pub fn leftovers(applied: &Secret, desired: &Secret) -> Option<json_patch::Patch> {
    let entries = applied.managed_fields();
    let index = entries.iter().position(is_our_create)?;
    let create = &entries[index];
    let others: Vec<&ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| e.manager.as_deref() != Some(FIELD_MANAGER) || e.subresource.is_some())
        .collect();
    let sections: [(&[&str], &str, BTreeSet<&str>); 3] = [
        (
            &["f:data"],
            "/data",
            desired.data.iter().flatten().map(|(k, _)| k.as_str()).collect(),
        ),
        (
            &["f:metadata", "f:labels"],
            "/metadata/labels",
            desired.labels().keys().map(String::as_str).collect(),
        ),
        (
            &["f:metadata", "f:annotations"],
            "/metadata/annotations",
            desired.annotations().keys().map(String::as_str).collect(),
        ),
    ];
    let mut removals = Vec::new();
    for (path, pointer, wanted) in sections {
        for key in owned(create, path) {
            if !wanted.contains(key) && !others.iter().any(|o| owned(o, path).contains(key)) {
                removals.push(json!({ "op": "remove", "path": format!("{pointer}/{}", escape(key)) }));
            }
        }
    }
    if removals.is_empty() {
        return None;
    }
    let entry = format!("/metadata/managedFields/{index}");
    let mut ops = vec![
        json!({ "op": "test", "path": "/metadata/resourceVersion", "value": applied.resource_version() }),
        json!({ "op": "test", "path": format!("{entry}/manager"), "value": FIELD_MANAGER }),
        json!({ "op": "test", "path": format!("{entry}/operation"), "value": "Update" }),
    ];
    ops.extend(removals);
    ops.push(json!({ "op": "remove", "path": entry }));
    serde_json::from_value(Value::Array(ops)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> Value {
        json!({ "manager": manager, "operation": operation, "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields })
    }

    fn secret(managed: Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": { "name": "t", "resourceVersion": "7", "managedFields": managed,
                "labels": { "a/b": "1", "keep": "1" } },
            "data": { "A": "", "B": "", "C": "" }
        }))
        .expect("secret")
    }

    fn desired(keys: &[&str]) -> Secret {
        let data: serde_json::Map<String, Value> = keys.iter().map(|k| (k.to_string(), json!(""))).collect();
        serde_json::from_value(json!({ "metadata": { "name": "t", "labels": { "keep": "1" } }, "data": data }))
            .expect("desired")
    }

    #[test]
    fn what_only_the_create_holds_is_removed_once() {
        let created = entry(
            FIELD_MANAGER,
            "Update",
            json!({ "f:data": { "f:A": {}, "f:B": {}, "f:C": {} },
                    "f:metadata": { "f:labels": { "f:a/b": {}, "f:keep": {} } } }),
        );
        let applied = entry(FIELD_MANAGER, "Apply", json!({ "f:data": { "f:A": {} } }));
        let theirs = entry("kubectl-edit", "Update", json!({ "f:data": { "f:C": {} } }));
        let target = secret(json!([created, applied, theirs]));
        let patch = serde_json::to_value(leftovers(&target, &desired(&["A"])).expect("a patch")).expect("json");
        let paths: Vec<(&str, &str)> = patch
            .as_array()
            .expect("ops")
            .iter()
            .map(|op| (op["op"].as_str().unwrap_or(""), op["path"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            paths,
            [
                ("test", "/metadata/resourceVersion"),
                ("test", "/metadata/managedFields/0/manager"),
                ("test", "/metadata/managedFields/0/operation"),
                ("remove", "/data/B"),
                ("remove", "/metadata/labels/a~1b"),
                ("remove", "/metadata/managedFields/0"),
            ],
            "B and the label only the create held; C is someone else's too"
        );
    }

    #[test]
    fn nothing_left_out_or_never_created_needs_no_patch() {
        let created = entry(FIELD_MANAGER, "Update", json!({ "f:data": { "f:A": {} } }));
        assert!(leftovers(&secret(json!([created])), &desired(&["A"])).is_none());
        let applied = entry(FIELD_MANAGER, "Apply", json!({ "f:data": { "f:A": {} } }));
        assert!(leftovers(&secret(json!([applied])), &desired(&[])).is_none());
    }
}
