//! Test harness for integration tests: one real local control plane per test run (started by
//! `scripts/cluster up`, or reused if it already runs), the CRDs installed once, and a fresh
//! namespace per test that is deleted when the test ends.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod moto;
pub mod vault;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The kubeconfig of the local control plane, starting it on first use.
/// `SECRETREF_TEST_KUBECONFIG` points the tests at an already running one instead.
pub fn kubeconfig_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(path) = std::env::var("SECRETREF_TEST_KUBECONFIG") {
            return PathBuf::from(path);
        }
        let out = Command::new(repo_root().join("scripts/cluster"))
            .arg("up")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/cluster runs");
        assert!(out.status.success(), "scripts/cluster up failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
        PathBuf::from(stdout.lines().last().expect("kubeconfig path on the last line").trim())
    })
}

/// The folder holding the pinned upstream binaries (kubectl, helm, ...): `bin/` of the cache
/// root `tools/build` uses (keep the two in step).
pub fn tools_bin() -> PathBuf {
    let root = match std::env::var_os("SECRETREF_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .expect("HOME or XDG_CACHE_HOME is set")
            .join("secretref/tools"),
    };
    root.join("bin")
}

/// A kubectl command aimed at the test control plane.
pub fn kubectl() -> Command {
    let mut cmd = Command::new(tools_bin().join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig_path());
    cmd
}

pub async fn client() -> Client {
    secretref::install_crypto_provider();
    // SECRETREF_TEST_LOG=debug shows the in-process operators' logs when debugging a test.
    if let Ok(filter) = std::env::var("SECRETREF_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(path).expect("readable kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).expect("client")
}

/// Installs the CRDs (server-side apply, so reruns are no-ops) and waits until they are
/// Established. Runs once per test binary.
pub async fn install_crds(client: &Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| apply_crds(client, "secretref-tests")).await;
}

/// Applies the CRDs as field manager `manager` (server-side, so reruns are no-ops) and waits
/// until each is Established.
pub async fn apply_crds(client: &Client, manager: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(manager).force();
    for crd in secretref::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .expect("CRD applies");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("CRD watch");
    }
}

/// A namespace of one test's own; deleted (with everything in it) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{prefix}-{:x}{:x}",
            nanos % 0xfffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "secretref.dev/test": "true" } }
        }))
        .expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SECRETREF_KEEP_NAMESPACES").is_some() {
            return;
        }
        let name = self.name.clone();
        cleanup(|client| async move {
            let api: Api<Namespace> = Api::all(client);
            let _ = api.delete(&name, &DeleteParams::background()).await;
        });
    }
}

/// Runs an async clean-up from `Drop`, which cannot await while the test's runtime is blocked
/// there: on a thread with a runtime (and a client) of its own.
fn cleanup<F, Fut>(work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async { work(client().await).await });
    })
    .join();
}

/// A free TCP port on loopback (free when asked: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// GETs `path` from `127.0.0.1:port` over plain HTTP: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The sum of a metric's series whose labels contain every one of `labels` (`k="v"`).
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels.iter().all(|want| rest.contains(want)).then_some(())?;
            value.parse::<f64>().ok()
        })
        .sum()
}

/// An operator running in-process for one test, scoped to its namespace; stopped on drop.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// Where its /metrics are served.
    pub metrics_port: u16,
}

impl Operator {
    /// Starts the controllers on `client` for `namespace` (which also holds the hash key).
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, vec![namespace.to_string()], namespace)
    }

    /// Starts the controllers watching `namespaces` (empty: all of them, as a cluster-wide
    /// install does; only for tests that run alone in their test binary) with the hash key in
    /// `operator_namespace`.
    pub fn start_with(client: &Client, namespaces: Vec<String>, operator_namespace: &str) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_port = free_port();
        let args = secretref::controller::RunArgs {
            namespaces,
            cluster_scoped: true,
            concurrency: 4,
            operator_namespace: operator_namespace.to_string(),
            hash_key_secret: "secretref-hash-key".to_string(),
            leader_elect: false,
            lease_name: "secretref-leader".to_string(),
            metrics_bind_address: ([127, 0, 0, 1], metrics_port).into(),
            log_format: secretref::controller::LogFormat::Text,
            read_cache_ttl: Duration::from_secs(300),
            read_cache_entries: 10_000,
        };
        let client = client.clone();
        let handle = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = secretref::controller::run_with(client, args, shutdown).await {
                panic!("operator failed: {e:#}");
            }
        });
        Operator {
            stop: Some(stop),
            handle: Some(handle),
            metrics_port,
        }
    }

    /// Its /metrics, in the text exposition format (empty while it does not answer). The
    /// request blocks a thread of its own: the operator may share the test's only one.
    pub async fn metrics(&self) -> String {
        let port = self.metrics_port;
        tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
            .await
            .ok()
            .flatten()
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Stops the operator and waits until its in-flight reconciles finished.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TokenRequest token of `namespace/service_account` (created if absent), as a pod running
/// under that ServiceAccount would hold.
pub async fn service_account_token(admin: &Client, namespace: &str, service_account: &str) -> String {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    };
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": service_account } })).expect("sa");
    let _ = api.create(&PostParams::default(), &sa).await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    api.create_token_request(service_account, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

/// A client that authenticates as `namespace/service_account`.
pub async fn service_account_client(admin: &Client, namespace: &str, service_account: &str) -> Client {
    let token = service_account_token(admin, namespace, service_account).await;
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client")
}

/// Applies a JSON manifest (any kind) with server-side apply.
pub async fn apply_json(client: &Client, manifest: serde_json::Value) {
    use kube::{
        api::{DynamicObject, GroupVersionKind},
        discovery,
    };
    let api_version = manifest["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, manifest["kind"].as_str().expect("kind"));
    let (resource, caps) = discovery::pinned_kind(client, &gvk).await.expect("kind is served");
    let name = manifest["metadata"]["name"].as_str().expect("name").to_string();
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == discovery::Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("secretref-tests").force(),
        &Patch::Apply(&manifest),
    )
    .await
    .expect("apply");
}

/// Deletes a ClusterSecretStore when dropped, so a failing test leaves no cluster-wide store.
pub struct ClusterStoreGuard(pub String);

impl Drop for ClusterStoreGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        cleanup(|client| async move {
            let api: Api<secretref::api::ClusterSecretStore> = Api::all(client);
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}
