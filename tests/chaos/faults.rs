//! Faults 1-3: kube-apiserver or etcd killed mid-sync, and the operator SIGKILLed over and over
//! during a fan-out. The operator converges on its own; the sampler sees no value lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    cluster::Component,
    world::{APPS, World, exclusive, size},
};

/// How long a killed component stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// Generous (the machine is small and shared), yet far below the hourly refresh.
const CONVERGE: Duration = Duration::from_secs(600);

/// Kills `component`, keeps it down for [`OUTAGE`] and starts it again.
async fn outage(world: &World, component: Component) {
    world.cluster.kill(component).await;
    eprintln!("chaos: {} killed at {}", component.name(), jiff::Timestamp::now());
    tokio::time::sleep(OUTAGE).await;
    world.cluster.start(component).await;
    eprintln!("chaos: {} ready again at {}", component.name(), jiff::Timestamp::now());
}

/// A cold sync of `refs` SecretRefs, and then a store change that fans out to `fan_out` of
/// them, each interrupted a quarter of the way through by `component` dying.
async fn dies_during_cold_sync_and_fan_out(component: Component, scenario: &str, refs: usize, fan_out: usize) {
    let _one = exclusive().await;
    let secrets = refs / fan_out;
    let keys = ["API_KEY", "DB_URL"];
    let mut w = World::new(scenario).await;
    for m in 0..secrets {
        w.put(&format!("s{m}"), w.fresh(&keys)).await;
    }
    // Refreshing only hourly, so that only the event paths (watches, retries) can converge it
    // in time: a trigger or a status write lost to the fault would show.
    w.secretrefs(APPS, "app", 0..refs, |i| format!("s{}", i % secrets), "1h")
        .await;
    w.start_operator().await;
    let pid = w.operator().pid();

    w.sampler.wait_writes(refs as u64 / 4).await;
    outage(&w, component).await;
    let cold = w.converge(CONVERGE).await;

    let before = w.sampler.observed().target_writes;
    w.put("s0", w.fresh(&keys)).await;
    w.sampler.wait_writes(before + fan_out as u64 / 4).await;
    let changed = Instant::now();
    outage(&w, component).await;
    w.converge(CONVERGE).await;
    let fan = changed.elapsed();

    let operator = w.operator();
    assert!(
        operator.alive() && operator.pid() == pid && operator.starts == 1,
        "the operator kept running through both outages, never restarted"
    );
    w.assert_no_leaks().await;
    let observed = w.sampler.observed();
    w.report(json!({
        "fault": format!("{} killed (SIGKILL) for {}s, twice", component.name(), OUTAGE.as_secs()),
        "secretrefs": refs, "fan_out": fan_out,
        "cold_sync_s": cold.as_secs_f64(), "fan_out_after_fault_s": fan.as_secs_f64(),
        "target_writes": observed.target_writes, "sampler_relists": observed.relists,
        "violations": observed.violations.len(),
    }));
}

/// Fault 1: kube-apiserver killed during a cold sync and during a fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_during_cold_sync_and_fan_out() {
    dies_during_cold_sync_and_fan_out(
        Component::ApiServer,
        "apiserver-killed",
        size(300, 2_000),
        size(100, 500),
    )
    .await;
}

/// Fault 2: etcd killed mid-sync (the API server answers errors meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_during_cold_sync_and_fan_out() {
    dies_during_cold_sync_and_fan_out(Component::Etcd, "etcd-killed", size(300, 2_000), size(100, 500)).await;
}

/// A small xorshift generator: the kill moments are random but reproducible from the seed the
/// report prints (`SECRETREF_CHAOS_SEED` replays one).
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("SECRETREF_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        Moments(seed)
    }

    /// A moment between `min` and `max`.
    fn next(&mut self, min: Duration, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        min + Duration::from_millis(self.0 % (max - min).as_millis().max(1) as u64)
    }
}

/// Server-side applies of Secrets the API server carried out (the operator's target writes;
/// an apply cut off by the operator's death is answered with an error code, if at all).
async fn applies(w: &World) -> u64 {
    let mut done = 0;
    for code in ["code=\"200\"", "code=\"201\""] {
        done += w
            .cluster
            .requests(&["verb=\"APPLY\"", "resource=\"secrets\"", code])
            .await;
    }
    done
}

/// Server-side applies of Secrets the API server answered with anything else.
async fn failed_applies(w: &World) -> u64 {
    w.cluster.requests(&["verb=\"APPLY\"", "resource=\"secrets\""]).await - applies(w).await
}

/// Fault 3: the operator SIGKILLed at random moments, ten times, during a fan-out; after the
/// last start it converges, and no restart rewrote a target that was already right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_ten_times_during_a_fan_out() {
    let _one = exclusive().await;
    let targets = size(200, 1_000);
    let kills = 10;
    let keys = ["API_KEY", "DB_URL"];
    let mut w = World::new("operator-killed").await;
    w.put("shared", w.fresh(&keys)).await;
    w.secretrefs(APPS, "app", 0..targets, |_| "shared".into(), "1h").await;
    w.start_operator().await;
    w.converge(CONVERGE).await;

    let applies_before = applies(&w).await;
    let failed_before = failed_applies(&w).await;
    let writes_before = w.sampler.observed().target_writes;
    let mut moments = Moments::new();
    let seed = moments.0;
    let mut values = 0;
    let started = Instant::now();
    for kill in 0..kills {
        // A new store value before the first, fifth and ninth kill: three fan-outs.
        if kill % 4 == 0 {
            w.put("shared", w.fresh(&keys)).await;
            values += 1;
        }
        tokio::time::sleep(moments.next(Duration::from_millis(100), Duration::from_millis(2_500))).await;
        w.operator().restart().await;
    }
    w.converge(CONVERGE).await;
    let took = started.elapsed();

    let writes = w.sampler.observed().target_writes - writes_before;
    let requests = applies(&w).await - applies_before;
    let failed = failed_applies(&w).await - failed_before;
    let minimum = (targets * values) as u64;

    // A clean restart now, with every target right: it reconciles every SecretRef and writes
    // nothing at all.
    let quiet = applies(&w).await + failed_applies(&w).await;
    w.operator().restart().await;
    let operator = w.operator.as_ref().expect("operator");
    crate::support::eventually(
        Duration::from_secs(300),
        "every SecretRef reconciled after the restart",
        || async { (operator.secretref_reconciles().await >= targets as u64).then_some(()) },
    )
    .await;
    let rewrites = applies(&w).await + failed_applies(&w).await - quiet;
    w.assert_no_leaks().await;
    w.report(json!({
        "fault": format!("operator SIGKILLed {kills} times at random moments during {values} fan-outs"),
        "targets": targets, "store_values": values, "seed": seed,
        "target_writes": writes, "one_per_target_per_value": minimum,
        "applies_answered": requests, "applies_cut_off_by_a_kill": failed,
        "kills_to_converged_s": took.as_secs_f64(), "applies_after_a_clean_restart": rewrites,
    }));
    assert!(
        writes <= minimum,
        "{writes} target writes, more than one per target per value ({minimum})"
    );
    // An apply in flight when the operator dies may land or not, and may be answered with an
    // error either way; at most `concurrency` (16) are in flight at a kill.
    assert!(
        requests + failed <= writes + 16 * kills as u64,
        "{} apply requests for {writes} writes: restarts rewrote targets that were right",
        requests + failed
    );
    assert_eq!(rewrites, 0, "a restart with every target right writes nothing");
}
