//! A control plane of the scenario's own (`scripts/cluster up` in a state folder under
//! `target/chaos/`): faults kill its components, so it is never the one other test binaries
//! share. Torn down (`scripts/cluster down`) when dropped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::support::repo_root;

/// The components `scripts/cluster kill|start` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
        }
    }
}

pub struct ChaosCluster {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub client: Client,
}

impl ChaosCluster {
    /// Starts a control plane of its own for scenario `name` and installs the CRDs.
    pub async fn up(name: &str) -> ChaosCluster {
        let state = repo_root()
            .join("target/chaos")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let out = script(&state, &["up"]).await;
        assert!(
            out.status.success(),
            "scripts/cluster up failed for {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = PathBuf::from(stdout.lines().last().expect("kubeconfig path").trim());
        let client = client_for(&kubeconfig, None).await;
        let cluster = ChaosCluster {
            state,
            kubeconfig,
            client,
        };
        cluster.install_crds().await;
        cluster
    }

    async fn install_crds(&self) {
        crate::support::apply_crds(&self.client, "secretref-chaos").await;
    }

    /// SIGKILLs one component, as a crash would.
    pub async fn kill(&self, component: Component) {
        let out = script(&self.state, &["kill", component.name()]).await;
        assert!(
            out.status.success(),
            "scripts/cluster kill {} failed: {}",
            component.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a killed component again with its arguments and waits until it is ready.
    pub async fn start(&self, component: Component) {
        let out = script(&self.state, &["start", component.name()]).await;
        assert!(
            out.status.success(),
            "scripts/cluster start {} failed: {}",
            component.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Compacts etcd at its current revision, physically: every older revision is gone, so a
    /// watch that resumes from one is answered 410 Gone. Uses etcd's own HTTP gateway
    /// (`/v3/kv/range` for the revision, `/v3/kv/compaction`). Returns the revision.
    pub async fn compact_etcd(&self) -> u64 {
        let url = self.etcd_url();
        let range = post_json(&url, "/v3/kv/range", &serde_json::json!({ "key": "AA==" })).await;
        let revision: u64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("etcd reports its revision");
        let body = serde_json::json!({ "revision": revision.to_string(), "physical": true });
        post_json(&url, "/v3/kv/compaction", &body).await;
        revision
    }

    /// etcd's client URL (from the ports `scripts/cluster` recorded).
    pub fn etcd_url(&self) -> String {
        let ports = std::fs::read_to_string(self.state.join("ports.env")).expect("ports.env");
        let port = ports
            .lines()
            .find_map(|l| l.strip_prefix("etcd_port="))
            .expect("etcd_port");
        format!("http://127.0.0.1:{}", port.trim())
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).expect("ns");
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }

    /// The sum of kube-apiserver's `apiserver_request_total` over the series whose labels
    /// contain every one of `labels` (for example `verb="APPLY"`, `resource="secrets"`).
    /// The counters restart with the API server.
    pub async fn requests(&self, labels: &[&str]) -> u64 {
        let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
        let text = self
            .client
            .request_text(request)
            .await
            .expect("kube-apiserver /metrics");
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// A client that authenticates as `namespace/service_account` with a TokenRequest token.
    pub async fn service_account_client(&self, namespace: &str, service_account: &str) -> Client {
        use k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::ServiceAccount,
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
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
        let token = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .expect("token request")
            .status
            .and_then(|s| s.token)
            .expect("a token");
        client_for(&self.kubeconfig, Some(token)).await
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        if std::env::var_os("SECRETREF_KEEP_CHAOS_CLUSTER").is_some() {
            eprintln!("chaos: keeping the control plane in {}", self.state.display());
            return;
        }
        // Keep the logs (the state folder goes with `down`) for a look after a failure.
        let logs = repo_root().join("target/chaos/logs");
        let _ = std::fs::create_dir_all(&logs);
        let scenario = self
            .state
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for log in ["operator.log", "kube-apiserver.log", "etcd.log"] {
            let _ = std::fs::copy(self.state.join(log), logs.join(format!("{scenario}-{log}")));
        }
        let _ = cluster_script(&self.state, &["down"]);
    }
}

/// Runs scripts/cluster for this control plane; its stderr (why a component did not come up,
/// with the end of that component's log) is kept for the caller's assertion to quote.
async fn script(state: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(repo_root().join("scripts/cluster"))
        .args(args)
        .env("SECRETREF_CLUSTER_DIR", state)
        .output()
        .await
        .expect("scripts/cluster runs")
}

/// POSTs a JSON body over plain HTTP/1.0 (etcd's gateway on loopback) and parses the answer.
async fn post_json(base: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("etcd answers");
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "etcd {path}: {head}"
    );
    serde_json::from_str(body).expect("JSON from etcd")
}

fn cluster_script(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("scripts/cluster"))
        .args(args)
        .env("SECRETREF_CLUSTER_DIR", state)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/cluster runs")
}

/// A client of the control plane at `kubeconfig` (as its admin, or with `token`). Connecting
/// to a dead API server fails fast.
pub async fn client_for(kubeconfig: &Path, token: Option<String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("readable kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    config.connect_timeout = Some(Duration::from_secs(5));
    if let Some(token) = token {
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
    }
    Client::try_from(config).expect("client")
}
