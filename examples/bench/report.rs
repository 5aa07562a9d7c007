//! The benchmark's results: JSON for machines, a table for people.

use serde::Serialize;

use crate::{Args, floors::Floors};

#[derive(Debug, Default, Serialize)]
pub struct Operator {
    pub cold_sync_per_s: f64,
    pub cold_sync_seconds: f64,
    /// Where the cold sync's CPU went (seconds): the operator, kube-apiserver and etcd, all on
    /// the same 2 cores. The profile of the cold-sync cost.
    pub cold_sync_cpu_seconds_operator: f64,
    pub cold_sync_cpu_seconds_apiserver: f64,
    pub cold_sync_cpu_seconds_etcd: f64,
    /// The API server's requests during the cold sync, per object, by "VERB resource", and
    /// the seconds it spent serving them: what each object cost it.
    pub cold_sync_requests_per_object: std::collections::BTreeMap<String, RequestCost>,
    pub peak_rss_bytes: u64,
    /// Peak RSS of a fresh process after it resynced everything (no creation burst), without
    /// and then with the unrelated Secrets: the like-for-like pair.
    pub settled_rss_bytes: u64,
    pub peak_rss_bytes_with_unrelated: Option<u64>,
    pub backend_reads_per_cycle: f64,
    pub steady_writes_per_cycle: f64,
    /// The operator's CPU seconds per refresh cycle with nothing changing: what its no-op
    /// syncs of every SecretRef cost.
    pub steady_cpu_seconds_per_cycle: f64,
    /// Lease renewals, counted apart from the writes above (leader election, not sync work).
    pub steady_lease_writes_per_cycle: f64,
    /// One more object created while the N refresh: time until it is Ready (median and
    /// worst of ten, one after the other; one not Ready within 120 s counts as 120 s, is
    /// counted in `ready_after_create_timed_out` and ends the sampling).
    pub ready_after_create_p50_ms: f64,
    pub ready_after_create_max_ms: f64,
    pub ready_after_create_timed_out: usize,
    pub propagation_p50_ms: f64,
    pub propagation_p99_ms: f64,
    pub propagation_samples: usize,
    /// `cold_sync_per_s / limit.min_writes_per_s`: the fraction of the floor reached.
    pub cold_sync_vs_min_writes: f64,
    /// `propagation_p50_ms / limit.fanout_apply_s` and the same for p99 (both in seconds).
    pub propagation_p50_vs_fanout_apply: f64,
    pub propagation_p99_vs_fanout_apply: f64,
    /// `propagation_p99_ms / limit.fanout_apply_p99_s`: the p99 against the raw applies' own.
    pub propagation_p99_vs_fanout_apply_p99: f64,
    /// An operator restart with everything in step (secretref only).
    pub restart: Option<Restart>,
}

/// An operator restart with every SecretRef already in step, counted by the API server.
#[derive(Debug, Default, Serialize)]
pub struct Restart {
    /// From the new process's start until it has reconciled every SecretRef once.
    pub seconds: f64,
    /// Of which until it held the Lease.
    pub lead_seconds: f64,
    /// Mutating requests meanwhile, Leases and access reviews (which store nothing) apart.
    pub writes: f64,
    pub lease_writes: f64,
    /// Reads of target Secrets, as the operator counts them (`secretref_target_reads_total`).
    pub target_reads: f64,
    /// Reads of store secrets (the embedded store's GETs, `secretref_backend_calls_total`).
    pub store_reads: f64,
    /// GETs of single Secrets the API server served meanwhile, from any client: the two above
    /// and whatever else ran (the garbage collector's reads, for one).
    pub secret_gets: f64,
    /// Every request meanwhile, by "VERB resource[/subresource]" (and " (code)" if it failed).
    pub requests: std::collections::BTreeMap<String, f64>,
}

