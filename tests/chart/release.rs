//! Installs the chart into a test namespace and runs operator processes exactly as its
//! Deployment would run them.

use std::{collections::BTreeMap, process::Stdio};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use secretref::backend::kubernetes::KubernetesBackend;
use serde_json::Value;

use crate::support::{
    TestNamespace, apply_json, client, free_port, http_get, install_crds, kubeconfig_path, repo_root,
    service_account_client, tools_bin,
};

/// Runs the pinned helm in the repository root and returns its stdout.
pub fn helm(args: &[&str]) -> String {
    let out = std::process::Command::new(tools_bin().join("helm"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

pub struct Release {
    pub client: Client,
    pub ns: TestNamespace,
    pub name: String,
    /// The namespaces the release watches (`watchNamespace`, or `scope.namespaces` for a
    /// namespace-scoped install), so that it never acts on other tests' objects, each with a
    /// default SecretStore over `store_ns`.
    pub app: TestNamespace,
    pub apps: Vec<TestNamespace>,
    pub store_ns: TestNamespace,
    pub store: KubernetesBackend,
    /// The chart values (`--set`) of this release.
    values: Vec<String>,
    kubeconfig: std::path::PathBuf,
}

pub struct Process {
    pub child: tokio::process::Child,
    pub port: u16,
    pub identity: String,
}

/// Renders the chart for this release (metrics on `port`, with `values`) into JSON documents.
fn render(name: &str, namespace: &str, port: u16, values: &[String]) -> Vec<Value> {
    let port_value = format!("metrics.port={port}");
    let mut args = vec!["template", name, "deploy/helm/secretref", "--namespace", namespace];
    args.extend(["--set", &port_value, "--set", "logFormat=text"]);
    for v in values {
        args.extend(["--set", v.as_str()]);
    }
    let yaml = helm(&args);
    yaml.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

impl Release {
    /// Installs the cluster-wide chart, watching one namespace (see `install_with`).
    pub async fn install(prefix: &str) -> Release {
        Self::install_with(prefix, 1, |app, _| vec![format!("watchNamespace={}", app[0])]).await
    }

    /// Installs the namespace-scoped chart over `apps` namespaces and the store namespace.
    pub async fn install_scoped(prefix: &str, apps: usize) -> Release {
        Self::install_with(prefix, apps, |apps, store| {
            vec![
                format!("scope.namespaces={{{}}}", apps.join(",")),
                format!("scope.storeNamespaces={{{store}}}"),
            ]
        })
        .await
    }

    /// Applies the whole rendered chart (CRDs, RBAC, ServiceAccount, Service, Deployment, ...)
    /// with the values `values(app namespaces, store namespace)` gives, and writes a
    /// kubeconfig holding a TokenRequest token of the chart's ServiceAccount.
    pub async fn install_with(
        prefix: &str,
        apps: usize,
        values: impl FnOnce(&[String], &str) -> Vec<String>,
    ) -> Release {
        let client = client().await;
        install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let mut app_namespaces = Vec::new();
        for i in 0..apps {
            app_namespaces.push(TestNamespace::new(&client, &format!("{prefix}-app{i}")).await);
        }
        let store_ns = TestNamespace::new(&client, &format!("{prefix}-store")).await;
        let name = ns.name.clone();
        let app_names: Vec<String> = app_namespaces.iter().map(|n| n.name.clone()).collect();
        let values = values(&app_names, &store_ns.name);
        for doc in render(&name, &ns.name, free_port(), &values) {
            apply_json(&client, doc).await;
        }
        for app in &app_names {
            apply_json(&client, serde_json::json!({
                "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": "store", "namespace": app },
                "spec": { "default": true, "provider": { "kubernetes": { "namespace": store_ns.name } } }
            }))
            .await;
        }
        let store = KubernetesBackend::new(client.clone(), &store_ns.name);
        let sa = format!("{name}-secretref");
        let token = crate::support::service_account_token(&client, &ns.name, &sa).await;
        let admin = std::fs::read_to_string(kubeconfig_path()).expect("kubeconfig");
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server")
            .to_string();
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
            .expect("ca")
            .to_string();
        let kubeconfig = repo_root()
            .join("target/chart-tests")
            .join(format!("{name}.kubeconfig"));
        std::fs::create_dir_all(kubeconfig.parent().expect("dir")).expect("dir");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"{server}\", certificate-authority: \"{ca}\" }}\n\
             users:\n- name: u\n  user: {{ token: \"{token}\" }}\ncontexts:\n- name: c\n  context: {{ cluster: c, user: u }}\n\
             current-context: c\n"
        );
        std::fs::write(&kubeconfig, text).expect("write kubeconfig");
        let app = app_namespaces.remove(0);
        Release {
            client,
            ns,
            name,
            app,
            apps: app_namespaces,
            store_ns,
            store,
            values,
            kubeconfig,
        }
    }

    /// Starts the operator binary with the args and env of the Deployment rendered for a
    /// metrics port of its own, as pod `pod_name` would run.
    pub fn spawn(&self, pod_name: &str) -> Process {
        let port = free_port();
        let deployment = render(&self.name, &self.ns.name, port, &self.values)
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let deployment: Deployment = serde_json::from_value(deployment).expect("deployment");
        let container = deployment.spec.template.spec.expect("pod spec").containers.remove(0);
        let mut env = BTreeMap::new();
        for var in container.env.unwrap_or_default() {
            let value = match (
                var.value,
                var.value_from.and_then(|f| f.field_ref).map(|f| f.field_path),
            ) {
                (Some(v), _) => v,
                (None, Some(path)) if path == "metadata.namespace" => self.ns.name.clone(),
                (None, Some(path)) if path == "metadata.name" => pod_name.to_string(),
                other => panic!("unexpected env source for {}: {other:?}", var.name),
            };
            env.insert(var.name, value);
        }
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secretref"))
            .args(container.args.unwrap_or_default())
            .env_clear()
            .envs(env)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("operator starts");
        Process {
            child,
            port,
            identity: pod_name.to_string(),
        }
    }
}

impl Process {
    /// GETs a path of the admin endpoint: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// The value of an unlabelled metric (NaN while the endpoint does not answer).
    pub fn metric(&self, name: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics") else {
            return f64::NAN;
        };
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }
}

/// The effective permissions of the chart's ServiceAccount in one namespace, one sorted line
/// per rule.
pub async fn effective_rules(release: &Release, namespace: &str) -> Vec<String> {
    let sa = service_account_client(
        &release.client,
        &release.ns.name,
        &format!("{}-secretref", release.name),
    )
    .await;
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_string()),
        },
        ..Default::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(sa)
        .create(&PostParams::default(), &review)
        .await
        .expect("rules review")
        .status
        .expect("status");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.join(",")
    };
    let mut lines: Vec<String> = status
        .resource_rules
        .into_iter()
        .map(|r| {
            format!(
                "groups={} resources={} verbs={}",
                sorted(r.api_groups.unwrap_or_default()),
                sorted(r.resources.unwrap_or_default()),
                sorted(r.verbs)
            )
        })
        .chain(status.non_resource_rules.into_iter().map(|r| {
            format!(
                "urls={} verbs={}",
                sorted(r.non_resource_urls.unwrap_or_default()),
                sorted(r.verbs)
            )
        }))
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// Asserts that `actual` (sections of effective rules) equals the reviewed list in `file`
/// (its `#` comment lines apart).
pub fn assert_reviewed(file: &str, actual: &str) {
    let reviewed = std::fs::read_to_string(repo_root().join(file)).expect("reviewed list");
    let reviewed: String = reviewed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        reviewed == actual,
        "the effective permissions differ from {file}; actual:\n{actual}"
    );
}
