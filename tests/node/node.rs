//! The node as the tests see it: the cluster started with `scripts/cluster up --node` (started
//! here if nothing runs), the images `scripts/image` imported, and kubectl/helm aimed at it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use crate::support::{self, eventually, kubeconfig_path, repo_root, tools_bin};

pub const NAMESPACE: &str = "secretref-system";
pub const WAIT: Duration = Duration::from_secs(120);

/// The state folder of the running cluster, after making sure it has a node and the images.
pub fn state() -> &'static Path {
    static STATE: OnceLock<PathBuf> = OnceLock::new();
    STATE.get_or_init(|| {
        if std::env::var_os("SECRETREF_TEST_KUBECONFIG").is_none() {
            // Standalone (`cargo test --test node`): start a node unless one runs.
            let out = Command::new(repo_root().join("scripts/cluster"))
                .args(["up", "--node"])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("scripts/cluster runs");
            assert!(out.status.success(), "scripts/cluster up --node failed");
        }
        let state = kubeconfig_path().parent().expect("state folder").to_path_buf();
        let env = std::fs::read_to_string(state.join("ports.env")).unwrap_or_default();
        assert!(
            env.lines().any(|l| l == "node=1"),
            "the cluster in {} has no node: run scripts/cluster down, then scripts/cluster up --node",
            state.display()
        );
        let images = ctr(&state, &["images", "ls", "-q"]);
        for image in [secretref_image().as_str(), "localhost/busybox:test"] {
            assert!(
                images.lines().any(|l| l == image),
                "the node has no image {image}: run scripts/image"
            );
        }
        state
    })
}

/// `ctr` against the node's containerd, in the Kubernetes namespace.
pub fn ctr(state: &Path, args: &[&str]) -> String {
    let run = std::fs::read_to_string(state.join("node.run")).expect("node.run in the state folder");
    let out = Command::new(tools_bin().join("ctr"))
        .arg("--address")
        .arg(Path::new(run.trim()).join("containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr runs");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The crate version, which is the chart's appVersion and so the image tag.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pub fn secretref_image() -> String {
    format!("localhost/secretref:{}", version())
}

/// Runs a command with KUBECONFIG set to the node's cluster; (success, stdout, stderr).
pub fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    state();
    let out = match Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(repo_root())
        .output()
    {
        Ok(out) => out,
        Err(e) => return (false, String::new(), format!("{} does not run: {e}", program.display())),
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command that must succeed; its stdout.
pub fn ok(program: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(program, args);
    assert!(ok, "{} {args:?} failed: {stderr}", program.display());
    stdout
}

pub fn kubectl(args: &[&str]) -> String {
    ok(&tools_bin().join("kubectl"), args)
}

pub fn helm(args: &[&str]) -> String {
    ok(&tools_bin().join("helm"), args)
}

/// The secretref CLI (`secretref secret ...`).
pub fn cli(args: &[&str]) -> String {
    ok(Path::new(env!("CARGO_BIN_EXE_secretref")), args)
}

/// `kubectl exec` in a pod's first container; None while the pod cannot run it.
pub fn exec(namespace: &str, pod: &str, command: &[&str]) -> Option<String> {
    let mut args = vec!["exec", "-n", namespace, pod, "--"];
    args.extend_from_slice(command);
    let (ok, stdout, _) = run(&tools_bin().join("kubectl"), &args);
    ok.then_some(stdout)
}

/// The environment of a pod's main process (PID 1 of its first container), as the kubelet set it.
pub fn environment(namespace: &str, pod: &str) -> BTreeMap<String, String> {
    let raw = exec(namespace, pod, &["cat", "/proc/1/environ"]).expect("exec cat /proc/1/environ");
    raw.split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn client() -> Client {
    state();
    support::client().await
}

/// Whether a pod is Running with every container ready.
pub fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    status.phase.as_deref() == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Waits until exactly `count` pods match `selector` in `namespace`, all Running and Ready, and
/// no other pod of that selector is left (a rollout finished); returns them sorted by name.
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(selector);
    eventually(
        WAIT,
        &format!("{count} ready pods {selector} in {namespace}"),
        || async {
            let mut list = pods.list(&params).await.ok()?.items;
            (list.len() == count && list.iter().all(running_and_ready)).then(|| {
                list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                list
            })
        },
    )
    .await
}

pub fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pod name")
}

/// GET through the API server's pod proxy (the API server reaches the pod on the node's
/// bridge): the body, or None while the pod does not answer.
pub async fn pod_get(client: &Client, namespace: &str, pod: &str, port: u16, path: &str) -> Option<String> {
    let request = http::Request::get(format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}"))
        .body(Vec::new())
        .expect("request");
    client.request_text(request).await.ok()
}

/// The value of an unlabelled metric in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
