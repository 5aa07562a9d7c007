//! The `vault` provider against a real HashiCorp Vault v1.21.4 (tools/build vault) and the real
//! control plane: every auth method, the binary CLI, changes made with Vault's own API, check-
//! and-set conflicts, soft delete and undelete, invalid data, a revoked token, and Vault sealed
//! or stopped. Each test has its own Vault (support::vault), namespace and operator.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use secretref::{
    api::{ClusterSecretStore, SecretRef},
    backend::{
        BuildContext, SecretBackend, SecretId,
        vault::{VaultBackend, Written},
    },
    model::secret_data,
};
use serde_json::{Value, json};
use support::{
    ClusterStoreGuard, Operator, TestNamespace, apply_json, client, eventually, install_crds, kubeconfig_path,
    vault::{PREFIX, VaultServer},
};

/// The SecretRefs' refresh interval in these tests.
const REFRESH: Duration = Duration::from_secs(2);
/// Generous: the machine is shared and builds run alongside.
const WAIT: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (Client, TestNamespace, VaultServer) {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let vault = VaultServer::start().await;
    (client, ns, vault)
}

fn base64(text: &str) -> String {
    data_encoding::BASE64.encode(text.as_bytes())
}

/// The `vault` provider block for `vault` with `auth`.
fn provider(vault: &VaultServer, auth: Value) -> Value {
    json!({ "vault": { "server": vault.addr, "caBundle": base64(&vault.ca_pem), "auth": auth } })
}

fn token_auth(secret: &str) -> Value {
    json!({ "token": { "secretRef": { "name": secret, "key": "token" } } })
}

async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    apply_json(
        client,
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name, "namespace": ns },
                "stringData": { key: value } }),
    )
    .await;
}

async fn secret_store(client: &Client, ns: &str, name: &str, provider: Value) {
    apply_json(
        client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": name, "namespace": ns },
                "spec": { "provider": provider } }),
    )
    .await;
}

async fn secret_ref(client: &Client, ns: &str, name: &str, spec: Value) {
    let mut spec = spec;
    spec["refreshInterval"] = json!(format!("{}s", REFRESH.as_secs()));
    apply_json(
        client,
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name, "namespace": ns },
                "spec": spec }),
    )
    .await;
}

/// The SecretRef's Ready condition: (status, reason, message).
/// A reader token in Secret `vault-token` and SecretStore `vault` using it; returns the token.
async fn reader_token_store(client: &Client, ns: &str, vault: &VaultServer) -> String {
    let token = vault.token(&["secretref-reader"]).await;
    put_secret(client, ns, "vault-token", "token", &token).await;
    secret_store(client, ns, "vault", provider(vault, token_auth("vault-token"))).await;
    token
}

/// SecretRef `app` reading secret `app` of SecretStore `vault`, once it is Synced.
async fn synced_app_ref(client: &Client, ns: &str) {
    secret_ref(
        client,
        ns,
        "app",
        json!({ "storeRef": { "kind": "SecretStore", "name": "vault" }, "secrets": [{"name": "app"}] }),
    )
    .await;
    wait_reason(client, ns, "app", "Synced").await;
}

