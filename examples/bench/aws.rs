//! `--backend aws`: what keeping N SecretRefs over M AWS Secrets Manager secrets in step costs
//! in AWS API calls, for secretref and (with `--peer eso`) ESO's aws provider, both pointed at
//! the same moto server. Calls are counted from moto's own request log (its recorder), never
//! from the operators' metrics: per refresh cycle with nothing changed, and for one store change.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aws_sdk_secretsmanager::Client as Aws;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::GroupVersionKind};
use serde::Serialize;

use crate::{
    Args,
    cluster::{self, wait_until},
    measure,
    operator::{Process, free_port},
};

const REGION: &str = "us-east-1";
const PREFIX: &str = "secretref";

/// One operator's AWS calls.
#[derive(Debug, Default, Serialize)]
pub struct Calls {
    /// Cold sync: until all N are Ready.
    pub cold_sync_calls: BTreeMap<String, usize>,
    /// Per refresh cycle with nothing changed (averaged over the cycles measured).
    pub calls_per_cycle_unchanged: f64,
    pub value_reads_per_cycle_unchanged: f64,
    pub calls_per_cycle_by_operation: BTreeMap<String, f64>,
    /// One secret changed in AWS: the calls beyond the unchanged cycles' list calls, until
    /// its targets all hold the new value.
    pub calls_for_one_change: BTreeMap<String, usize>,
    pub change_propagation_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct AwsReport {
    pub refs: usize,
    pub store_secrets: usize,
    pub cycle_s: u64,
    pub cycles_measured: u32,
    pub secretref: Calls,
    pub eso: Option<Calls>,
}

/// moto's server, stopped when dropped.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> anyhow::Result<Moto> {
        let server =
            std::env::var("SECRETREF_BENCH_MOTO").context("SECRETREF_BENCH_MOTO is not set (scripts/bench sets it)")?;
        let port = free_port();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-moto");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let child = std::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&dir)
            .env("MOTO_RECORDER_FILEPATH", dir.join("recording"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting moto_server")?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.http("GET", "/moto-api/").is_none() {
            if Instant::now() > deadline {
                bail!("moto did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn http(&self, method: &str, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    /// Starts a fresh recording of every request.
    fn record(&self) {
        self.http("POST", "/moto-api/recorder/reset-recording");
        self.http("POST", "/moto-api/recorder/start-recording");
    }

    /// Calls recorded since `record`, by operation (`X-Amz-Target`, or an STS `Action`).
    fn calls(&self) -> BTreeMap<String, usize> {
        let body = self
            .http("GET", "/moto-api/recorder/download-recording")
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if r["url"].as_str().unwrap_or_default().contains("/moto-api/") {
                continue;
            }
            let op = r["headers"]["X-Amz-Target"]
                .as_str()
                .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
                .unwrap_or_else(|| "other".to_string());
            *out.entry(op).or_insert(0) += 1;
        }
        out
    }
}

fn sdk(endpoint: &str) -> Aws {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::v2026_01_12())
        .region(aws_sdk_secretsmanager::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "AKIDBENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .http_client(http)
        .build();
    Aws::from_conf(config)
}

fn secret_name(i: usize) -> String {
    format!("{PREFIX}/main/s{i:04}")
}

fn value(i: usize, round: usize) -> String {
    serde_json::json!({ "K": format!("value-{i}-{round}") }).to_string()
}

pub async fn run(client: &Client, args: &Args) -> anyhow::Result<()> {
    secretref::install_crypto_provider();
    let moto = Moto::start()?;
    let aws = sdk(&moto.endpoint());
    eprintln!("bench(aws): {} secrets in moto", args.store_secrets);
    for i in 0..args.store_secrets {
        aws.create_secret()
            .name(secret_name(i))
            .secret_string(value(i, 0))
            .send()
            .await
            .context("seeding moto")?;
    }
    let mut report = AwsReport {
        refs: args.refs,
        store_secrets: args.store_secrets,
        cycle_s: args.cycle.as_secs(),
        cycles_measured: CYCLES,
        ..Default::default()
    };
    report.secretref = measure_operator(client, args, &moto, &aws, Side::Secretref).await?;
    if args.peer_eso {
        report.eso = Some(measure_operator(client, args, &moto, &aws, Side::Eso).await?);
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    print!("{}", table(&report));
    Ok(())
}

/// How many unchanged refresh cycles are measured.
const CYCLES: u32 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Secretref,
    Eso,
}

async fn measure_operator(client: &Client, args: &Args, moto: &Moto, aws: &Aws, side: Side) -> anyhow::Result<Calls> {
    let (ns, label) = match side {
        Side::Secretref => ("bench-aws-sr", "secretref"),
        Side::Eso => ("bench-aws-eso", "eso"),
    };
    cluster::namespace(client, ns).await?;
    cluster::apply(
        client,
        serde_json::json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "aws-creds", "namespace": ns },
            "stringData": { "access-key-id": "AKIDBENCH", "secret-access-key": "bench" } }),
    )
    .await?;
    let cycle = format!("{}s", args.cycle.as_secs());
    let op = match side {
        Side::Secretref => {
            cluster::apply(
                client,
                serde_json::json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore",
                    "metadata": { "name": "bench-aws" },
                    "spec": { "provider": { "aws": { "region": REGION, "prefix": PREFIX, "endpoint": moto.endpoint(),
                        "auth": { "secretRef": { "name": "aws-creds", "namespace": ns } } } } } }),
            )
            .await?;
            spawn_secretref(args, ns)?
        }
        Side::Eso => {
            crate::eso::install_crds(client).await?;
            cluster::apply(
                client,
                serde_json::json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                    "metadata": { "name": "bench-aws", "namespace": ns },
                    "spec": { "provider": { "aws": { "service": "SecretsManager", "region": REGION,
                        "auth": { "secretRef": {
                            "accessKeyIDSecretRef": { "name": "aws-creds", "key": "access-key-id" },
                            "secretAccessKeySecretRef": { "name": "aws-creds", "key": "secret-access-key" } } } } } } }),
            )
            .await?;
            spawn_eso(args, moto)?
        }
    };
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "the operator's metrics",
        || async { !op.metrics().is_empty() },
    )
    .await?;
    let gvk = match side {
        Side::Secretref => GroupVersionKind::gvk("secretref.dev", "v1alpha1", "SecretRef"),
        Side::Eso => GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
    };
    let ready: Arc<Mutex<HashSet<String>>> = measure::track_ready(client, &gvk, ns);

    eprintln!("bench(aws): {label}: creating {} objects", args.refs);
    moto.record();
    let started = Instant::now();
    cluster::create_all(args.refs, args.concurrency, |i| {
        let name = format!("r-{i}");
        let key = secret_name(i % args.store_secrets);
        let manifest = match side {
            Side::Secretref => serde_json::json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                "metadata": { "name": name, "namespace": ns },
                "spec": { "storeRef": { "name": "bench-aws" }, "refreshInterval": cycle,
                          "secrets": [{ "name": key.rsplit('/').next().unwrap_or_default() }] } }),
            Side::Eso => serde_json::json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": { "name": name, "namespace": ns },
                "spec": { "refreshInterval": cycle, "secretStoreRef": { "kind": "SecretStore", "name": "bench-aws" },
                          "target": { "name": name }, "dataFrom": [{ "extract": { "key": key } }] } }),
        };
        let client = client.clone();
        async move { cluster::apply(&client, manifest).await }
    })
    .await?;
    let total = args.refs;
    wait_until(
        Duration::from_secs(600),
        Duration::from_millis(500),
        "all Ready",
        || async { ready.lock().map(|s| s.len()).unwrap_or(0) >= total },
    )
    .await?;
    let mut calls = Calls {
        cold_sync_calls: moto.calls(),
        ..Default::default()
    };
    eprintln!(
        "bench(aws): {label}: {} Ready in {:.1} s; {:?}",
        total,
        started.elapsed().as_secs_f64(),
        calls.cold_sync_calls
    );

    // Let the cold sync's own schedule settle for one cycle, then count whole cycles.
    tokio::time::sleep(args.cycle + Duration::from_secs(5)).await;
    moto.record();
    tokio::time::sleep(args.cycle * CYCLES).await;
    let unchanged = moto.calls();
    let per = |n: usize| n as f64 / f64::from(CYCLES);
    calls.calls_per_cycle_unchanged = per(unchanged.values().sum());
    calls.value_reads_per_cycle_unchanged = per(unchanged.get("GetSecretValue").copied().unwrap_or(0)
        + unchanged.get("BatchGetSecretValue").copied().unwrap_or(0));
    calls.calls_per_cycle_by_operation = unchanged.iter().map(|(k, v)| (k.clone(), per(*v))).collect();
    eprintln!(
        "bench(aws): {label}: per cycle, nothing changed: {:?}",
        calls.calls_per_cycle_by_operation
    );

    // One change, made straight in AWS: until every target of that secret holds it. Each side
    // writes a value of its own, never one an earlier side already wrote.
    let round = match side {
        Side::Secretref => 1,
        Side::Eso => 2,
    };
    moto.record();
    let changed_at = Instant::now();
    aws.put_secret_value()
        .secret_id(secret_name(0))
        .secret_string(value(0, round))
        .send()
        .await?;
    let want = format!("value-0-{round}");
    let targets: Vec<String> = (0..args.refs)
        .filter(|i| i % args.store_secrets == 0)
        .map(|i| format!("r-{i}"))
        .collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    wait_until(
        args.cycle * 3,
        Duration::from_millis(200),
        "the change to reach its targets",
        || async {
            let Ok(list) = secrets.list(&Default::default()).await else {
                return false;
            };
            let done = list
                .items
                .iter()
                .filter(|s| targets.iter().any(|t| Some(t.as_str()) == s.metadata.name.as_deref()))
                .filter(|s| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get("K"))
                        .is_some_and(|v| String::from_utf8_lossy(&v.0) == want)
                })
                .count();
            done == targets.len()
        },
    )
    .await?;
    calls.change_propagation_s = changed_at.elapsed().as_secs_f64();
    // What the change cost: every call in that window but the bench's own write and the
    // regular list calls (which the unchanged cycles already count).
    let window = moto.calls();
    calls.calls_for_one_change = window
        .into_iter()
        .filter(|(op, _)| op != "PutSecretValue" && (side == Side::Eso || op != "ListSecrets"))
        .collect();
    eprintln!(
        "bench(aws): {label}: one change reached {} targets in {:.1} s; calls {:?}",
        targets.len(),
        calls.change_propagation_s,
        calls.calls_for_one_change
    );
    op.stop().await;
    cluster::delete_namespace(client, ns).await;
    Ok(calls)
}

