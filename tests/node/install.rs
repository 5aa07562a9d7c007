//! The operator installed on the node, as a user installs it: the Helm chart with
//! `ci/node-values.yaml` (and `helm upgrade`, `helm uninstall`), and the kustomize manifests
//! with the image overridden in an overlay. Each runs two replicas through their real probes.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Event, Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use secretref::api::SecretRef;
use serde_json::json;

use crate::{
    INSTALL,
    node::{NAMESPACE, WAIT, client, environment, helm, kubectl, metric, name, pod_get, ready_pods, run, version},
    support::{eventually, repo_root, tools_bin},
    workload::{App, restarted_at, wait_file},
};

const SELECTOR: &str = "app.kubernetes.io/name=secretref,app.kubernetes.io/instance=secretref";
const LEASE: &str = "secretref-leader";
const VALUES: &str = "deploy/helm/secretref/ci/node-values.yaml";

/// Removes whatever an install left (CRDs stay, as they do for users) when dropped, so that a
/// failed test does not break the next install.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = run(
            &tools_bin().join("helm"),
            &["uninstall", "secretref", "-n", NAMESPACE, "--wait"],
        );
        #[rustfmt::skip]
        let _ = run(&tools_bin().join("kubectl"), &["delete", "clusterrole,clusterrolebinding", "-l", SELECTOR, "--ignore-not-found"]);
        let _ = run(
            &tools_bin().join("kubectl"),
            &["delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s"],
        );
    }
}

/// The operator's two pods, Running and Ready through the chart's probes, from our image.
async fn operator_pods(client: &Client) -> Vec<Pod> {
    let pods = ready_pods(client, NAMESPACE, SELECTOR, 2).await;
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("spec");
        let container = &spec.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some(crate::node::secretref_image().as_str())
        );
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("an HTTP probe");
            assert!(matches!(get.path.as_deref(), Some("/readyz" | "/livez")));
        }
        let status = pod.status.as_ref().expect("status");
        let ip = status.pod_ip.as_deref().expect("a pod IP");
        assert!(
            ip.starts_with("198.51.100."),
            "pod IP {ip} is in the node's documentation range"
        );
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "{} restarted", name(pod));
    }
    pods
}

/// Waits until exactly one of `pods` leads: it holds the Lease and reports
/// `secretref_leader 1` on /metrics, the others 0. Returns (leader, others).
async fn one_leader(client: &Client, pods: &[Pod]) -> (String, Vec<String>) {
    let names: Vec<String> = pods.iter().map(name).collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(WAIT, "one leader among the operator pods", || async {
        let holder = leases.get_opt(LEASE).await.ok()??.spec?.holder_identity?;
        if !names.contains(&holder) {
            return None;
        }
        for pod in &names {
            let body = pod_get(client, NAMESPACE, pod, 8080, "/metrics").await?;
            let want = if *pod == holder { 1.0 } else { 0.0 };
            if metric(&body, "secretref_leader") != Some(want) {
                return None;
            }
        }
        let others = names.iter().filter(|n| **n != holder).cloned().collect();
        Some((holder, others))
    })
    .await
}

