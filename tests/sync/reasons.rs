//! Every Ready reason, each produced by a real condition on the real control plane.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::fixture::{Fixture, ready_message};

#[tokio::test]
async fn store_reasons() {
    let f = Fixture::new("storereasons").await;
    f.put("main", "a", &[("A", "1")]).await;

    f.apply(
        "SecretRef",
        "missing-store",
        json!({ "storeRef": { "kind": "SecretStore", "name": "nope" }, "secrets": [{ "name": "a" }] }),
    )
    .await;
    let sr = f.wait_reason("missing-store", "StoreNotFound").await;
    assert!(ready_message(&sr).contains("\"nope\""), "{}", ready_message(&sr));

    // A ClusterSecretStore that serves other namespaces only.
    let cluster_store = format!("{}-only-others", f.ns());
    let _guard = crate::support::ClusterStoreGuard(cluster_store.clone());
    f.apply(
        "ClusterSecretStore",
        &cluster_store,
        json!({ "namespaces": ["someone-else-*"], "provider": { "kubernetes": { "namespace": f.store_ns.name } } }),
    )
    .await;
    f.apply(
        "SecretRef",
        "not-allowed",
        json!({ "storeRef": { "name": cluster_store }, "secrets": [{ "name": "a" }] }),
    )
    .await;
    let sr = f.wait_reason("not-allowed", "StoreNotAllowed").await;
    assert!(ready_message(&sr).contains(f.ns()), "{}", ready_message(&sr));

    // A store whose namespace does not exist is not ready, and says why.
    f.apply(
        "SecretStore",
        "broken",
        json!({ "provider": { "kubernetes": { "namespace": format!("{}-nonexistent", f.ns()) } } }),
    )
    .await;
    f.apply(
        "SecretRef",
        "broken-store",
        json!({ "storeRef": { "kind": "SecretStore", "name": "broken" }, "secrets": [{ "name": "a" }] }),
    )
    .await;
    let sr = f.wait_reason("broken-store", "StoreNotReady").await;
    assert!(ready_message(&sr).contains("does not exist"), "{}", ready_message(&sr));

    // Fixing the store fixes the SecretRef without touching it (stores are watched).
    f.apply(
        "SecretStore",
        "broken",
        json!({ "provider": { "kubernetes": { "namespace": f.store_ns.name } } }),
    )
    .await;
    f.wait_reason("broken-store", "Synced").await;
    f.wait_target("broken-store", &[("A", "1")]).await;
}

#[tokio::test]
async fn secret_and_key_reasons() {
    let f = Fixture::new("keyreasons").await;
    f.put("main", "a", &[("A", "1")]).await;

    f.apply(
        "SecretRef",
        "no-secret",
        json!({ "secrets": [{ "name": "a" }, { "name": "Missing.One" }] }),
    )
    .await;
    let sr = f.wait_reason("no-secret", "SecretNotFound").await;
    assert!(ready_message(&sr).contains("\"Missing.One\""), "{}", ready_message(&sr));
    assert!(f.target("no-secret").await.is_none(), "nothing written on failure");
    // Creating the secret heals it (store secrets are watched).
    f.put("main", "Missing.One", &[("B", "2")]).await;
    f.wait_target("no-secret", &[("A", "1"), ("B", "2")]).await;

    f.apply(
        "SecretRef",
        "required",
        json!({ "secrets": [{ "name": "a" }], "requiredKeys": ["A", "NEED_ME", "AND_ME"] }),
    )
    .await;
    let sr = f.wait_reason("required", "MissingRequiredKeys").await;
    assert!(ready_message(&sr).contains("NEED_ME, AND_ME"), "{}", ready_message(&sr));

    f.apply("SecretRef", "template", json!({ "secrets": [{ "name": "a" }], "files": [{ "key": "cfg", "format": "template", "template": "{{ NOT_THERE }}" }] })).await;
    let sr = f.wait_reason("template", "TemplateError").await;
    assert!(ready_message(&sr).contains("files[cfg]"), "{}", ready_message(&sr));

    // Two store secrets of 600 KiB each are fine alone and too large together.
    let big = "x".repeat(600 * 1024);
    f.put("main", "big1", &[("BIG1", &big)]).await;
    f.put("main", "big2", &[("BIG2", &big)]).await;
    f.apply(
        "SecretRef",
        "large",
        json!({ "secrets": [{ "name": "big1" }, { "name": "big2" }] }),
    )
    .await;
    let sr = f.wait_reason("large", "TooLarge").await;
    assert!(ready_message(&sr).contains("1 MiB"), "{}", ready_message(&sr));

    // A key that is a valid Secret key but not an env-var name syncs, with a warning Event.
    f.put("main", "tls", &[("tls.crt", "cert"), ("OK", "1")]).await;
    f.apply("SecretRef", "tls", json!({ "secrets": [{ "name": "tls" }] }))
        .await;
    f.wait_reason("tls", "Synced").await;
    let events = f.events("tls").await;
    assert!(
        events
            .iter()
            .any(|(t, r, n, _)| t == "Warning" && r == "InvalidKeys" && n.contains("tls.crt")),
        "{events:?}"
    );
    // (The Ready reason InvalidKeys needs a backend key that is not a valid Secret key; the
    // kubernetes store cannot hold one, so that path is covered by the unit tests of `desired`.)

    let events = f.events("required").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.1 == "MissingRequiredKeys")
            .map(|e| e.3)
            .sum::<i32>(),
        1,
        "one Event per new failure reason, not per retry: {events:?}"
    );
}

#[tokio::test]
async fn target_conflict_leaves_foreign_secrets_alone_and_force_sync_retries() {
    let f = Fixture::new("conflict").await;
    f.put("main", "a", &[("A", "1")]).await;
    let foreign: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({ "metadata": { "name": "taken" }, "stringData": { "MINE": "do-not-touch" } }))
            .expect("secret");
    f.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create");
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "a" }], "target": { "name": "taken" }, "refreshInterval": "0s" }),
    )
    .await;
    let sr = f.wait_reason("app", "TargetConflict").await;
    assert!(ready_message(&sr).contains("\"taken\""), "{}", ready_message(&sr));
    let before = f.secrets().get("taken").await.expect("secret");
    assert_eq!(
        crate::fixture::data_of(&before),
        [("MINE".to_string(), "do-not-touch".to_string())].into()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = f.secrets().get("taken").await.expect("secret");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "a foreign Secret is never modified"
    );

    // The foreign Secret goes (unlabelled, so unwatched): only a force-sync makes the operator
    // look again before the idle re-check.
    f.secrets()
        .delete("taken", &DeleteParams::default())
        .await
        .expect("delete");
    let force = json!({ "metadata": { "annotations": { "secretref.dev/force-sync": "now" } } });
    f.secretrefs()
        .patch("app", &PatchParams::default(), &Patch::Merge(&force))
        .await
        .expect("annotate");
    f.wait_target("taken", &[("A", "1")]).await;
    f.wait_reason("app", "Synced").await;
}
