//! The SecretRef reconciler: read → resolve → merge → apply → status. Thin by design: the
//! decisions live in `desired`, `status` and `target`.

use std::{sync::Arc, time::Duration};

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use tracing::{info, instrument, warn};

use super::{
    context::Context,
    events::EventType,
    priority::Urgency,
    resolve, rollout,
    status::{self, Synced},
    target, usage,
};
use crate::{
    api::{Reason, SecretRef, SecretRefStatus, condition::find_ready},
    backend::SecretId,
    desired::{self, MAX_SECRET_BYTES},
    error::SyncError,
    metrics::ReasonLabels,
};

/// How long a SecretRef that cannot sync until something changes waits before re-checking
/// anyway when its refreshInterval is 0 (changes to it, its store and its secrets are watched).
const IDLE_RECHECK: Duration = Duration::from_secs(300);
/// How long a sync waits for the target watch's first list at most (then it reads the target).
const TARGETS_LIST_WAIT: Duration = Duration::from_secs(30);

#[instrument(skip_all, fields(secretref = %sr.name_any(), namespace = sr.namespace().unwrap_or_default()))]
pub async fn reconcile(sr: Arc<SecretRef>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let started = std::time::Instant::now();
    // The status we wrote last is newer than the cached object's until the watch catches up.
    let previous = ctx.statuses.current(&key(&sr), sr.status.as_ref());
    ctx.metrics.syncs_in_flight.inc();
    let mut busy = ctx.gate.enter();
    let outcome = sync(&sr, &ctx, previous.as_ref()).await;
    // Only a sync that may have written a target holds reports back after it ends: refreshes
    // in step and failures before any write (a store outage at scale) let them through.
    let may_have_written = match &outcome {
        Ok(synced) => synced.wrote,
        Err(e) => e.may_have_written(),
    };
    if !may_have_written {
        busy.wrote_nothing();
    }
    drop(busy);
    ctx.metrics.syncs_in_flight.dec();
    let reason = match &outcome {
        Ok(_) => Reason::Synced,
        Err(e) => {
            ctx.metrics
                .sync_failures
                .get_or_create(&ReasonLabels {
                    reason: e.reason().as_str(),
                })
                .inc();
            e.reason()
        }
    };
    ctx.metrics.reconciled("SecretRef", reason.as_str(), started.elapsed());
    tracing::debug!(%reason, took_ms = started.elapsed().as_millis() as u64, "synced");
    ctx.metrics.managed_secrets.set(ctx.targets.len() as i64);
    let previous_reason = previous
        .as_ref()
        .and_then(|s| find_ready(&s.conditions))
        .map(|c| c.reason.clone());
    let next = status::next_status(previous.as_ref(), sr.meta().generation, &outcome, super::status::now());
    // Written behind the syncs (status_queue), retried there until it lands. The status a
    // rollout restart is decided by is prompt: a restart in between must not restart twice.
    if previous.as_ref() != Some(&next) {
        let urgency = match status::urgency(previous.as_ref(), &next) {
            Urgency::Lazy if sr.spec.rollout_restart.is_empty() => Urgency::Lazy,
            _ => Urgency::Prompt,
        };
        ctx.status_queue.decide(key(&sr), next, urgency);
    }
    publish_events(&sr, &ctx, &outcome, previous_reason.as_deref());
    match outcome {
        Ok(_) => {
            ctx.backoff.reset(&key(&sr));
            let interval: Duration = sr.spec.refresh_interval.into();
            if !interval.is_zero() {
                ctx.refresh.schedule(&key(&sr), next_refresh(&sr, interval));
            }
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

/// Transient failures back off per object; the rest re-check at the refresh interval.
pub fn error_policy(sr: Arc<SecretRef>, err: &SyncError, ctx: Arc<Context>) -> Action {
    if err.is_retryable() {
        let delay = ctx.backoff.next(&key(&sr));
        warn!(secretref = %sr.name_any(), reason = %err.reason(), ?delay, "sync failed, retrying");
        Action::requeue(delay)
    } else {
        let interval: Duration = sr.spec.refresh_interval.into();
        Action::requeue(if interval.is_zero() { IDLE_RECHECK } else { interval })
    }
}

/// A SecretRef's key in the memos: `namespace/name`.
pub(super) fn key(sr: &SecretRef) -> String {
    format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any())
}

async fn sync(sr: &SecretRef, ctx: &Context, previous: Option<&SecretRefStatus>) -> Result<Synced, SyncError> {
    let namespace = sr.namespace().unwrap_or_default();
    tracing::debug!("resolving store");
    let store = match resolve::store(sr, ctx).await {
        Ok(store) => store,
        Err(e) => {
            ctx.usage.forget(&usage::object_ref(sr));
            return Err(e);
        }
    };
    tracing::debug!(store = %store.label, environment = %store.environment, "reading secrets");
    // Recorded before reading, so that a secret still missing wakes this SecretRef when it
    // appears.
    let interval: Duration = sr.spec.refresh_interval.into();
    let ids = sr
        .spec
        .secrets
        .iter()
        .map(|s| SecretId::new(&store.environment, &s.name))
        .collect();
    ctx.usage
        .record(&usage::object_ref(sr), &store.backend.identity(), ids, interval);
    // Reads younger than this SecretRef's refresh interval are shared with other SecretRefs.
    let max_age = if interval.is_zero() { ctx.read_ttl } else { interval };
    let reads = try_join_all(
        sr.spec
            .secrets
            .iter()
            .map(|s| timed_read(ctx, &store, &s.name, max_age)),
    )
    .await
    .map_err(|source| SyncError::Backend {
        store: store.label.clone(),
        source,
    })?;
    let merged = desired::merge(&sr.spec, reads, &store.label, &store.environment)?;
    let target_name = sr.target_name();
    let size = desired::data_size(&merged.data);
    if size > MAX_SECRET_BYTES {
        return Err(SyncError::TooLarge {
            target: target_name,
            size,
        });
    }
    let data_hash = ctx.hash_key.data_hash(&sr.spec.target.r#type, &merged.data);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.targets.wait_listed(TARGETS_LIST_WAIT).await;
    let wrote = target::apply(
        &secrets,
        &ctx.targets,
        &ctx.written,
        sr,
        &merged.data,
        &data_hash,
        &ctx.metrics.target_reads,
    )
    .await?;

    let previous_hash = previous.and_then(|s| s.data_hash.as_deref());
    if wrote {
        ctx.metrics.target_writes.inc();
        info!(target = %target_name, keys = merged.data.len(), "target Secret written");
        if !merged.not_env_keys.is_empty() {
            let note = format!(
                "keys that are not environment variable names (envFrom skips them): {}",
                merged.not_env_keys.join(", ")
            );
            publish(
                ctx,
                sr,
                EventType::Warning,
                Reason::InvalidKeys.as_str(),
                note,
                Urgency::Prompt,
            );
        }
    }
    // Restart only on a real change of data: never for the first sync, a no-op resync, an
    // operator restart or a repaired drift (all of which leave dataHash as it was).
    if !sr.spec.rollout_restart.is_empty() && previous_hash.is_some_and(|h| h != data_hash) {
        let at = jiff::Timestamp::now().to_string();
        let failures = rollout::restart(&ctx.client, &namespace, &sr.spec.rollout_restart, &at).await;
        for failure in failures {
            publish(
                ctx,
                sr,
                EventType::Warning,
                "RolloutRestartFailed",
                failure,
                Urgency::Prompt,
            );
        }
    }
    let read = merged.sources.iter().filter(|s| s.version.is_some()).count();
    Ok(Synced {
        message: format!(
            "Secret {target_name:?} holds {} {} from {read} {} of {} (environment {:?})",
            merged.data.len(),
            plural(merged.data.len(), "key", "keys"),
            plural(read, "secret", "secrets"),
            store.label,
            store.environment
        ),
        data_hash,
        sources: merged.sources,
        store: store.label.clone(),
        environment: store.environment.clone(),
        key_count: u32::try_from(merged.data.len()).unwrap_or(u32::MAX),
        wrote,
    })
}

/// One read through the shared cache; a real backend read is counted and timed.
async fn timed_read(
    ctx: &Context,
    store: &resolve::ResolvedStore,
    name: &str,
    max_age: Duration,
) -> Result<Option<crate::backend::StoredSecret>, crate::backend::BackendError> {
    let started = std::time::Instant::now();
    let read = ctx.reads.get(&store.backend, &store.environment, name, max_age).await;
    let result = match &read {
        Ok((_, false)) => {
            ctx.metrics.read_cache_hits.inc();
            return read.map(|(v, _)| v);
        }
        Ok((Some(_), true)) => "found",
        Ok((None, true)) => "not_found",
        Err(_) => "error",
    };
    ctx.metrics.backend_read(result, started.elapsed());
    read.map(|(v, _)| v)
}

/// When to look again after a good sync: the refresh interval plus up to 10% (fixed per
/// object), so that SecretRefs created together do not all come due in the same instant and
/// crowd out new work.
fn next_refresh(sr: &SecretRef, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sr.metadata.uid.hash(&mut h);
    let spread = interval.as_millis() as u64 / 10;
    interval + Duration::from_millis(if spread == 0 { 0 } else { h.finish() % spread })
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// An Event on each real change, each recovery and each new failure reason; never on a no-op
/// resync, nor on a first sync (its Ready condition says all the Event would: on a cold start
/// of thousands of SecretRefs the Events would be a quarter of the API server's work).
fn publish_events(sr: &SecretRef, ctx: &Context, outcome: &Result<Synced, SyncError>, previous_reason: Option<&str>) {
    match outcome {
        Ok(s) if previous_reason.is_some() && (s.wrote || previous_reason != Some(Reason::Synced.as_str())) => {
            // Repeats of an Event are folded into a series that keeps the first note, so the
            // note says what stays true; the status message has the details.
            let note = format!("Secret {:?} is in step with its store", sr.target_name());
            // A recovery is news; another change of a SecretRef that stays Ready waits for
            // a pause in the syncs.
            let urgency = if previous_reason == Some(Reason::Synced.as_str()) {
                Urgency::Lazy
            } else {
                Urgency::Prompt
            };
            publish(ctx, sr, EventType::Normal, Reason::Synced.as_str(), note, urgency);
        }
        Err(e) if previous_reason != Some(e.reason().as_str()) => {
            let (reason, note) = (e.reason(), e.to_string());
            publish(ctx, sr, EventType::Warning, reason.as_str(), note, Urgency::Prompt);
        }
        _ => {}
    }
}

fn publish(ctx: &Context, sr: &SecretRef, type_: EventType, reason: &'static str, note: String, urgency: Urgency) {
    ctx.events.publish(sr.object_ref(&()), type_, reason, note, urgency);
}
