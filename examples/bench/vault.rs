//! `--backend vault`: what keeping targets in step costs HashiCorp Vault, counted by Vault
//! itself (a file audit device logs every request, with the token's display name, so each
//! operator's requests are told apart). For secretref and (with `--peer eso`) External Secrets
//! Operator v0.16.2's vault provider on the same dev server: requests per refresh cycle with
//! nothing changed, and the reads one changed secret costs, with its propagation time.

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::GroupVersionKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Args,
    cluster::{self, wait_until},
    eso, measure,
    operator::{Process, free_port},
};

/// The folder under the mount the benchmark's secrets live in.
const PREFIX: &str = "secretref";
const POLICY: &str = r#"
path "secret/data/secretref/*" { capabilities = ["read"] }
path "secret/metadata/secretref/*" { capabilities = ["read"] }
"#;

/// What one operator cost Vault.
#[derive(Debug, Default, Serialize)]
pub struct Cost {
    /// Requests per refresh cycle with nothing changed, by kind (`metadata.read`, `data.read`,
    /// `login`, ...), averaged over the measured cycles.
    pub steady_per_cycle: BTreeMap<String, f64>,
    pub steady_total_per_cycle: f64,
    /// Requests from one store change until every target using it was updated and one more
    /// cycle passed (`change_window_cycles` refresh cycles), by kind: compare with
    /// `steady_per_cycle` times the window (polls fall into a window by phase, so a kind
    /// that runs every cycle shows one or two cycles' worth).
    pub change_window: BTreeMap<String, f64>,
    pub change_window_cycles: f64,
    /// From the change to the last of its targets updated, milliseconds (one change per run).
    pub propagation_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub refs: usize,
    pub store_secrets: usize,
    pub cycle_seconds: u64,
    pub secretref: Cost,
    pub eso: Option<Cost>,
}

/// A Vault dev server with a file audit device.
struct Vault {
    process: Process,
    addr: String,
    audit: PathBuf,
    http: reqwest::Client,
}

impl Vault {
    async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("SECRETREF_BENCH_VAULT").context("SECRETREF_BENCH_VAULT (scripts/bench sets it)")?;
        let port = free_port();
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        let args: Vec<String> = [
            "server",
            "-dev",
            "-dev-root-token-id=bench-root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            "-dev-no-store-token",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = Process::spawn(Path::new(&bin), &args, port, &target.join("bench-vault.log"), &[])?;
        let vault = Vault {
            process,
            addr: format!("http://127.0.0.1:{port}"),
            audit: target.join("bench-vault-audit.log"),
            http: reqwest::Client::new(),
        };
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            "Vault to answer",
            || async { vault.call("GET", "sys/health", Value::Null).await.is_ok() },
        )
        .await?;
        let _ = std::fs::remove_file(&vault.audit);
        vault
            .call(
                "PUT",
                "sys/audit/file",
                json!({"type": "file", "options": {"file_path": vault.audit.display().to_string()}}),
            )
            .await?;
        vault
            .call("PUT", "sys/policies/acl/bench-reader", json!({"policy": POLICY}))
            .await?;
        Ok(vault)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", "bench-root");
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A reader token whose audit entries carry `token-<name>`.
    async fn token(&self, name: &str) -> anyhow::Result<String> {
        let body = self
            .call(
                "POST",
                "auth/token/create",
                json!({"policies": ["bench-reader"], "display_name": name, "ttl": "24h"}),
            )
            .await?;
        body["auth"]["client_token"]
            .as_str()
            .map(str::to_string)
            .context("token")
    }

    async fn put(&self, i: usize, round: usize) -> anyhow::Result<()> {
        self.call(
            "POST",
            &format!("secret/data/{PREFIX}/main/{}", cluster::store_secret(i)),
            json!({"data": {"API_KEY": format!("key-{i}-{round}")}}),
        )
        .await
        .map(drop)
    }

    fn audit_offset(&self) -> u64 {
        std::fs::metadata(&self.audit).map(|m| m.len()).unwrap_or(0)
    }

