//! First contact: before `secretref run` starts its controllers, check what it needs (an API
//! server, the CRDs, its namespace, the permissions to elect a leader and keep its hash key)
//! and, when something is missing, fail with one line that names the fix instead of an API
//! Status dump.

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Namespace,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};

use super::RunArgs;
use crate::api::SecretRef;

/// Why the operator cannot start, in one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach the Kubernetes API server ({detail}): check KUBECONFIG (or the in-cluster service account)")]
    Unreachable { detail: String },
    #[error(
        "the secretref CRDs are not installed in this cluster: install them with `secretref crds | kubectl apply --server-side -f -` (or the Helm chart)"
    )]
    NoCrds,
    #[error(
        "namespace {namespace:?} does not exist: create it (`kubectl create namespace {namespace}`) or choose another with --operator-namespace"
    )]
    NoNamespace { namespace: String },
    #[error(
        "this identity may not {verb} {resource}{scope}: apply the chart's RBAC (deploy/helm/secretref or deploy/kustomize){hint}"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        hint: &'static str,
    },
}

fn scope(namespace: Option<&str>) -> String {
    namespace.map_or_else(
        || " in all namespaces".to_string(),
        |ns| format!(" in namespace {ns:?}"),
    )
}

/// Checks everything `run` needs, in the order a new user meets it.
pub async fn check(client: &Client, args: &RunArgs) -> Result<(), StartupError> {
    client
        .apiserver_version()
        .await
        .map_err(|e| StartupError::Unreachable { detail: one_line(&e) })?;

    // One namespace is enough to learn whether the CRDs are there and may be read.
    let first = args.namespaces.first().map(String::as_str);
    let secretrefs: Api<SecretRef> = match first {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match secretrefs.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(StartupError::NoCrds),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(StartupError::Forbidden {
                verb: "list",
                resource: "SecretRefs",
                scope: scope(first),
                hint: "",
            });
        }
        Err(e) => return Err(StartupError::Unreachable { detail: one_line(&e) }),
    }

    let ns = args.operator_namespace.as_str();
    // An identity that may not read namespaces (a namespace-scoped install) skips this part.
    match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
        Ok(None) => {
            return Err(StartupError::NoNamespace {
                namespace: ns.to_string(),
            });
        }
        Ok(Some(_)) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(StartupError::Unreachable { detail: one_line(&e) }),
    }
    if args.leader_elect && !allowed(client, "create", "coordination.k8s.io", "leases", ns, None).await {
        return Err(StartupError::Forbidden {
            verb: "create",
            resource: "Leases",
            scope: scope(Some(ns)),
            hint: ", or run a single replica with --leader-elect=false",
        });
    }
    if !allowed(client, "get", "", "secrets", ns, Some(&args.hash_key_secret)).await {
        return Err(StartupError::Forbidden {
            verb: "get",
            resource: "Secrets (the hash key)",
            scope: scope(Some(ns)),
            hint: ", or keep the hash key elsewhere with --operator-namespace",
        });
    }
    Ok(())
}

/// Whether this identity may `verb` `resource` in `namespace` (a failed review counts as yes:
/// the real call will then say what is wrong).
async fn allowed(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_or(true, |r| r.status.is_none_or(|s| s.allowed))
}

/// A client error as one short line (an API Status keeps its reason and code only).
fn one_line(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string().replace('\n', " "),
    }
}
