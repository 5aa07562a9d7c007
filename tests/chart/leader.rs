//! The chart's identity at work: end to end sync, exactly the reviewed permissions, metrics,
//! and leader election with failover.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Secret};
use kube::{Api, api::PostParams};
use secretref::{backend::SecretBackend, model::secret_data};
use serde_json::json;

use crate::{
    release::{Process, Release, assert_reviewed, effective_rules},
    support::{apply_json, eventually},
};

pub const WAIT: Duration = Duration::from_secs(30);

pub async fn target(release: &Release, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(release.client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
}

pub async fn wait_value(release: &Release, ns: &str, name: &str, key: &str, value: &str) {
    eventually(WAIT, &format!("{ns}/{name} to hold {key}"), || async {
        let s = target(release, ns, name).await?;
        (s.data?.get(key)?.0 == value.as_bytes()).then_some(())
    })
    .await;
}

pub async fn wait_leading(p: &Process) {
    eventually(WAIT, &format!("{} to lead", p.identity), || async {
        (p.metric("secretref_leader") == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_chart_identity_syncs_end_to_end_with_exactly_the_reviewed_permissions() {
    let release = Release::install("chart-e2e").await;
    let (app, store) = (&release.app, &release.store);

    // Effective permissions, in the release namespace and in any other, against the reviewed list.
    let actual = format!(
        "[release namespace]\n{}\n[any other namespace]\n{}\n",
        effective_rules(&release, &release.ns.name).await.join("\n"),
        effective_rules(&release, &app.name).await.join("\n")
    );
    assert_reviewed("deploy/rbac-reviewed.txt", &actual);

    let canary = format!("chart-canary-{}", std::process::id());
    store
        .replace("main", "api", secret_data(&[("API_KEY", &canary)]))
        .await
        .expect("store");
    let deployments: Api<Deployment> = Api::namespaced(release.client.clone(), &app.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [ { "name": "web", "image": "web" } ] } } }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");

    let operator = release.spawn("secretref-0");
    wait_leading(&operator).await;
    assert_eq!(operator.get("/livez").map(|r| r.0), Some(200));
    assert_eq!(operator.get("/readyz").map(|r| r.0), Some(200));
    for (name, spec) in [
        (
            "web",
            json!({ "secrets": [{ "name": "api" }], "rolloutRestart": [{ "kind": "Deployment", "name": "web" }] }),
        ),
        (
            "broken",
            json!({ "secrets": [{ "name": "api" }], "requiredKeys": ["NOPE"] }),
        ),
    ] {
        apply_json(
            &release.client,
            json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
            "metadata": { "name": name, "namespace": app.name }, "spec": spec }),
        )
        .await;
    }
    wait_value(&release, &app.name, "web", "API_KEY", &canary).await;
    store
        .replace("main", "api", secret_data(&[("API_KEY", "rotated")]))
        .await
        .expect("store");
    wait_value(&release, &app.name, "web", "API_KEY", "rotated").await;
    eventually(WAIT, "the rollout restart", || async {
        let d = deployments.get("web").await.ok()?;
        d.spec
            .template
            .metadata?
            .annotations?
            .get("secretref.dev/restartedAt")
            .cloned()
    })
    .await;

    let (_, metrics) = operator.get("/metrics").expect("metrics");
    for series in [
        "secretref_reconciles_total{kind=\"SecretRef\",reason=\"Synced\"}",
        "secretref_reconcile_duration_seconds_bucket",
        "secretref_backend_reads_total{result=\"found\"}",
        "secretref_backend_read_duration_seconds_count",
        "secretref_sync_failures_total{reason=\"MissingRequiredKeys\"}",
        "secretref_target_writes_total",
        "secretref_managed_secrets",
        "secretref_leader 1",
    ] {
        assert!(metrics.contains(series), "/metrics lacks {series}:\n{metrics}");
    }
    assert!(
        !metrics.contains(&canary) && !metrics.contains("rotated"),
        "a value in /metrics"
    );
    // Every metric the shipped Grafana dashboard queries is served.
    for family in crate::dashboard_metrics() {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {family}, which /metrics does not serve"
        );
    }
    assert!(!metrics.contains(&app.name), "an object name in a metric label");
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_fail_over_without_lost_or_doubled_syncs() {
    let release = Release::install("chart-ha").await;
    let (app, store) = (&release.app, &release.store);
    store
        .replace("main", "db", secret_data(&[("URL", "one")]))
        .await
        .expect("store");

    let first = release.spawn("secretref-a");
    wait_leading(&first).await;
    let second = release.spawn("secretref-b");
    eventually(WAIT, "the standby to be ready", || async {
        (second.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(second.metric("secretref_leader"), 0.0, "the standby does not lead");
    let leases: Api<Lease> = Api::namespaced(release.client.clone(), &release.ns.name);
    let lease = format!("{}-secretref-leader", release.name);
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some("secretref-a"));

    apply_json(
        &release.client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
        "metadata": { "name": "app", "namespace": app.name }, "spec": { "secrets": [{ "name": "db" }] } }),
    )
    .await;
    wait_value(&release, &app.name, "app", "URL", "one").await;
    assert_eq!(first.metric("secretref_target_writes_total"), 1.0);
    assert_eq!(
        second.metric("secretref_target_writes_total"),
        0.0,
        "a standby never writes"
    );

    // The leader dies without releasing its Lease; the store changes meanwhile.
    let killed_at = std::time::Instant::now();
    first.signal("-KILL");
    store
        .replace("main", "db", secret_data(&[("URL", "two")]))
        .await
        .expect("store");
    wait_leading(&second).await;
    let failover = killed_at.elapsed();
    assert!(
        failover <= Duration::from_secs(secretref_lease_seconds() + 5),
        "failover took {failover:?}"
    );
    wait_value(&release, &app.name, "app", "URL", "two").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        second.metric("secretref_target_writes_total"),
        1.0,
        "exactly one write for one change"
    );
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some("secretref-b"));
    eprintln!("failover after SIGKILL: {failover:?}");

    // SIGTERM releases the Lease at once.
    second.signal("-TERM");
    eventually(Duration::from_secs(10), "the Lease to be released", || async {
        lease_holder(&leases, &lease)
            .await
            .is_none_or(|h| h.is_empty())
            .then_some(())
    })
    .await;
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

fn secretref_lease_seconds() -> u64 {
    15
}
