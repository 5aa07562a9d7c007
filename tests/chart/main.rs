//! The Helm chart on the real control plane: it renders, lints and applies; the operator binary
//! run with exactly the rendered Deployment's args and env, under a token of the chart's own
//! ServiceAccount, syncs end to end (so the chart's RBAC is sufficient) and its effective
//! permissions equal the reviewed list; two replicas elect one leader and fail over.

#[path = "../support/mod.rs"]
mod support;

mod leader;
mod release;
mod scoped;

use secretref::api::crds_yaml;

#[test]
fn generated_deploy_files_are_current() {
    let root = support::repo_root();
    let chart_crds = std::fs::read_to_string(root.join("deploy/helm/secretref/files/crds.yaml")).expect("chart crds");
    assert!(
        chart_crds == crds_yaml().expect("crds"),
        "deploy/helm/secretref/files/crds.yaml is stale: run scripts/generate"
    );
    let scoped = [
        "--set",
        "scope.namespaces={apps}",
        "--set",
        "scope.storeNamespaces={secretref-store}",
    ];
    for (file, values) in [
        ("deploy/kustomize/secretref.yaml", &[][..]),
        ("deploy/kustomize/scoped/secretref.yaml", &scoped[..]),
    ] {
        let mut args = vec![
            "template",
            "secretref",
            "deploy/helm/secretref",
            "--namespace",
            "secretref-system",
        ];
        args.extend(values);
        let rendered = release::helm(&args);
        let kustomize = std::fs::read_to_string(root.join(file)).expect("kustomize");
        let body = kustomize.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
        assert!(body == rendered, "{file} is stale: run scripts/generate");
    }
    let lint = release::helm(&["lint", "--strict", "deploy/helm/secretref"]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    for dir in ["deploy/kustomize", "deploy/kustomize/scoped"] {
        let built = support::kubectl()
            .args(["kustomize", dir])
            .current_dir(root)
            .output()
            .expect("kubectl");
        assert!(
            built.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
}