fn spawn_secretref(args: &Args, ns: &str) -> anyhow::Result<Process> {
    let port = free_port();
    let argv: Vec<String> = [
        "run",
        "--concurrency",
        &args.concurrency.to_string(),
        "--operator-namespace",
        ns,
        "--leader-elect=false",
        "--metrics-bind-address",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Call counts do not depend on the build profile: SECRETREF_BENCH_BINARY may name a debug build.
    let binary = std::env::var_os("SECRETREF_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/secretref"));
    Process::spawn(&binary, &argv, port, &root.join("target/bench-aws-secretref.log"), &[])
}

fn spawn_eso(args: &Args, moto: &Moto) -> anyhow::Result<Process> {
    let port = free_port();
    let argv: Vec<String> = vec![
        format!("--metrics-addr=127.0.0.1:{port}"),
        format!("--concurrent={}", args.concurrency),
        "--client-qps=10000".into(),
        "--client-burst=20000".into(),
        "--enable-leader-election=false".into(),
        "--enable-cluster-external-secret-reconciler=false".into(),
        "--enable-push-secret-reconciler=false".into(),
        "--enable-cluster-push-secret-reconciler=false".into(),
        "--loglevel=error".into(),
    ];
    let program = PathBuf::from(std::env::var("SECRETREF_BENCH_ESO").context("SECRETREF_BENCH_ESO is not set")?);
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-aws-eso.log");
    // ESO's aws provider (aws-sdk-go v1) takes custom endpoints from these variables
    // (pkg/provider/aws/auth/resolver.go).
    Process::spawn(
        &program,
        &argv,
        port,
        &log,
        &[
            ("AWS_SECRETSMANAGER_ENDPOINT", moto.endpoint()),
            ("AWS_STS_ENDPOINT", moto.endpoint()),
        ],
    )
}

