//! Faults 4 and 5: watches that expire (410 Gone after an etcd compaction), and the store
//! itself coming and going: its namespace, one of its Secrets, a ClusterSecretStore.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use secretref::{
    api::{ClusterSecretStore, SecretRef, condition::find_ready},
    backend::SecretBackend,
};
use serde_json::json;

use crate::{
    cluster::Component,
    support::eventually,
    world::{APPS, ENV, STORE, World, exclusive, size},
};

const CONVERGE: Duration = Duration::from_secs(600);

/// How many lines of the operator's log report a watch answered 410 Gone.
fn gone_answers(logs: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("kube_runtime::watcher") && (l.contains("code: 410") || l.contains("\"code\":410")))
        .count()
}

/// Fault 4: every watch resumes from a compacted revision (410 Gone) and relists; a store
/// change and a SecretRef made during the gap still arrive. With `refreshInterval: 0s` only
/// a watch can bring the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_expire_and_relist() {
    let _one = exclusive().await;
    let refs = size(100, 500);
    let keys = ["TOKEN"];
    let mut w = World::new("watches-expire").await;
    for m in 0..4 {
        w.put(&format!("s{m}"), w.fresh(&keys)).await;
    }
    w.secretrefs(APPS, "app", 0..refs, |i| format!("s{}", i % 4), "0s")
        .await;
    w.start_operator().await;
    w.converge(CONVERGE).await;
    let gone_before = gone_answers(&w.operator().logs());

    // The gap: the operator is frozen and its connections die with the API server; meanwhile
    // the store changes, a SecretRef is created, and etcd forgets every older revision.
    w.operator().signal("STOP");
    w.cluster.kill(Component::ApiServer).await;
    w.cluster.start(Component::ApiServer).await;
    w.put("s0", w.fresh(&keys)).await;
    w.secretrefs(APPS, "late", 0..3, |_| "s1".into(), "0s").await;
    let revision = w.cluster.compact_etcd().await;
    let resumed = Instant::now();
    w.operator().signal("CONT");
    w.converge(CONVERGE).await;
    let took = resumed.elapsed();

    let gone = gone_answers(&w.operator().logs()) - gone_before;
    assert!(gone > 0, "the operator's watches resumed with 410 Gone");
    w.assert_no_leaks().await;
    let observed = w.sampler.observed();
    w.report(json!({
        "fault": "operator frozen, kube-apiserver restarted, etcd compacted at the newest revision: every watch resumes with 410 Gone",
        "secretrefs": refs, "compacted_at": revision, "operator_410_answers": gone,
        "sampler_relists": observed.relists, "gap_change_arrived_s": took.as_secs_f64(),
        "violations": observed.violations.len(),
    }));
}

/// Waits until every SecretRef of the apps namespace reports `reason`.
async fn all_report(w: &World, reasons: &[&str]) {
    let api: Api<SecretRef> = Api::namespaced(w.cluster.client.clone(), APPS);
    eventually(
        Duration::from_secs(300),
        &format!("every SecretRef to report {reasons:?}"),
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|sr| {
                    let ready = sr.status.as_ref().and_then(|s| find_ready(&s.conditions));
                    ready.is_some_and(|c| reasons.contains(&c.reason.as_str()))
                })
                .then_some(())
        },
    )
    .await;
}

/// Fault 5: a store Secret deleted and recreated under the same name, the store namespace
/// deleted and recreated, and the ClusterSecretStore deleted while every SecretRef uses it.
/// While the store is gone the targets stay exactly as they were; when it is back they recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_namespace_secret_and_store_deleted_and_recreated() {
    let _one = exclusive().await;
    let refs = size(100, 500);
    let keys = ["TOKEN", "URL"];
    let mut w = World::new("store-churn").await;
    for m in 0..4 {
        w.put(&format!("s{m}"), w.fresh(&keys)).await;
    }
    w.secretrefs(APPS, "app", 0..refs, |i| format!("s{}", i % 4), "30s")
        .await;
    w.start_operator().await;
    w.converge(CONVERGE).await;

    // A store Secret deleted and at once recreated (with a new value) under the same name.
    w.store.delete(ENV, "s1").await.expect("delete s1");
    w.put("s1", w.fresh(&keys)).await;
    let secret_back = w.converge(CONVERGE).await;

    // The store namespace deleted (with every store Secret) and recreated.
    let namespaces: Api<Namespace> = Api::all(w.cluster.client.clone());
    namespaces
        .delete(STORE, &DeleteParams::default())
        .await
        .expect("delete the store namespace");
    eventually(Duration::from_secs(120), "the store namespace to be gone", || async {
        matches!(namespaces.get_opt(STORE).await, Ok(None)).then_some(())
    })
    .await;
    let writes = w.sampler.observed().target_writes;
    all_report(&w, &["SecretNotFound", "StoreNotReady"]).await;
    assert_eq!(
        w.sampler.observed().target_writes,
        writes,
        "no target written while the store namespace was gone"
    );
    w.cluster.namespace(STORE).await;
    let recreated = Instant::now();
    for m in 0..4 {
        w.put(&format!("s{m}"), w.fresh(&keys)).await;
    }
    w.converge(CONVERGE).await;
    let namespace_back = recreated.elapsed();

    // The ClusterSecretStore deleted while every SecretRef uses it, and recreated.
    let stores: Api<ClusterSecretStore> = Api::all(w.cluster.client.clone());
    let store = stores.get("default").await.expect("store");
    stores
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete the store");
    let writes = w.sampler.observed().target_writes;
    all_report(&w, &["StoreNotFound"]).await;
    assert_eq!(
        w.sampler.observed().target_writes,
        writes,
        "no target written without a store"
    );
    let mut again: ClusterSecretStore = ClusterSecretStore::new("default", store.spec.clone());
    again.metadata.labels = store.metadata.labels.clone();
    stores
        .create(&PostParams::default(), &again)
        .await
        .expect("recreate the store");
    let store_recreated = Instant::now();
    w.converge(CONVERGE).await;
    let store_back = store_recreated.elapsed();

    w.assert_no_leaks().await;
    let observed = w.sampler.observed();
    w.report(json!({
        "fault": "store Secret deleted and recreated; store namespace deleted and recreated; ClusterSecretStore deleted and recreated",
        "secretrefs": refs,
        "secret_recreated_converged_s": secret_back.as_secs_f64(),
        "namespace_recreated_converged_s": namespace_back.as_secs_f64(),
        "store_recreated_converged_s": store_back.as_secs_f64(),
        "violations": observed.violations.len(),
    }));
}
