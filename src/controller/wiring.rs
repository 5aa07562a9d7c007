//! Wires the watches and the three controllers (SecretRef, SecretStore, ClusterSecretStore)
//! around one shared [`Context`].

use std::{hash::Hasher, sync::Arc};

use futures::{StreamExt, future::BoxFuture, future::Shared};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt, predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tracing::info;

use super::{
    Backoff, Context, FORCE_SYNC_ANNOTATION, RunArgs,
    backends::{Backends, cluster_store_key, secret_store_key},
    changes::Feeds,
    reads::SharedReads,
    secretref, store,
    usage::{self, Usage},
    watched::TargetVersions,
};
use crate::{
    api::{ClusterSecretStore, SecretRef, SecretStore},
    desired::{MANAGED_BY, MANAGED_BY_LABEL, SECRETREF_LABEL},
    hash::HashKey,
    metrics::Metrics,
};

/// Runs the three controllers until `shutdown` completes; in-flight reconciles finish first.
pub async fn run_controllers(
    client: Client,
    args: &RunArgs,
    hash_key: HashKey,
    metrics: Arc<Metrics>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) {
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

    // Targets are watched metadata-only and label-filtered: never a cache of every Secret, and
    // of ours only the resourceVersion is kept.
    let target_versions = TargetVersions::default();
    let targets = watcher(
        target_api,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .inspect({
        let versions = target_versions.clone();
        move |event| {
            if let Ok(event) = event {
                versions.apply(event);
            }
        }
    })
    .touched_objects();
    let reads = SharedReads::new(args.read_cache_entries, args.read_cache_ttl);
    let usage = Usage::default();
    // Change detection: one watch or poller per store backend in use, started and stopped as
    // stores come and go; it wakes the SecretRefs that read a changed secret.
    let (feeds, woken) = Feeds::new(usage.clone(), reads.clone(), metrics.clone(), args.read_cache_ttl);
    let backends = Arc::new(Backends::new(client.clone(), metrics.clone(), feeds));
    // A deleted store's backend (and its change detection) goes with it.
    let (ss_stream, ss_reader, ss_synced) = cached(ss_api.clone(), {
        let backends = backends.clone();
        move |reader: &reflector::Store<SecretStore>| {
            backends.retain(|key| {
                !key.starts_with("SecretStore/")
                    || reader
                        .state()
                        .iter()
                        .any(|s| secret_store_key(&s.namespace().unwrap_or_default(), &s.name_any()) == key)
            })
        }
    });
    let (css_stream, css_reader, css_synced) = cached(css_api.clone(), {
        let backends = backends.clone();
        move |reader: &reflector::Store<ClusterSecretStore>| {
            backends.retain(|key| {
                !key.starts_with("ClusterSecretStore/")
                    || reader.state().iter().any(|s| cluster_store_key(&s.name_any()) == key)
            })
        }
    });
    let ss_controller = Controller::for_stream(ss_stream, ss_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let css_controller = Controller::for_stream(css_stream, css_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: super::events::Publisher::start(
            client.clone(),
            std::env::var("POD_NAME").ok(),
            metrics.events_dropped.clone(),
        ),
        hash_key,
        secret_stores: ss_reader,
        cluster_stores: css_reader,
        stores_synced: [ss_synced, css_synced],
        backoff: Backoff::default(),
        metrics,
        targets: target_versions,
        reads,
        usage: usage.clone(),
        backends: backends.clone(),
        read_ttl: args.read_cache_ttl,
        written: Default::default(),
        statuses: Default::default(),
    });

    let (sr_reader, sr_writer) = reflector::store();
    // Only spec changes and a new force-sync value trigger a sync: our own status writes don't.
    let spec_changes = watcher(sr_api, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(sr_writer)
        .inspect({
            // A deleted SecretRef reads nothing any more (a re-list also drops the ones
            // deleted while the watch was down).
            let (usage, reader) = (usage.clone(), sr_reader.clone());
            move |event| match event {
                Ok(watcher::Event::Delete(sr)) => usage.forget(&usage::object_ref(sr)),
                Ok(watcher::Event::InitDone) => usage.retain(|r| reader.get(r).is_some()),
                _ => {}
            }
        })
        .applied_objects()
        .predicate_filter(spec_or_force_sync, Default::default());

    let by_store = sr_reader.clone();
    let by_cluster_store = sr_reader.clone();
    let secretrefs = Controller::for_stream(spec_changes, sr_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
        .watches_stream(targets, |secret| {
            let name = secret.labels().get(SECRETREF_LABEL)?.clone();
            Some(ObjectRef::<SecretRef>::new(&name).within(&secret.namespace()?))
        })
        .reconcile_on(woken)
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
    backends.stop();
    info!("secretref controllers stopped");
}

/// A cached watch of `api`: the stream of changed objects, the cache, and a flag that turns
/// true once the cache has listed. `on_removal` runs with the cache after an object was
/// deleted or a re-list completed.
#[allow(clippy::type_complexity)]
fn cached<K>(
    api: Api<K>,
    on_removal: impl Fn(&reflector::Store<K>) + Send + 'static,
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
    let cache = reader.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::InitDone) => {
                synced_tx.send_replace(true);
                on_removal(&cache);
            }
            Ok(watcher::Event::Delete(_)) => on_removal(&cache),
            _ => {}
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

/// What cached objects never need: their managedFields (often the larger half of the
/// metadata) and kubectl's copy of the whole last-applied object.
fn slim<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}
