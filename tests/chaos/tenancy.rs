//! Item 9, tenancy: tenants with RBAC-limited identities (TokenRequest tokens of their
//! ServiceAccounts) that may create SecretRefs but not Secrets. A namespace a store does not
//! serve gets StoreNotAllowed; another namespace's SecretStore is out of reach; and the
//! operator never writes, on a tenant's behalf, a Secret the tenant could not write itself.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use secretref::api::{ClusterSecretStore, SecretStore};
use serde_json::json;

use crate::world::{World, exclusive};

const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";
const OUTSIDER: &str = "outsider";

/// A tenant of `namespace`: SecretRefs in full, Secrets read-only.
async fn tenant(w: &World, namespace: &str) -> Client {
    let admin = &w.cluster.client;
    let rbac = |kind: &str, body: serde_json::Value| {
        let mut obj = body;
        obj["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        obj["kind"] = json!(kind);
        obj
    };
    let role = rbac(
        "Role",
        json!({
            "metadata": { "name": "tenant", "namespace": namespace },
            "rules": [
                { "apiGroups": ["secretref.dev"], "resources": ["secretrefs"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"] }
            ]
        }),
    );
    let binding = rbac(
        "RoleBinding",
        json!({
            "metadata": { "name": "tenant", "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant" },
            "subjects": [ { "kind": "ServiceAccount", "name": "tenant", "namespace": namespace } ]
        }),
    );
    for obj in [role, binding] {
        crate::support::apply_json(admin, obj).await;
    }
    w.cluster.service_account_client(namespace, "tenant").await
}

fn secret(name: &str, type_: &str, annotations: serde_json::Value, data: &[(&str, String)]) -> Secret {
    let data: serde_json::Map<String, serde_json::Value> =
        data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    serde_json::from_value(
        json!({ "metadata": { "name": name, "annotations": annotations }, "type": type_, "stringData": data }),
    )
    .expect("secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_reach_only_what_is_theirs() {
    let _one = exclusive().await;
    let mut w = World::new("tenancy").await;
    let admin = w.cluster.client.clone();
    for ns in [TEAM_A, TEAM_B, OUTSIDER, "store-b"] {
        w.cluster.namespace(ns).await;
    }
    w.put("shared", w.fresh(&["TOKEN"])).await;
    // A store for the teams only, and team B's own SecretStore over a store of its own.
    let teams: ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": { "name": "teams" },
        "spec": { "namespaces": ["team-*"], "provider": { "kubernetes": { "namespace": "store" } } }
    }))
    .expect("store");
    Api::<ClusterSecretStore>::all(admin.clone())
        .create(&PostParams::default(), &teams)
        .await
        .expect("teams");
    let private: SecretStore = serde_json::from_value(json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": "private" },
        "spec": { "provider": { "kubernetes": { "namespace": "store-b" } } }
    }))
    .expect("store");
    Api::<SecretStore>::namespaced(admin.clone(), TEAM_B)
        .create(&PostParams::default(), &private)
        .await
        .expect("private");
    let team_b_store = secretref::backend::kubernetes::KubernetesBackend::new(admin.clone(), "store-b");
    let b_only = w.value("b-only");
    secretref::backend::SecretBackend::replace(
        &team_b_store,
        "main",
        "b-only",
        secretref::model::secret_data(&[("B", &b_only)]),
    )
    .await
    .expect("team B's secret");
    w.start_operator().await;

    let a = tenant(&w, TEAM_A).await;
    let outsider = tenant(&w, OUTSIDER).await;
    let a_secrets: Api<Secret> = Api::namespaced(a.clone(), TEAM_A);
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), TEAM_A);

    // The premise: the tenant may not write Secrets itself.
    let forbidden = a_secrets
        .create(
            &PostParams::default(),
            &secret("mine", "Opaque", json!({}), &[("A", "1".into())]),
        )
        .await
        .expect_err("a tenant cannot create Secrets");
    assert!(
        matches!(forbidden, kube::Error::Api(ref s) if s.code == 403),
        "{forbidden}"
    );

    // The positive control: the tenant's own SecretRef on the teams' store.
    let teams_ref = json!({ "kind": "ClusterSecretStore", "name": "teams" });
    w.apply_secretref(
        &a,
        TEAM_A,
        "app",
        json!({ "storeRef": teams_ref, "secrets": [{ "name": "shared" }] }),
    )
    .await
    .expect("a tenant creates SecretRefs");
    w.mirror(TEAM_A, "app", "shared");
    w.converge(Duration::from_secs(120)).await;

    // A namespace outside the store's `namespaces`, naming it.
    w.apply_secretref(
        &outsider,
        OUTSIDER,
        "app",
        json!({ "storeRef": teams_ref, "secrets": [{ "name": "shared" }] }),
    )
    .await
    .expect("apply");
    let says = w.wait_reason(OUTSIDER, "app", "StoreNotAllowed").await;
    assert!(says.contains(OUTSIDER), "{says}");
    // Another namespace's SecretStore, by name.
    w.apply_secretref(
        &a,
        TEAM_A,
        "steal",
        json!({ "storeRef": { "kind": "SecretStore", "name": "private" }, "secrets": [{ "name": "b-only" }] }),
    )
    .await
    .expect("apply");
    let says = w.wait_reason(TEAM_A, "steal", "StoreNotFound").await;
    assert!(says.contains("private"), "{says}");

    // Secrets the tenant could not write: a Helm release and a ServiceAccount token.
    let release = admin_secrets
        .create(
            &PostParams::default(),
            &secret(
                "release",
                "helm.sh/release.v1",
                json!({}),
                &[("release", "h4sIAAAA".into())],
            ),
        )
        .await
        .expect("release");
    let sa_token = admin_secrets
        .create(
            &PostParams::default(),
            &secret(
                "sa-token",
                "kubernetes.io/service-account-token",
                json!({ "kubernetes.io/service-account.name": "default" }),
                &[],
            ),
        )
        .await
        .expect("token Secret");
    for (name, target) in [("merge-release", "release"), ("merge-token", "sa-token")] {
        let spec = json!({ "storeRef": teams_ref, "secrets": [{ "name": "shared" }],
                           "target": { "name": target, "creationPolicy": "Merge" } });
        w.apply_secretref(&a, TEAM_A, name, spec).await.expect("apply");
        let says = w.wait_reason(TEAM_A, name, "TargetConflict").await;
        assert!(says.contains("secretref.dev/merge=allow"), "{name}: {says}");
    }
    for (before, name) in [(&release, "release"), (&sa_token, "sa-token")] {
        let now = admin_secrets.get(name).await.expect("still there");
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{name} untouched"
        );
    }
    // A ServiceAccount token Secret of its own making (the token controller would fill it).
    let mint = json!({ "storeRef": teams_ref, "secrets": [{ "name": "shared" }],
                       "target": { "name": "minted", "type": "kubernetes.io/service-account-token",
                                   "annotations": { "kubernetes.io/service-account.name": "default" } } });
    w.apply_secretref(&a, TEAM_A, "mint", mint).await.expect("apply");
    w.wait_reason(TEAM_A, "mint", "TargetConflict").await;
    assert!(
        admin_secrets.get_opt("minted").await.expect("get").is_none(),
        "no token Secret created"
    );

    // The release's owner opts in: now Merge writes its keys, and only those.
    admin_secrets
        .patch(
            "release",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "secretref.dev/merge": "allow" } } })),
        )
        .await
        .expect("opt in");
    w.wait_reason(TEAM_A, "merge-release", "Synced").await;
    let merged = admin_secrets.get("release").await.expect("release");
    let keys: Vec<&String> = merged.data.as_ref().map(|d| d.keys().collect()).unwrap_or_default();
    assert_eq!(keys, ["TOKEN", "release"], "its own key kept, ours added");
    assert_eq!(merged.type_.as_deref(), Some("helm.sh/release.v1"));

    // Switching that SecretRef to Owner must not take the Secret over (garbage collection
    // would then delete it with the SecretRef).
    let owner = json!({ "storeRef": teams_ref, "secrets": [{ "name": "shared" }], "target": { "name": "release" } });
    w.apply_secretref(&a, TEAM_A, "merge-release", owner)
        .await
        .expect("apply");
    let says = w.wait_reason(TEAM_A, "merge-release", "TargetConflict").await;
    assert!(says.contains("belongs to someone else"), "{says}");
    Api::<secretref::api::SecretRef>::namespaced(a.clone(), TEAM_A)
        .delete("merge-release", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept = admin_secrets
        .get("release")
        .await
        .expect("the release Secret survives its SecretRef");
    assert!(
        kept.metadata.owner_references.is_none_or(|o| o.is_empty()),
        "never owned by secretref"
    );

    // Nothing reached team B's secret.
    let a_everything = a_secrets.list(&Default::default()).await.expect("list").items;
    let reached = a_everything
        .iter()
        .flat_map(|s| s.data.iter().flatten())
        .any(|(_, v)| v.0 == b_only.as_bytes());
    assert!(!reached, "team B's value never reached team A");
    w.converge(Duration::from_secs(60)).await;
    w.assert_no_leaks().await;
    w.report(json!({ "input": "tenants", "refused": ["StoreNotAllowed", "StoreNotFound", "TargetConflict x4"] }));
}
