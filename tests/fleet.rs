//! ClusterSecretRef on the real control plane, with an operator watching every namespace as a
//! cluster-wide install does (so this binary holds one test): namespaces selected, relabelled
//! and deleted; a template change reaching all of them; a conflict left alone; the
//! ClusterSecretRef deleted.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use secretref::{
    api::{ClusterSecretRef, SecretRef},
    backend::{SecretBackend, kubernetes::KubernetesBackend},
    model::secret_data,
};
use serde_json::json;
use support::{ClusterStoreGuard, Operator, TestNamespace, apply_json, client, eventually, install_crds};

/// Namespaces in the selection (the scenario; raise it for a longer run).
const NAMESPACES: usize = 200;
const WAIT: Duration = Duration::from_secs(180);

/// Deletes the namespaces it names when dropped (one clean-up for all of them).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        if std::env::var_os("SECRETREF_KEEP_NAMESPACES").is_some() {
            return;
        }
        let names = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let api: Api<Namespace> = Api::all(client().await);
                for name in names {
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
            });
        })
        .join();
    }
}

async fn label(client: &Client, ns: &str, value: Option<&str>) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "fleet": value } } })),
    )
    .await
    .expect("label");
}

async fn status(api: &Api<ClusterSecretRef>, name: &str) -> Option<(u32, u32, u32, Vec<(String, String)>)> {
    let status = api.get(name).await.ok()?.status?;
    let failures = status
        .failures
        .iter()
        .map(|f| (f.namespace.clone(), f.reason.clone()))
        .collect();
    Some((status.selected, status.provisioned, status.failing, failures))
}

/// The namespaces holding a target `registry` with `key`.
async fn holders(client: &Client, key: &str, namespaces: &[String]) -> BTreeSet<String> {
    let secrets: Api<Secret> = Api::all(client.clone());
    let list = secrets
        .list(&ListParams::default().labels("secretref.dev/secretref=registry"))
        .await
        .expect("targets");
    list.items
        .into_iter()
        .filter(|s| s.data.as_ref().is_some_and(|d| d.contains_key(key)))
        .filter_map(|s| s.namespace())
        .filter(|ns| namespaces.contains(ns))
        .collect()
}

#[tokio::test]
async fn a_cluster_secretref_follows_its_selection_and_template() {
    let client = client().await;
    install_crds(&client).await;
    let home = TestNamespace::new(&client, "fleet").await;
    let store_ns = TestNamespace::new(&client, "fleet-store").await;
    let store = KubernetesBackend::new(client.clone(), &store_ns.name);
    store
        .replace(
            "main",
            "registry",
            secret_data(&[("USER", "robot"), ("TOKEN", "t0ken")]),
        )
        .await
        .expect("store secret");
    let store_name = format!("{}-store", home.name);
    let _store_guard = ClusterStoreGuard(store_name.clone());
    apply_json(
        &client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": { "name": store_name },
                "spec": { "provider": { "kubernetes": { "namespace": store_ns.name } } } }),
    )
    .await;

    // The selection: NAMESPACES namespaces labelled fleet=<this run>, plus one that already
    // holds a SecretRef of the same name made by someone else.
    let run = home.name.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut names = Vec::new();
    for i in 0..=NAMESPACES {
        let name = format!("{run}-{i}");
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "fleet": run, "secretref.dev/test": "true" } }
        }))
        .expect("namespace");
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
        names.push(name);
    }
    let _cleanup = Namespaces(names.clone());
    let conflicted = names[NAMESPACES].clone();
    let selected: Vec<String> = names[..NAMESPACES].to_vec();
    apply_json(
        &client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": "registry", "namespace": conflicted },
                "spec": { "secrets": [ { "name": "not-ours" } ], "refreshInterval": "0s" } }),
    )
    .await;

    let csr_name = format!("{run}-registry");
    let csrs: Api<ClusterSecretRef> = Api::all(client.clone());
    let apply_csr = |keys: Vec<&'static str>| {
        let client = client.clone();
        let (csr_name, run, store_name) = (csr_name.clone(), run.clone(), store_name.clone());
        async move {
            apply_json(
                &client,
                json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretRef", "metadata": { "name": csr_name },
                        "spec": { "namespaceSelector": { "matchLabels": { "fleet": run } },
                                  "template": { "metadata": { "name": "registry", "labels": { "team": "platform" } },
                                                "spec": { "storeRef": { "kind": "ClusterSecretStore", "name": store_name },
                                                          "secrets": [ { "name": "registry", "keys": keys } ] } } } }),
            )
            .await
        }
    };
    apply_csr(vec!["USER"]).await;
    let operator = Operator::start_with(&client, vec![], &home.name);

    let total = NAMESPACES as u32 + 1;
    eventually(WAIT, "every selected namespace provisioned", || async {
        let s = status(&csrs, &csr_name).await?;
        (s == (total, total - 1, 1, vec![(conflicted.clone(), "Conflict".to_string())])).then_some(())
    })
    .await;
    eventually(WAIT, "every target synced", || async {
        (holders(&client, "USER", &selected).await.len() == NAMESPACES).then_some(())
    })
    .await;
    let foreign = Api::<SecretRef>::namespaced(client.clone(), &conflicted)
        .get("registry")
        .await
        .expect("the conflicting SecretRef");
    assert!(
        foreign.owner_references().is_empty(),
        "a SecretRef it does not own was touched"
    );
    assert_eq!(foreign.spec.secrets[0].name, "not-ours");

    // A template change reaches every namespace.
    apply_csr(vec!["USER", "TOKEN"]).await;
    eventually(WAIT, "the template change everywhere", || async {
        (holders(&client, "TOKEN", &selected).await.len() == NAMESPACES).then_some(())
    })
    .await;

    // A quarter leave the selection (relabelled), a tenth are deleted.
    let (relabelled, rest) = selected.split_at(NAMESPACES / 4);
    let (deleted, kept) = rest.split_at(NAMESPACES / 10);
    for ns in relabelled {
        label(&client, ns, Some("elsewhere")).await;
    }
    for ns in deleted {
        namespaces
            .delete(ns, &DeleteParams::background())
            .await
            .expect("delete");
    }
    let remaining = kept.len() as u32 + 1;
    eventually(WAIT, "the selection to shrink", || async {
        let s = status(&csrs, &csr_name).await?;
        (s.0 == remaining && s.1 == remaining - 1).then_some(())
    })
    .await;
    eventually(WAIT, "targets gone from namespaces that left", || async {
        holders(&client, "USER", relabelled).await.is_empty().then_some(())
    })
    .await;
    for ns in relabelled {
        let sr = Api::<SecretRef>::namespaced(client.clone(), ns)
            .get_opt("registry")
            .await
            .expect("get");
        assert!(sr.is_none(), "{ns} left the selection but keeps its SecretRef");
    }
    assert_eq!(holders(&client, "TOKEN", kept).await.len(), kept.len());

    // Deleting the ClusterSecretRef removes every SecretRef it kept (and their targets), and
    // still leaves the foreign one alone.
    csrs.delete(&csr_name, &DeleteParams::default()).await.expect("delete");
    eventually(WAIT, "owned SecretRefs removed", || async {
        let all = Api::<SecretRef>::all(client.clone())
            .list(&ListParams::default().labels(&format!("secretref.dev/cluster-secretref={csr_name}")))
            .await
            .ok()?;
        all.items.is_empty().then_some(())
    })
    .await;
    assert!(
        Api::<SecretRef>::namespaced(client.clone(), &conflicted)
            .get_opt("registry")
            .await
            .expect("get")
            .is_some()
    );
    operator.stop().await;
}
