//! Resolves a SecretRef's store: the named one or the default, whether it serves the
//! SecretRef's namespace, its environment, and the backend to read.

use std::sync::Arc;

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::{backends::StoreSpec, context::Context};
use crate::{
    api::{ClusterSecretStore, Reason, SecretRef, SecretStore, StoreKind, StoreStatus, condition::find_ready},
    backend::{BackendError, SecretBackend},
    error::SyncError,
};

/// A store ready to read from.
pub struct ResolvedStore {
    /// `Kind/name`, for messages.
    pub label: String,
    pub environment: String,
    pub backend: Arc<dyn SecretBackend>,
}

struct Candidate<'a> {
    label: String,
    spec: StoreSpec<'a>,
    default_environment: &'a str,
    namespaces: Option<&'a [String]>,
    status: Option<&'a StoreStatus>,
    generation: Option<i64>,
}

pub async fn store(sr: &SecretRef, ctx: &Context) -> Result<ResolvedStore, SyncError> {
    let namespace = sr.namespace().unwrap_or_default();
    // Until the store caches have listed once, "not found" would be a lie.
    ctx.wait_for_stores().await;

    let (secret_store, cluster_store);
    let candidate = match &sr.spec.store_ref {
        Some(r) if r.kind == StoreKind::SecretStore => {
            secret_store = ctx
                .secret_stores
                .get(&ObjectRef::new(&r.name).within(&namespace))
                .ok_or_else(|| SyncError::StoreNotFound {
                    kind: "SecretStore",
                    name: r.name.clone(),
                })?;
            from_secret_store(&secret_store)
        }
        Some(r) if !ctx.cluster_scoped => {
            return Err(SyncError::ClusterStoresNotServed { name: r.name.clone() });
        }
        Some(r) => {
            cluster_store =
                ctx.cluster_stores
                    .get(&ObjectRef::new(&r.name))
                    .ok_or_else(|| SyncError::StoreNotFound {
                        kind: "ClusterSecretStore",
                        name: r.name.clone(),
                    })?;
            from_cluster_store(&cluster_store)
        }
        None => {
            let in_namespace = ctx
                .secret_stores
                .state()
                .into_iter()
                .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()));
            if let Some(s) = oldest_default(in_namespace, |s| s.spec.default) {
                secret_store = s;
                from_secret_store(&secret_store)
            } else {
                // Prefer a default ClusterSecretStore that serves this namespace, so tenants can
                // each have their own; fall back to any default (which then says why not).
                let defaults = || ctx.cluster_stores.state().into_iter().filter(|s| s.spec.default);
                let serving = oldest_default(defaults(), |s| serves(s.spec.namespaces.as_deref(), &namespace));
                cluster_store = serving
                    .or_else(|| oldest_default(defaults(), |_| true))
                    .ok_or(SyncError::NoDefaultStore)?;
                from_cluster_store(&cluster_store)
            }
        }
    };

    if !serves(candidate.namespaces, &namespace) {
        return Err(SyncError::StoreNotAllowed {
            store: candidate.label,
            namespace,
        });
    }
    // A store its own controller found misconfigured is not ready. A store that is merely
    // unreachable is still tried: the reads then fail as BackendUnavailable.
    if let Some(ready) = candidate.status.and_then(|s| find_ready(&s.conditions))
        && ready.reason == Reason::InvalidProvider.as_str()
        && ready.observed_generation == candidate.generation
    {
        return Err(SyncError::StoreNotReady {
            store: candidate.label,
            message: ready.message.clone(),
        });
    }
    let label = candidate.label.clone();
    let backend = ctx.backends.get(candidate.spec).await.map_err(|e| match e {
        BackendError::Unavailable(_) => SyncError::Backend {
            store: label.clone(),
            source: e,
        },
        e => SyncError::StoreNotReady {
            store: label.clone(),
            message: e.to_string(),
        },
    })?;
    let environment = sr
        .spec
        .environment
        .clone()
        .unwrap_or_else(|| candidate.default_environment.to_string());
    Ok(ResolvedStore {
        label,
        environment,
        backend,
    })
}

fn from_secret_store(s: &SecretStore) -> Candidate<'_> {
    Candidate {
        label: format!("SecretStore/{}", s.name_any()),
        spec: StoreSpec::of_secret_store(s),
        default_environment: &s.spec.default_environment,
        namespaces: None,
        status: s.status.as_ref(),
        generation: s.metadata.generation,
    }
}

fn from_cluster_store(s: &ClusterSecretStore) -> Candidate<'_> {
    Candidate {
        label: format!("ClusterSecretStore/{}", s.name_any()),
        spec: StoreSpec::of_cluster_store(s),
        default_environment: &s.spec.default_environment,
        namespaces: s.spec.namespaces.as_deref(),
        status: s.status.as_ref(),
        generation: s.metadata.generation,
    }
}

/// Whether a store with this `namespaces` allowlist serves `namespace` (absent: all).
fn serves(patterns: Option<&[String]>, namespace: &str) -> bool {
    patterns.is_none_or(|p| p.iter().any(|p| glob_match(p, namespace)))
}

/// The oldest of `stores` that `keep` accepts (ties broken by name), so the choice is stable.
fn oldest_default<K: ResourceExt>(
    stores: impl Iterator<Item = Arc<K>>,
    is_default: impl Fn(&K) -> bool,
) -> Option<Arc<K>> {
    stores
        .filter(|s| is_default(s))
        .min_by(|a, b| (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any())))
}

/// Shell-style glob with `*` (any run) and `?` (any one character), anchored at both ends.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("team-*", "team-a"));
        assert!(glob_match("team-*", "team-"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("shop", "shop"));
        assert!(!glob_match("shop", "shop2"));
        assert!(glob_match("*-prod", "web-prod"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("t?am", "team"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
    }
}
