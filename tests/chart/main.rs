//! The Helm chart on the real control plane: it renders, lints and applies; the operator binary
//! run with exactly the rendered Deployment's args and env, under a token of the chart's own
//! ServiceAccount, syncs end to end (so the chart's RBAC is sufficient) and its effective
//! permissions equal the reviewed list; two replicas elect one leader and fail over.

#[path = "../support/mod.rs"]
mod support;

mod leader;
mod release;

use secretref::api::crds_yaml;

#[test]
fn generated_deploy_files_are_current() {
    let root = support::repo_root();
    let chart_crds = std::fs::read_to_string(root.join("deploy/helm/secretref/files/crds.yaml")).expect("chart crds");
    assert!(
        chart_crds == crds_yaml().expect("crds"),
        "deploy/helm/secretref/files/crds.yaml is stale: run scripts/generate"
    );
    let rendered = release::helm(&[
        "template",
        "secretref",
        "deploy/helm/secretref",
        "--namespace",
        "secretref-system",
    ]);
    let kustomize = std::fs::read_to_string(root.join("deploy/kustomize/secretref.yaml")).expect("kustomize");
    let body = kustomize.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
    assert!(
        body == rendered,
        "deploy/kustomize/secretref.yaml is stale: run scripts/generate"
    );
    let lint = release::helm(&["lint", "--strict", "deploy/helm/secretref"]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let built = support::kubectl()
        .args(["kustomize", "deploy/kustomize"])
        .current_dir(root)
        .output()
        .expect("kubectl");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
}
