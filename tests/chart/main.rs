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

/// The metric families the shipped dashboard's queries name (suffixes of histograms and
/// counters stripped), from deploy/helm/secretref/files/dashboard.json.
pub fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(support::repo_root().join("deploy/helm/secretref/files/dashboard.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let metric = regex::Regex::new(r"secretref_[a-z_]+").expect("regex");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            for m in metric.find_iter(target["expr"].as_str().expect("expr")) {
                let name = m.as_str();
                let base = ["_bucket", "_total", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.insert(base.to_string());
            }
        }
    }
    names
}

#[test]
fn the_dashboard_is_a_valid_grafana_dashboard_and_ships_with_the_chart() {
    let root = support::repo_root();
    let text = std::fs::read_to_string(root.join("deploy/helm/secretref/files/dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(dashboard["uid"], "secretref-overview");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "duplicate panel id"
        );
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(matches!(panel["type"].as_str(), Some("timeseries" | "stat")));
        for key in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][key].as_u64().is_some(),
                "{}: gridPos.{key}",
                panel["title"]
            );
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty());
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("secretref_"), "{expr}");
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{expr}");
        }
    }
    // Every panel family of the issue is there.
    let names = dashboard_metrics();
    for family in [
        "secretref_reconciles",
        "secretref_sync_failures",
        "secretref_backend_read_duration_seconds",
        "secretref_read_cache_hits",
        "secretref_target_writes",
        "secretref_syncs_in_flight",
        "secretref_leader",
        "secretref_events_dropped",
    ] {
        assert!(names.contains(family), "the dashboard lacks {family}");
    }
    // The chart ships it (opt-in) in a ConfigMap Grafana's sidecar picks up.
    let off = release::helm(&["template", "x", "deploy/helm/secretref"]);
    assert!(!off.contains("grafana_dashboard"), "the dashboard is opt-in");
    let on = release::helm(&[
        "template",
        "x",
        "deploy/helm/secretref",
        "--set",
        "dashboards.enabled=true",
    ]);
    let doc = on
        .split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    assert_eq!(doc["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: serde_json::Value =
        serde_json::from_str(doc["data"]["secretref.json"].as_str().expect("data")).expect("JSON");
    assert_eq!(shipped, dashboard);
}
