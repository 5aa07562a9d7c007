//! Secret backends: where Modal-style secrets live. The [`SecretBackend`] trait is all the rest
//! of secretref sees; [`for_provider`] is the one exhaustive `match` that turns a store's
//! provider into an implementation, so a new provider is a compile error until it is handled.
//!
//! Every provider fits one pattern: a folder (or file) of its own, credentials read from Secrets
//! through the shared [`credentials::Credentials`], and change detection through [`versions`]
//! (cheap version checks, polled once per refresh) or [`watch`] (a push feed).
//!
//! [`versions`]: SecretBackend::versions
//! [`watch`]: SecretBackend::watch

pub mod aws;
pub mod credentials;
pub mod kubernetes;
pub mod memory;
pub mod vault;

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use jiff::Timestamp;

use crate::{api::Provider, metrics::Metrics, model::SecretData};

/// A secret's address in a store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretId {
    pub environment: String,
    pub name: String,
}

impl SecretId {
    pub fn new(environment: impl Into<String>, name: impl Into<String>) -> Self {
        SecretId {
            environment: environment.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for SecretId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (environment {:?})", self.name, self.environment)
    }
}

/// What a watchable backend reports: a secret's newest version (`None`: it was deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: SecretId,
    pub version: Option<String>,
}

/// How many reads `get_many`'s default runs at once.
const PARALLEL_READS: usize = 8;

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
    /// The backend holds something at this secret's address that is not a flat map of string
    /// values (binary data, nested JSON, text that is not UTF-8, ...). Never half-read.
    #[error("secret {name:?} (environment {environment:?}) cannot be read as a Modal-style secret: {why}")]
    Invalid {
        environment: String,
        name: String,
        why: String,
    },
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
    /// Names the data source: stores with equal identities read the same secrets with the same
    /// rights, so their reads (and change detection) are shared. It must name everything that
    /// decides what may be read, credentials' source included (never a credential's value):
    /// for example `kubernetes/<namespace>`.
    fn identity(&self) -> String;

    /// The current version of each of `ids` (`None`: absent), as cheaply as the backend can
    /// tell, without reading values where it can avoid it. The controller polls this once per
    /// refresh for backends that cannot be watched. Default: a `get` of each.
    async fn versions(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<String>)>, BackendError> {
        let read = self.get_many(ids).await?;
        Ok(read
            .into_iter()
            .map(|(id, secret)| (id, secret.map(|s| s.version)))
            .collect())
    }

    /// Reads several secrets at once. Default: a `get` of each, a few at a time.
    async fn get_many(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<StoredSecret>)>, BackendError> {
        futures::stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let secret = self.get(&id.environment, &id.name).await?;
                Ok((id, secret))
            })
            .buffered(PARALLEL_READS)
            .collect::<Vec<Result<_, BackendError>>>()
            .await
            .into_iter()
            .collect()
    }

    /// A feed of changes, for backends that push them (the kubernetes store watches its
    /// namespace); the feed resumes by itself after errors. `None`: the controller polls
    /// [`SecretBackend::versions`] instead.
    fn watch(&self) -> Option<BoxStream<'static, Change>> {
        None
    }
}

/// What building a backend needs besides the provider's spec.
#[derive(Clone)]
pub struct BuildContext {
    pub client: kube::Client,
    pub credentials: credentials::Credentials,
    /// `Some(namespace)` for a SecretStore: credential Secrets come from its own namespace.
    /// `None` for a ClusterSecretStore, whose credential references name their namespace.
    pub store_namespace: Option<String>,
    /// Where backends count their API calls (`secretref_backend_calls_total`).
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("store_namespace", &self.store_namespace)
            .finish_non_exhaustive()
    }
}

impl BuildContext {
    pub fn new(client: kube::Client, store_namespace: Option<String>, metrics: Option<Arc<Metrics>>) -> Self {
        BuildContext {
            credentials: credentials::Credentials::new(client.clone()),
            client,
            store_namespace,
            metrics,
        }
    }
}

/// Builds the backend a store's provider describes. Building may do I/O (loading a cloud
/// SDK's configuration, logging in): the controller builds once per store generation.
pub async fn for_provider(ctx: &BuildContext, provider: &Provider) -> Result<Arc<dyn SecretBackend>, BackendError> {
    match provider {
        Provider {
            kubernetes: Some(k),
            aws: None,
            vault: None,
        } => Ok(Arc::new(
            kubernetes::KubernetesBackend::new(ctx.client.clone(), &k.namespace).with_metrics(ctx.metrics.clone()),
        )),
        Provider {
            kubernetes: None,
            aws: Some(a),
            vault: None,
        } => Ok(Arc::new(aws::AwsBackend::new(ctx, a).await?)),
        Provider {
            kubernetes: None,
            aws: None,
            vault: Some(v),
        } => Ok(Arc::new(vault::VaultBackend::new(ctx, v).await?)),
        Provider {
            kubernetes: None,
            aws: None,
            vault: None,
        } => Err(BackendError::Misconfigured("the store sets no provider".into())),
        Provider { .. } => Err(BackendError::Misconfigured("the store sets several providers".into())),
    }
}