    /// The requests logged since `offset` by tokens named `token-<name>`, by kind.
    fn requests_since(&self, offset: u64, name: &str) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut file = std::fs::File::open(&self.audit)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let who = format!("token-{name}");
        let mut counts = BTreeMap::new();
        for entry in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
            if entry["type"] != "request" || entry["auth"]["display_name"] != who.as_str() {
                continue;
            }
            let path = entry["request"]["path"].as_str().unwrap_or_default();
            let operation = entry["request"]["operation"].as_str().unwrap_or_default();
            let kind = match path.split('/').nth(1) {
                Some(k @ ("data" | "metadata" | "subkeys")) if path.starts_with("secret/") => {
                    format!("{k}.{operation}")
                }
                _ => format!("{path} ({operation})"),
            };
            *counts.entry(kind).or_insert(0.0) += 1.0;
        }
        Ok(counts)
    }
}

/// One operator under measurement: how it is started, its objects, and its targets.
struct Side {
    name: &'static str,
    namespace: &'static str,
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<()> {
    let vault = Vault::start().await?;
    for i in 0..args.store_secrets {
        vault.put(i, 0).await?;
    }
    let mut report = Report {
        refs: args.refs,
        store_secrets: args.store_secrets,
        cycle_seconds: args.cycle.as_secs(),
        ..Default::default()
    };
    let side = Side {
        name: "secretref",
        namespace: "bench-vault-sr",
    };
    let op = start_secretref(client, args, &vault, &side).await?;
    report.secretref = measure_cost(client, args, &vault, &side, 1).await?;
    op.stop().await;
    if args.peer_eso {
        let side = Side {
            name: "eso",
            namespace: "bench-vault-eso",
        };
        let op = start_eso(client, args, &vault, &side).await?;
        report.eso = Some(measure_cost(client, args, &vault, &side, 2).await?);
        op.stop().await;
    }
    vault.process.stop().await;
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    print!("{}", table(&report));
    Ok(())
}

async fn start_secretref(client: &Client, args: &Args, vault: &Vault, side: &Side) -> anyhow::Result<Process> {
    let ns = side.namespace;
    cluster::namespace(client, ns).await?;
    let token = vault.token(side.name).await?;
    cluster::apply(
        client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-token", "namespace": ns},
               "stringData": {"token": token}}),
    )
    .await?;
    cluster::apply(
        client,
        json!({"apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": "bench-vault"},
               "spec": {"namespaces": [ns], "provider": {"vault": {"server": vault.addr, "prefix": PREFIX,
                   "auth": {"token": {"secretRef": {"name": "vault-token", "namespace": ns, "key": "token"}}}}}}}),
    )
    .await?;
    let port = free_port();
    let argv: Vec<String> = [
        "run",
        "--concurrency",
        &args.concurrency.to_string(),
        "--operator-namespace",
        ns,
        "--metrics-bind-address",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let op = Process::spawn(
        &target.join("release/secretref"),
        &argv,
        port,
        &target.join("bench-vault-secretref.log"),
        &[],
    )?;
    let ready = measure::track_ready(
        client,
        &GroupVersionKind::gvk("secretref.dev", "v1alpha1", "SecretRef"),
        ns,
    );
    let cycle = format!("{}s", args.cycle.as_secs());
    cluster::create_all(args.refs, args.concurrency, |i| {
        let manifest = json!({"apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
            "metadata": {"name": format!("t-{i}"), "namespace": ns},
            "spec": {"storeRef": {"kind": "ClusterSecretStore", "name": "bench-vault"},
                     "secrets": [{"name": cluster::store_secret(i % args.store_secrets)}], "refreshInterval": cycle}});
        async move { cluster::apply(client, manifest).await }
    })
    .await?;
    wait_all_ready(&ready, args.refs, side.name).await?;
    Ok(op)
}

async fn start_eso(client: &Client, args: &Args, vault: &Vault, side: &Side) -> anyhow::Result<Process> {
    let ns = side.namespace;
    cluster::namespace(client, ns).await?;
    eso::install_crds(client).await?;
    let token = vault.token(side.name).await?;
    cluster::apply(
        client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-token", "namespace": ns},
               "stringData": {"token": token}}),
    )
    .await?;
    cluster::apply(
        client,
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "bench-vault"},
               "spec": {"provider": {"vault": {"server": vault.addr, "path": "secret", "version": "v2",
                   "auth": {"tokenSecretRef": {"name": "vault-token", "namespace": ns, "key": "token"}}}}}}),
    )
    .await?;
    let op = eso::spawn(args, "eso-vault")?;
    let ready = measure::track_ready(
        client,
        &GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
        ns,
    );
    let cycle = format!("{}s", args.cycle.as_secs());
    cluster::create_all(args.refs, args.concurrency, |i| {
        let key = format!("{PREFIX}/main/{}", cluster::store_secret(i % args.store_secrets));
        let manifest = json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": format!("t-{i}"), "namespace": ns},
            "spec": {"refreshInterval": cycle, "secretStoreRef": {"kind": "ClusterSecretStore", "name": "bench-vault"},
                     "target": {"name": format!("t-{i}")}, "dataFrom": [{"extract": {"key": key}}]}});
        async move { cluster::apply(client, manifest).await }
    })
    .await?;
    wait_all_ready(&ready, args.refs, side.name).await?;
    Ok(op)
}

