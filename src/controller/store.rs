//! SecretStore and ClusterSecretStore reconciliation: check the provider can serve and say so
//! in the `Ready` condition.

use std::{fmt::Debug, sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{instrument, warn};

use super::{backends::StoreSpec, context::Context};
use crate::{
    api::{ClusterSecretStore, Condition, Reason, SecretStore, StoreStatus, condition::find_ready},
    backend::BackendError,
    error::SyncError,
};

/// How often a healthy store is re-checked.
const RECHECK: Duration = Duration::from_secs(300);

/// What the store reconciler needs from either store kind.
pub trait StoreObject:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The kind, as a metric label.
    const KIND: &'static str;
    fn backend_spec(&self) -> StoreSpec<'_>;
    fn store_status(&self) -> Option<&StoreStatus>;
    fn api(&self, client: kube::Client) -> Api<Self>;
}

impl StoreObject for SecretStore {
    const KIND: &'static str = "SecretStore";
    fn backend_spec(&self) -> StoreSpec<'_> {
        StoreSpec::of_secret_store(self)
    }
    fn store_status(&self) -> Option<&StoreStatus> {
        self.status.as_ref()
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl StoreObject for ClusterSecretStore {
    const KIND: &'static str = "ClusterSecretStore";
    fn backend_spec(&self) -> StoreSpec<'_> {
        StoreSpec::of_cluster_store(self)
    }
    fn store_status(&self) -> Option<&StoreStatus> {
        self.status.as_ref()
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

#[instrument(skip_all, fields(store = %store.name_any()))]
pub async fn reconcile<K: StoreObject>(store: Arc<K>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let started = std::time::Instant::now();
    // Building the backend also starts change detection for it.
    let checked = match ctx.backends.get(store.backend_spec()).await {
        Ok(backend) => backend.check().await,
        Err(e) => Err(e),
    };
    let (reason, message) = match &checked {
        Ok(()) => (Reason::Valid, "the store can serve".to_string()),
        Err(e @ BackendError::Unavailable(_)) => (Reason::BackendUnavailable, e.to_string()),
        Err(e) => (Reason::InvalidProvider, e.to_string()),
    };
    let previous = store.store_status().cloned().unwrap_or_default();
    let generation = store.meta().generation;
    let condition = Condition::ready(
        reason,
        message,
        generation,
        find_ready(&previous.conditions),
        super::status::now(),
    );
    let status = StoreStatus {
        observed_generation: generation,
        conditions: vec![condition],
    };
    if store.store_status() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        store
            .api(ctx.client.clone())
            .patch_status(&store.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| SyncError::kube(format!("writing status of store {:?}", store.name_any()), e))?;
    }
    ctx.metrics.reconciled(K::KIND, reason.as_str(), started.elapsed());
    let key = format!("store/{}/{}", store.namespace().unwrap_or_default(), store.name_any());
    match reason {
        Reason::BackendUnavailable => Ok(Action::requeue(ctx.backoff.next(&key))),
        // A misconfiguration is often a credential (a revoked token, a rotated secret ID) that
        // someone fixes in a Secret, which is re-read after at most credentials::MAX_AGE: look
        // again that soon, so the store and its SecretRefs recover without waiting minutes.
        Reason::InvalidProvider => {
            ctx.backoff.reset(&key);
            Ok(Action::requeue(crate::backend::credentials::MAX_AGE))
        }
        _ => {
            ctx.backoff.reset(&key);
            Ok(Action::requeue(RECHECK))
        }
    }
}

pub fn error_policy<K: StoreObject>(store: Arc<K>, err: &SyncError, ctx: Arc<Context>) -> Action {
    let key = format!("store/{}/{}", store.namespace().unwrap_or_default(), store.name_any());
    warn!(store = %store.name_any(), error = %err, "store check failed");
    Action::requeue(ctx.backoff.next(&key))
}