impl Restart {
    /// The restart's times and own read counts, with the API server's requests by the
    /// difference of its counters `before` and `after`.
    pub fn from_requests(
        (seconds, lead_seconds): (f64, f64),
        (target_reads, store_reads): (f64, f64),
        before: &std::collections::BTreeMap<String, (f64, f64)>,
        after: &std::collections::BTreeMap<String, (f64, f64)>,
    ) -> Restart {
        let mut r = Restart {
            seconds,
            lead_seconds,
            target_reads,
            store_reads,
            ..Default::default()
        };
        for (key, (count, _)) in after {
            let delta = count - before.get(key).map_or(0.0, |b| b.0);
            if delta < 0.5 {
                continue;
            }
            let verb = key.split(' ').next().unwrap_or_default();
            // Access reviews are POSTs that store nothing (preflight's permission checks).
            let mutating = matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY" | "DELETECOLLECTION")
                && !key.ends_with("reviews");
            match (mutating, key.as_str()) {
                (true, k) if k.ends_with(" leases") => r.lease_writes += delta,
                (true, _) => r.writes += delta,
                (false, k) if k == "GET secrets" || k.starts_with("GET secrets (") => r.secret_gets += delta,
                _ => {}
            }
            r.requests.insert(key.clone(), delta);
        }
        r
    }
}

