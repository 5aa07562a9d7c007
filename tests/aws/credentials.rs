//! Where the aws provider's credentials come from: static keys in a Secret (rotated without a
//! restart), a role assumed on top, and the SDK's default chain with an IRSA-style web identity
//! (a TokenRequest token exchanged with moto's STS).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::{
    fixture::{REGION, WAIT, World},
    support::{eventually, kubeconfig_path, service_account_token},
};

#[tokio::test]
async fn rotated_static_keys_are_used_without_a_restart() {
    let mut w = World::new("aws-rotate").await;
    w.apply(
        "SecretStore",
        "store",
        json!({ "default": true, "provider": w.provider(false) }),
    )
    .await;
    w.start_operator();
    w.aws_put("main", "app", r#"{"K": "1"}"#).await;
    w.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [{ "name": "app" }], "refreshInterval": "1s" }),
    )
    .await;
    w.wait_target("app", &[("K", "1")]).await;
    w.moto.start_recording();
    eventually(WAIT, "a call signed with the first key", || async {
        w.moto
            .recorded()
            .iter()
            .any(|r| r.key_id.as_deref() == Some("AKIDTEST1"))
            .then_some(())
    })
    .await;

    // Rotate the keys in the Secret: the operator (still the same process) picks them up
    // within the credential cache's 30 s.
    w.put_keys("AKIDTEST2", "secret2").await;
    w.moto.start_recording();
    eventually(
        Duration::from_secs(60),
        "a call signed with the rotated key",
        || async {
            w.moto
                .recorded()
                .iter()
                .any(|r| r.key_id.as_deref() == Some("AKIDTEST2"))
                .then_some(())
        },
    )
    .await;
    // And from then on only the new key.
    w.moto.start_recording();
    w.aws_put("main", "app", r#"{"K": "2"}"#).await;
    w.wait_target("app", &[("K", "2")]).await;
    let signed: Vec<_> = w
        .moto
        .recorded()
        .into_iter()
        .filter(|r| r.key_id.as_deref() != Some("AKIDDIRECT"))
        .filter_map(|r| r.key_id)
        .collect();
    assert!(
        !signed.is_empty() && signed.iter().all(|k| k == "AKIDTEST2"),
        "{signed:?}"
    );
}

#[tokio::test]
async fn a_role_is_assumed_on_top_of_the_static_keys() {
    let mut w = World::new("aws-role").await;
    let mut provider = w.provider(false);
    provider["aws"]["auth"]["roleArn"] = json!("arn:aws:iam::123456789012:role/secretref-reader");
    w.apply("SecretStore", "store", json!({ "default": true, "provider": provider }))
        .await;
    w.moto.start_recording();
    w.start_operator();
    w.aws_put("main", "app", r#"{"K": "1"}"#).await;
    w.apply("SecretRef", "app", json!({ "secrets": [{ "name": "app" }] }))
        .await;
    w.wait_target("app", &[("K", "1")]).await;
    let recorded = w.moto.recorded();
    let assume = recorded
        .iter()
        .find(|r| r.operation == "AssumeRole")
        .expect("AssumeRole called");
    assert_eq!(
        assume.key_id.as_deref(),
        Some("AKIDTEST1"),
        "signed with the static key"
    );
    assert!(assume.body.contains("secretref-reader"), "{}", assume.body);
    let reads: Vec<_> = recorded
        .iter()
        .filter(|r| r.operation == "GetSecretValue" || r.operation == "BatchGetSecretValue")
        .collect();
    assert!(!reads.is_empty());
    for r in reads {
        let key = r.key_id.as_deref().unwrap_or_default();
        assert!(
            key != "AKIDTEST1" && key != "AKIDDIRECT" && !key.is_empty(),
            "read signed with {key}, not the assumed role's key"
        );
    }
}

/// IRSA: the SDK's default chain exchanges a projected ServiceAccount token for the role's
/// credentials (AssumeRoleWithWebIdentity). Here the token is a real TokenRequest token of the
/// control plane and the exchange is moto's STS; the operator is the binary, as deployed.
#[tokio::test]
async fn web_identity_through_the_default_chain() {
    let w = World::new("aws-irsa").await;
    let mut provider = w.provider(false);
    provider["aws"].as_object_mut().expect("object").remove("auth");
    w.apply("SecretStore", "store", json!({ "default": true, "provider": provider }))
        .await;
    w.aws_put("main", "app", r#"{"K": "from-irsa"}"#).await;
    w.apply("SecretRef", "app", json!({ "secrets": [{ "name": "app" }] }))
        .await;

    let token = service_account_token(&w.client, w.ns(), "secretref").await;
    let dir = crate::support::repo_root().join("target/aws-tests").join(w.ns());
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).expect("token file");
    w.moto.start_recording();
    let log = std::fs::File::create(dir.join("operator.log")).expect("log");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_secretref"))
        .args(["run", "--leader-elect=false", "--metrics-bind-address", "127.0.0.1:0"])
        .args(["--namespace", w.ns(), "--operator-namespace", w.ns()])
        .env("KUBECONFIG", kubeconfig_path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/secretref-irsa")
        .env("AWS_ROLE_SESSION_NAME", "secretref")
        .env("AWS_REGION", REGION)
        // Where the chain's STS lives (EKS: the regional STS endpoint).
        .env("AWS_ENDPOINT_URL_STS", w.moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("operator runs");
    let synced = tokio::time::timeout(WAIT, w.wait_target("app", &[("K", "from-irsa")])).await;
    let _ = operator.kill();
    let _ = operator.wait();
    synced.expect("synced through web identity");
    let recorded = w.moto.recorded();
    let exchange = recorded
        .iter()
        .find(|r| r.operation == "AssumeRoleWithWebIdentity")
        .expect("AssumeRoleWithWebIdentity called");
    assert!(exchange.body.contains("secretref-irsa"), "{}", exchange.body);
    assert!(
        recorded
            .iter()
            .filter(|r| r.operation == "GetSecretValue")
            .all(|r| r.key_id.is_some()),
        "reads are signed with the exchanged credentials"
    );
}
