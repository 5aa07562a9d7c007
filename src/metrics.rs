//! Prometheus metrics. Every label is drawn from a small fixed set (reasons, results, kinds):
//! never an object name, a key or error text, so cardinality stays bounded and nothing secret
//! can reach a label.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `SecretRef`, `SecretStore` or `ClusterSecretStore`.
    pub kind: &'static str,
    /// `Synced`/`Valid` or a failure reason.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    /// `found`, `not_found` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `kubernetes`, `aws`, `vault`, ...
    pub provider: &'static str,
    /// The backend API operation (`ListSecrets`, `metadata.read`, ...): a fixed set per provider.
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `unchanged`, `changed` or `error`.
    pub result: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub backend_reads: Family<ReadLabels, Counter>,
    pub backend_read_duration: Histogram,
    pub sync_failures: Family<ReasonLabels, Counter>,
    pub backend_calls: Family<CallLabels, Counter>,
    pub change_polls: Family<PollLabels, Counter>,
    pub read_cache_hits: Counter,
    pub syncs_in_flight: Gauge,
    pub target_writes: Counter,
    pub target_reads: Counter,
    pub events_dropped: Counter,
    pub managed_secrets: Gauge,
    pub leader: Gauge,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("secretref");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration =
            Family::<ReconcileLabels, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        let backend_reads = Family::<ReadLabels, Counter>::default();
        let backend_read_duration = Histogram::new(buckets());
        let sync_failures = Family::<ReasonLabels, Counter>::default();
        let backend_calls = Family::<CallLabels, Counter>::default();
        let change_polls = Family::<PollLabels, Counter>::default();
        // Known label values start at zero, so a dashboard shows 0 rather than "no data".
        for result in ["unchanged", "changed", "error"] {
            drop(change_polls.get_or_create(&PollLabels { result }));
        }
        let read_cache_hits = Counter::default();
        let syncs_in_flight = Gauge::default();
        let target_writes = Counter::default();
        let target_reads = Counter::default();
        let events_dropped = Counter::default();
        let managed_secrets = Gauge::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and resulting reason",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "backend_reads",
            "Reads of one secret from a store, by result",
            backend_reads.clone(),
        );
        registry.register(
            "backend_read_duration_seconds",
            "Latency of one backend read",
            backend_read_duration.clone(),
        );
        registry.register(
            "sync_failures",
            "Failed SecretRef syncs by reason",
            sync_failures.clone(),
        );
        registry.register(
            "backend_calls",
            "API calls to external backends, by provider and operation",
            backend_calls.clone(),
        );
        registry.register(
            "change_polls",
            "Polls of a backend's secret versions, by result",
            change_polls.clone(),
        );
        registry.register(
            "read_cache_hits",
            "Secret reads served from the shared read cache (no backend call)",
            read_cache_hits.clone(),
        );
        registry.register(
            "syncs_in_flight",
            "SecretRef syncs running now (at most --concurrency)",
            syncs_in_flight.clone(),
        );
        registry.register(
            "target_writes",
            "Writes of target Secrets (real changes and repaired drift)",
            target_writes.clone(),
        );
        registry.register(
            "target_reads",
            "Reads of target Secrets (those the target watch's metadata cannot vouch for)",
            target_reads.clone(),
        );
        registry.register(
            "events_dropped",
            "Events not published because the queue of Events to send was full",
            events_dropped.clone(),
        );
        registry.register(
            "managed_secrets",
            "Secrets labelled as managed by secretref in the watched scope",
            managed_secrets.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            backend_reads,
            backend_read_duration,
            sync_failures,
            backend_calls,
            change_polls,
            read_cache_hits,
            syncs_in_flight,
            target_writes,
            target_reads,
            events_dropped,
            managed_secrets,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str, reason: &'static str, took: Duration) {
        let labels = ReconcileLabels { kind, reason };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn backend_read(&self, result: &'static str, took: Duration) {
        self.backend_reads.get_or_create(&ReadLabels { result }).inc();
        self.backend_read_duration.observe(took.as_secs_f64());
    }

    /// Counts one call of a backend's API.
    pub fn backend_call(&self, provider: &'static str, operation: &'static str) {
        self.backend_calls
            .get_or_create(&CallLabels { provider, operation })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
