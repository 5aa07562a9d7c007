//! `secretref secret ...` run as a process against the real control plane: every flag, every
//! bad input (non-zero exit, a message naming the problem, nothing written), and a secret made
//! with the CLI reaching an existing SecretRef within seconds.

mod support;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use secretref::api::ClusterSecretStore;
use serde_json::{Value, json};
use support::{ClusterStoreGuard, Operator, TestNamespace, client, eventually, install_crds, kubeconfig_path};

struct Cli {
    client: Client,
    store: String,
    ns: TestNamespace,
    _store_ns: TestNamespace,
    _store: ClusterStoreGuard,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// A ClusterSecretStore of this test's own (not default: other tests run alongside).
    async fn new(prefix: &str) -> Cli {
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let store_ns = TestNamespace::new(&client, &format!("{prefix}-store")).await;
        let store = ns.name.clone();
        let obj = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": { "name": store },
            "spec": { "defaultEnvironment": "dev", "provider": { "kubernetes": { "namespace": store_ns.name } } } });
        let api: Api<ClusterSecretStore> = Api::all(client.clone());
        api.patch(&store, &PatchParams::apply("secretref-tests"), &Patch::Apply(&obj))
            .await
            .expect("store");
        Cli {
            client,
            _store: ClusterStoreGuard(store.clone()),
            store,
            ns,
            _store_ns: store_ns,
        }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut all = vec!["secret"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--store", &self.store]);
        self.binary(&all, env, stdin)
    }

    /// Runs the binary with exactly `args`.
    fn binary(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretref"));
        cmd.args(args);
        cmd.env("KUBECONFIG", kubeconfig_path())
            .env_remove("SECRETREF_ENVIRONMENT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cli runs");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or_default().as_bytes()).expect("stdin");
        drop(pipe);
        let out = child.wait_with_output().expect("cli output");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args, &[], None);
        assert!(r.ok, "{args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// Runs `args`, expects failure with a message containing `needle`, and checks nothing was
    /// written (the listing is unchanged).
    fn fails(&self, args: &[&str], needle: &str) {
        let before = self.ok(&["list", "--json", "--all-environments"]);
        let r = self.run(args, &[], None);
        assert!(!r.ok, "{args:?} succeeded: {}", r.stdout);
        assert!(
            r.stderr.contains(needle),
            "{args:?}: message lacks {needle:?}: {}",
            r.stderr
        );
        assert_eq!(
            self.ok(&["list", "--json", "--all-environments"]),
            before,
            "{args:?} wrote something"
        );
    }

    /// `secret list --json` with `args` (none: every environment).
    fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(if args.is_empty() { &["--all-environments"] } else { args });
        serde_json::from_str(&self.ok(&all)).expect("json")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let dir = support::repo_root().join("target/cli-tests").join(&self.ns.name);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }
}

