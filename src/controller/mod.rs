//! The operator: a SecretRef controller and two store controllers sharing one [`Context`].

mod context;
mod resolve;
mod rollout;
mod secretref;
mod status;
mod store;
mod target;

use std::{future::Future, hash::Hasher, sync::Arc};

use clap::Args;
use futures::{FutureExt, StreamExt, future::Shared};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PartialObjectMeta, PostParams},
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tracing::info;

pub use context::{Backoff, Context};
pub use resolve::glob_match;
pub use rollout::RESTARTED_AT_ANNOTATION;
pub use target::FIELD_MANAGER;

use crate::{
    api::{ClusterSecretStore, SecretRef, SecretStore},
    backend::kubernetes::{NAME_ANNOTATION, STORE_SECRET_LABEL},
    desired::{MANAGED_BY, MANAGED_BY_LABEL, SECRETREF_LABEL},
    hash::HashKey,
};

/// Annotation on a SecretRef: any new value forces a sync.
pub const FORCE_SYNC_ANNOTATION: &str = "secretref.dev/force-sync";

/// Options of `secretref run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Only watch SecretRefs and SecretStores in this namespace (default: all namespaces).
    #[arg(long, env = "SECRETREF_NAMESPACE")]
    pub namespace: Option<String>,
    /// How many SecretRefs to reconcile at once.
    #[arg(long, default_value_t = 16, env = "SECRETREF_CONCURRENCY")]
    pub concurrency: u16,
    /// The namespace the operator runs in; it keeps the data-hash key there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "secretref-system")]
    pub operator_namespace: String,
    /// The Secret (in the operator namespace) holding the key of the keyed data hash; created
    /// with a random key if absent.
    #[arg(long, default_value = "secretref-hash-key")]
    pub hash_key_secret: String,
}

/// `secretref run`: connects with the kubeconfig or in-cluster config and runs until SIGINT or
/// SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let client = Client::try_default().await?;
    run_with(client, args, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// Runs the controllers on `client` until `shutdown` completes; in-flight reconciles finish.
pub async fn run_with(
    client: Client,
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown: Shared<futures::future::BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let hash_key = load_hash_key(&client, &args.operator_namespace, &args.hash_key_secret).await?;
    let (sr_api, ss_api, target_api): (Api<SecretRef>, Api<SecretStore>, Api<PartialObjectMeta<Secret>>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let css_api: Api<ClusterSecretStore> = Api::all(client.clone());

    let (ss_stream, ss_reader, ss_synced) = cached(ss_api.clone());
    let (css_stream, css_reader, css_synced) = cached(css_api.clone());
    let ss_controller = Controller::for_stream(ss_stream, ss_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let css_controller = Controller::for_stream(css_stream, css_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "secretref".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        hash_key,
        secret_stores: ss_reader,
        cluster_stores: css_reader,
        stores_synced: [ss_synced, css_synced],
        backoff: Backoff::default(),
    });

    let (sr_reader, sr_writer) = reflector::store();
    // Only spec changes and a new force-sync value trigger a sync: our own status writes don't.
    let spec_changes = watcher(sr_api, watcher::Config::default())
        .default_backoff()
        .reflect(sr_writer)
        .applied_objects()
        .predicate_filter(spec_or_force_sync, Default::default());
    // Targets are watched metadata-only and label-filtered: never a cache of every Secret.
    let targets = watcher(
        target_api,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .touched_objects();
    let store_secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default().labels(&format!("{STORE_SECRET_LABEL}=true")),
    )
    .default_backoff()
    .touched_objects();

    let by_secret = sr_reader.clone();
    let by_store = sr_reader.clone();
    let by_cluster_store = sr_reader.clone();
    let secretrefs = Controller::for_stream(spec_changes, sr_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
        .watches_stream(targets, |secret| {
            let name = secret.labels().get(SECRETREF_LABEL)?.clone();
            Some(ObjectRef::<SecretRef>::new(&name).within(&secret.namespace()?))
        })
        .watches_stream(store_secrets, move |secret| {
            let Some(name) = secret.annotations().get(NAME_ANNOTATION).cloned() else {
                return Vec::new();
            };
            by_secret
                .state()
                .iter()
                .filter(|sr| sr.spec.secrets.iter().any(|s| s.name == name))
                .map(|sr| ObjectRef::from_obj(sr.as_ref()))
                .collect()
        })
        .watches(ss_api, watcher::Config::default(), move |store: SecretStore| {
            let ns = store.namespace();
            by_store
                .state()
                .iter()
                .filter(|sr| sr.namespace() == ns)
                .map(|sr| ObjectRef::from_obj(sr.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(css_api, watcher::Config::default(), move |_: ClusterSecretStore| {
            by_cluster_store
                .state()
                .iter()
                .map(|sr| ObjectRef::from_obj(sr.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(secretref::reconcile, secretref::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let ss = ss_controller
        .run(store::reconcile, store::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let css = css_controller
        .run(store::reconcile, store::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        concurrency = args.concurrency,
        "secretref controllers started"
    );
    tokio::join!(secretrefs, ss, css);
    info!("secretref controllers stopped");
    Ok(())
}

/// A cached watch of `api`: the stream of changed objects, the cache, and a flag that turns
/// true once the cache has listed.
#[allow(clippy::type_complexity)]
fn cached<K>(
    api: Api<K>,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    reflector::Store<K>,
    tokio::sync::watch::Receiver<bool>,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced_tx.send_replace(true);
            }
        })
        .applied_objects();
    (stream, reader, synced)
}

fn spec_or_force_sync(sr: &SecretRef) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write_u64(predicates::generation(sr).unwrap_or(0));
    h.write(
        sr.annotations()
            .get(FORCE_SYNC_ANNOTATION)
            .map(String::as_bytes)
            .unwrap_or_default(),
    );
    Some(h.finish())
}

/// Reads the data-hash key, creating it on first start. Two replicas racing both end up with
/// the one that was created first.
async fn load_hash_key(client: &Client, namespace: &str, name: &str) -> anyhow::Result<HashKey> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |s: Secret| -> anyhow::Result<HashKey> {
        let bytes = s
            .data
            .and_then(|mut d| d.remove("key"))
            .map(|b| b.0)
            .filter(|b| b.len() >= 16);
        bytes
            .map(HashKey::new)
            .ok_or_else(|| anyhow::anyhow!("Secret {namespace}/{name} has no usable `key` (16 bytes or more)"))
    };
    if let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!("reading hash key Secret {namespace}/{name}: {e}"))?
    {
        return read(s);
    }
    let key = HashKey::generate().map_err(|e| anyhow::anyhow!("generating the hash key: {e}"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(MANAGED_BY_LABEL.to_string(), "secretref-operator".to_string())].into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(key.bytes().to_vec()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(key),
        Err(kube::Error::Api(s)) if s.code == 409 => read(api.get(name).await?),
        Err(e) => Err(anyhow::anyhow!("creating hash key Secret {namespace}/{name}: {e}")),
    }
}
