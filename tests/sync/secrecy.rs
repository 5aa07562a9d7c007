//! A planted canary value reaches the target Secret and nothing else: not the operator's logs
//! (the real binary, at trace level), not Events, not any status.

use std::{process::Stdio, time::Duration};

use serde_json::json;

use crate::{fixture::Fixture, support::kubeconfig_path};

#[tokio::test]
async fn a_canary_value_never_leaves_the_target() {
    let f = Fixture::without_operator("secrecy").await;
    let canary = format!("CANARY-{}-c4n4ry", std::process::id());
    f.put("main", "app", &[("TOKEN", canary.as_str()), ("PORT", "8080")])
        .await;
    f.put("prod", "app", &[("TOKEN", canary.as_str())]).await;

    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_secretref"))
        .args([
            "run",
            "--namespace",
            f.ns(),
            "--operator-namespace",
            f.ns(),
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");
    // Drain both pipes while it runs: a full pipe would block its logging.
    let drain = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(operator.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(operator.stderr.take().map(|p| Box::new(p) as _));

    f.apply(
        "SecretRef",
        "ok",
        json!({
            "secrets": [{ "name": "app" }],
            "files": [ { "key": ".env", "format": "dotenv" }, { "key": "a.json", "format": "json" },
                       { "key": "t", "format": "template", "template": "token={{ TOKEN }}" } ]
        }),
    )
    .await;
    f.apply(
        "SecretRef",
        "required",
        json!({ "secrets": [{ "name": "app" }], "requiredKeys": ["MISSING"] }),
    )
    .await;
    f.apply("SecretRef", "template", json!({ "secrets": [{ "name": "app" }],
        "files": [ { "key": "t", "format": "template", "template": "{{ TOKEN | int }} {{ TOKEN + 1 }} {{ TOKEN.x.y }}" } ] })).await;
    f.wait_reason("ok", "Synced").await;
    // Once "ok" owns its target, a second SecretRef aiming at it conflicts.
    f.apply(
        "SecretRef",
        "conflict",
        json!({ "environment": "prod", "secrets": [{ "name": "app" }], "target": { "name": "ok" } }),
    )
    .await;
    f.wait_reason("required", "MissingRequiredKeys").await;
    f.wait_reason("template", "TemplateError").await;
    f.wait_reason("conflict", "TargetConflict").await;
    // A change, so updates are logged too.
    f.put("main", "app", &[("TOKEN", canary.as_str()), ("PORT", "9090")])
        .await;
    f.wait_target(
        "ok",
        &[
            ("TOKEN", canary.as_str()),
            ("PORT", "9090"),
            (".env", &format!("PORT=\"9090\"\nTOKEN=\"{canary}\"\n")),
            ("a.json", &format!("{{\"PORT\":\"9090\",\"TOKEN\":\"{canary}\"}}")),
            ("t", &format!("token={canary}")),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // SIGTERM, as Kubernetes would, then read everything the operator printed.
    let pid = operator.id().expect("pid").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(Duration::from_secs(10), operator.wait()).await;
    let _ = operator.start_kill();
    let logs = format!("{}{}", stdout.await.expect("stdout"), stderr.await.expect("stderr"));
    assert!(
        logs.contains("target Secret written"),
        "the operator really ran: {logs}"
    );
    assert!(!logs.contains(&canary), "the canary is in the operator's logs");

    let events = f.events_json().await;
    assert!(
        events.contains("TemplateError") && events.contains("MissingRequiredKeys"),
        "{events}"
    );
    assert!(!events.contains(&canary), "the canary is in an Event: {events}");

    let statuses =
        serde_json::to_string(&f.secretrefs().list(&Default::default()).await.expect("list").items).expect("json");
    assert!(statuses.contains("TargetConflict"), "{statuses}");
    assert!(!statuses.contains(&canary), "the canary is in a SecretRef: {statuses}");
}
