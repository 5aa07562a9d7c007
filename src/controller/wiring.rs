//! Wires the watches and the three controllers (SecretRef, SecretStore, ClusterSecretStore)
//! around one shared [`Context`].

use std::{hash::Hasher, sync::Arc};

use futures::{
    StreamExt,
    future::{BoxFuture, Shared},
    stream::BoxStream,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
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
    cluster_secretref::{self, FleetContext},
    events::Publisher,
    priority::Gate,
    reads::SharedReads,
    refresh::Refresh,
    scope, secretref,
    status::StatusMemo,
    status_queue::StatusQueue,
    store,
    usage::{self, Usage},
    watched::TargetVersions,
};
use crate::{
    api::{ClusterSecretRef, ClusterSecretStore, SecretRef, SecretStore},
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
) -> (StatusQueue, Publisher) {
    let namespaces = &args.namespaces;
    // Targets are watched metadata-only and label-filtered: never a cache of every Secret, and
    // of ours only the resourceVersion is kept.
    let target_versions = TargetVersions::default();
    let targets = scope::watch::<PartialObjectMeta<Secret>>(
        &client,
        namespaces,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .inspect({
        let versions = target_versions.clone();
        move |event| {
            if let Ok(event) = event {
                versions.apply(event);
            }
        }
    })
    .touched_objects();
    // A namespace-scoped install may not watch ClusterSecretStores: it serves none, and its
    // cache of them is empty from the start.
    let css_events = if args.cluster_scoped {
        watcher(
            Api::<ClusterSecretStore>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed()
    } else {
        futures::stream::iter([Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)])
            .chain(futures::stream::pending())
            .boxed()
    };
    let reads = SharedReads::new(args.read_cache_entries, args.read_cache_ttl);
    let usage = Usage::default();
    // Change detection: one watch or poller per store backend in use, started and stopped as
    // stores come and go; it wakes the SecretRefs that read a changed secret.
    let (feeds, woken) = Feeds::new(usage.clone(), reads.clone(), metrics.clone(), args.read_cache_ttl);
    let backends = Arc::new(Backends::new(client.clone(), metrics.clone(), feeds));
    // A deleted store's backend (and its change detection) goes with it.
    let ss_events = scope::watch::<SecretStore>(&client, namespaces, watcher::Config::default());
    let (ss_stream, ss_reader, ss_synced) = cached(ss_events, {
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
    let (css_stream, css_reader, css_synced) = cached(css_events, {
        let backends = backends.clone();
        move |reader: &reflector::Store<ClusterSecretStore>| {
            backends.retain(|key| {
                !key.starts_with("ClusterSecretStore/")
                    || reader.state().iter().any(|s| cluster_store_key(&s.name_any()) == key)
            })
        }
    });
    let ss_controller =
        Controller::for_stream(objects_only(ss_stream), ss_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let css_controller =
        Controller::for_stream(objects_only(css_stream), css_reader.clone()).graceful_shutdown_on(shutdown.clone());
    let gate = Arc::new(Gate::default());
    let refresh = Refresh::default();
    let statuses = Arc::new(StatusMemo::default());
    let status_queue = StatusQueue::start(client.clone(), statuses.clone(), gate.clone(), shutdown.clone());
    let events = Publisher::start(
        client.clone(),
        std::env::var("POD_NAME").ok(),
        metrics.events_dropped.clone(),
        gate.clone(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: events.clone(),
        hash_key,
        secret_stores: ss_reader,
        cluster_stores: css_reader,
        stores_synced: [ss_synced, css_synced],
        cluster_scoped: args.cluster_scoped,
        backoff: Backoff::default(),
        metrics,
        targets: target_versions,
        reads,
        usage: usage.clone(),
        backends: backends.clone(),
        read_ttl: args.read_cache_ttl,
        written: Default::default(),
        statuses: statuses.clone(),
        status_queue: status_queue.clone(),
        gate,
        refresh: refresh.clone(),
    });

    let (sr_reader, sr_writer) = reflector::store();
    let specs = Arc::new(SpecSeen::default());
    let (owner_changes, owners_woken) = futures::channel::mpsc::unbounded::<ObjectRef<ClusterSecretRef>>();
    // Only spec changes and a new force-sync value trigger a sync: our own status writes don't.
    let spec_changes = scope::watch::<SecretRef>(&client, namespaces, watcher::Config::default())
        .modify(slim)
        .reflect(sr_writer)
        .inspect({
            // A deleted SecretRef reads nothing any more (a re-list also drops the ones
            // deleted while the watch was down).
            let (usage, reader) = (usage.clone(), sr_reader.clone());
            let owners = owner_changes.clone();
            let specs = specs.clone();
            let refresh = refresh.clone();
            move |event| {
                // A status the watch shows written needs no memo any more.
                if let Ok(watcher::Event::Apply(sr) | watcher::Event::InitApply(sr)) = event {
                    statuses.observe(&secretref::key(sr), Some(sr.status.as_ref()));
                }
                match event {
                    Ok(watcher::Event::Delete(sr)) => {
                        usage.forget(&usage::object_ref(sr));
                        statuses.observe(&secretref::key(sr), None);
                        specs.forget(&secretref::key(sr));
                        refresh.forget(&secretref::key(sr));
                    }
                    Ok(watcher::Event::InitDone) => usage.retain(|r| reader.get(r).is_some()),
                    _ => {}
                }
                // Any change of a SecretRef a ClusterSecretRef keeps (its status too) updates
                // the ClusterSecretRef's counts.
                if let Ok(watcher::Event::Apply(sr) | watcher::Event::Delete(sr)) = event {
                    for owner in sr.owner_references().iter().filter(|o| o.kind == "ClusterSecretRef") {
                        let _ = owners.unbounded_send(ObjectRef::new(&owner.name));
                    }
                }
            }
        })
        .applied_objects()
        .filter(move |sr| futures::future::ready(sr.as_ref().map_or(true, |sr| specs.changed(sr))));

    let by_store = sr_reader.clone();
    let by_cluster_store = sr_reader.clone();
    let fleet = fleet_controller(
        &client,
        args,
        sr_reader.clone(),
        ctx.metrics.clone(),
        owners_woken,
        shutdown.clone(),
    );
    // A store change re-checks the SecretRefs that may use it (those of its namespace, or all).
    let store_changes = scope::watch::<SecretStore>(&client, namespaces, watcher::Config::default()).touched_objects();
    let mut secretrefs = Controller::for_stream(objects_only(spec_changes), sr_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
        .watches_stream(objects_only(targets), |secret| {
            let name = secret.labels().get(SECRETREF_LABEL)?.clone();
            Some(ObjectRef::<SecretRef>::new(&name).within(&secret.namespace()?))
        })
        .reconcile_on(woken)
        .reconcile_on(refresh.triggers())
        .watches_stream(objects_only(store_changes), move |store: SecretStore| {
            let ns = store.namespace();
            by_store
                .state()
                .iter()
                .filter(|sr| sr.namespace() == ns)
                .map(|sr| ObjectRef::from_obj(sr.as_ref()))
                .collect::<Vec<_>>()
        });
    if args.cluster_scoped {
        secretrefs = secretrefs.watches_stream(
            triggers(Api::<ClusterSecretStore>::all(client.clone())),
            move |_: ClusterSecretStore| {
                by_cluster_store
                    .state()
                    .iter()
                    .map(|sr| ObjectRef::from_obj(sr.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    }
    let secretrefs = secretrefs
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
        namespaces = if namespaces.is_empty() {
            "<all>".to_string()
        } else {
            namespaces.join(",")
        },
        cluster_scoped = args.cluster_scoped,
        concurrency = args.concurrency,
        "secretref controllers started"
    );
    tokio::join!(secretrefs, ss, css, fleet);
    backends.stop();
    info!("secretref controllers stopped");
    (status_queue, events)
}

/// The ClusterSecretRef controller, when this installation serves cluster-scoped kinds and
/// every namespace (it must see every SecretRef it could collide with).
fn fleet_controller(
    client: &Client,
    args: &RunArgs,
    secretrefs: reflector::Store<SecretRef>,
    metrics: Arc<Metrics>,
    owners_woken: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ClusterSecretRef>>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> BoxFuture<'static, ()> {
    if !args.cluster_scoped || !args.namespaces.is_empty() {
        return futures::FutureExt::boxed(futures::future::ready(()));
    }
    let (ns_reader, ns_writer) = reflector::store();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(ns_writer)
    .touched_objects();
    let ctx = Arc::new(FleetContext {
        client: client.clone(),
        namespaces: ns_reader,
        secretrefs,
        metrics,
    });
    let (all, csr_writer) = reflector::store();
    let csr_changes = watcher(Api::<ClusterSecretRef>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(csr_writer)
        .applied_objects();
    let fleet = Controller::for_stream(objects_only(csr_changes), all.clone())
        // A namespace created, relabelled or deleted may enter or leave any selection.
        .watches_stream(objects_only(namespaces), move |_| {
            all.state()
                .iter()
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(owners_woken)
        .graceful_shutdown_on(shutdown)
        .run(cluster_secretref::reconcile, cluster_secretref::error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::FutureExt::boxed(fleet)
}

/// A cache fed by `events`: the stream of changed objects, the cache, and a flag that turns
/// true once the cache has listed. `on_removal` runs with the cache after an object was
/// deleted or a re-list completed.
#[allow(clippy::type_complexity)]
fn cached<K>(
    events: BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
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
    let stream = events
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

/// A stream's objects without its errors: every watcher here retries on its own, with backoff,
/// and logs why. kube's Controller splits its input into objects and errors through one shared
/// look-ahead slot, and an error parked there is taken out only on the next unrelated wake-up;
/// until then no trigger at all is dispatched (measured: after an API server restart, a store
/// change waited 42 s for its SecretRefs). With no errors in the input nothing parks.
fn objects_only<T: Send + 'static, E: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, E>> + Send + 'static,
) -> impl futures::Stream<Item = Result<T, E>> + Send + 'static {
    stream.filter(|item| futures::future::ready(item.is_ok()))
}

/// Every change of `api`'s objects, as a trigger of other objects (see [`objects_only`]).
fn triggers<K>(api: Api<K>) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    objects_only(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects(),
    )
}

/// What of each SecretRef triggers a sync (its generation and force-sync annotation), by
/// `namespace/name`: kube's `predicate_filter` keeps the same, keyed by a whole `ObjectRef`
/// (its resourceVersion and uid too) and never forgets a deleted object.
#[derive(Debug, Default)]
struct SpecSeen(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl SpecSeen {
    /// Whether the SecretRef's spec or force-sync annotation changed since last seen.
    fn changed(&self, sr: &SecretRef) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(predicates::generation(sr).unwrap_or(0));
        h.write(
            sr.annotations()
                .get(FORCE_SYNC_ANNOTATION)
                .map(String::as_bytes)
                .unwrap_or_default(),
        );
        let now = h.finish();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(secretref::key(sr), now) != Some(now)
    }

    fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// What cached objects never need: their managedFields (often the larger half of the
/// metadata) and kubectl's copy of the whole last-applied object.
fn slim<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}
