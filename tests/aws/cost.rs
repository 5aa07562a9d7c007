//! What change detection costs in AWS calls, counted from moto's own request log: `versions`
//! is one ListSecrets page per 100 secrets (plus a DescribeSecret to confirm a secret that
//! vanished), `get_many` one GetSecretValue for a single secret, else one BatchGetSecretValue
//! per 20; and the operator's call counters agree with moto.

use std::{collections::BTreeMap, sync::Arc};

use secretref::{
    backend::{BuildContext, SecretId, credentials::Credentials, for_provider},
    metrics::Metrics,
};

use crate::fixture::World;

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn versions_cost_one_list_page_per_100_secrets_and_reads_only_what_changed() {
    let w = World::new("aws-cost").await;
    let provider: secretref::api::Provider = serde_json::from_value(w.provider(false)).expect("provider");
    let metrics = Arc::new(Metrics::default());
    let ctx = BuildContext {
        client: w.client.clone(),
        credentials: Credentials::new(w.client.clone()),
        store_namespace: Some(w.ns().to_string()),
        metrics: Some(metrics.clone()),
    };
    let backend = for_provider(&ctx, &provider).await.expect("backend");

    // 150 secrets in use (two list pages), and one that was never created.
    let mut ids: Vec<SecretId> = Vec::new();
    for i in 0..150 {
        let name = format!("s{i:03}");
        w.aws_put("main", &name, &format!(r#"{{"K": "{i}"}}"#)).await;
        ids.push(SecretId::new("main", name));
    }
    // A secret outside the prefix is neither listed nor read.
    w.aws
        .create_secret()
        .name("elsewhere/main/s000")
        .secret_string("{}")
        .send()
        .await
        .expect("create");
    let missing = SecretId::new("main", "never-created");
    ids.push(missing.clone());

    w.moto.start_recording();
    let first = backend.versions(&ids).await.expect("versions");
    assert_eq!(
        w.moto.counts(),
        counts(&[("ListSecrets", 2), ("DescribeSecret", 1)]),
        "two pages; the absent secret confirmed once"
    );
    assert_eq!(first.len(), 151);
    assert!(first.iter().filter(|(id, _)| *id != missing).all(|(_, v)| v.is_some()));
    assert_eq!(
        first.iter().find(|(id, _)| *id == missing).map(|(_, v)| v.clone()),
        Some(None)
    );

    // Nothing changed: the list pages only, no value read.
    w.moto.start_recording();
    let again = backend.versions(&ids).await.expect("versions");
    assert_eq!(w.moto.counts(), counts(&[("ListSecrets", 2)]));
    assert_eq!(again, first);

    // One change: found by the list, read with one call.
    w.aws_put("main", "s042", r#"{"K": "changed"}"#).await;
    w.moto.start_recording();
    let now = backend.versions(&ids).await.expect("versions");
    let changed: Vec<SecretId> = now
        .iter()
        .zip(&first)
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0.clone())
        .collect();
    assert_eq!(changed, [SecretId::new("main", "s042")]);
    let read = backend.get_many(&changed).await.expect("read");
    assert_eq!(w.moto.counts(), counts(&[("GetSecretValue", 1), ("ListSecrets", 2)]));
    let secret = read[0].1.as_ref().expect("exists");
    assert_eq!(secret.data["K"].expose(), "changed");
    assert_eq!(
        Some(&secret.version),
        now.iter()
            .find(|(id, _)| *id == changed[0])
            .and_then(|(_, v)| v.as_ref())
    );

    // Many changes: 20 per BatchGetSecretValue. A malformed one is left out (read it alone
    // to learn why); the others are not held up.
    w.aws_put("main", "s007", "not json").await;
    w.moto.start_recording();
    let many = backend.get_many(&ids[..45]).await.expect("batch read");
    assert_eq!(w.moto.counts(), counts(&[("BatchGetSecretValue", 3)]));
    assert_eq!(many.len(), 44);
    assert!(many.iter().all(|(id, s)| id.name != "s007" && s.is_some()));
    let why = backend.get("main", "s007").await.expect_err("invalid").to_string();
    assert!(why.contains("not JSON") && why.contains("s007"), "{why}");

    // Deleted: missing from the list, confirmed with DescribeSecret, then known absent.
    w.aws
        .delete_secret()
        .secret_id(w.aws_name("main", "s100"))
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete");
    w.moto.start_recording();
    let after = backend.versions(&ids).await.expect("versions");
    assert_eq!(w.moto.counts(), counts(&[("DescribeSecret", 1), ("ListSecrets", 2)]));
    assert_eq!(
        after.iter().find(|(id, _)| id.name == "s100").map(|(_, v)| v.clone()),
        Some(None)
    );
    w.moto.start_recording();
    backend.versions(&ids).await.expect("versions");
    assert_eq!(w.moto.counts(), counts(&[("ListSecrets", 2)]));

    // The operator's own counters saw the same calls as moto (every call since the start).
    let text = metrics.render();
    let list_calls = text
        .lines()
        .find(|l| l.starts_with("secretref_backend_calls_total") && l.contains("operation=\"ListSecrets\""))
        .expect("ListSecrets counted");
    assert!(list_calls.ends_with(" 10"), "{list_calls}");
}
