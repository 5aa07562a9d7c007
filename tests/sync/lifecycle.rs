//! Merge order, files, drift, deletion policies, force-sync and rolloutRestart.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    fixture::{Fixture, WAIT},
    support::{eventually, metric_sum},
};

#[tokio::test]
async fn merges_in_order_with_environments_keys_and_files() {
    let f = Fixture::new("merge").await;
    f.put(
        "prod",
        "api_key_1",
        &[("API_KEY_1", "prod-key"), ("SHARED", "from-api")],
    )
    .await;
    f.put(
        "prod",
        "stripe",
        &[("STRIPE_KEY", "sk_prod"), ("SHARED", "from-stripe"), ("UNWANTED", "x")],
    )
    .await;
    f.put("main", "api_key_1", &[("API_KEY_1", "main-key")]).await;
    f.put("prod", "Stripe", &[("STRIPE_KEY", "case-matters")]).await;
    f.apply(
        "SecretRef",
        "web",
        json!({
            "environment": "prod",
            "secrets": [ { "name": "api_key_1" }, { "name": "stripe", "keys": ["STRIPE_KEY", "SHARED"] }, { "name": "absent", "optional": true } ],
            "requiredKeys": ["API_KEY_1", "STRIPE_KEY"],
            "target": { "name": "web-env", "labels": { "team": "shop" }, "annotations": { "note": "hi" } },
            "files": [ { "key": ".env", "format": "dotenv" }, { "key": "config.yaml", "format": "template", "template": "stripe: {{ STRIPE_KEY }}" } ]
        }),
    )
    .await;
    let sr = f.wait_reason("web", "Synced").await;
    let data = f
        .wait_target(
            "web-env",
            &[
                ("API_KEY_1", "prod-key"),
                ("SHARED", "from-stripe"),
                ("STRIPE_KEY", "sk_prod"),
                (
                    ".env",
                    "API_KEY_1=\"prod-key\"\nSHARED=\"from-stripe\"\nSTRIPE_KEY=\"sk_prod\"\n",
                ),
                ("config.yaml", "stripe: sk_prod"),
            ],
        )
        .await;
    assert!(!data.contains_key("UNWANTED"));

    let secret = f.secrets().get("web-env").await.expect("target");
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("secretref")
    );
    assert_eq!(labels.get("secretref.dev/secretref").map(String::as_str), Some("web"));
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("note").map(String::as_str), Some("hi"));
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SecretRef", "web", Some(true))
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let status = sr.status.expect("status");
    let hash = status.data_hash.expect("dataHash");
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    assert_eq!(annotations.get("secretref.dev/data-hash"), Some(&hash));
    let names: Vec<(&str, bool)> = status
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.version.is_some()))
        .collect();
    assert_eq!(names, [("api_key_1", true), ("stripe", true), ("absent", false)]);
    assert!(status.last_sync_time.is_some());
    // A new target is created with a plain create (one request): its fields are secretref's.
    let fields = secret.metadata.managed_fields.unwrap_or_default();
    assert!(
        fields.iter().all(|m| m.manager.as_deref() == Some("secretref")),
        "{fields:?}"
    );
}

