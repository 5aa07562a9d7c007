//! Workloads consuming what secretref writes: a busybox Deployment reading a target through
//! `envFrom` and a `secret` volume (with a dotenv `files` key), secrets written with the CLI.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{Api, Client};
use serde_json::json;

use crate::{
    node::{WAIT, cli, environment, exec, ready_pods},
    support::{ClusterStoreGuard, TestNamespace, apply_json, eventually},
};

/// An application namespace with a ClusterSecretStore of its own over a store namespace.
pub struct App {
    pub client: Client,
    pub ns: TestNamespace,
    pub store: String,
    _store_ns: TestNamespace,
    _guard: ClusterStoreGuard,
}

impl App {
    pub async fn new(client: &Client, prefix: &str) -> App {
        let ns = TestNamespace::new(client, prefix).await;
        let store_ns = TestNamespace::new(client, &format!("{prefix}-store")).await;
        let store = ns.name.clone();
        apply_json(
            client,
            json!({
                "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": { "name": store },
                "spec": { "defaultEnvironment": "main", "namespaces": [ns.name],
                          "provider": { "kubernetes": { "namespace": store_ns.name } } }
            }),
        )
        .await;
        App {
            client: client.clone(),
            _guard: ClusterStoreGuard(store.clone()),
            store,
            ns,
            _store_ns: store_ns,
        }
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// `secretref secret create NAME PAIRS... --force` against this app's store.
    pub fn put(&self, name: &str, pairs: &[&str]) {
        let mut args = vec!["secret", "create", name];
        args.extend_from_slice(pairs);
        args.extend_from_slice(&["--force", "--store", &self.store]);
        cli(&args);
    }

    /// A SecretRef `name` merging `secrets` into target `target` with a dotenv file `.env`.
    pub async fn secretref(&self, name: &str, secrets: &[&str], target: serde_json::Value, restart: &[&str]) {
        let secrets: Vec<_> = secrets.iter().map(|s| json!({ "name": s })).collect();
        let restart: Vec<_> = restart
            .iter()
            .map(|d| json!({ "kind": "Deployment", "name": d }))
            .collect();
        apply_json(&self.client, json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
            "metadata": { "name": name, "namespace": self.ns() },
            "spec": { "storeRef": { "kind": "ClusterSecretStore", "name": self.store }, "secrets": secrets,
                      "target": target, "files": [{ "key": ".env", "format": "dotenv" }], "rolloutRestart": restart }
        }))
        .await;
    }

    /// The target's data once it holds `key` = `value`.
    pub async fn wait_target(&self, target: &str, key: &str, value: &str) -> BTreeMap<String, String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.ns());
        eventually(WAIT, &format!("{target} to hold {key}"), || async {
            let data = secrets.get_opt(target).await.ok()??.data?;
            let data: BTreeMap<String, String> = data
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            (data.get(key).map(String::as_str) == Some(value)).then_some(data)
        })
        .await
    }

    /// A busybox Deployment (one replica) with `target` as env vars and mounted at /etc/app.
    pub async fn deployment(&self, name: &str, target: &str) {
        apply_json(&self.client, json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name, "namespace": self.ns() },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": "app", "image": "localhost/busybox:test", "imagePullPolicy": "Never",
                            "command": ["/bin/sleep", "2147483647"],
                            "envFrom": [{ "secretRef": { "name": target } }],
                            "volumeMounts": [{ "name": "secrets", "mountPath": "/etc/app", "readOnly": true }],
                            "securityContext": { "runAsUser": 65532, "runAsNonRoot": true, "allowPrivilegeEscalation": false }
                        }],
                        "volumes": [{ "name": "secrets", "secret": { "secretName": target } }]
                    }
                }
            }
        }))
        .await;
    }

    /// The single Running and Ready pod of Deployment `name`.
    pub async fn pod(&self, name: &str) -> String {
        crate::node::name(&ready_pods(&self.client, self.ns(), &format!("app={name}"), 1).await[0])
    }

    /// The Deployment's generation: one more per pod-template change (each rollout restart).
    pub async fn generation(&self, name: &str) -> i64 {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns());
        deployments
            .get(name)
            .await
            .expect("deployment")
            .metadata
            .generation
            .expect("generation")
    }

    /// The files mounted at /etc/app in `pod` (the kubelet's `..data` bookkeeping left out).
    pub fn files(&self, pod: &str) -> BTreeMap<String, String> {
        let listing = exec(self.ns(), pod, &["ls", "-A", "/etc/app"]).expect("ls /etc/app");
        listing
            .lines()
            .filter(|f| !f.starts_with(".."))
            .map(|f| {
                let text = exec(self.ns(), pod, &["cat", &format!("/etc/app/{f}")]).expect("cat");
                (f.to_string(), text)
            })
            .collect()
    }

    /// Checks that `pod` sees exactly `data` as files, and as env vars every key of `data` that
    /// the kubelet accepts as a variable name, with nothing else beside what the kubelet adds.
    pub fn assert_consumes(&self, pod: &str, data: &BTreeMap<String, String>) {
        assert_eq!(
            &self.files(pod),
            data,
            "the secret volume holds exactly the target's keys"
        );
        let env = environment(self.ns(), pod);
        let from_secret: BTreeSet<&String> = env
            .keys()
            .filter(|k| !matches!(k.as_str(), "PATH" | "HOSTNAME" | "HOME") && !k.starts_with("KUBERNETES_"))
            .collect();
        // Every key is printable ASCII without '=', so the kubelet takes each one as a variable.
        assert_eq!(from_secret, data.keys().collect(), "env vars from the target: {env:?}");
        for (key, value) in data {
            assert_eq!(env.get(key), Some(value), "env var {key}");
        }
    }
}

/// Polls a file in a pod until it holds `want`; how long that took.
pub fn wait_file(ns: &str, pod: &str, path: &str, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        if exec(ns, pod, &["cat", path]).as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "{path} in {ns}/{pod} never changed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `secretref.dev/restartedAt` annotation of a Deployment's pod template, if any.
pub async fn restarted_at(client: &Client, ns: &str, deployment: &str) -> Option<String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployments.get(deployment).await.ok()?;
    deployment
        .spec
        .template
        .metadata?
        .annotations?
        .get("secretref.dev/restartedAt")
        .cloned()
}