impl Operator {
    /// Fills the fractions of the floors.
    pub fn against(&mut self, floors: &Floors) {
        let (min_writes_per_s, fanout_apply_s) = (floors.min_writes_per_s, floors.fanout_apply_s);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        self.cold_sync_vs_min_writes = ratio(self.cold_sync_per_s, min_writes_per_s);
        self.propagation_p50_vs_fanout_apply = ratio(self.propagation_p50_ms / 1000.0, fanout_apply_s);
        self.propagation_p99_vs_fanout_apply = ratio(self.propagation_p99_ms / 1000.0, fanout_apply_s);
        self.propagation_p99_vs_fanout_apply_p99 = ratio(self.propagation_p99_ms / 1000.0, floors.fanout_apply_p99_s);
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RequestCost {
    pub per_object: f64,
    pub apiserver_seconds: f64,
}

impl RequestCost {
    /// What `n` objects cost the API server between two snapshots of its requests, keyed as
    /// [`crate::cluster::apiserver_requests`] keys them (requests of less than one per hundred
    /// objects left out).
    pub fn per_object(
        before: &std::collections::BTreeMap<String, (f64, f64)>,
        after: &std::collections::BTreeMap<String, (f64, f64)>,
        n: usize,
    ) -> std::collections::BTreeMap<String, RequestCost> {
        after
            .iter()
            .filter_map(|(key, (count, seconds))| {
                let (count0, seconds0) = before.get(key).copied().unwrap_or_default();
                let cost = RequestCost {
                    per_object: (count - count0) / n as f64,
                    apiserver_seconds: seconds - seconds0,
                };
                (cost.per_object >= 0.01).then(|| (key.clone(), cost))
            })
            .collect()
    }
}

/// Reads one figure of an operator's results (`None`: not measured).
type Getter = fn(&Operator) -> Option<f64>;

#[derive(Debug, Serialize)]
pub struct Report {
    pub refs: usize,
    pub store_secrets: usize,
    pub unrelated: usize,
    pub concurrency: usize,
    pub cycle_seconds: u64,
    #[serde(rename = "limit.raw_create_per_s")]
    pub raw_create_per_s: f64,
    /// The API server's rate for server-side applying a new value to each of the N Secrets:
    /// the write a store change costs per target, so N / this is the floor of propagating a
    /// change to N targets.
    #[serde(rename = "limit.raw_apply_per_s")]
    pub raw_apply_per_s: f64,
    /// The API server's rate for creating the N SecretRefs alone (no operator running): a
    /// custom resource costs it more than a Secret, and the cold sync includes these creates.
    #[serde(rename = "limit.raw_secretref_create_per_s")]
    pub raw_secretref_create_per_s: f64,
    /// Objects per second a raw client takes through the three writes a cold sync cannot
    /// avoid (create the SecretRef, create its target, patch its status): the cold-sync floor.
    #[serde(rename = "limit.min_writes_per_s")]
    pub min_writes_per_s: f64,
    /// Seconds a raw client takes to apply a new value to the M targets of one store secret
    /// (median over the rounds below): the propagation floor.
    #[serde(rename = "limit.fanout_apply_s")]
    pub fanout_apply_s: f64,
    #[serde(rename = "limit.fanout_apply_rounds_s")]
    pub fanout_apply_rounds_s: Vec<f64>,
    /// The p99 of the raw applies' return times from their round's start, the rounds pooled as
    /// the propagation samples are: the like-for-like floor of the propagation p99.
    #[serde(rename = "limit.fanout_apply_p99_s")]
    pub fanout_apply_p99_s: f64,
    /// What each of the `min_writes_per_s` objects cost the API server, by request.
    #[serde(rename = "limit.min_writes_requests_per_object")]
    pub min_writes_requests_per_object: std::collections::BTreeMap<String, RequestCost>,
    pub secretref: Option<Operator>,
    pub eso: Option<Operator>,
}

impl Report {
    pub fn new(args: &Args) -> Self {
        Report {
            refs: args.refs,
            store_secrets: args.store_secrets,
            unrelated: args.unrelated,
            concurrency: args.concurrency,
            cycle_seconds: args.cycle.as_secs(),
            raw_create_per_s: 0.0,
            raw_secretref_create_per_s: 0.0,
            raw_apply_per_s: 0.0,
            min_writes_per_s: 0.0,
            fanout_apply_s: 0.0,
            fanout_apply_rounds_s: Vec::new(),
            fanout_apply_p99_s: 0.0,
            min_writes_requests_per_object: Default::default(),
            secretref: None,
            eso: None,
        }
    }

    pub fn set_floors(&mut self, floors: &Floors) {
        self.min_writes_per_s = floors.min_writes_per_s;
        self.fanout_apply_s = floors.fanout_apply_s;
        self.fanout_apply_rounds_s = floors.fanout_apply_rounds_s.clone();
        self.fanout_apply_p99_s = floors.fanout_apply_p99_s;
        self.min_writes_requests_per_object = floors.min_writes_requests_per_object.clone();
    }

    /// Fills each operator's fractions of the floors.
    pub fn finish(&mut self) {
        let floors = Floors {
            min_writes_per_s: self.min_writes_per_s,
            fanout_apply_s: self.fanout_apply_s,
            fanout_apply_rounds_s: Vec::new(),
            fanout_apply_p99_s: self.fanout_apply_p99_s,
            min_writes_requests_per_object: Default::default(),
        };
        for op in [self.secretref.as_mut(), self.eso.as_mut()].into_iter().flatten() {
            op.against(&floors);
        }
    }

    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "\nN={} store secrets={} unrelated={} concurrency={} cycle={}s\nlimit.raw_create_per_s {:>12.1}\n\
             limit.raw_apply_per_s {:>12.1}\nlimit.raw_secretref_create_per_s {:>12.1}\n\
             limit.min_writes_per_s {:>12.1}\nlimit.fanout_apply_s {:>12.2}\nlimit.fanout_apply_p99_s {:>12.2}\n",
            self.refs,
            self.store_secrets,
            self.unrelated,
            self.concurrency,
            self.cycle_seconds,
            self.raw_create_per_s,
            self.raw_apply_per_s,
            self.raw_secretref_create_per_s,
            self.min_writes_per_s,
            self.fanout_apply_s,
            self.fanout_apply_p99_s
        );
        let columns: Vec<(&str, &Operator)> = [("secretref", &self.secretref), ("eso", &self.eso)]
            .into_iter()
            .filter_map(|(n, o)| o.as_ref().map(|o| (n, o)))
            .collect();
        out.push_str(&format!("{:<38}", "metric"));
        for (name, _) in &columns {
            out.push_str(&format!("{name:>14}"));
        }
        out.push('\n');
        let rows: [(&str, Getter); 24] = [
            ("cold_sync_per_s", |o| Some(o.cold_sync_per_s)),
            ("cold_sync / limit.min_writes", |o| Some(o.cold_sync_vs_min_writes)),
            ("cold_sync / raw_create", |_| None),
            ("cold_sync_cpu_s_operator", |o| Some(o.cold_sync_cpu_seconds_operator)),
            ("cold_sync_cpu_s_apiserver", |o| Some(o.cold_sync_cpu_seconds_apiserver)),
            ("cold_sync_cpu_s_etcd", |o| Some(o.cold_sync_cpu_seconds_etcd)),
            ("peak_rss_MiB", |o| Some(o.peak_rss_bytes as f64 / (1024.0 * 1024.0))),
            ("settled_rss_MiB", |o| {
                Some(o.settled_rss_bytes as f64 / (1024.0 * 1024.0))
            }),
            ("peak_rss_MiB_with_unrelated", |o| {
                o.peak_rss_bytes_with_unrelated.map(|b| b as f64 / (1024.0 * 1024.0))
            }),
            ("backend_reads_per_cycle", |o| Some(o.backend_reads_per_cycle)),
            ("steady_writes_per_cycle", |o| Some(o.steady_writes_per_cycle)),
            ("steady_lease_writes_per_cycle", |o| {
                Some(o.steady_lease_writes_per_cycle)
            }),
            ("steady_cpu_s_per_cycle", |o| Some(o.steady_cpu_seconds_per_cycle)),
            ("ready_after_create_p50_ms", |o| Some(o.ready_after_create_p50_ms)),
            ("ready_after_create_max_ms", |o| Some(o.ready_after_create_max_ms)),
            ("propagation_p50_ms", |o| Some(o.propagation_p50_ms)),
            ("propagation_p99_ms", |o| Some(o.propagation_p99_ms)),
            ("propagation_p50 / limit.fanout_apply", |o| {
                Some(o.propagation_p50_vs_fanout_apply)
            }),
            ("propagation_p99 / limit.fanout_apply", |o| {
                Some(o.propagation_p99_vs_fanout_apply)
            }),
            ("propagation_p99 / limit.fanout_apply_p99", |o| {
                Some(o.propagation_p99_vs_fanout_apply_p99)
            }),
            ("restart.seconds", |o| o.restart.as_ref().map(|r| r.seconds)),
            ("restart.writes", |o| o.restart.as_ref().map(|r| r.writes)),
            ("restart.target_reads", |o| o.restart.as_ref().map(|r| r.target_reads)),
            ("restart.store_reads", |o| o.restart.as_ref().map(|r| r.store_reads)),
        ];
        for (label, get) in rows {
            out.push_str(&format!("{label:<38}"));
            for (_, op) in &columns {
                let value = if label == "cold_sync / raw_create" {
                    Some(op.cold_sync_per_s / self.raw_create_per_s.max(f64::MIN_POSITIVE))
                } else {
                    get(op)
                };
                match value {
                    Some(v) => out.push_str(&format!("{v:>14.2}")),
                    None => out.push_str(&format!("{:>14}", "-")),
                }
            }
            out.push('\n');
        }
        for (name, op) in &columns {
            out.push_str(&format!(
                "\n{name}: API-server requests per object during the cold sync (its seconds)\n"
            ));
            let mut costs: Vec<_> = op.cold_sync_requests_per_object.iter().collect();
            costs.sort_by(|a, b| b.1.apiserver_seconds.total_cmp(&a.1.apiserver_seconds));
            for (request, cost) in costs {
                out.push_str(&format!(
                    "  {request:<32}{:>8.2}{:>10.0} s\n",
                    cost.per_object, cost.apiserver_seconds
                ));
            }
        }
        for (name, op) in &columns {
            if let Some(restart) = &op.restart {
                out.push_str(&format!(
                    "\n{name}: API-server requests during the restart ({:.1} s, leading after {:.1} s)\n",
                    restart.seconds, restart.lead_seconds
                ));
                for (request, count) in &restart.requests {
                    out.push_str(&format!("  {request:<32}{count:>8.0}\n"));
                }
            }
        }
        out
    }
}