#[tokio::test]
async fn store_changes_propagate_and_unchanged_data_costs_no_write() {
    let mut f = Fixture::new("propagate").await;
    f.put("main", "a", &[("A", "1")]).await;
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "a" }], "refreshInterval": "1s" }),
    )
    .await;
    f.wait_reason("app", "Synced").await;
    f.wait_target("app", &[("A", "1")]).await;
    let rv = f.secrets().get("app").await.expect("target").metadata.resource_version;
    let sr_rv = f.secretrefs().get("app").await.expect("sr").metadata.resource_version;
    // Several refresh cycles with nothing changed: neither the target nor the status is written.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        f.secrets().get("app").await.expect("target").metadata.resource_version,
        rv,
        "no-op resync wrote the target"
    );
    assert_eq!(
        f.secretrefs().get("app").await.expect("sr").metadata.resource_version,
        sr_rv,
        "no-op resync wrote the status"
    );

    // A (unchanged since the target's create) stays co-owned by the create's managedFields
    // entry; removing it then needs secretref to drop what only the create still holds.
    f.put("main", "a", &[("A", "1"), ("B", "new")]).await;
    f.wait_target("app", &[("A", "1"), ("B", "new")]).await;
    f.put("main", "a", &[("B", "new")]).await;
    f.wait_target("app", &[("B", "new")]).await;
    // The key went with the create's managedFields entry: from now on the target is
    // server-side applied alone.
    let fields = f.secrets().get("app").await.expect("target").metadata.managed_fields;
    let owners: Vec<(Option<String>, Option<String>)> = fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager, m.operation))
        .collect();
    assert_eq!(owners, [(Some("secretref".to_string()), Some("Apply".to_string()))]);
    // One Event per real change: the two updates (a series of two). The first sync has none:
    // its Ready condition says it all.
    let counted = eventually(WAIT, "Synced Events for the changes", || async {
        let events = f.events("app").await;
        let synced: i32 = events.iter().filter(|e| e.1 == "Synced").map(|e| e.3).sum();
        (synced >= 2).then_some(events)
    })
    .await;
    // Events wait for the syncs (at most 5 s): give a third one time to show up.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events = f.events("app").await;
    assert_eq!(
        events.iter().filter(|e| e.1 == "Synced").map(|e| e.3).sum::<i32>(),
        2,
        "{counted:?} then {events:?}"
    );

    // A change just before the operator stops: its Event, still waiting for a pause in the
    // syncs, is sent on the way out (the next operator finds the target in step and would
    // not report the change again).
    f.put("main", "a", &[("B", "newer")]).await;
    f.wait_target("app", &[("B", "newer")]).await;
    f.stop_operator().await;
    let events = f.events("app").await;
    assert_eq!(
        events.iter().filter(|e| e.1 == "Synced").map(|e| e.3).sum::<i32>(),
        3,
        "{events:?}"
    );

    // A restarted operator (an upgrade, a failover) knows the target is in step from the
    // target watch's metadata alone: it neither reads nor writes it.
    f.start_operator();
    let operator = f.operator.as_ref().expect("operator");
    let metrics = eventually(WAIT, "the restarted operator to check app", || async {
        let m = operator.metrics().await;
        (metric_sum(&m, "secretref_reconciles_total", &["kind=\"SecretRef\""]) >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric_sum(&metrics, "secretref_target_reads_total", &[]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "secretref_target_writes_total", &[]),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn drift_is_repaired() {
    let f = Fixture::new("drift").await;
    f.put("main", "a", &[("A", "1")]).await;
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "a" }], "refreshInterval": "0s" }),
    )
    .await;
    f.wait_target("app", &[("A", "1")]).await;

    // An edit by someone else is reverted (refreshInterval 0: only the watch can notice).
    let edit = json!({ "data": { "A": "aGFja2Vk" } });
    f.secrets()
        .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    f.wait_target("app", &[("A", "1")]).await;

    // So is a deletion.
    f.secrets()
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete");
    f.wait_target("app", &[("A", "1")]).await;
}

#[tokio::test]
async fn deletion_policies() {
    let f = Fixture::new("deletion").await;
    f.put("main", "a", &[("A", "1")]).await;
    f.apply("SecretRef", "gone", json!({ "secrets": [{ "name": "a" }] }))
        .await;
    f.apply(
        "SecretRef",
        "kept",
        json!({ "secrets": [{ "name": "a" }], "target": { "deletionPolicy": "Retain" } }),
    )
    .await;
    f.apply(
        "SecretRef",
        "orphan",
        json!({ "secrets": [{ "name": "a" }], "target": { "creationPolicy": "Orphan" } }),
    )
    .await;
    for name in ["gone", "kept", "orphan"] {
        f.wait_target(name, &[("A", "1")]).await;
    }
    let kept = f.secrets().get("kept").await.expect("kept");
    assert!(
        kept.metadata.owner_references.unwrap_or_default().is_empty(),
        "Retain: no ownerReference"
    );

    for name in ["gone", "kept", "orphan"] {
        f.secretrefs()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    // Delete: the garbage collector removes the target through its ownerReference.
    eventually(Duration::from_secs(60), "garbage collection of the target", || async {
        f.target("gone").await.is_none().then_some(())
    })
    .await;
    assert!(f.target("kept").await.is_some(), "Retain keeps the target");
    assert!(f.target("orphan").await.is_some(), "Orphan keeps the target");
}

#[tokio::test]
async fn merge_policy_writes_only_its_keys_into_an_existing_secret() {
    let f = Fixture::new("mergepolicy").await;
    f.put("main", "a", &[("A", "1")]).await;
    let existing: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "shared", "annotations": { "secretref.dev/merge": "allow" } },
        "stringData": { "THEIRS": "keep" }
    }))
    .expect("secret");
    f.secrets()
        .create(&PostParams::default(), &existing)
        .await
        .expect("create");
    // A Secret whose owner did not opt in is refused, and left exactly as it was.
    let closed: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({ "metadata": { "name": "closed" }, "stringData": { "THEIRS": "keep" } }))
            .expect("secret");
    let closed = f
        .secrets()
        .create(&PostParams::default(), &closed)
        .await
        .expect("create");
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "a" }], "target": { "name": "shared", "creationPolicy": "Merge" } }),
    )
    .await;
    f.apply(
        "SecretRef",
        "refused",
        json!({ "secrets": [{ "name": "a" }], "target": { "name": "closed", "creationPolicy": "Merge" } }),
    )
    .await;
    f.wait_target("shared", &[("A", "1"), ("THEIRS", "keep")]).await;
    let sr = f.wait_reason("refused", "TargetConflict").await;
    assert!(
        crate::fixture::ready_message(&sr).contains("secretref.dev/merge=allow"),
        "{}",
        crate::fixture::ready_message(&sr)
    );
    let after = f.secrets().get("closed").await.expect("closed");
    assert_eq!(after.metadata.resource_version, closed.metadata.resource_version);
    f.secretrefs()
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(f.target("shared").await.is_some(), "Merge never deletes the Secret");

    // Merge into a Secret that does not exist is refused, not created.
    f.apply(
        "SecretRef",
        "nothing",
        json!({ "secrets": [{ "name": "a" }], "target": { "creationPolicy": "Merge" } }),
    )
    .await;
    let sr = f.wait_reason("nothing", "TargetConflict").await;
    assert!(crate::fixture::ready_message(&sr).contains("does not exist"));
    assert!(f.target("nothing").await.is_none());
}

