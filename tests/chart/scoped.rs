//! The namespace-scoped install (`scope.namespaces`): under the chart's own ServiceAccount it
//! syncs in its namespaces, ignores SecretRefs anywhere else, and its effective permissions
//! are exactly the reviewed list, with no Secret access outside its namespaces.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::{Api, api::PostParams};
use secretref::{api::SecretRef, backend::SecretBackend, model::secret_data};
use serde_json::json;

use crate::{
    leader::{target, wait_leading, wait_value},
    release::{Release, assert_reviewed, effective_rules},
    support::{TestNamespace, apply_json, service_account_client},
};

/// Whether the chart's ServiceAccount may `verb` `resource` (in `namespace`, or cluster-wide).
async fn allowed(release: &Release, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    let sa = service_account_client(
        &release.client,
        &release.ns.name,
        &format!("{}-secretref", release.name),
    )
    .await;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(sa)
        .create(&PostParams::default(), &review)
        .await
        .expect("access review")
        .status
        .is_some_and(|s| s.allowed)
}

async fn secretref(release: &Release, namespace: &str, name: &str) {
    apply_json(
        &release.client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                "metadata": { "name": name, "namespace": namespace },
                "spec": { "secrets": [ { "name": "api" } ] } }),
    )
    .await;
}

#[tokio::test]
async fn the_scoped_install_syncs_its_namespaces_only_with_exactly_the_reviewed_permissions() {
    let release = Release::install_scoped("scoped", 2).await;
    let (app, app2) = (&release.app, &release.apps[0]);
    let outside = TestNamespace::new(&release.client, "scoped-outside").await;

    let actual = format!(
        "[release namespace]\n{}\n[each of scope.namespaces]\n{}\n[each of scope.storeNamespaces]\n{}\n[any other namespace]\n{}\n",
        effective_rules(&release, &release.ns.name).await.join("\n"),
        effective_rules(&release, &app.name).await.join("\n"),
        effective_rules(&release, &release.store_ns.name).await.join("\n"),
        effective_rules(&release, &outside.name).await.join("\n"),
    );
    assert_eq!(
        effective_rules(&release, &app2.name).await,
        effective_rules(&release, &app.name).await,
        "every scoped namespace gets the same rules"
    );
    assert_reviewed("deploy/rbac-reviewed-scoped.txt", &actual);
    // Nothing cluster-wide: no Secret anywhere else, no ClusterSecretStore, no cross-namespace list.
    for (verb, group, resource, namespace) in [
        ("list", "", "secrets", None),
        ("watch", "", "secrets", None),
        ("get", "", "secrets", Some(outside.name.as_str())),
        ("list", "", "secrets", Some(outside.name.as_str())),
        ("create", "", "secrets", Some(outside.name.as_str())),
        ("list", "secretref.dev", "secretrefs", None),
        ("list", "secretref.dev", "clustersecretstores", None),
        ("get", "", "namespaces", None),
        ("create", "", "secrets", Some(release.store_ns.name.as_str())),
    ] {
        assert!(
            !allowed(&release, verb, group, resource, namespace).await,
            "the scoped install may {verb} {resource} in {namespace:?}"
        );
    }

    release
        .store
        .replace("main", "api", secret_data(&[("API_KEY", "scoped-value")]))
        .await
        .expect("store");
    let operator = release.spawn("secretref-0");
    wait_leading(&operator).await;
    for ns in [&app.name, &app2.name, &outside.name] {
        secretref(&release, ns, "web").await;
    }
    wait_value(&release, &app.name, "web", "API_KEY", "scoped-value").await;
    wait_value(&release, &app2.name, "web", "API_KEY", "scoped-value").await;
    release
        .store
        .replace("main", "api", secret_data(&[("API_KEY", "rotated")]))
        .await
        .expect("store");
    wait_value(&release, &app.name, "web", "API_KEY", "rotated").await;
    wait_value(&release, &app2.name, "web", "API_KEY", "rotated").await;

    // Outside its namespaces the operator neither writes nor reports: no target, no status,
    // and no failure (it never tried).
    let outside_sr = Api::<SecretRef>::namespaced(release.client.clone(), &outside.name)
        .get("web")
        .await
        .expect("SecretRef");
    assert!(outside_sr.status.is_none(), "{:?}", outside_sr.status);
    assert!(target(&release, &outside.name, "web").await.is_none());
    let (_, metrics) = operator.get("/metrics").expect("metrics");
    assert!(!metrics.contains("secretref_sync_failures_total{"), "{metrics}");

    // A SecretRef naming a ClusterSecretStore is told clearly why it cannot sync.
    apply_json(
        &release.client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                "metadata": { "name": "cluster", "namespace": app.name },
                "spec": { "storeRef": { "kind": "ClusterSecretStore", "name": "default" }, "secrets": [ { "name": "api" } ] } }),
    )
    .await;
    let api = Api::<SecretRef>::namespaced(release.client.clone(), &app.name);
    crate::support::eventually(crate::leader::WAIT, "StoreNotFound", || async {
        let sr = api.get("cluster").await.ok()?;
        let ready = secretref::api::condition::find_ready(&sr.status?.conditions)?.clone();
        (ready.reason == "StoreNotFound" && ready.message.contains("namespace-scoped")).then_some(())
    })
    .await;
}
