//! Why a sync failed: one variant per failing step, each naming the object involved and never a
//! value. `reason()` maps onto the fixed Ready reasons; `is_retryable()` chooses between
//! exponential backoff and waiting for a change.

use crate::{api::Reason, backend::BackendError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{kind} {name:?} not found")]
    StoreNotFound { kind: &'static str, name: String },
    #[error("no store named and no default SecretStore or ClusterSecretStore")]
    NoDefaultStore,
    #[error(
        "ClusterSecretStore {name:?} cannot be used: this secretref installation is namespace-scoped and serves SecretStores only"
    )]
    ClusterStoresNotServed { name: String },
    #[error("{store} is not ready: {message}")]
    StoreNotReady { store: String, message: String },
    #[error("{store} does not serve namespace {namespace:?}")]
    StoreNotAllowed { store: String, namespace: String },
    #[error("secret {name:?} not found in environment {environment:?} of {store}")]
    SecretNotFound {
        store: String,
        environment: String,
        name: String,
    },
    #[error("required keys missing after the merge: {}", .keys.join(", "))]
    MissingRequiredKeys { keys: Vec<String> },
    #[error("keys that are not valid Secret keys: {}", .keys.join(", "))]
    InvalidKeys { keys: Vec<String> },
    #[error("target Secret {target:?}: {why}")]
    TargetConflict { target: String, why: String },
    #[error("target Secret {target:?} would hold {size} bytes, over the 1 MiB limit")]
    TooLarge { target: String, size: usize },
    #[error("files[{key}]: {message}")]
    Template { key: String, message: String },
    #[error("{store}: {source}")]
    Backend { store: String, source: BackendError },
    #[error("{step}: {message}")]
    Kube { step: String, message: String },
}

impl SyncError {
    pub fn reason(&self) -> Reason {
        match self {
            SyncError::StoreNotFound { .. } | SyncError::NoDefaultStore | SyncError::ClusterStoresNotServed { .. } => {
                Reason::StoreNotFound
            }
            SyncError::StoreNotReady { .. } => Reason::StoreNotReady,
            SyncError::StoreNotAllowed { .. } => Reason::StoreNotAllowed,
            SyncError::SecretNotFound { .. } => Reason::SecretNotFound,
            SyncError::MissingRequiredKeys { .. } => Reason::MissingRequiredKeys,
            SyncError::InvalidKeys { .. } => Reason::InvalidKeys,
            SyncError::TargetConflict { .. } => Reason::TargetConflict,
            SyncError::TooLarge { .. } => Reason::TooLarge,
            SyncError::Template { .. } => Reason::TemplateError,
            SyncError::Backend {
                source: BackendError::Misconfigured(_),
                ..
            } => Reason::StoreNotReady,
            SyncError::Backend {
                source: BackendError::Invalid { .. },
                ..
            } => Reason::InvalidSecret,
            SyncError::Backend { .. } | SyncError::Kube { .. } => Reason::BackendUnavailable,
        }
    }

    /// Transient failures back off exponentially; the rest wait for a change to the SecretRef,
    /// its store or its secrets (all watched), re-checked at the refresh interval.
    pub fn is_retryable(&self) -> bool {
        matches!(self.reason(), Reason::BackendUnavailable)
    }

    /// Whether the target may have been written before the failure: only a Kubernetes API
    /// error can leave that unknown (a write that timed out may have landed); every other
    /// failure is decided before the write, or is the API server refusing it.
    pub fn may_have_written(&self) -> bool {
        matches!(self, SyncError::Kube { .. })
    }

    /// Wraps a Kubernetes API error from `step`, keeping only its status, not any echoed body.
    pub fn kube(step: impl Into<String>, err: kube::Error) -> Self {
        let message = match &err {
            kube::Error::Api(status) => {
                format!("{} ({}): {}", status.reason, status.code, status.message)
            }
            other => other.to_string(),
        };
        SyncError::Kube {
            step: step.into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_api_error_leaves_a_write_unknown() {
        let kube = SyncError::Kube {
            step: "applying target".into(),
            message: "timed out".into(),
        };
        assert!(kube.may_have_written());
        for decided_before_the_write in [
            SyncError::SecretNotFound {
                store: "s".into(),
                environment: "main".into(),
                name: "a".into(),
            },
            SyncError::TargetConflict {
                target: "app".into(),
                why: "owned by someone else".into(),
            },
            SyncError::NoDefaultStore,
        ] {
            assert!(
                !decided_before_the_write.may_have_written(),
                "{decided_before_the_write}"
            );
        }
    }
}
