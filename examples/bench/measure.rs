//! The measurements both operators go through, so that they are measured identically.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    Args,
    cluster::{self, wait_until},
    operator::{Process, control_plane_cpu},
    report::{Operator, RequestCost},
};

/// How long the optional kube-apiserver CPU profile of a cold sync runs (from its start).
const PROFILE_SECONDS: u64 = 20;

/// How long the optional kube-apiserver CPU profile of a fan-out round runs (from the change):
/// longer than a round's 1,000 applies (1-2.5 s at N = 10,000) and over before the operator's
/// statuses, which wait for 2 s without a target write, so that both parties' profiles hold
/// the applies and little else. The next round waits for the profile.
pub const ROUND_PROFILE_SECONDS: u64 = 3;

/// With `--profile-dir`, a kube-apiserver CPU profile of the next `seconds`, saved as `file` in
/// that folder by a task to await once they are over. Failures are reported, not fatal: the
/// profile is a diagnosis, not a measurement.
pub fn apiserver_profile(
    client: &Client,
    args: &Args,
    file: &str,
    seconds: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    let dir = args.profile_dir.clone()?;
    let (client, file) = (client.clone(), dir.join(file));
    Some(tokio::spawn(async move {
        let written = async {
            let bytes = cluster::apiserver_cpu_profile(&client, seconds).await?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&file, bytes)?;
            anyhow::Ok(())
        };
        match written.await {
            Ok(()) => eprintln!("bench: kube-apiserver CPU profile in {}", file.display()),
            Err(e) => eprintln!("bench: no kube-apiserver CPU profile: {e:#}"),
        }
    }))
}

/// Names of the objects of `kind` in `namespace` whose Ready condition is True, kept up to date
/// by a watch.
pub fn track_ready(client: &Client, gvk: &GroupVersionKind, namespace: &str) -> Arc<Mutex<HashSet<String>>> {
    let ready = Arc::new(Mutex::new(HashSet::new()));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(gvk));
    let set = ready.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = events.next().await {
            let conditions = obj.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
            if conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                && let Ok(mut s) = set.lock()
            {
                s.insert(obj.name_any());
            }
        }
    });
    ready
}

/// Creates the N objects with `create` (at the benchmark's concurrency) and times it until all
/// are Ready, with the CPU each party spent meanwhile, the API server's requests per object by
/// verb and resource, and (with `--profile-dir`) a CPU profile of kube-apiserver.
pub async fn cold_sync<F, Fut>(
    client: &Client,
    name: &str,
    op: &Process,
    args: &Args,
    ready: Arc<Mutex<HashSet<String>>>,
    create: F,
) -> anyhow::Result<Operator>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    eprintln!("bench: {name} cold sync of {} objects", args.refs);
    let (op_cpu, (api_cpu, etcd_cpu)) = (op.cpu_seconds(), control_plane_cpu());
    let requests_before = cluster::apiserver_requests(client).await?;
    let profile = apiserver_profile(client, args, &format!("{name}-apiserver.pprof"), PROFILE_SECONDS);
    let started = Instant::now();
    cluster::create_all(args.refs, args.concurrency, create).await?;
    let n = args.refs;
    wait_until(
        Duration::from_secs(3600),
        Duration::from_millis(50),
        "every object to be Ready",
        || async { ready.lock().map(|s| s.len() >= n).unwrap_or(false) },
    )
    .await?;
    let cold = started.elapsed();
    let (api_now, etcd_now) = control_plane_cpu();
    let requests_after = cluster::apiserver_requests(client).await?;
    let cold_sync_requests_per_object = RequestCost::per_object(&requests_before, &requests_after, n);
    if let Some(profile) = profile {
        let _ = profile.await;
    }
    let result = Operator {
        cold_sync_requests_per_object,
        cold_sync_seconds: cold.as_secs_f64(),
        cold_sync_per_s: args.refs as f64 / cold.as_secs_f64(),
        peak_rss_bytes: op.peak_rss(),
        cold_sync_cpu_seconds_operator: op.cpu_seconds() - op_cpu,
        cold_sync_cpu_seconds_apiserver: api_now - api_cpu,
        cold_sync_cpu_seconds_etcd: etcd_now - etcd_cpu,
        ..Default::default()
    };
    eprintln!(
        "bench: {name} cold sync {:.1}s ({:.0}/s)",
        result.cold_sync_seconds, result.cold_sync_per_s
    );
    Ok(result)
}