/// Waits for the leader to have reconciled at least once, then watches `check` hold for a while:
/// what must not happen after an operator restart has had its chance to happen.
async fn settles<F: AsyncFn() -> bool>(client: &Client, leader: &str, what: &str, check: F) {
    eventually(WAIT, "the new leader to reconcile", || async {
        let body = pod_get(client, NAMESPACE, leader, 8080, "/metrics").await?;
        body.lines()
            .any(|l| l.starts_with("secretref_reconciles_total{") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert!(check().await, "{what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many `Synced` Events the SecretRef got: one per real change.
async fn synced_events(client: &Client, ns: &str, secretref: &str) -> usize {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let fields = format!("involvedObject.name={secretref},reason=Synced");
    events
        .list(&ListParams::default().fields(&fields))
        .await
        .expect("events")
        .items
        .len()
}

const CRDS: [&str; 4] = [
    "secretrefs.secretref.dev",
    "secretstores.secretref.dev",
    "clustersecretstores.secretref.dev",
    "clustersecretrefs.secretref.dev",
];

/// Helm installs the CRDs with the release and refuses to adopt ones it did not create: the
/// other test binaries install them without Helm's ownership metadata, so those are deleted
/// first (with every SecretRef and store left in the cluster: no other test runs meanwhile).
async fn without_foreign_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in CRDS {
        let Some(existing) = crds.get_opt(crd).await.expect("crd") else {
            continue;
        };
        let owner = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("meta.helm.sh/release-name"))
            .cloned();
        if owner.as_deref() != Some("secretref") {
            crds.delete(crd, &DeleteParams::default()).await.expect("delete crd");
            eventually(WAIT, &format!("{crd} to be deleted"), || async {
                crds.get_opt(crd).await.ok()?.is_none().then_some(())
            })
            .await;
        }
    }
}

#[tokio::test]
async fn helm_chart_on_the_node_runs_two_replicas_that_serve_pods_and_hand_over() {
    let _one_install = INSTALL.lock().await;
    let client = client().await;
    let _uninstall = Uninstall;

    // a. The install, exactly as README gives it, with the node's values file, into a cluster
    // where it can own the CRDs (as in a user's cluster).
    without_foreign_crds(&client).await;
    #[rustfmt::skip]
    helm(&["install", "secretref", "deploy/helm/secretref", "-n", NAMESPACE, "--create-namespace", "-f", VALUES]);
    let pods = operator_pods(&client).await;
    let (leader, _) = one_leader(&client, &pods).await;
    let metrics = pod_get(&client, NAMESPACE, &leader, 8080, "/metrics")
        .await
        .expect("/metrics");
    assert!(metrics.contains("# TYPE secretref_target_writes counter"), "{metrics}");

    // c. A Deployment consuming a merged target as env vars and files.
    let app = App::new(&client, "node-app").await;
    app.put("api", &["API_KEY=k1-7c41e9", "SHARED=from-api"]);
    app.put("db", &["DB_URL=postgres://db/one", "SHARED=from-db"]);
    app.secretref("web", &["api", "db"], json!({ "name": "web-env" }), &["web"])
        .await;
    app.secretref(
        "kept",
        &["api"],
        json!({ "name": "kept-env", "deletionPolicy": "Retain" }),
        &[],
    )
    .await;
    let data = app.wait_target("web-env", "API_KEY", "k1-7c41e9").await;
    assert_eq!(data["SHARED"], "from-db", "the later secret wins");
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [".env", "API_KEY", "DB_URL", "SHARED"]
    );
    app.wait_target("kept-env", "API_KEY", "k1-7c41e9").await;
    app.deployment("web", "web-env").await; // restarted by rolloutRestart
    app.deployment("reader", "web-env").await; // not restarted: shows files changing under it
    let web = app.pod("web").await;
    let reader = app.pod("reader").await;
    app.assert_consumes(&web, &data);
    app.assert_consumes(&reader, &data);
    assert_eq!(
        restarted_at(&client, app.ns(), "web").await,
        None,
        "the first sync restarts nothing"
    );
    let generation = app.generation("web").await;
    let events = synced_events(&client, app.ns(), "web").await;

    // d. A rotation through the CLI: the mounted file changes in the running pod, its env does
    // not; the rolloutRestart Deployment gets a new pod with the new env, once.
    app.put("api", &["API_KEY=k2-7c41e9", "SHARED=from-api"]);
    let took = wait_file(app.ns(), &reader, "/etc/app/API_KEY", "k2-7c41e9");
    eprintln!(
        "rotation: the mounted file changed {:.1} s after the CLI wrote the secret",
        took.as_secs_f64()
    );
    let data = app.wait_target("web-env", "API_KEY", "k2-7c41e9").await;
    eventually(WAIT, "every mounted file to follow", || async {
        (app.files(&reader) == data).then_some(())
    })
    .await;
    assert_eq!(
        environment(app.ns(), &reader)["API_KEY"],
        "k1-7c41e9",
        "env vars never change in a running pod"
    );
    let new_web = eventually(WAIT, "a new web pod", || async {
        let pod = app.pod("web").await;
        (pod != web).then_some(pod)
    })
    .await;
    app.assert_consumes(&new_web, &data);
    assert_eq!(
        app.generation("web").await,
        generation + 1,
        "one restart for one change"
    );
    assert_eq!(synced_events(&client, app.ns(), "web").await, events + 1);
    // The same values again: no real change, no restart.
    app.put("api", &["API_KEY=k2-7c41e9", "SHARED=from-api"]);

    // a. helm upgrade with changed values rolls the operator's pods; the restart of the
    // operator restarts no workload.
    #[rustfmt::skip]
    helm(&["upgrade", "secretref", "deploy/helm/secretref", "-n", NAMESPACE, "-f", VALUES, "--set", "logLevel=debug"]);
    let before: BTreeSet<String> = pods.iter().map(name).collect();
    let pods = eventually(WAIT, "the upgrade to replace both pods", || async {
        let pods = ready_pods(&client, NAMESPACE, SELECTOR, 2).await;
        pods.iter().all(|p| !before.contains(&name(p))).then_some(pods)
    })
    .await;
    for pod in &pods {
        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(
            env.iter()
                .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
        );
    }
    let pods = operator_pods(&client).await;
    let (leader, others) = one_leader(&client, &pods).await;
    settles(
        &client,
        &leader,
        "no workload restart on an operator restart",
        || async { app.generation("web").await == generation + 1 && app.pod("web").await == new_web },
    )
    .await;
    assert_eq!(synced_events(&client, app.ns(), "web").await, events + 1);

    // e. The leader pod deleted, a change made meanwhile: another replica takes over and the
    // change arrives exactly once. (The standby only looks at the Lease again when the record
    // it last saw expires, so the pod replacing the deleted one may win the released Lease.)
    let deleted = Instant::now();
    kubectl(&["delete", "pod", "-n", NAMESPACE, &leader, "--wait=false"]);
    app.put("api", &["API_KEY=k3-7c41e9", "SHARED=from-api"]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let successor = eventually(WAIT, "another replica to take the Lease", || async {
        let holder = leases.get_opt(LEASE).await.ok()??.spec?.holder_identity?;
        (holder != leader).then_some(holder)
    })
    .await;
    eprintln!(
        "failover: {} ({}) leads {:.1} s after the leader pod was deleted",
        successor,
        if successor == others[0] {
            "the standby"
        } else {
            "the replacement pod"
        },
        deleted.elapsed().as_secs_f64()
    );
    let data = app.wait_target("web-env", "API_KEY", "k3-7c41e9").await;
    let newest_web = eventually(WAIT, "a web pod with the change", || async {
        let pod = app.pod("web").await;
        (pod != new_web).then_some(pod)
    })
    .await;
    app.assert_consumes(&newest_web, &data);
    let pods = operator_pods(&client).await; // the Deployment replaced the deleted pod
    let (leader, _) = one_leader(&client, &pods).await;
    assert_eq!(leader, successor, "leadership stays put once taken");
    settles(&client, &leader, "the change restarts once", || async {
        app.generation("web").await == generation + 2 && app.pod("web").await == newest_web
    })
    .await;
    assert_eq!(
        synced_events(&client, app.ns(), "web").await,
        events + 2,
        "one Event per change"
    );

    // The operator's logs (kubectl logs through the kubelet) never hold a value.
    for pod in &pods {
        let logs = kubectl(&["logs", "-n", NAMESPACE, &name(pod)]);
        assert!(!logs.is_empty(), "kubectl logs {}", name(pod));
        assert!(!logs.contains("7c41e9"), "a secret value in the logs of {}", name(pod));
    }

    // a. helm uninstall: CRDs, SecretRefs and targets stay; deleting a SecretRef then follows
    // its target's deletionPolicy (through ownerReferences: no operator needed).
    helm(&["uninstall", "secretref", "-n", NAMESPACE, "--wait"]);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in CRDS {
        assert!(crds.get_opt(crd).await.expect("crd").is_some(), "{crd} stays");
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), app.ns());
    let srefs: Api<SecretRef> = Api::namespaced(client.clone(), app.ns());
    for target in ["web-env", "kept-env"] {
        assert!(secrets.get_opt(target).await.expect("get").is_some(), "{target} stays");
    }
    for sref in ["web", "kept"] {
        srefs.delete(sref, &DeleteParams::default()).await.expect("delete");
    }
    eventually(WAIT, "web-env (deletionPolicy Delete) to be removed", || async {
        secrets.get_opt("web-env").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        secrets.get_opt("kept-env").await.expect("get").is_some(),
        "Retain keeps kept-env"
    );
}

#[tokio::test]
async fn kustomize_manifests_on_the_node_run_two_replicas_that_sync() {
    let _one_install = INSTALL.lock().await;
    let client = client().await;
    let _uninstall = Uninstall;

    // b. The documented way to use your own image: an overlay with an `images` entry.
    let overlay = repo_root().join("target/node-tests/kustomize");
    std::fs::create_dir_all(&overlay).expect("overlay folder");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../deploy/kustomize\n\
             images:\n  - name: secretref\n    newName: localhost/secretref\n    newTag: \"{}\"\n",
            version()
        ),
    )
    .expect("kustomization.yaml");
    kubectl(&["apply", "-k", overlay.to_str().expect("path")]);
    let pods = operator_pods(&client).await;
    let (leader, _) = one_leader(&client, &pods).await;
    let metrics = pod_get(&client, NAMESPACE, &leader, 8080, "/metrics")
        .await
        .expect("/metrics");
    assert!(metrics.contains("secretref_leader 1"), "{metrics}");

    let app = App::new(&client, "node-kustomize").await;
    app.put("api", &["API_KEY=k1-7c41e9"]);
    app.secretref("web", &["api"], json!({ "name": "web-env" }), &[]).await;
    app.wait_target("web-env", "API_KEY", "k1-7c41e9").await;
}
