//! One backend per store, built once per store generation and kept (its connections, caches
//! and logins live as long as the store is unchanged), and change detection for every backend
//! identity in use.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::ResourceExt;

use super::changes::{Current, Feeds};
use crate::{
    api::{ClusterSecretStore, Provider, SecretStore},
    backend::{BackendError, BuildContext, SecretBackend, credentials::Credentials, for_provider},
    metrics::Metrics,
};

/// A store as far as building its backend goes.
#[derive(Debug)]
pub struct StoreSpec<'a> {
    /// `SecretStore/<namespace>/<name>` or `ClusterSecretStore/<name>`.
    pub key: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub provider: &'a Provider,
    /// A SecretStore's namespace (where its credentials must live); `None` for a cluster store.
    pub namespace: Option<String>,
}

impl<'a> StoreSpec<'a> {
    pub fn of_secret_store(s: &'a SecretStore) -> Self {
        let namespace = s.namespace().unwrap_or_default();
        StoreSpec {
            key: secret_store_key(&namespace, &s.name_any()),
            uid: s.uid(),
            generation: s.metadata.generation,
            provider: &s.spec.provider,
            namespace: Some(namespace),
        }
    }

    pub fn of_cluster_store(s: &'a ClusterSecretStore) -> Self {
        StoreSpec {
            key: cluster_store_key(&s.name_any()),
            uid: s.uid(),
            generation: s.metadata.generation,
            provider: &s.spec.provider,
            namespace: None,
        }
    }
}

pub fn secret_store_key(namespace: &str, name: &str) -> String {
    format!("SecretStore/{namespace}/{name}")
}

pub fn cluster_store_key(name: &str) -> String {
    format!("ClusterSecretStore/{name}")
}

struct Built {
    uid: Option<String>,
    generation: Option<i64>,
    backend: Arc<dyn SecretBackend>,
}

pub struct Backends {
    client: kube::Client,
    credentials: Credentials,
    metrics: Arc<Metrics>,
    built: Mutex<HashMap<String, Built>>,
    /// Builds are rare (a store created or changed): one at a time, so that a store's first
    /// burst of syncs builds its backend once.
    building: tokio::sync::Mutex<()>,
    feeds: Feeds,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, feeds: Feeds) -> Self {
        Backends {
            credentials: Credentials::new(client.clone()),
            client,
            metrics,
            built: Mutex::default(),
            building: tokio::sync::Mutex::new(()),
            feeds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Built>> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, store: &StoreSpec<'_>) -> Option<Arc<dyn SecretBackend>> {
        self.lock()
            .get(&store.key)
            .filter(|b| b.uid == store.uid && b.generation == store.generation)
            .map(|b| b.backend.clone())
    }

    /// The store's backend, built if the store is new or changed.
    pub async fn get(&self, store: StoreSpec<'_>) -> Result<Arc<dyn SecretBackend>, BackendError> {
        if let Some(backend) = self.cached(&store) {
            return Ok(backend);
        }
        let _building = self.building.lock().await;
        if let Some(backend) = self.cached(&store) {
            return Ok(backend);
        }
        let ctx = BuildContext {
            client: self.client.clone(),
            credentials: self.credentials.clone(),
            store_namespace: store.namespace.clone(),
            metrics: Some(self.metrics.clone()),
        };
        let backend = for_provider(&ctx, store.provider).await?;
        self.lock().insert(
            store.key,
            Built {
                uid: store.uid,
                generation: store.generation,
                backend: backend.clone(),
            },
        );
        self.sync_feeds();
        Ok(backend)
    }

    /// Drops the backends of stores `keep` does not accept (deleted stores).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let before = self.lock().len();
        self.lock().retain(|key, _| keep(key));
        if self.lock().len() != before {
            self.sync_feeds();
        }
    }

    fn sync_feeds(&self) {
        let current: Current = self
            .lock()
            .values()
            .map(|b| (b.backend.identity(), b.backend.clone()))
            .collect();
        self.feeds.sync(current);
    }

    /// Stops change detection (the operator is stopping).
    pub fn stop(&self) {
        self.feeds.stop();
    }
}
