//! Item 8, hostile specs the schema lets through: templates that loop, recurse, build huge
//! strings or reach for files; many `secrets`; target types whose rules the keys break.
//! Each fails with a clear reason, bounded, with no retry storm; the operator stays responsive.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

use crate::world::{APPS, World, exclusive};

/// Templates that must fail (TemplateError) without stalling or swelling the operator.
fn hostile_templates() -> Vec<(&'static str, String)> {
    vec![
        ("loop", "{% for a in range(100000) %}{% for b in range(100000) %}{{ TOKEN }}{% endfor %}{% endfor %}".into()),
        ("recurse", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".into()),
        (
            "double",
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d(TOKEN, 64) }}".into(),
        ),
        ("repeat", "{{ TOKEN * 1000000000 }}".into()),
        ("width", "{{ '%999999999s'|format(TOKEN) }}".into()),
        ("list", "{{ range(1000000000)|list|length }}".into()),
        ("include", "{% include '/etc/passwd' %}".into()),
        ("import", "{% from '/proc/self/environ' import x %}{{ x }}".into()),
        ("nesting", format!("{{{{ {}1{} }}}}", "(".repeat(5_000), ")".repeat(5_000))),
    ]
}

/// Server-side applies of Secrets the API server refused as invalid.
/// Target writes the API server refused as invalid: a new target is created with a POST, an
/// existing one server-side applied.
async fn refusals(w: &World) -> u64 {
    let mut refused = 0;
    for verb in ["verb=\"APPLY\"", "verb=\"POST\""] {
        refused += w
            .cluster
            .requests(&[verb, "resource=\"secrets\"", "code=\"422\""])
            .await;
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_specs() {
    let _one = exclusive().await;
    let mut w = World::new("hostile-specs").await;
    let client = w.cluster.client.clone();
    w.put("app", w.fresh(&["TOKEN"])).await;
    w.start_operator().await;

    let started = Instant::now();
    let templates = hostile_templates();
    for (name, template) in &templates {
        let spec = json!({ "secrets": [{ "name": "app" }], "refreshInterval": "1s",
                           "files": [{ "key": "t", "format": "template", "template": template }] });
        w.apply_secretref(&client, APPS, name, spec)
            .await
            .expect("the schema lets it through");
    }
    // The operator stays responsive: a plain SecretRef created after them syncs promptly.
    w.apply_secretref(&client, APPS, "calm", json!({ "secrets": [{ "name": "app" }] }))
        .await
        .expect("apply");
    w.mirror(APPS, "calm", "app");
    w.converge(Duration::from_secs(60)).await;
    let calm_after = started.elapsed();
    for (name, _) in &templates {
        w.wait_reason(APPS, name, "TemplateError").await;
    }
    let all_failed = started.elapsed();

    // `secrets` beyond the schema's 64: refused by the API server, naming the field.
    let many: Vec<serde_json::Value> = (0..500).map(|i| json!({ "name": format!("s{i}") })).collect();
    let refused = w
        .apply_secretref(&client, APPS, "too-many", json!({ "secrets": many }))
        .await
        .expect_err("500 secrets are refused");
    assert!(refused.to_string().contains("spec.secrets"), "{refused}");
    // 64 entries (the most allowed), each its own secret: one target with every key.
    for i in 0..64 {
        w.put(&format!("s{i}"), w.fresh(&[&format!("K{i}")])).await;
    }
    let most: Vec<serde_json::Value> = (0..64).map(|i| json!({ "name": format!("s{i}") })).collect();
    w.apply_secretref(&client, APPS, "most", json!({ "secrets": most }))
        .await
        .expect("64 secrets");
    w.wait_reason(APPS, "most", "Synced").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), APPS);
    let most_target = secrets.get("most").await.expect("target");
    assert_eq!(most_target.data.map(|d| d.len()), Some(64));

    // Target types whose rules the keys break: the API server's refusal becomes the reason,
    // sent once, not at every 1 s refresh; a ServiceAccount token is refused without asking.
    let before = refusals(&w).await;
    let docker = json!({ "secrets": [{ "name": "app" }], "refreshInterval": "1s",
                         "target": { "type": "kubernetes.io/dockerconfigjson" } });
    w.apply_secretref(&client, APPS, "docker", docker).await.expect("apply");
    let token = json!({ "secrets": [{ "name": "app" }], "refreshInterval": "1s",
                        "target": { "type": "kubernetes.io/service-account-token",
                                    "annotations": { "kubernetes.io/service-account.name": "default" } } });
    w.apply_secretref(&client, APPS, "token", token).await.expect("apply");
    let docker_says = w.wait_reason(APPS, "docker", "TargetConflict").await;
    assert!(
        docker_says.contains("the API server refused it") && docker_says.contains(".dockerconfigjson"),
        "{docker_says}"
    );
    let token_says = w.wait_reason(APPS, "token", "TargetConflict").await;
    assert!(
        token_says.contains("kubernetes.io/service-account-token is refused"),
        "{token_says}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent = refusals(&w).await - before;
    assert_eq!(
        sent, 1,
        "one refused apply in 10 s of 1 s refreshes, not one per refresh"
    );
    for absent in ["docker", "token", "loop", "double"] {
        assert!(
            secrets.get_opt(absent).await.expect("get").is_none(),
            "{absent}: no target"
        );
    }

    let rss = w.operator().rss_kib().unwrap_or(0);
    assert!(w.operator().alive(), "the operator survived every spec");
    assert!(rss < 200 * 1024, "RSS {} MiB after the hostile templates", rss / 1024);
    w.converge(Duration::from_secs(60)).await;
    w.assert_no_leaks().await;
    w.report(json!({
        "input": "specs", "hostile_templates": templates.len(),
        "calm_synced_after_s": calm_after.as_secs_f64(), "all_template_errors_after_s": all_failed.as_secs_f64(),
        "refused_applies_in_10s": sent, "rss_mib": rss / 1024,
    }));
}
