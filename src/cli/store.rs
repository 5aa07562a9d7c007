//! Which store and environment a CLI command works on: the ClusterSecretStore named with
//! `--store`, else the oldest one marked `default: true`; the environment from `-e`, else the
//! store's `defaultEnvironment`.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    api::ClusterSecretStore,
    backend::{BuildContext, SecretBackend, for_provider},
};

/// A store ready for a command.
pub struct Connected {
    pub client: Client,
    pub store: ClusterSecretStore,
    /// `ClusterSecretStore/<name>`, for messages.
    pub label: String,
    pub backend: Arc<dyn SecretBackend>,
    /// The environment asked for, else the store's default.
    pub environment: String,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("store", &self.label)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

pub async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("connecting to Kubernetes (is KUBECONFIG set?)")
}

/// Finds the store (named, or the oldest default) and its backend and environment.
pub async fn connect(store: Option<&str>, environment: Option<&str>) -> anyhow::Result<Connected> {
    let client = client().await?;
    let api: Api<ClusterSecretStore> = Api::all(client.clone());
    let store = match store {
        Some(name) => api
            .get_opt(name)
            .await
            .with_context(|| format!("reading ClusterSecretStore {name:?}"))?
            .ok_or_else(|| anyhow!("ClusterSecretStore {name:?} not found"))?,
        None => {
            let mut defaults: Vec<ClusterSecretStore> = api
                .list(&ListParams::default())
                .await
                .context("listing ClusterSecretStores")?
                .items;
            defaults.retain(|s| s.spec.default);
            defaults.sort_by_key(|s| (s.creation_timestamp(), s.name_any()));
            defaults
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no default ClusterSecretStore: pass --store NAME"))?
        }
    };
    let label = format!("ClusterSecretStore/{}", store.name_any());
    let backend = for_provider(&BuildContext::new(client.clone(), None, None), &store.spec.provider).await?;
    let environment = environment
        .map(str::to_string)
        .unwrap_or_else(|| store.spec.default_environment.clone());
    Ok(Connected {
        client,
        store,
        label,
        backend,
        environment,
    })
}