async fn ready(client: &Client, ns: &str, name: &str) -> Option<(String, String, String)> {
    let api: Api<SecretRef> = Api::namespaced(client.clone(), ns);
    let sr = api.get_opt(name).await.ok()??;
    let c = sr.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

/// Waits until the SecretRef's Ready reason is `reason`; returns the message.
async fn wait_reason(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    eventually(WAIT, &format!("SecretRef {name} to be {reason}"), || async {
        ready(client, ns, name)
            .await
            .filter(|(_, r, _)| r == reason)
            .map(|(_, _, m)| m)
    })
    .await
}

/// The target Secret's data as strings.
async fn target(client: &Client, ns: &str, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt(name).await.ok()??;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

async fn wait_target(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    eventually(WAIT, &format!("{key}={value} in target {name}"), || async {
        target(client, ns, name)
            .await
            .filter(|d| d.get(key).map(String::as_str) == Some(value))
    })
    .await;
}

/// How long it takes a change written now to reach `key` in the target.
async fn time_to_target(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> Duration {
    let start = std::time::Instant::now();
    wait_target(client, ns, name, key, value).await;
    start.elapsed()
}

#[tokio::test]
async fn token_auth_merge_environments_required_keys_and_changes_made_in_vault() {
    let (client, ns, vault) = setup("vault-token").await;
    let n = ns.name.as_str();
    reader_token_store(&client, n, &vault).await;
    // Written with Vault's own API, as a platform team that already keeps secrets there would.
    vault
        .kv_put(
            &format!("{PREFIX}/main/base"),
            json!({"DB_URL": "postgres://main", "LOG": "info"}),
        )
        .await;
    vault
        .kv_put(&format!("{PREFIX}/main/stripe"), json!({"STRIPE_KEY": "sk_main"}))
        .await;
    vault
        .kv_put(
            &format!("{PREFIX}/prod/base"),
            json!({"DB_URL": "postgres://prod", "LOG": "warn"}),
        )
        .await;
    vault
        .kv_put(
            &format!("{PREFIX}/prod/stripe"),
            json!({"STRIPE_KEY": "sk_prod", "LOG": "error"}),
        )
        .await;
    let _operator = Operator::start(&client, n);
    let store_ref = json!({ "kind": "SecretStore", "name": "vault" });
    secret_ref(
        &client,
        n,
        "web",
        json!({ "storeRef": store_ref, "secrets": [{"name": "base"}, {"name": "stripe"}], "requiredKeys": ["STRIPE_KEY"] }),
    )
    .await;
    secret_ref(
        &client,
        n,
        "web-prod",
        json!({ "storeRef": store_ref, "environment": "prod", "secrets": [{"name": "base"}, {"name": "stripe"}] }),
    )
    .await;
    wait_reason(&client, n, "web", "Synced").await;
    wait_reason(&client, n, "web-prod", "Synced").await;
    let main = target(&client, n, "web").await.expect("target");
    assert_eq!(main["DB_URL"], "postgres://main");
    assert_eq!(main["STRIPE_KEY"], "sk_main");
    let prod = target(&client, n, "web-prod").await.expect("target");
    assert_eq!(prod["DB_URL"], "postgres://prod");
    assert_eq!(prod["LOG"], "error", "the later secret wins");

    // requiredKeys: a key no secret has fails the sync and keeps the target.
    secret_ref(
        &client,
        n,
        "web",
        json!({ "storeRef": store_ref, "secrets": [{"name": "base"}, {"name": "stripe"}], "requiredKeys": ["STRIPE_KEY", "SENTRY_DSN"] }),
    )
    .await;
    let message = wait_reason(&client, n, "web", "MissingRequiredKeys").await;
    assert!(message.contains("SENTRY_DSN"), "{message}");
    assert_eq!(target(&client, n, "web").await.expect("kept")["STRIPE_KEY"], "sk_main");
    vault
        .kv_put(
            &format!("{PREFIX}/main/stripe"),
            json!({"STRIPE_KEY": "sk_main", "SENTRY_DSN": "https://sentry"}),
        )
        .await;
    wait_reason(&client, n, "web", "Synced").await;

    // A change written with Vault's API reaches the target within one refresh interval (plus
    // the time a sync takes on a busy machine).
    vault
        .kv_put(
            &format!("{PREFIX}/main/stripe"),
            json!({"STRIPE_KEY": "sk_rotated", "SENTRY_DSN": "https://sentry"}),
        )
        .await;
    let took = time_to_target(&client, n, "web", "STRIPE_KEY", "sk_rotated").await;
    assert!(
        took < REFRESH + Duration::from_secs(5),
        "took {took:?} for a {REFRESH:?} refresh"
    );
    let api: Api<SecretRef> = Api::namespaced(client.clone(), n);
    let status = api.get("web").await.expect("sr").status.expect("status");
    let versions: Vec<&str> = status
        .sources
        .iter()
        .map(|s| s.version.as_deref().unwrap_or_default())
        .collect();
    assert!(
        versions.iter().all(|v| v.contains('@')),
        "KV version and time: {versions:?}"
    );
}

#[tokio::test]
async fn kubernetes_auth_logs_in_again_before_the_lease_ends_and_after_a_revocation() {
    let (client, ns, vault) = setup("vault-k8s").await;
    let n = ns.name.as_str();
    // A 10 s token TTL: the test outlives several leases.
    let _binding = vault
        .enable_kubernetes_auth(&client, n, "secretref", "secretref", "10s")
        .await;
    vault.enable_audit().await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v1"})).await;
    secret_store(
        &client,
        n,
        "vault",
        provider(
            &vault,
            json!({ "kubernetes": { "role": "secretref",
                    "serviceAccountRef": { "name": "secretref", "audiences": ["vault"] } } }),
        ),
    )
    .await;
    let _operator = Operator::start(&client, n);
    synced_app_ref(&client, n).await;
    assert_eq!(target(&client, n, "app").await.expect("target")["KEY"], "v1");

    // Past the first token's TTL: a change still arrives (a login before the lease ended).
    tokio::time::sleep(Duration::from_secs(12)).await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v2"})).await;
    wait_target(&client, n, "app", "KEY", "v2").await;
    assert!(vault.audited("update", "auth/kubernetes/login") >= 2, "logged in again");

    // Every token of the auth method revoked: the next 403 makes it log in again.
    vault
        .ok("PUT", "sys/leases/revoke-prefix/auth/kubernetes/login", json!({}))
        .await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v3"})).await;
    wait_target(&client, n, "app", "KEY", "v3").await;

    // A role that does not bind this ServiceAccount: StoreNotReady, saying why.
    secret_store(
        &client,
        n,
        "wrong-role",
        provider(
            &vault,
            json!({ "kubernetes": { "role": "nobody",
                    "serviceAccountRef": { "name": "secretref", "audiences": ["vault"] } } }),
        ),
    )
    .await;
    secret_ref(
        &client,
        n,
        "denied",
        json!({ "storeRef": { "kind": "SecretStore", "name": "wrong-role" }, "secrets": [{"name": "app"}] }),
    )
    .await;
    let message = wait_reason(&client, n, "denied", "StoreNotReady").await;
    assert!(message.contains("Kubernetes auth login"), "{message}");
}

#[tokio::test]
async fn approle_auth_and_a_rotated_secret_id() {
    let (client, ns, vault) = setup("vault-approle").await;
    let n = ns.name.as_str();
    let (role_id, secret_id) = vault.enable_approle("secretref").await;
    put_secret(&client, n, "approle", "secret-id", &secret_id).await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v1"})).await;
    let auth = json!({ "appRole": { "roleId": role_id, "secretRef": { "name": "approle", "key": "secret-id" } } });
    secret_store(&client, n, "vault", provider(&vault, auth)).await;
    let _operator = Operator::start(&client, n);
    synced_app_ref(&client, n).await;
    assert_eq!(target(&client, n, "app").await.expect("target")["KEY"], "v1");

    // The secret ID is destroyed and the login token revoked: the store is not ready and says
    // why; the target stays.
    vault
        .ok(
            "POST",
            "auth/approle/role/secretref/secret-id/destroy",
            json!({"secret_id": secret_id}),
        )
        .await;
    vault
        .ok("PUT", "sys/leases/revoke-prefix/auth/approle/login", json!({}))
        .await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v2"})).await;
    let message = wait_reason(&client, n, "app", "StoreNotReady").await;
    assert!(message.contains("AppRole login"), "{message}");
    assert!(!message.contains(&secret_id), "{message}");
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v1");

    // A new secret ID in the Secret: it recovers without a restart.
    let fresh = vault.approle_secret_id("secretref").await;
    put_secret(&client, n, "approle", "secret-id", &fresh).await;
    wait_target(&client, n, "app", "KEY", "v2").await;
    wait_reason(&client, n, "app", "Synced").await;
}

#[tokio::test]
async fn a_revoked_token_then_a_replaced_one() {
    let (client, ns, vault) = setup("vault-revoke").await;
    let n = ns.name.as_str();
    let token = reader_token_store(&client, n, &vault).await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v1"})).await;
    let _operator = Operator::start(&client, n);
    synced_app_ref(&client, n).await;

    vault.ok("PUT", "auth/token/revoke", json!({ "token": token })).await;
    vault.kv_put(&format!("{PREFIX}/main/app"), json!({"KEY": "v2"})).await;
    let message = wait_reason(&client, n, "app", "StoreNotReady").await;
    assert!(message.contains("invalid, expired or revoked"), "{message}");
    assert!(!message.contains(&token), "{message}");
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v1");

    let replacement = vault.token(&["secretref-reader"]).await;
    put_secret(&client, n, "vault-token", "token", &replacement).await;
    wait_target(&client, n, "app", "KEY", "v2").await;
    wait_reason(&client, n, "app", "Synced").await;
}

#[tokio::test]
async fn soft_delete_undelete_destroy_and_invalid_data() {
    let (client, ns, vault) = setup("vault-delete").await;
    let n = ns.name.as_str();
    reader_token_store(&client, n, &vault).await;
    let path = format!("{PREFIX}/main/app");
    vault.kv_put(&path, json!({"KEY": "v1"})).await;
    let _operator = Operator::start(&client, n);
    synced_app_ref(&client, n).await;

    // `vault kv delete`: the current version is soft-deleted.
    vault.ok("DELETE", &format!("secret/data/{path}"), Value::Null).await;
    let message = wait_reason(&client, n, "app", "SecretNotFound").await;
    assert!(message.contains("app"), "{message}");
    assert_eq!(
        target(&client, n, "app").await.expect("kept")["KEY"],
        "v1",
        "the target is kept"
    );
    // `vault kv undelete -versions=1`
    vault
        .ok("POST", &format!("secret/undelete/{path}"), json!({"versions": [1]}))
        .await;
    wait_reason(&client, n, "app", "Synced").await;

    // A new version, then `vault kv destroy` of it: not found again.
    vault.kv_put(&path, json!({"KEY": "v2"})).await;
    wait_target(&client, n, "app", "KEY", "v2").await;
    vault
        .ok("PUT", &format!("secret/destroy/{path}"), json!({"versions": [2]}))
        .await;
    wait_reason(&client, n, "app", "SecretNotFound").await;
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v2");

    // Data that is not a flat map of strings: reported naming the path and the keys, never a
    // value, and the target is kept.
    vault
        .kv_put(&path, json!({"KEY": "hunter2", "PORT": 5432, "NESTED": {"a": "b"}}))
        .await;
    let message = wait_reason(&client, n, "app", "InvalidSecret").await;
    assert!(
        message.contains(&format!("secret/data/{path}")),
        "names the path: {message}"
    );
    assert!(
        message.contains("\"PORT\" holds a number") && message.contains("\"NESTED\" holds an object"),
        "{message}"
    );
    assert!(!message.contains("hunter2") && !message.contains("5432"), "{message}");
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v2");
    vault.kv_put(&path, json!({"KEY": "v4"})).await;
    wait_target(&client, n, "app", "KEY", "v4").await;
    wait_reason(&client, n, "app", "Synced").await;
}

#[tokio::test]
async fn vault_sealed_or_stopped_keeps_the_target_and_recovers() {
    let (client, ns, mut vault) = setup("vault-down").await;
    let n = ns.name.as_str();
    reader_token_store(&client, n, &vault).await;
    let path = format!("{PREFIX}/main/app");
    vault.kv_put(&path, json!({"KEY": "v1"})).await;
    let _operator = Operator::start(&client, n);
    synced_app_ref(&client, n).await;

    vault.seal().await;
    let message = wait_reason(&client, n, "app", "BackendUnavailable").await;
    assert!(message.contains("sealed"), "{message}");
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v1");
    vault.unseal().await;
    vault.kv_put(&path, json!({"KEY": "v2"})).await;
    wait_target(&client, n, "app", "KEY", "v2").await;
    wait_reason(&client, n, "app", "Synced").await;

    vault.stop();
    let message = wait_reason(&client, n, "app", "BackendUnavailable").await;
    assert!(message.contains("cannot reach Vault"), "{message}");
    assert_eq!(target(&client, n, "app").await.expect("kept")["KEY"], "v2");
    vault.restart().await;
    vault.kv_put(&path, json!({"KEY": "v3"})).await;
    // Recovery waits out the backoff the failures built up (capped; a few seconds here).
    eventually(Duration::from_secs(120), "recovery after the restart", || async {
        target(&client, n, "app")
            .await
            .filter(|d| d.get("KEY").map(String::as_str) == Some("v3"))
    })
    .await;
    wait_reason(&client, n, "app", "Synced").await;
}

/// The binary CLI on a ClusterSecretStore backed by Vault.
struct Cli {
    store: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_secretref"))
            .arg("secret")
            .args(args)
            .arg("--store")
            .arg(&self.store)
            .env("KUBECONFIG", kubeconfig_path())
            .env_remove("SECRETREF_ENVIRONMENT")
            .stdin(Stdio::null())
            .output()
            .expect("cli runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "{args:?} failed: {stderr}");
        stdout
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let (ok, stdout, stderr) = self.run(args);
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn cli_on_a_vault_store() {
    let (client, ns, vault) = setup("vault-cli").await;
    let token = vault.token(&["secretref-admin"]).await;
    put_secret(&client, &ns.name, "vault-admin", "token", &token).await;
    let store = ns.name.clone();
    let _guard = ClusterStoreGuard(store.clone());
    let api: Api<ClusterSecretStore> = Api::all(client.clone());
    let obj = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": { "name": store },
        "spec": { "defaultEnvironment": "dev", "namespaces": [ns.name],
                  "provider": { "vault": { "server": vault.addr, "caBundle": base64(&vault.ca_pem),
                      "auth": { "token": { "secretRef": { "name": "vault-admin", "namespace": ns.name, "key": "token" } } } } } } });
    api.patch(&store, &PatchParams::apply("secretref-tests"), &Patch::Apply(&obj))
        .await
        .expect("store");
    let cli = Cli { store };

    // Create: check-and-set 0.
    let out = cli.ok(&["create", "stripe", "STRIPE_KEY=sk_1", "STRIPE_WEBHOOK=wh_1"]);
    assert!(out.contains("Created secret \"stripe\" with 2 keys"), "{out}");
    cli.ok(&["create", "stripe", "-e", "prod", "STRIPE_KEY=sk_prod"]);
    cli.ok(&["create", "..", "DOTS=1"]);
    cli.fails(&["create", "stripe", "STRIPE_KEY=other"], "already exists");

    // Storage: one KV secret per Modal-style secret, marked with its environment and name.
    let (status, read) = vault
        .request("GET", &format!("secret/data/{PREFIX}/dev/stripe"), None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        read["data"]["data"],
        json!({"STRIPE_KEY": "sk_1", "STRIPE_WEBHOOK": "wh_1"})
    );
    let custom = &read["data"]["metadata"]["custom_metadata"];
    assert_eq!(custom["managed-by"], "secretref");
    assert_eq!(custom["secretref.dev/environment"], "dev");
    assert_eq!(custom["secretref.dev/name"], "stripe");
    let (status, _) = vault
        .request("GET", &format!("secret/data/{PREFIX}/dev/~.."), None, None)
        .await;
    assert_eq!(status, 200, "a name of dots only is kept under a ~ (never a path step)");

    // --force: check-and-set with the current version; keys not given are gone.
    cli.ok(&["create", "stripe", "--force", "STRIPE_KEY=sk_2"]);
    let (_, read) = vault
        .request("GET", &format!("secret/data/{PREFIX}/dev/stripe"), None, None)
        .await;
    assert_eq!(read["data"]["data"], json!({"STRIPE_KEY": "sk_2"}));
    assert_eq!(read["data"]["metadata"]["version"], 2);

    // A secret written with Vault's own tools is listed too (no custom_metadata).
    vault
        .kv_put(&format!("{PREFIX}/dev/legacy"), json!({"A": "1", "B": "2", "C": "3"}))
        .await;

    // list: names and key counts (from subkeys), never values.
    let listed: Vec<Value> = serde_json::from_str(&cli.ok(&["list", "--json", "--all-environments"])).expect("json");
    let rows: Vec<(String, String, u64)> = listed
        .iter()
        .map(|r| {
            (
                r["environment"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
                r["keys"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("dev".into(), "..".into(), 1),
            ("dev".into(), "legacy".into(), 3),
            ("dev".into(), "stripe".into(), 1),
            ("prod".into(), "stripe".into(), 1)
        ]
    );
    let table = cli.ok(&["list", "-e", "prod"]);
    assert!(table.contains("stripe") && !table.contains("legacy"), "{table}");
    assert!(!table.contains("sk_prod"), "{table}");

    // describe: keys and version, never values.
    let described = cli.ok(&["describe", "stripe"]);
    assert!(
        described.contains("STRIPE_KEY") && !described.contains("sk_2"),
        "{described}"
    );
    assert!(described.contains("Version:     2@"), "{described}");
    assert!(!described.contains("Created:     -"), "{described}");

    // delete: refused without confirmation, then every version goes.
    cli.fails(&["delete", "stripe"], "confirmation");
    cli.ok(&["delete", "stripe", "-y"]);
    let (status, _) = vault
        .request("GET", &format!("secret/metadata/{PREFIX}/dev/stripe"), None, None)
        .await;
    assert_eq!(status, 404, "the metadata and all versions are gone");
    cli.fails(&["describe", "stripe"], "not found");
    // Created again after a delete: version 1 again, yet a different version string.
    cli.ok(&["create", "stripe", "STRIPE_KEY=sk_3"]);
    assert!(cli.ok(&["describe", "stripe"]).contains("Version:     1@"));
}

/// `--force` is check-and-set on the version it read: a writer that gets in between makes the
/// write fail, and nothing is overwritten. (Driven through the backend, where the gap between
/// reading and writing can be filled deterministically.)
#[tokio::test]
async fn check_and_set_conflicts_never_overwrite() {
    let (client, ns, vault) = setup("vault-cas").await;
    let token = vault.token(&["secretref-admin"]).await;
    put_secret(&client, &ns.name, "vault-admin", "token", &token).await;
    let spec: secretref::api::VaultProvider = serde_json::from_value(json!({
        "server": vault.addr, "caBundle": base64(&vault.ca_pem),
        "auth": { "token": { "secretRef": { "name": "vault-admin", "key": "token" } } }
    }))
    .expect("spec");
    let build = BuildContext::new(client.clone(), Some(ns.name.clone()), None);
    let backend = VaultBackend::new(&build, &spec).await.expect("backend");
    backend.check().await.expect("the store can serve");
    let id = SecretId::new("main", "app");
    backend
        .create("main", "app", secret_data(&[("K", "mine")]))
        .await
        .expect("create");
    assert!(matches!(
        backend.create("main", "app", secret_data(&[("K", "again")])).await,
        Err(secretref::backend::BackendError::AlreadyExists { .. })
    ));
    // Someone else writes version 2 after we read version 1.
    vault
        .kv_put(&format!("{PREFIX}/main/app"), json!({"K": "theirs"}))
        .await;
    assert_eq!(
        backend
            .write_checked(&id, &secret_data(&[("K", "stale")]), 1)
            .await
            .expect("answer"),
        Written::Conflict
    );
    let (_, read) = vault
        .request("GET", &format!("secret/data/{PREFIX}/main/app"), None, None)
        .await;
    assert_eq!(read["data"]["data"]["K"], "theirs", "not overwritten");
    assert!(matches!(
        backend
            .write_checked(&id, &secret_data(&[("K", "current")]), 2)
            .await
            .expect("answer"),
        Written::Version(v) if v.starts_with("3@")
    ));
    // A soft-deleted current version counts as absent for create.
    vault
        .ok("DELETE", &format!("secret/data/{PREFIX}/main/app"), Value::Null)
        .await;
    assert!(backend.get("main", "app").await.expect("read").is_none());
    let versions = backend.versions(std::slice::from_ref(&id)).await.expect("versions");
    assert_eq!(versions[0].1, None, "a soft-deleted current version is absent");
    vault
        .ok(
            "POST",
            &format!("secret/undelete/{PREFIX}/main/app"),
            json!({"versions": [3]}),
        )
        .await;
    let versions = backend.versions(std::slice::from_ref(&id)).await.expect("versions");
    assert!(
        versions[0].1.as_deref().is_some_and(|v| v.starts_with("3@")),
        "{versions:?}"
    );
    vault
        .ok("DELETE", &format!("secret/data/{PREFIX}/main/app"), Value::Null)
        .await;
    backend
        .create("main", "app", secret_data(&[("K", "reborn")]))
        .await
        .expect("create over a deleted version");
    let read = backend.get("main", "app").await.expect("read").expect("exists");
    assert_eq!(read.data["K"].expose(), "reborn");
    assert!(read.version.starts_with("4@"), "{}", read.version);
}

/// What change detection costs Vault, from its own audit log: `versions` is one metadata read
/// per secret and no data read; `get_many` one data read per secret.
#[tokio::test]
async fn versions_cost_one_metadata_read_per_secret() {
    let (client, ns, vault) = setup("vault-cost").await;
    let token = vault.token(&["secretref-reader"]).await;
    put_secret(&client, &ns.name, "vault-token", "token", &token).await;
    let ids: Vec<SecretId> = (0..5).map(|i| SecretId::new("main", format!("s{i}"))).collect();
    for id in &ids {
        vault
            .kv_put(&format!("{PREFIX}/main/{}", id.name), json!({"K": "v"}))
            .await;
    }
    vault.enable_audit().await;
    let spec: secretref::api::VaultProvider = serde_json::from_value(json!({
        "server": vault.addr, "caBundle": base64(&vault.ca_pem),
        "auth": { "token": { "secretRef": { "name": "vault-token", "key": "token" } } }
    }))
    .expect("spec");
    let metrics = std::sync::Arc::new(secretref::metrics::Metrics::default());
    let build = BuildContext::new(client.clone(), Some(ns.name.clone()), Some(metrics.clone()));
    let backend = VaultBackend::new(&build, &spec).await.expect("backend");
    let calls = |operation: &'static str| {
        metrics
            .backend_calls
            .get_or_create(&secretref::metrics::CallLabels {
                provider: "vault",
                operation,
            })
            .get()
    };
    let mut with_missing = ids.clone();
    with_missing.push(SecretId::new("main", "missing"));
    let versions = backend.versions(&with_missing).await.expect("versions");
    assert!(
        versions[..5]
            .iter()
            .all(|(_, v)| v.as_deref().is_some_and(|v| v.starts_with("1@")))
    );
    assert_eq!(versions[5], (SecretId::new("main", "missing"), None));
    assert_eq!(vault.audited("read", &format!("secret/metadata/{PREFIX}/")), 6);
    assert_eq!(vault.audited("read", &format!("secret/data/{PREFIX}/")), 0);
    let read = backend.get_many(&ids).await.expect("get_many");
    assert!(
        read.iter()
            .all(|(_, s)| s.as_ref().is_some_and(|s| s.data["K"].expose() == "v"))
    );
    assert_eq!(vault.audited("read", &format!("secret/data/{PREFIX}/")), 5);
    assert_eq!(vault.audited("read", &format!("secret/metadata/{PREFIX}/")), 6);
    // secretref's own count agrees with Vault's.
    assert_eq!((calls("metadata.read"), calls("data.read")), (6, 5));
}

#[tokio::test]
async fn store_status_says_why_a_vault_store_cannot_serve() {
    let (client, ns, vault) = setup("vault-store").await;
    let n = ns.name.as_str();
    let token = vault.token(&["secretref-reader"]).await;
    put_secret(&client, n, "vault-token", "token", &token).await;
    let _operator = Operator::start(&client, n);
    secret_store(&client, n, "good", provider(&vault, token_auth("vault-token"))).await;
    secret_store(&client, n, "no-secret", provider(&vault, token_auth("missing"))).await;
    let mut not_kv2 = provider(&vault, token_auth("vault-token"));
    not_kv2["vault"]["mount"] = json!("cubbyhole");
    secret_store(&client, n, "not-kv2", not_kv2).await;
    let mut untrusted = provider(&vault, token_auth("vault-token"));
    untrusted["vault"].as_object_mut().expect("object").remove("caBundle");
    secret_store(&client, n, "untrusted", untrusted).await;
    let api: Api<secretref::api::SecretStore> = Api::namespaced(client.clone(), n);
    let reason = |name: &'static str| {
        let api = api.clone();
        async move {
            let s = api.get_opt(name).await.ok()??;
            let c = s.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            Some((c.reason, c.message))
        }
    };
    let check = |name: &'static str, want: &'static str, needle: &'static str| async move {
        let (r, m) = eventually(WAIT, &format!("store {name} checked"), || reason(name)).await;
        assert_eq!(r, want, "{name}: {m}");
        assert!(m.contains(needle), "{name}: {m}");
    };
    check("good", "Valid", "").await;
    check("no-secret", "InvalidProvider", "does not exist").await;
    check("not-kv2", "InvalidProvider", "not KV version 2").await;
    check("untrusted", "BackendUnavailable", "cannot reach Vault").await;
}
