//! The operator over an `aws` SecretStore: merge, environments, requiredKeys, a change made
//! straight in AWS, a malformed or deleted secret, and the endpoint going down and back.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixture::{World, ready_message};

/// A default SecretStore over moto (static keys from this namespace) and a running operator.
async fn world(prefix: &str) -> World {
    let mut w = World::new(prefix).await;
    w.apply(
        "SecretStore",
        "store",
        json!({ "default": true, "provider": w.provider(false) }),
    )
    .await;
    w.start_operator();
    w
}

#[tokio::test]
async fn merges_environments_and_follows_changes_made_in_aws() {
    let w = world("aws-sync").await;
    w.aws_put("main", "api", r#"{"API_KEY": "main-1"}"#).await;
    w.aws_put("prod", "api", r#"{"API_KEY": "prod-1", "SHARED": "from-api"}"#)
        .await;
    w.aws_put("prod", "stripe", r#"{"STRIPE_KEY": "sk-1", "SHARED": "from-stripe"}"#)
        .await;
    let refresh = Duration::from_secs(5);
    w.apply(
        "SecretRef",
        "web",
        json!({ "environment": "prod", "secrets": [{ "name": "api" }, { "name": "stripe" }],
                "requiredKeys": ["API_KEY", "STRIPE_KEY"], "refreshInterval": "5s" }),
    )
    .await;
    w.apply("SecretRef", "dev", json!({ "secrets": [{ "name": "api" }] }))
        .await;
    w.apply(
        "SecretRef",
        "strict",
        json!({ "environment": "prod", "secrets": [{ "name": "api" }], "requiredKeys": ["API_KEY", "NOPE"] }),
    )
    .await;

    // Later wins; the default environment is the store's (main).
    w.wait_target(
        "web",
        &[("API_KEY", "prod-1"), ("SHARED", "from-stripe"), ("STRIPE_KEY", "sk-1")],
    )
    .await;
    w.wait_target("dev", &[("API_KEY", "main-1")]).await;
    let strict = w.wait_reason("strict", "MissingRequiredKeys").await;
    assert!(ready_message(&strict).contains("NOPE"));

    // The status versions are AWS VersionIds.
    let sr = w.wait_reason("web", "Synced").await;
    let current = w
        .aws
        .get_secret_value()
        .secret_id(w.aws_name("prod", "stripe"))
        .send()
        .await
        .expect("read");
    let sources = sr.status.expect("status").sources;
    let stripe = sources.iter().find(|s| s.name == "stripe").expect("stripe source");
    assert_eq!(stripe.version.as_deref(), current.version_id());

    // A change made straight in AWS reaches the target within one refresh.
    let changed = Instant::now();
    w.aws_put("prod", "stripe", r#"{"STRIPE_KEY": "sk-2", "SHARED": "from-stripe"}"#)
        .await;
    w.wait_target(
        "web",
        &[("API_KEY", "prod-1"), ("SHARED", "from-stripe"), ("STRIPE_KEY", "sk-2")],
    )
    .await;
    // One refresh, plus slack for a loaded 2-core machine.
    assert!(
        changed.elapsed() < refresh + Duration::from_secs(5),
        "took {:?}",
        changed.elapsed()
    );

    // Not a flat JSON object of strings: InvalidSecret naming it, never the value; the target
    // stays as it was.
    w.aws_put("prod", "stripe", r#"{"STRIPE_KEY": {"nested": "hunter2"}}"#)
        .await;
    let sr = w.wait_reason("web", "InvalidSecret").await;
    let message = ready_message(&sr);
    assert!(
        message.contains(&w.aws_name("prod", "stripe")) && message.contains("STRIPE_KEY"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(w.target("web").await.expect("kept")["STRIPE_KEY"], "sk-2");
    w.aws_put("prod", "stripe", "plain text, not JSON").await;
    let api: kube::Api<secretref::api::SecretRef> = kube::Api::namespaced(w.client.clone(), w.ns());
    crate::support::eventually(crate::fixture::WAIT, "InvalidSecret saying not JSON", || async {
        let sr = api.get("web").await.ok()?;
        ready_message(&sr)
            .contains("its SecretString is not JSON")
            .then_some(())
    })
    .await;
    w.aws_put("prod", "stripe", r#"{"STRIPE_KEY": "sk-3"}"#).await;
    w.wait_target(
        "web",
        &[("API_KEY", "prod-1"), ("SHARED", "from-api"), ("STRIPE_KEY", "sk-3")],
    )
    .await;

    // Deleted in AWS: SecretNotFound, and the target is kept.
    w.aws
        .delete_secret()
        .secret_id(w.aws_name("prod", "stripe"))
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete in AWS");
    let sr = w.wait_reason("web", "SecretNotFound").await;
    assert!(ready_message(&sr).contains("stripe"));
    assert_eq!(w.target("web").await.expect("kept")["STRIPE_KEY"], "sk-3");
}

#[tokio::test]
async fn endpoint_down_is_backend_unavailable_and_recovers() {
    let mut w = world("aws-down").await;
    w.aws_put("main", "db", r#"{"DB_URL": "postgres://one"}"#).await;
    w.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "db" }], "refreshInterval": "2s" }),
    )
    .await;
    w.wait_target("app", &[("DB_URL", "postgres://one")]).await;

    w.moto.stop();
    let sr = w.wait_reason("app", "BackendUnavailable").await;
    assert!(ready_message(&sr).contains("127.0.0.1"), "{}", ready_message(&sr));
    assert_eq!(
        w.target("app").await.expect("target kept")["DB_URL"],
        "postgres://one",
        "an outage never changes the target"
    );

    // moto comes back empty (its state was in memory): the secret is written again.
    w.moto.restart();
    w.aws = crate::fixture::sdk(&w.moto.endpoint(), "AKIDDIRECT");
    w.aws_put("main", "db", r#"{"DB_URL": "postgres://two"}"#).await;
    w.wait_target("app", &[("DB_URL", "postgres://two")]).await;
    w.wait_reason("app", "Synced").await;
}