async fn wait_all_ready(
    ready: &std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    n: usize,
    name: &str,
) -> anyhow::Result<()> {
    wait_until(
        Duration::from_secs(1800),
        Duration::from_millis(200),
        &format!("every {name} object to be Ready"),
        || async { ready.lock().map(|s| s.len() >= n).unwrap_or(false) },
    )
    .await?;
    eprintln!("bench: {name}: {n} objects Ready on Vault");
    Ok(())
}

/// Steady state over three cycles, then one change to secret 0.
async fn measure_cost(client: &Client, args: &Args, vault: &Vault, side: &Side, round: usize) -> anyhow::Result<Cost> {
    const CYCLES: u32 = 3;
    // Let the first reads and the first full cycle pass.
    tokio::time::sleep(args.cycle + Duration::from_secs(2)).await;
    let start = vault.audit_offset();
    let started = Instant::now();
    tokio::time::sleep(args.cycle * CYCLES).await;
    let window = started.elapsed();
    let cycles = window.as_secs_f64() / args.cycle.as_secs_f64();
    let steady: BTreeMap<String, f64> = vault
        .requests_since(start, side.name)?
        .into_iter()
        .map(|(k, v)| (k, v / cycles))
        .collect();
    let steady_total = steady.values().sum();
    eprintln!(
        "bench: {} on Vault, per cycle with nothing changed: {steady:?}",
        side.name
    );

    // One change; wait for every target using secret 0, then one more cycle.
    let users: Vec<String> = (0..args.refs)
        .filter(|i| i % args.store_secrets == 0)
        .map(|i| format!("t-{i}"))
        .collect();
    let want = format!("key-0-{round}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), side.namespace);
    let offset = vault.audit_offset();
    let changed_at = Instant::now();
    vault.put(0, round).await?;
    wait_until(
        args.cycle * 3 + Duration::from_secs(60),
        Duration::from_millis(50),
        "the change in every target",
        || async {
            let mut all = true;
            for name in &users {
                let value = secrets
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.data?.get("API_KEY").cloned());
                if value.is_none_or(|v| v.0 != want.as_bytes()) {
                    all = false;
                    break;
                }
            }
            all
        },
    )
    .await?;
    let propagation_ms = changed_at.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(args.cycle).await;
    let change_window_cycles = changed_at.elapsed().as_secs_f64() / args.cycle.as_secs_f64();
    let change_window = vault.requests_since(offset, side.name)?;
    eprintln!(
        "bench: {} on Vault, one change: {change_window:?} in {change_window_cycles:.2} cycles, propagated in {propagation_ms:.0} ms",
        side.name
    );
    Ok(Cost {
        steady_per_cycle: steady,
        steady_total_per_cycle: steady_total,
        change_window,
        change_window_cycles,
        propagation_ms,
    })
}

fn table(report: &Report) -> String {
    let mut out = format!(
        "Vault requests: {} SecretRefs over {} secrets, refresh every {} s\n",
        report.refs, report.store_secrets, report.cycle_seconds
    );
    let mut row = |name: &str, cost: &Cost| {
        let show = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "{name:>10}  per cycle, nothing changed: {:.1} ({})\n{:>10}  one change: {} in {:.2} cycles; propagated in {:.0} ms\n",
            cost.steady_total_per_cycle,
            show(&cost.steady_per_cycle),
            "",
            show(&cost.change_window),
            cost.change_window_cycles,
            cost.propagation_ms
        ));
    };
    row("secretref", &report.secretref);
    if let Some(eso) = &report.eso {
        row("eso", eso);
    }
    out
}
