//! Secret backends: where Modal-style secrets live. The [`SecretBackend`] trait is all the rest
//! of secretref sees; [`for_provider`] is the one exhaustive `match` that turns a store's
//! provider into an implementation, so a new provider is a compile error until it is handled.

pub mod kubernetes;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::{api::Provider, model::SecretData};

/// One Modal-style secret as a backend holds it.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    pub name: String,
    pub environment: String,
    pub data: SecretData,
    /// The backend's version (a resourceVersion, a VersionId, ...): equal versions mean equal data.
    pub version: String,
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
}

/// What `list` reports of a secret: never its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSummary {
    pub name: String,
    pub environment: String,
    pub keys: Vec<String>,
    pub version: String,
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
}

impl From<&StoredSecret> for SecretSummary {
    fn from(s: &StoredSecret) -> Self {
        SecretSummary {
            name: s.name.clone(),
            environment: s.environment.clone(),
            keys: s.data.keys().cloned().collect(),
            version: s.version.clone(),
            created: s.created,
            updated: s.updated,
        }
    }
}

/// Why a backend call failed. Messages name the store, environment and secret, never values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or refused the call; worth retrying.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// `create` found the secret already there.
    #[error("secret {name:?} already exists in environment {environment:?}")]
    AlreadyExists { name: String, environment: String },
    /// `delete` or `replace` of a secret that is not there.
    #[error("secret {name:?} does not exist in environment {environment:?}")]
    NotFound { name: String, environment: String },
    /// The store's configuration cannot work (for example its namespace does not exist).
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

/// A source of Modal-style secrets. Implementations must be cheap to call concurrently.
#[async_trait]
pub trait SecretBackend: Send + Sync + std::fmt::Debug {
    /// Reads one secret in one environment; `Ok(None)` when it does not exist.
    async fn get(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, BackendError>;
    /// Lists secrets, in one environment or in all of them, sorted by environment and name.
    async fn list(&self, environment: Option<&str>) -> Result<Vec<SecretSummary>, BackendError>;
    /// Creates a secret; fails with `AlreadyExists` if it is there.
    async fn create(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError>;
    /// Creates or wholly replaces a secret in one atomic write: keys not in `data` are gone.
    async fn replace(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError>;
    /// Deletes a secret; fails with `NotFound` if it is not there.
    async fn delete(&self, environment: &str, name: &str) -> Result<(), BackendError>;
    /// Checks that the store can serve at all (reachable, permitted, configured).
    async fn check(&self) -> Result<(), BackendError>;
    /// Names the data source: stores with equal identities read the same secrets, so their
    /// reads are shared (for example `kubernetes/<namespace>`).
    fn identity(&self) -> String;
}

/// Builds the backend a store's provider describes.
pub fn for_provider(client: &kube::Client, provider: &Provider) -> Result<Arc<dyn SecretBackend>, BackendError> {
    match provider {
        Provider { kubernetes: Some(k) } => Ok(Arc::new(kubernetes::KubernetesBackend::new(
            client.clone(),
            &k.namespace,
        ))),
        Provider { kubernetes: None } => Err(BackendError::Misconfigured("the store sets no provider".into())),
    }
}