fn table(r: &AwsReport) -> String {
    let m = r.store_secrets;
    let mut out = format!(
        "\nAWS calls, N = {} refs over M = {m} secrets, refresh {} s (counted by moto)\n",
        r.refs, r.cycle_s
    );
    let row = |name: &str, c: &Calls| {
        format!(
            "{name:<10} per cycle unchanged: {:>8.1} calls ({:.1} value reads) | one change: {} calls {:?} in {:.1} s\n",
            c.calls_per_cycle_unchanged,
            c.value_reads_per_cycle_unchanged,
            c.calls_for_one_change.values().sum::<usize>(),
            c.calls_for_one_change,
            c.change_propagation_s
        )
    };
    out.push_str(&row("secretref", &r.secretref));
    if let Some(e) = &r.eso {
        out.push_str(&row("eso", e));
        if r.secretref.calls_per_cycle_unchanged > 0.0 {
            out.push_str(&format!(
                "ratio (eso / secretref, per cycle unchanged): {:.0}x\n",
                e.calls_per_cycle_unchanged / r.secretref.calls_per_cycle_unchanged
            ));
        }
    }
    out.push_str(&format!(
        "targets: unchanged <= {} calls and 0 value reads per cycle; one change <= 2 calls; >= 100x fewer than ESO\n",
        m.div_ceil(100)
    ));
    out
}
