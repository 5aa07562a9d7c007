//! A store outage: the operator's identity loses access to the store namespace. The target
//! stays byte-for-byte as it was, status says BackendUnavailable, and access coming back heals
//! it without anyone touching the SecretRef.

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;

use crate::{
    fixture::{Fixture, ready_message},
    support::{apply_json, service_account_client},
};

#[tokio::test]
async fn store_outage_leaves_the_target_unchanged_and_recovers() {
    let mut f = Fixture::without_operator("outage").await;
    let ns = f.ns().to_string();
    let store_ns = f.store_ns.name.clone();
    // What an operator needs, spread so that one RoleBinding is the store access alone.
    apply_json(&f.client, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": { "name": format!("{ns}-operator") },
        "rules": [
            { "apiGroups": ["secretref.dev"], "resources": ["secretrefs", "secretstores", "clustersecretstores"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["secretref.dev"], "resources": ["secretrefs/status", "secretstores/status", "clustersecretstores/status"], "verbs": ["patch"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"] },
            { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"] },
            { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] }
        ]
    })).await;
    apply_json(&f.client, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": { "name": format!("{ns}-operator") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-operator") },
        "subjects": [ { "kind": "ServiceAccount", "name": "operator", "namespace": ns } ]
    })).await;
    for (namespace, verbs) in [(&ns, json!(["get", "create", "patch"])), (&store_ns, json!(["get"]))] {
        apply_json(&f.client, json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "secrets", "namespace": namespace },
            "rules": [ { "apiGroups": [""], "resources": ["secrets"], "verbs": verbs } ]
        })).await;
    }
    let binding = |namespace: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "operator-secrets", "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets" },
            "subjects": [ { "kind": "ServiceAccount", "name": "operator", "namespace": ns } ]
        })
    };
    apply_json(&f.client, binding(&ns)).await;
    apply_json(&f.client, binding(&store_ns)).await;

    let operator = service_account_client(&f.client, &ns, "operator").await;
    f.start_operator_as(operator);
    f.put("main", "db", &[("DB_URL", "postgres://one")]).await;
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "db" }], "refreshInterval": "1s" }),
    )
    .await;
    f.wait_reason("app", "Synced").await;
    f.wait_target("app", &[("DB_URL", "postgres://one")]).await;
    let before = f.secrets().get("app").await.expect("target");

    // The outage: the store access goes, and the store changes meanwhile.
    let bindings: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        kube::Api::namespaced(f.client.clone(), &store_ns);
    bindings
        .delete("operator-secrets", &DeleteParams::default())
        .await
        .expect("revoke");
    f.put("main", "db", &[("DB_URL", "postgres://two")]).await;
    let sr = f.wait_reason("app", "BackendUnavailable").await;
    assert!(ready_message(&sr).contains(&store_ns), "{}", ready_message(&sr));
    assert!(!ready_message(&sr).contains("postgres://"), "{}", ready_message(&sr));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = f.secrets().get("app").await.expect("the target survives the outage");
    assert_eq!(during.data, before.data, "target data unchanged");
    assert_eq!(
        during.metadata.resource_version, before.metadata.resource_version,
        "target not written at all"
    );
    assert_eq!(
        sr.status.and_then(|s| s.data_hash),
        before
            .metadata
            .annotations
            .and_then(|a| a.get("secretref.dev/data-hash").cloned())
    );

    // Access returns: the operator's own backoff retries heal it.
    apply_json(&f.client, binding(&store_ns)).await;
    f.wait_target("app", &[("DB_URL", "postgres://two")]).await;
    f.wait_reason("app", "Synced").await;

    let roles: kube::Api<k8s_openapi::api::rbac::v1::ClusterRole> = kube::Api::all(f.client.clone());
    let role_bindings: kube::Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = kube::Api::all(f.client.clone());
    let _ = roles.delete(&format!("{ns}-operator"), &DeleteParams::default()).await;
    let _ = role_bindings
        .delete(&format!("{ns}-operator"), &DeleteParams::default())
        .await;
}
