//! One test's world: moto, a namespace holding the static keys, a store over moto, an SDK
//! client that changes AWS directly (as another tool would), and optionally an operator.

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_secretsmanager::{Client as Aws, config::Credentials};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use secretref::api::{SecretRef, condition::find_ready};
use serde_json::{Value, json};

use crate::support::{Operator, TestNamespace, apply_json, client, eventually, install_crds, moto::Moto};

pub const WAIT: Duration = Duration::from_secs(30);
pub const REGION: &str = "us-east-1";

pub struct World {
    pub client: Client,
    pub ns: TestNamespace,
    pub moto: Moto,
    pub aws: Aws,
    /// The AWS name prefix of this test's store.
    pub prefix: String,
    pub operator: Option<Operator>,
}

impl World {
    /// moto, a namespace with the static keys Secret `aws-creds` (key id `AKIDTEST1`), and no store yet.
    pub async fn new(prefix: &str) -> World {
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let moto = Moto::start();
        let aws = sdk(&moto.endpoint(), "AKIDDIRECT");
        let w = World {
            client,
            prefix: format!("secretref-{}", ns.name),
            ns,
            moto,
            aws,
            operator: None,
        };
        w.put_keys("AKIDTEST1", "secret1").await;
        w
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// The `aws` provider of this world's stores, with the static keys of `aws-creds`.
    pub fn provider(&self, cluster: bool) -> Value {
        let mut secret_ref = json!({ "name": "aws-creds" });
        if cluster {
            secret_ref["namespace"] = json!(self.ns());
        }
        json!({ "aws": { "region": REGION, "prefix": self.prefix, "endpoint": self.moto.endpoint(),
                         "auth": { "secretRef": secret_ref } } })
    }

    /// Writes (or rotates) the static keys the stores use.
    pub async fn put_keys(&self, id: &str, secret: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.ns());
        let obj = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "aws-creds" },
                          "stringData": { "access-key-id": id, "secret-access-key": secret } });
        api.patch(
            "aws-creds",
            &PatchParams::apply("secretref-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("keys Secret");
    }

    pub fn start_operator(&mut self) {
        self.operator = Some(Operator::start(&self.client, &self.ns.name));
    }

    /// Server-side applies a secretref.dev object (ClusterSecretStores are cluster-wide).
    pub async fn apply(&self, kind: &str, name: &str, spec: Value) {
        let metadata = if kind == "ClusterSecretStore" {
            json!({ "name": name })
        } else {
            json!({ "name": name, "namespace": self.ns() })
        };
        apply_json(
            &self.client,
            json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec }),
        )
        .await;
    }

    pub fn aws_name(&self, environment: &str, name: &str) -> String {
        format!("{}/{environment}/{name}", self.prefix)
    }

    /// Writes a secret straight into AWS (not through secretref): created, or a new version.
    pub async fn aws_put(&self, environment: &str, name: &str, secret_string: &str) {
        let id = self.aws_name(environment, name);
        let put = self
            .aws
            .put_secret_value()
            .secret_id(&id)
            .secret_string(secret_string)
            .send()
            .await;
        if put.is_err() {
            self.aws
                .create_secret()
                .name(&id)
                .secret_string(secret_string)
                .send()
                .await
                .expect("create in AWS");
        }
    }

    /// The SecretString AWS holds for a secret (None: no such secret).
    pub async fn aws_get(&self, environment: &str, name: &str) -> Option<String> {
        self.aws
            .get_secret_value()
            .secret_id(self.aws_name(environment, name))
            .send()
            .await
            .ok()
            .and_then(|v| v.secret_string().map(str::to_string))
    }

    pub async fn wait_reason(&self, name: &str, reason: &str) -> SecretRef {
        let api: Api<SecretRef> = Api::namespaced(self.client.clone(), self.ns());
        eventually(WAIT, &format!("SecretRef {name} to be {reason}"), || async {
            let sr = api.get_opt(name).await.ok()??;
            let status = sr.status.as_ref()?;
            let ready = find_ready(&status.conditions)?;
            (ready.reason == reason && status.observed_generation == sr.metadata.generation).then_some(sr.clone())
        })
        .await
    }

    pub async fn target(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.ns());
        let secret = api.get_opt(name).await.expect("get target")?;
        Some(
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }

    pub async fn wait_target(&self, name: &str, pairs: &[(&str, &str)]) {
        let want: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        eventually(WAIT, &format!("target {name} to hold {want:?}"), || async {
            self.target(name).await.filter(|d| *d == want)
        })
        .await;
    }
}

/// An SDK client aimed at moto, signing with access key id `key_id`.
pub fn sdk(endpoint: &str, key_id: &str) -> Aws {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::v2026_01_12())
        .region(aws_sdk_secretsmanager::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key_id, "secret", None, None, "tests"))
        .http_client(http)
        .build();
    Aws::from_conf(config)
}

pub fn ready_message(sr: &SecretRef) -> String {
    sr.status
        .as_ref()
        .and_then(|s| find_ready(&s.conditions))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