#[tokio::test]
async fn force_sync_annotation_and_rollout_restart() {
    let mut f = Fixture::new("rollout").await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), f.ns());
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } },
                                "spec": { "containers": [ { "name": "web", "image": "web:1", "envFrom": [ { "secretRef": { "name": "app" } } ] } ] } } }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
    let restarted_at = || async {
        let d = deployments.get("web").await.expect("deployment");
        d.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("secretref.dev/restartedAt").cloned())
    };

    f.put("main", "a", &[("A", "1")]).await;
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "a" }], "rolloutRestart": [{ "kind": "Deployment", "name": "web" }] }),
    )
    .await;
    f.wait_target("app", &[("A", "1")]).await;
    f.wait_reason("app", "Synced").await;
    assert_eq!(restarted_at().await, None, "the first sync restarts nothing");

    // A real change restarts once.
    f.put("main", "a", &[("A", "2")]).await;
    let first = eventually(WAIT, "a restart", &restarted_at).await;

    // A forced but no-op sync, and an operator restart, do not.
    // (The status of that sync may still be queued behind the target's write.)
    let before = f
        .wait_status_caught_up("app")
        .await
        .status
        .and_then(|s| s.last_sync_time);
    let force = json!({ "metadata": { "annotations": { "secretref.dev/force-sync": "1" } } });
    f.secretrefs()
        .patch("app", &PatchParams::default(), &Patch::Merge(&force))
        .await
        .expect("annotate");
    f.stop_operator().await;
    f.start_operator();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        restarted_at().await,
        Some(first.clone()),
        "no restart on a no-op sync or an operator restart"
    );
    assert_eq!(
        f.secretrefs()
            .get("app")
            .await
            .expect("sr")
            .status
            .and_then(|s| s.last_sync_time),
        before
    );

    // The next real change restarts again.
    tokio::time::sleep(Duration::from_secs(1)).await; // restartedAt has second precision at least
    f.put("main", "a", &[("A", "3")]).await;
    eventually(WAIT, "a second restart", || async {
        restarted_at().await.filter(|t| *t != first)
    })
    .await;
}

#[tokio::test]
async fn a_store_change_reaches_every_secretref_that_uses_it() {
    let f = Fixture::new("fanout").await;
    f.put("main", "shared", &[("V", "1")]).await;
    f.put("main", "other", &[("O", "1")]).await;
    for i in 0..20 {
        let secrets = if i % 2 == 0 {
            json!([{ "name": "shared" }])
        } else {
            json!([{ "name": "other" }, { "name": "shared" }])
        };
        // refreshInterval 1h: only the store watch can bring the change in time.
        f.apply(
            "SecretRef",
            &format!("app-{i}"),
            json!({ "secrets": secrets, "refreshInterval": "1h" }),
        )
        .await;
    }
    for i in 0..20 {
        f.wait_reason(&format!("app-{i}"), "Synced").await;
    }
    f.put("main", "shared", &[("V", "2")]).await;
    for i in 0..20 {
        let name = format!("app-{i}");
        eventually(WAIT, &format!("{name} to follow"), || async {
            (f.target(&name).await?.get("V")? == "2").then_some(())
        })
        .await;
    }
}
