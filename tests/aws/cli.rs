//! `secretref secret ...` (the binary) on an aws ClusterSecretStore: the same commands and
//! messages as on the embedded store, and the AWS calls behind them (from moto's log).

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{
    fixture::World,
    support::{ClusterStoreGuard, kubeconfig_path},
};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(store: &str, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretref"))
        .arg("secret")
        .args(args)
        .args(["--store", store])
        .env("KUBECONFIG", kubeconfig_path())
        .env_remove("SECRETREF_ENVIRONMENT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli runs");
    drop(child.stdin.take().map(|mut s| s.write_all(b"")));
    let out = child.wait_with_output().expect("cli output");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(store: &str, args: &[&str]) -> String {
    let r = run(store, args);
    assert!(r.ok, "{args:?} failed: {}", r.stderr);
    r.stdout
}

fn fails(store: &str, args: &[&str], needle: &str) {
    let r = run(store, args);
    assert!(!r.ok, "{args:?} succeeded: {}", r.stdout);
    assert!(r.stderr.contains(needle), "{args:?}: {needle:?} not in {}", r.stderr);
}

#[tokio::test]
async fn create_list_describe_delete_and_force_on_aws() {
    let w = World::new("aws-cli").await;
    let store = w.ns().to_string();
    w.apply(
        "ClusterSecretStore",
        &store,
        json!({ "defaultEnvironment": "main", "provider": w.provider(true) }),
    )
    .await;
    let _guard = ClusterStoreGuard(store.clone());
    let s = store.as_str();
    w.moto.start_recording();

    let out = ok(
        s,
        &["create", "stripe", "STRIPE_KEY=sk_live_1", "WEBHOOK=wh_1", "-e", "prod"],
    );
    assert!(out.contains("2 keys") && out.contains("\"prod\""), "{out}");
    let stored: Value = serde_json::from_str(&w.aws_get("prod", "stripe").await.expect("in AWS")).expect("json");
    assert_eq!(stored, json!({ "STRIPE_KEY": "sk_live_1", "WEBHOOK": "wh_1" }));
    let described = w
        .aws
        .describe_secret()
        .secret_id(w.aws_name("prod", "stripe"))
        .send()
        .await
        .expect("describe");
    let tags: Vec<(&str, &str)> = described
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect();
    for tag in [
        ("app.kubernetes.io/managed-by", "secretref"),
        ("secretref.dev/environment", "prod"),
        ("secretref.dev/name", "stripe"),
    ] {
        assert!(tags.contains(&tag), "{tag:?} not in {tags:?}");
    }
    let create = w
        .moto
        .recorded()
        .into_iter()
        .find(|r| r.operation == "CreateSecret")
        .expect("CreateSecret");
    assert!(create.body.contains("ClientRequestToken"), "{}", create.body);

    fails(s, &["create", "stripe", "X=1", "-e", "prod"], "already exists");
    // --force: a new version with PutSecretValue, never a delete.
    w.moto.start_recording();
    ok(s, &["create", "stripe", "ONLY=1", "-e", "prod", "--force"]);
    let ops: Vec<String> = w.moto.recorded().into_iter().map(|r| r.operation).collect();
    assert!(ops.contains(&"PutSecretValue".to_string()), "{ops:?}");
    assert!(!ops.iter().any(|o| o.starts_with("Delete")), "{ops:?}");
    assert_eq!(w.aws_get("prod", "stripe").await.as_deref(), Some(r#"{"ONLY":"1"}"#));
    // --force on a secret that does not exist creates it.
    ok(s, &["create", "api", "A=1", "B=2", "--force"]);

    let list = ok(s, &["list", "--json", "--all-environments"]);
    let rows: Vec<(String, String, u64)> = serde_json::from_str::<Vec<Value>>(&list)
        .expect("json")
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
        [("main".into(), "api".into(), 2), ("prod".into(), "stripe".into(), 1)]
    );
    assert_eq!(ok(s, &["list", "-e", "prod", "--json"]).matches("\"name\"").count(), 1);
    let table = ok(s, &["list", "--all-environments"]);
    assert!(
        table.contains("stripe") && !table.contains("sk_live") && !table.contains("\"1\""),
        "{table}"
    );

    let described = ok(s, &["describe", "stripe", "-e", "prod"]);
    assert!(
        described.contains("ONLY") && !described.contains("sk_live"),
        "{described}"
    );
    let version = w
        .aws
        .get_secret_value()
        .secret_id(w.aws_name("prod", "stripe"))
        .send()
        .await
        .expect("read")
        .version_id()
        .map(str::to_string)
        .expect("version");
    assert!(
        described.contains(&version),
        "describe shows the VersionId: {described}"
    );

    // A secret made by hand in the prefix that is not a flat object is named, not half-read.
    w.aws_put("main", "broken", r#"{"A": ["hunter2"]}"#).await;
    fails(s, &["describe", "broken"], "holds a JSON array, not a string");

    // Delete asks first (stdin is no terminal here), then deletes at once, without recovery.
    fails(
        s,
        &["delete", "stripe", "-e", "prod"],
        "refusing to delete without confirmation",
    );
    w.moto.start_recording();
    ok(s, &["delete", "stripe", "-e", "prod", "-y"]);
    let delete = w
        .moto
        .recorded()
        .into_iter()
        .find(|r| r.operation == "DeleteSecret")
        .expect("DeleteSecret");
    assert!(
        delete.body.contains("\"ForceDeleteWithoutRecovery\":true"),
        "{}",
        delete.body
    );
    let gone = w
        .aws
        .describe_secret()
        .secret_id(w.aws_name("prod", "stripe"))
        .send()
        .await;
    assert!(gone.is_err(), "deleted without a recovery window");
    fails(s, &["delete", "stripe", "-e", "prod", "-y"], "not found");
    ok(s, &["delete", "stripe", "-e", "prod", "-y", "--allow-missing"]);
}