/// One refresh cycle (plus 15% for jitter) with nothing changing: the API server's mutating
/// requests (Leases apart), the operator's backend reads (`reads`) and its CPU, per cycle.
pub async fn steady(
    client: &Client,
    op: &Process,
    args: &Args,
    reads: impl Fn(&Process) -> f64,
    result: &mut Operator,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = args.cycle.mul_f64(1.15);
    let ((w0, l0), r0, c0) = (cluster::apiserver_writes(client).await?, reads(op), op.cpu_seconds());
    tokio::time::sleep(window).await;
    let ((w1, l1), r1, c1) = (cluster::apiserver_writes(client).await?, reads(op), op.cpu_seconds());
    let per_cycle = args.cycle.as_secs_f64() / window.as_secs_f64();
    result.steady_cpu_seconds_per_cycle = (c1 - c0) * per_cycle;
    result.steady_writes_per_cycle = (w1 - w0) * per_cycle;
    result.steady_lease_writes_per_cycle = (l1 - l0) * per_cycle;
    result.backend_reads_per_cycle = (r1 - r0) * per_cycle;
    Ok(())
}

/// How many objects [`ready_after_create`] creates, one after the other.
const READY_SAMPLES: usize = 10;
/// How long [`ready_after_create`] waits for one of them.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A user's wait (`kubectl wait --for=condition=Ready`): one more object created while the N
/// refresh with nothing changing, timed from its create until it is Ready; [`READY_SAMPLES`]
/// of them one after the other, named `ready-K`, deleted afterwards. `create` makes the named
/// object (reading a store secret no propagation round changes). One not Ready within
/// [`READY_TIMEOUT`] counts as that long (a lower bound) and ends the sampling.
pub async fn ready_after_create(
    ready: &Arc<Mutex<HashSet<String>>>,
    create: impl AsyncFn(String) -> anyhow::Result<()>,
    delete: impl AsyncFn(String) -> anyhow::Result<()>,
    result: &mut Operator,
) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for k in 0..READY_SAMPLES {
        let name = format!("ready-{k}");
        let started = Instant::now();
        create(name.clone()).await?;
        let is_ready = || async { ready.lock().map(|s| s.contains(&name)).unwrap_or(false) };
        let waited = wait_until(READY_TIMEOUT, Duration::from_millis(10), "a new object", is_ready).await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if waited.is_err() {
            result.ready_after_create_timed_out += 1;
            break;
        }
    }
    for k in 0..samples.len() {
        delete(format!("ready-{k}")).await?;
    }
    result.ready_after_create_p50_ms = cluster::percentile(&mut samples.clone(), 0.5);
    result.ready_after_create_max_ms = samples.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "bench: a new object while the others refresh: Ready after {samples:.0?} ms ({} not within {READY_TIMEOUT:?})",
        result.ready_after_create_timed_out
    );
    Ok(())
}

/// Fills the propagation figures from latency samples (milliseconds).
pub fn propagation(result: &mut Operator, mut samples: Vec<f64>) {
    result.propagation_samples = samples.len();
    result.propagation_p50_ms = cluster::percentile(&mut samples, 0.50);
    result.propagation_p99_ms = cluster::percentile(&mut samples, 0.99);
}

