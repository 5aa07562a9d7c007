//! A real HashiCorp Vault (v1.21.4, built by `tools/build vault`) for one test: file storage and
//! a TLS listener on a free loopback port, initialised and unsealed, KV version 2 at `secret/`.
//! Not `-dev`: a dev server keeps its data in memory, and the tests stop and restart Vault.
//! The process is stopped by pid on drop and its folder removed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};

use super::{repo_root, service_account_token};

/// The `vault` binary's folder (`tools/build vault`'s last line; built and cached on first use).
pub fn vault_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo_root().join("tools/build"))
            .arg("vault")
            .stderr(Stdio::inherit())
            .output()
            .expect("tools/build runs");
        assert!(out.status.success(), "tools/build vault failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        PathBuf::from(stdout.lines().last().expect("bin folder").trim()).join("vault")
    })
    .clone()
}

/// Where the tests keep secretref's secrets and what the policies below cover.
pub const PREFIX: &str = "secretref";

/// What the operator needs: read data and metadata under the prefix.
pub const READER_POLICY: &str = r#"
path "secret/data/secretref/*" { capabilities = ["read"] }
path "secret/metadata/secretref/*" { capabilities = ["read"] }
"#;

/// What the CLI needs: write, list, read key names, delete.
pub const ADMIN_POLICY: &str = r#"
path "secret/data/secretref/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/secretref/*" { capabilities = ["create", "update", "read", "list", "delete"] }
path "secret/subkeys/secretref/*" { capabilities = ["read"] }
"#;