fn keys_of(describe: &str) -> Vec<String> {
    describe
        .split("Keys")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn create_merges_inputs_in_order_and_never_prints_values() {
    let cli = Cli::new("cli-create").await;
    let dotenv = cli.file(
        "a.env",
        "# comment\nexport B=from-dotenv\nC='single $quoted'\nD=\"multi\nline\"\n",
    );
    let json = cli.file("a.json", r#"{"C": "from-json", "E": "e"}"#);
    let out = cli.ok(&[
        "create",
        "app",
        "A=arg-value",
        "B=arg",
        "--from-dotenv",
        &dotenv,
        "--from-json",
        &json,
    ]);
    assert!(out.contains("5 keys") && out.contains("\"dev\""), "{out}");
    let described = cli.ok(&["describe", "app"]);
    assert_eq!(keys_of(&described), ["A", "B", "C", "D", "E"]);
    for value in ["arg-value", "from-dotenv", "from-json", "multi"] {
        assert!(!described.contains(value), "describe printed a value: {described}");
    }
    let secret = cli_secret_values(&cli, "dev", "app").await;
    assert_eq!(secret["B"], "from-dotenv");
    assert_eq!(secret["C"], "from-json");
    assert_eq!(secret["D"], "multi\nline");

    // Without --force an existing secret is an error; with it the secret is replaced whole.
    cli.fails(&["create", "app", "A=again"], "already exists");
    cli.ok(&["create", "app", "ONLY=1", "--force"]);
    assert_eq!(keys_of(&cli.ok(&["describe", "app"])), ["ONLY"]);

    // KEY=- reads stdin; -e and SECRETREF_ENVIRONMENT pick the environment.
    let r = cli.run(&["create", "piped", "TOKEN=-", "-e", "prod"], &[], Some("from-stdin\n"));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(cli_secret_values(&cli, "prod", "piped").await["TOKEN"], "from-stdin");
    let r = cli.run(
        &["create", "viaenv", "X=1"],
        &[("SECRETREF_ENVIRONMENT", "staging")],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    let all = cli.list(&[]);
    let envs: Vec<(&str, &str, u64)> = all
        .iter()
        .map(|s| {
            (
                s["environment"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or(""),
                s["keys"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        envs,
        [("dev", "app", 1), ("prod", "piped", 1), ("staging", "viaenv", 1)]
    );
    assert_eq!(cli.list(&["-e", "prod"]).len(), 1);
    let table = cli.ok(&["list", "--all-environments"]);
    assert!(
        table.contains("NAME") && table.contains("piped") && !table.contains("from-stdin"),
        "{table}"
    );
}

/// `--from-dotenv` reads a file as Modal does (python-dotenv): the examples of issue 16, `${VAR}`
/// from the CLI's own environment, and refusals that name the line. (`tests/dotenv_diff` compares
/// the parser with python-dotenv itself.)
#[tokio::test]
async fn dotenv_files_read_as_modal_reads_them() {
    let cli = Cli::new("cli-dotenv").await;
    let file = cli.file(
        "modal.env",
        "\u{feff}export A=1\r\nB=two words # note\r\nD=\"bare $A\"\r\nP=$A\r\nU=unquoted\\nbackslash\r\n\
         T=\"tab\\there\"\r\nX=${SECRETREF_TEST_UNSET:-default}\r\nE=${SECRETREF_TEST_FROM_ENV}/${A}\r\n",
    );
    let r = cli.run(
        &["create", "modal", "--from-dotenv", &file],
        &[("SECRETREF_TEST_FROM_ENV", "from-process")],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    let values = cli_secret_values(&cli, "dev", "modal").await;
    let expected = [
        ("A", "1"),
        ("B", "two words"),
        ("D", "bare $A"),
        ("E", "from-process/1"),
        ("P", "$A"),
        ("T", "tab\there"),
        ("U", "unquoted\\nbackslash"),
        ("X", "default"),
    ];
    let expected: std::collections::BTreeMap<String, String> =
        expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(values, expected);

    let lonely = cli.file("lonely.env", "A=1\nhunter2\n");
    cli.fails(
        &["create", "s", "--from-dotenv", &lonely],
        "lonely.env: line 2 has a name without `=`",
    );
    let bad_key = cli.file("badkey.env", "A=1\n\nBAD-KEY=hunter2\n");
    cli.fails(
        &["create", "s", "--from-dotenv", &bad_key],
        "key \"BAD-KEY\" on line 3 is not a valid environment variable name",
    );
    for file in [&lonely, &bad_key] {
        let r = cli.run(&["create", "s", "--from-dotenv", file], &[], None);
        assert!(!r.ok && !r.stderr.contains("hunter2"), "{}", r.stderr);
    }
}

/// Reads a store secret's values straight from the backend, as the operator would.
async fn cli_secret_values(cli: &Cli, env: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let api: Api<ClusterSecretStore> = Api::all(cli.client.clone());
    let store = api.get(&cli.store).await.expect("store");
    let ctx = secretref::backend::BuildContext::new(cli.client.clone(), None, None);
    let backend = secretref::backend::for_provider(&ctx, &store.spec.provider)
        .await
        .expect("backend");
    let secret = backend.get(env, name).await.expect("read").expect("exists");
    secret
        .data
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect()
}

#[tokio::test]
async fn bad_input_names_the_problem_and_writes_nothing() {
    let cli = Cli::new("cli-bad").await;
    cli.ok(&["create", "existing", "A=1"]);
    let bad_env = cli.file("bad.env", "A=1\nB=2\nthis line is broken\n");
    let nested = cli.file("nested.json", r#"{"A": "1", "B": {"deep": "x"}}"#);
    let number = cli.file("number.json", r#"{"A": 1}"#);
    let broken = cli.file("broken.json", "{\"A\": \"1\",");
    let bad_key = cli.file("badkey.json", r#"{"not-valid": "1"}"#);
    cli.fails(&["create", "s", "A=1", "--from-dotenv", &bad_env], "line 3");
    cli.fails(
        &["create", "s", "A=1", "--from-json", &nested],
        "\"B\" must have a string value, not an object",
    );
    cli.fails(&["create", "s", "--from-json", &number], "not a number");
    cli.fails(&["create", "s", "--from-json", &broken], "invalid JSON");
    cli.fails(&["create", "s", "--from-json", &bad_key], "\"not-valid\"");
    cli.fails(&["create", "s", "1KEY=v"], "\"1KEY\"");
    cli.fails(&["create", "s", "novalue"], "expected KEY=VALUE");
    cli.fails(&["create", "bad/name", "A=1"], "invalid secret name");
    cli.fails(&["create", "s"], "no keys given");
    cli.fails(
        &["create", "s", "--from-dotenv", "/nonexistent/file.env"],
        "/nonexistent/file.env",
    );
    cli.fails(&["create", "s", "A=1", "--env=-bad"], "invalid environment");
    cli.fails(&["create", "s", "A=-", "B=-"], "stdin can feed only one key");
    cli.fails(&["describe", "missing"], "not found");
    cli.fails(&["delete", "missing", "-y"], "not found");
    let r = cli.run(&["delete", "missing", "--allow-missing"], &[], None);
    assert!(r.ok, "{}", r.stderr);
    // Deleting needs a confirmation it cannot get from a pipe.
    cli.fails(&["delete", "existing"], "pass -y");

    // An unreachable API server: a clear error, quickly.
    let dead = cli.file(
        "dead.kubeconfig",
        &std::fs::read_to_string(kubeconfig_path())
            .expect("kubeconfig")
            .lines()
            // Port 1 on loopback: nothing listens there (the cluster's own address varies).
            .map(|l| match l.split_once("server: ") {
                Some((indent, _)) => format!("{indent}server: https://127.0.0.1:1"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let r = cli.run(&["list"], &[("KUBECONFIG", dead.as_str())], None);
    assert!(!r.ok && r.stderr.contains("secretref: error"), "{}", r.stderr);
}

#[tokio::test]
async fn delete_names_the_secretrefs_that_use_it() {
    let cli = Cli::new("cli-delete").await;
    cli.ok(&["create", "db", "URL=x"]);
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "secretref.dev",
        "v1alpha1",
        "SecretRef",
    ));
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(cli.client.clone(), &cli.ns.name, &ar);
    let sr = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": "uses-db" },
        "spec": { "storeRef": { "name": cli.store }, "secrets": [{ "name": "db" }] } });
    api.patch("uses-db", &PatchParams::apply("secretref-tests"), &Patch::Apply(&sr))
        .await
        .expect("secretref");
    let r = cli.run(&["delete", "db", "-y"], &[], None);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{}/uses-db", cli.ns.name)), "{}", r.stderr);
    assert!(cli.list(&[]).is_empty());
}

#[tokio::test]
async fn a_secret_created_with_the_cli_reaches_an_existing_secretref() {
    let cli = Cli::new("cli-pickup").await;
    let _operator = Operator::start(&cli.client, &cli.ns.name);
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "secretref.dev",
        "v1alpha1",
        "SecretRef",
    ));
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(cli.client.clone(), &cli.ns.name, &ar);
    let sr = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": "web" },
        "spec": { "storeRef": { "name": cli.store }, "environment": "prod", "secrets": [{ "name": "late" }], "refreshInterval": "1h" } });
    api.patch("web", &PatchParams::apply("secretref-tests"), &Patch::Apply(&sr))
        .await
        .expect("secretref");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cli.ok(&["create", "late", "API_KEY=abc", "-e", "prod"]);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cli.client.clone(), &cli.ns.name);
    eventually(Duration::from_secs(5), "the new secret in the target", || async {
        let s = secrets.get_opt("web").await.ok()??;
        (s.data?.get("API_KEY")?.0 == b"abc").then_some(())
    })
    .await;
}

#[tokio::test]
async fn works_as_a_kubectl_plugin() {
    let cli = Cli::new("cli-plugin").await;
    cli.ok(&["create", "plugged", "A=1"]);
    let dir = support::repo_root()
        .join("target/cli-tests")
        .join(&cli.ns.name)
        .join("bin");
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("kubectl-secretref");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_secretref"), &link).expect("symlink");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    // Plugins take no kubectl flags before their name, so KUBECONFIG carries the config.
    let out = Command::new(support::tools_bin().join("kubectl"))
        .args(["secretref", "secret", "list", "--store", &cli.store])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("plugged"));
}

/// Modal's everyday operations: environments, values from the caller's environment, who uses
/// a secret, and what is synced where.
#[tokio::test]
async fn environments_from_env_users_and_status() {
    let cli = Cli::new("cli-ops").await;
    let _operator = Operator::start(&cli.client, &cli.ns.name);
    let env = [("CLI_OPS_TOKEN", "from-my-shell"), ("CLI_OPS_USER", "robot")];
    let r = cli.run(
        &[
            "create",
            "svc",
            "--from-env",
            "CLI_OPS_TOKEN",
            "--from-env",
            "CLI_OPS_USER",
            "-e",
            "prod",
        ],
        &env,
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stdout.contains("from-my-shell"), "{}", r.stdout);
    let values = cli_secret_values(&cli, "prod", "svc").await;
    assert_eq!(values["CLI_OPS_TOKEN"], "from-my-shell");
    assert_eq!(values["CLI_OPS_USER"], "robot");
    // All or nothing: one unset key and nothing is written.
    cli.fails(
        &["create", "half", "A=1", "--from-env", "CLI_OPS_NOT_SET"],
        "--from-env CLI_OPS_NOT_SET: is not set",
    );
    cli.ok(&["create", "a", "K=1"]);
    cli.ok(&["create", "b", "K=1"]);

    // `secret list` shows the default environment (dev), --all-environments every one.
    let names = |rows: Vec<Value>| {
        rows.iter()
            .map(|r| r["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let default_env: Vec<Value> = serde_json::from_str(&cli.ok(&["list", "--json"])).expect("json");
    assert_eq!(names(default_env), ["a", "b"]);
    assert_eq!(names(cli.list(&["-e", "prod"])), ["svc"]);
    assert_eq!(names(cli.list(&[])), ["a", "b", "svc"]);
    let envs = cli.binary(&["env", "list", "--store", &cli.store, "--json"], &[], None);
    assert!(envs.ok, "{}", envs.stderr);
    let envs: Value = serde_json::from_str(&envs.stdout).expect("json");
    assert_eq!(
        envs,
        json!([{ "environment": "dev", "secrets": 2, "default": true }, { "environment": "prod", "secrets": 1, "default": false }])
    );
    let table = cli.binary(&["env", "list", "--store", &cli.store], &[], None);
    assert!(
        table.stdout.contains("ENVIRONMENT") && table.stdout.contains("prod"),
        "{}",
        table.stdout
    );

    // describe names the SecretRefs that read the secret, with their state.
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "secretref.dev",
        "v1alpha1",
        "SecretRef",
    ));
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(cli.client.clone(), &cli.ns.name, &ar);
    for (name, env) in [("reader", "prod"), ("other-env", "dev")] {
        let sr = json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name },
            "spec": { "storeRef": { "name": cli.store }, "environment": env, "secrets": [{ "name": "svc" }] } });
        api.patch(name, &PatchParams::apply("secretref-tests"), &Patch::Apply(&sr))
            .await
            .expect("secretref");
    }
    let ns = cli.ns.name.clone();
    let status = eventually(Duration::from_secs(30), "reader synced in status", || async {
        let r = cli.binary(&["status", "-n", &ns, "-o", "json"], &[], None);
        let rows: Value = serde_json::from_str(&r.stdout).ok()?;
        let reader = rows.as_array()?.iter().find(|r| r["name"] == "reader")?.clone();
        (reader["reason"] == "Synced").then_some(rows)
    })
    .await;
    let reader = status
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "reader")
        .expect("reader")
        .clone();
    assert_eq!(reader["keys"], 2);
    assert_eq!(reader["environment"], "prod");
    assert_eq!(reader["store"], format!("ClusterSecretStore/{}", cli.store));
    assert_eq!(reader["target"], "reader");
    let other = status
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "other-env")
        .expect("other")
        .clone();
    assert_eq!(other["reason"], "SecretNotFound");
    let described = cli.ok(&["describe", "svc", "-e", "prod"]);
    assert!(
        described.contains(&format!("{ns}/reader  Ready=True Synced  target reader")),
        "{described}"
    );
    assert!(
        !described.contains("other-env"),
        "another environment's reader: {described}"
    );
    assert!(!described.contains("from-my-shell"), "{described}");
    let table = cli.binary(&["status", "-n", &ns], &[], None);
    assert!(
        table.ok && table.stdout.contains("LAST SYNC") && table.stdout.contains("reader"),
        "{}",
        table.stderr
    );
    let yaml = cli.binary(&["status", "-A", "-o", "yaml"], &[], None);
    assert!(yaml.ok && yaml.stdout.contains("kind: SecretRef"), "{}", yaml.stderr);
    assert!(!yaml.stdout.contains("from-my-shell"));
}