/// One propagation round's spread for the log: first, median, p99 and last arrival (ms).
pub fn round_spread(mut round: Vec<f64>) -> String {
    let first = round.iter().copied().fold(f64::INFINITY, f64::min);
    let p50 = cluster::percentile(&mut round, 0.5);
    let p99 = cluster::percentile(&mut round, 0.99);
    let last = round.last().copied().unwrap_or(f64::NAN);
    format!("first {first:.0} ms, p50 {p50:.0}, p99 {p99:.0}, last {last:.0}")
}

/// Peak RSS of a freshly started operator once it has reconciled all N objects once (the
/// `reconciled` metric with `labels` reaches N) and settled for five seconds.
pub async fn settled_rss(op: Process, args: &Args, reconciled: &str, labels: &[&str]) -> anyhow::Result<u64> {
    let n = args.refs as f64;
    wait_until(
        Duration::from_secs(1800),
        Duration::from_millis(500),
        "a full resync",
        || async { op.metric_sum(reconciled, labels) >= n },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = op.peak_rss();
    op.stop().await;
    Ok(rss)
}

/// The benchmark's own watch of the targets, started once before the first propagation round
/// and kept for all of them.
///
/// A watcher stream is lazy: it sends its LIST of every object only when first polled, so it
/// runs in a task of its own, which takes each object's arrival time (not when a round's loop
/// gets to it). One watch for all rounds because a LIST of the N targets before each round (the
/// baseline and the watch's own, as earlier passes did) is work for the API server that the
/// floor's rounds never get: a kube-apiserver CPU profile per round showed its garbage
/// collector marking during slow rounds, and the allocations of those LISTs bring its next
/// collection forward into the operator's rounds.
pub struct TargetWatch<K> {
    /// The newest copy of every object seen so far: a round's baseline.
    latest: std::collections::HashMap<String, K>,
    events: tokio::sync::mpsc::UnboundedReceiver<(Instant, K)>,
}

impl<K: kube::Resource + Clone + Send + 'static> TargetWatch<K> {
    /// Starts the watch `events` and returns once its initial list is read.
    pub async fn start<S>(events: S) -> anyhow::Result<Self>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let (mut listed_tx, mut initial) = (Some(listed_tx), Vec::new());
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    event = events.next() => event,
                };
                match event {
                    None => return,
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(l) = listed_tx.take() {
                            let _ = l.send(std::mem::take(&mut initial));
                        }
                    }
                    // Objects of the initial list are the baseline, not changes; those of a
                    // re-list after a broken watch may be changes, so they count.
                    Some(Ok(watcher::Event::InitApply(obj))) if listed_tx.is_some() => initial.push(obj),
                    Some(Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                        let _ = tx.send((Instant::now(), obj));
                    }
                    Some(_) => {}
                }
            }
        });
        let initial = tokio::time::timeout(Duration::from_secs(300), listed)
            .await
            .map_err(|_| anyhow::anyhow!("the benchmark's watch did not list within 300 s"))?
            .map_err(|_| anyhow::anyhow!("the benchmark's watch ended before its first list"))?;
        let latest = initial.into_iter().map(|o| (o.name_any(), o)).collect();
        Ok(TargetWatch { latest, events: rx })
    }

    /// Takes in every change delivered so far, so that [`Self::latest`] is the baseline of the
    /// round about to start.
    pub fn settle(&mut self) {
        while let Ok((_, obj)) = self.events.try_recv() {
            self.latest.insert(obj.name_any(), obj);
        }
    }

    /// The newest copy of `name` taken in.
    pub fn latest(&self, name: &str) -> Option<&K> {
        self.latest.get(name)
    }

    /// The next change within `wait`, with its arrival time.
    pub async fn next(&mut self, wait: Duration) -> Option<(Instant, K)> {
        let (arrived, obj) = tokio::time::timeout(wait, self.events.recv()).await.ok()??;
        self.latest.insert(obj.name_any(), obj.clone());
        Some((arrived, obj))
    }
}