pub struct VaultServer {
    /// `https://127.0.0.1:PORT`
    pub addr: String,
    pub root_token: String,
    /// The PEM of the authority that signed the listener's certificate.
    pub ca_pem: String,
    unseal_key: String,
    dir: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

/// A free loopback port (bound and released: another process could take it in between, which
/// start-up then reports).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl VaultServer {
    /// Starts, initialises (one unseal key) and unseals a Vault, and mounts KV version 2 at
    /// `secret/`.
    pub async fn start() -> Self {
        secretref::install_crypto_provider();
        let dir = repo_root()
            .join("target/vault-tests")
            .join(format!("{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("data")).expect("vault dir");
        // P-256 keys: quick to make, and rustls with ring verifies them.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"];
        ca.extend(ec);
        ca.extend(["-subj", "/CN=secretref-test-vault-ca"]);
        openssl(&dir, &ca);
        let mut csr = vec!["req", "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1"];
        csr.extend(ec);
        openssl(&dir, &csr);
        std::fs::write(
            dir.join("tls.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("ext");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "tls.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "tls.crt",
                "-days",
                "2",
                "-extfile",
                "tls.ext",
            ],
        );
        let port = free_port();
        std::fs::write(
            dir.join("config.hcl"),
            format!(
                r#"storage "file" {{ path = "{data}" }}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_cert_file = "{dir}/tls.crt"
  tls_key_file = "{dir}/tls.key"
}}
api_addr = "https://127.0.0.1:{port}"
disable_mlock = true
ui = false
"#,
                data = dir.join("data").display(),
                dir = dir.display(),
            ),
        )
        .expect("config");
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca");
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("ca pem"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut server = VaultServer {
            addr: format!("https://127.0.0.1:{port}"),
            root_token: String::new(),
            ca_pem,
            unseal_key: String::new(),
            dir,
            child: None,
            http,
        };
        server.spawn().await;
        let (status, init) = server
            .request(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(status, 200, "vault init: {init}");
        server.unseal_key = init["keys"][0].as_str().expect("unseal key").to_string();
        server.root_token = init["root_token"].as_str().expect("root token").to_string();
        server.unseal().await;
        server
            .ok(
                "POST",
                "sys/mounts/secret",
                json!({"type": "kv", "options": {"version": "2"}}),
            )
            .await;
        server.put_policy("secretref-reader", READER_POLICY).await;
        server.put_policy("secretref-admin", ADMIN_POLICY).await;
        server
    }

    /// Starts the process and waits until it answers (sealed or not).
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vault.log"))
            .expect("log");
        let child = Command::new(vault_bin())
            .arg("server")
            .arg(format!("-config={}", self.dir.join("config.hcl").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("vault starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answered = self
                .http
                .get(format!("{}/v1/sys/seal-status", self.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("vault exited ({status}); see {}", self.dir.join("vault.log").display());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "vault did not answer within 60 s; see {}",
                self.dir.join("vault.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process (SIGKILL, as a crash would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped process again on the same port and storage, and unseals it.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
        self.unseal().await;
    }

    pub async fn seal(&self) {
        self.ok("PUT", "sys/seal", json!({})).await;
    }

    pub async fn unseal(&self) {
        let (status, body) = self
            .request("PUT", "sys/unseal", None, Some(json!({"key": self.unseal_key})))
            .await;
        assert!(status == 200 && body["sealed"] == false, "unseal: {status} {body}");
        // An unsealed Vault may still be setting up its mounts: wait until it is active.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.request("GET", "sys/health", None, None).await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "vault not active after unseal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One API call as `token` (None: the root token). Returns the status and the JSON body.
    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}/v1/{path}", self.addr));
        let token = token.unwrap_or(&self.root_token);
        if !token.is_empty() {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("vault answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A root call that must succeed; returns the body.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.request(method, path, None, Some(body)).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
        answer
    }

    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.ok("PUT", &format!("sys/policies/acl/{name}"), json!({"policy": hcl}))
            .await;
    }

    /// A token with these policies (and `default`), valid for an hour.
    pub async fn token(&self, policies: &[&str]) -> String {
        let body = self
            .ok("POST", "auth/token/create", json!({"policies": policies, "ttl": "1h"}))
            .await;
        body["auth"]["client_token"].as_str().expect("token").to_string()
    }

    /// Writes a KV version 2 secret the way Vault's own CLI does (`vault kv put`), as root.
    pub async fn kv_put(&self, path: &str, data: Value) -> Value {
        self.ok("POST", &format!("secret/data/{path}"), json!({ "data": data }))
            .await
    }

    /// Enables AppRole at `approle/` with role `role` (the reader policy); returns its role ID
    /// and a secret ID.
    pub async fn enable_approle(&self, role: &str) -> (String, String) {
        self.ok("POST", "sys/auth/approle", json!({"type": "approle"})).await;
        self.ok(
            "POST",
            &format!("auth/approle/role/{role}"),
            json!({"token_policies": ["secretref-reader"], "token_ttl": "1h"}),
        )
        .await;
        let role_id = self
            .ok("GET", &format!("auth/approle/role/{role}/role-id"), Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .expect("role id")
            .to_string();
        let secret_id = self.approle_secret_id(role).await;
        (role_id, secret_id)
    }

    pub async fn approle_secret_id(&self, role: &str) -> String {
        self.ok("POST", &format!("auth/approle/role/{role}/secret-id"), json!({}))
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_string()
    }

    /// Enables Kubernetes auth against the test control plane (Vault calls its TokenReview
    /// with the token of a reviewer ServiceAccount bound to system:auth-delegator), with a role
    /// `role` for `namespace/service_account`, audience `vault`, the reader policy and
    /// `token_ttl`. The returned guard removes the ClusterRoleBinding.
    pub async fn enable_kubernetes_auth(
        &self,
        client: &Client,
        namespace: &str,
        service_account: &str,
        role: &str,
        token_ttl: &str,
    ) -> ReviewerBinding {
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        let reviewer = "vault-token-reviewer";
        let binding_name = format!("secretref-test-vault-reviewer-{namespace}");
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": { "name": binding_name, "labels": { "secretref.dev/test": "true" } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator" },
            "subjects": [ { "kind": "ServiceAccount", "name": reviewer, "namespace": namespace } ]
        }))
        .expect("binding");
        let api: Api<ClusterRoleBinding> = Api::all(client.clone());
        api.create(&PostParams::default(), &binding)
            .await
            .expect("reviewer binding");
        let reviewer_jwt = service_account_token(client, namespace, reviewer).await;
        // The ServiceAccount secretref logs in as.
        service_account_token(client, namespace, service_account).await;
        let kubeconfig = kube::config::Kubeconfig::read_from(super::kubeconfig_path()).expect("kubeconfig");
        let cluster = kubeconfig.clusters[0].cluster.as_ref().expect("cluster");
        let host = cluster.server.clone().expect("server");
        let ca_path = cluster.certificate_authority.clone().expect("ca path");
        let ca = std::fs::read_to_string(ca_path).expect("cluster ca");
        self.ok("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
            .await;
        self.ok(
            "POST",
            "auth/kubernetes/config",
            json!({"kubernetes_host": host, "kubernetes_ca_cert": ca, "token_reviewer_jwt": reviewer_jwt,
                   "disable_local_ca_jwt": true}),
        )
        .await;
        self.ok(
            "POST",
            &format!("auth/kubernetes/role/{role}"),
            json!({"bound_service_account_names": [service_account], "bound_service_account_namespaces": [namespace],
                   "audience": "vault", "token_policies": ["secretref-reader"], "token_ttl": token_ttl}),
        )
        .await;
        ReviewerBinding(binding_name)
    }

    /// The number of requests Vault's file audit device logged for `path` (see `enable_audit`).
    pub fn audited(&self, operation: &str, path_prefix: &str) -> usize {
        let Ok(text) = std::fs::read_to_string(self.dir.join("audit.log")) else {
            return 0;
        };
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .filter(|e| e["request"]["operation"] == operation)
            .filter(|e| {
                e["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(path_prefix))
            })
            .count()
    }

    /// Logs every request to `<dir>/audit.log` (Vault's file audit device).
    pub async fn enable_audit(&self) {
        let path = self.dir.join("audit.log");
        self.ok(
            "PUT",
            "sys/audit/file",
            json!({"type": "file", "options": {"file_path": path.display().to_string()}}),
        )
        .await;
    }
}

impl Drop for VaultServer {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SECRETREF_KEEP_VAULT").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes the reviewer ClusterRoleBinding when dropped.
pub struct ReviewerBinding(String);

impl Drop for ReviewerBinding {
    fn drop(&mut self) {
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        let name = self.0.clone();
        super::cleanup(|client| async move {
            let api: Api<ClusterRoleBinding> = Api::all(client);
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}
