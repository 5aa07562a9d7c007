//! `rolloutRestart`: stamps `secretref.dev/restartedAt` on workloads' pod templates so their
//! controllers roll the pods, exactly like `kubectl rollout restart`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::api::{WorkloadKind, WorkloadRef};

pub const RESTARTED_AT_ANNOTATION: &str = "secretref.dev/restartedAt";

/// Restarts each workload; returns the failures (a missing workload must not fail the sync,
/// whose Secret is already written) as `Kind/name: why` lines.
pub async fn restart(client: &Client, namespace: &str, workloads: &[WorkloadRef], at: &str) -> Vec<String> {
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT_ANNOTATION: at } } } }
    });
    let params = PatchParams::default();
    let mut failures = Vec::new();
    for w in workloads {
        let result = match w.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(&w.name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(&w.name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(&w.name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
        };
        if let Err(e) = result {
            let why = match e {
                kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
                other => other.to_string(),
            };
            failures.push(format!("{:?}/{}: {why}", w.kind, w.name));
        }
    }
    failures
}
