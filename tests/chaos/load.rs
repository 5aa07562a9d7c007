//! Fault 6, load: 2,000 SecretRefs refreshing every second, 50 spec changes and 5 store changes
//! a second for two minutes. The operator's memory stays bounded, its queue drains, and the
//! API server sees no write that changes nothing. Full size only (`scripts/chaos`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use secretref::api::SecretRef;
use serde_json::json;

use crate::world::{APPS, World, exclusive, full, size};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test (minutes): run by scripts/chaos"]
async fn load_with_one_second_refresh_and_constant_change() {
    let _one = exclusive().await;
    let refs = size(200, 2_000);
    let secrets = 20;
    let spec_rate = 50;
    let store_rate = 5;
    let load_for = Duration::from_secs(if full() { 120 } else { 20 });
    let keys = ["TOKEN"];
    let mut w = World::new("load").await;
    for m in 0..secrets {
        w.put(&format!("s{m}"), w.fresh(&keys)).await;
    }
    w.secretrefs(APPS, "app", 0..refs, |i| format!("s{}", i % secrets), "1s")
        .await;
    w.start_operator().await;
    let cold = w.converge(Duration::from_secs(900)).await;
    let settled_rss = w.operator().rss_kib().unwrap_or(0);

    let apply_labels = ["verb=\"APPLY\"", "resource=\"secrets\"", "code=\"200\""];
    let status_labels = [
        "verb=\"PATCH\"",
        "resource=\"secretrefs\"",
        "subresource=\"status\"",
        "code=\"200\"",
    ];
    let applies_before = w.cluster.requests(&apply_labels).await;
    let status_before = w.cluster.requests(&status_labels).await;
    let observed_before = w.sampler.observed();

    let stop = Arc::new(AtomicBool::new(false));
    let spec_changes = Arc::new(AtomicU64::new(0));
    // 50 spec changes a second: a new label on the target of one SecretRef after another.
    let specs = tokio::spawn({
        let (api, stop, done) = (
            Api::<SecretRef>::namespaced(w.cluster.client.clone(), APPS),
            stop.clone(),
            spec_changes.clone(),
        );
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / spec_rate));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let patch = json!({ "spec": { "target": { "labels": { "rev": n.to_string() } } } });
                let name = format!("app-{}", (n * 7919) % refs);
                let api = api.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    if api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
                n += 1;
            }
        }
    });
    let started = Instant::now();
    let mut peak_rss = settled_rss;
    let mut store_changes = 0;
    let mut store_tick = tokio::time::interval(Duration::from_millis(1000 / store_rate));
    while started.elapsed() < load_for {
        store_tick.tick().await;
        let secret = format!("s{}", store_changes % secrets);
        w.put(&secret, w.fresh(&keys)).await;
        store_changes += 1;
        peak_rss = peak_rss.max(w.operator().rss_kib().unwrap_or(0));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = specs.await;
    let loaded_for = started.elapsed();

    // The queue drains: every target current, every SecretRef Synced for its generation.
    let drained = Instant::now();
    let drain = w.converge(Duration::from_secs(900)).await;
    peak_rss = peak_rss.max(w.operator().rss_kib().unwrap_or(0));
    let final_rss = w.operator().rss_kib().unwrap_or(0);
    let _ = drained;

    let observed = w.sampler.observed();
    let target_writes = observed.target_writes - observed_before.target_writes;
    let status_writes = observed.status_writes - observed_before.status_writes;
    let applies = w.cluster.requests(&apply_labels).await - applies_before;
    let status_patches = w.cluster.requests(&status_labels).await - status_before;
    w.assert_no_leaks().await;
    w.report(json!({
        "fault": "load",
        "secretrefs": refs, "store_secrets": secrets, "refresh": "1s",
        "spec_changes": spec_changes.load(Ordering::Relaxed), "store_changes": store_changes,
        "load_s": loaded_for.as_secs_f64(), "cold_sync_s": cold.as_secs_f64(), "drain_s": drain.as_secs_f64(),
        "rss_settled_mib": settled_rss / 1024, "rss_peak_mib": peak_rss / 1024, "rss_final_mib": final_rss / 1024,
        "target_writes": target_writes, "apply_requests": applies,
        "status_changes": status_writes, "status_patches": status_patches,
    }));
    assert_eq!(applies, target_writes, "every target apply changed the target");
    assert_eq!(status_patches, status_writes, "every status patch changed the status");
    assert!(peak_rss < 256 * 1024, "peak RSS {} MiB", peak_rss / 1024);
}
