//! SecretRef statuses are written behind the syncs, not inside them: a reconcile decides the
//! status (into the [`StatusMemo`]) and goes on; writers send it once no sync runs (or after
//! its [`Urgency`]'s bound), so a fan-out writes all its targets first. Several decisions about
//! one SecretRef before its write cost one write (the newest), and one SecretRef's writes go
//! one at a time ([`StatusMemo::claim`]): two in flight could land in either order. A write
//! that fails is retried with backoff until it lands or the SecretRef is gone; a restart loses
//! nothing, because a SecretRef whose status is behind decides it again on its first sync.

use std::{sync::Arc, time::Duration};

use futures::{
    StreamExt,
    future::{BoxFuture, Shared},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tracing::warn;

use super::{
    priority::{Gate, Lanes, Urgency},
    status::StatusMemo,
};
use crate::api::{SecretRef, SecretRefStatus};

/// Statuses written at once, per lane.
const WRITERS: usize = 8;
/// Statuses written at once on shutdown, when no sync competes any more.
const FLUSH_WRITERS: usize = 32;
/// How long a failed write waits before its retry, doubling up to [`RETRY_CAP`].
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

struct Job {
    key: String,
    urgency: Urgency,
    failures: u32,
}

/// Where reconciles leave the statuses they decided.
#[derive(Clone)]
pub struct StatusQueue {
    memo: Arc<StatusMemo>,
    /// Set once the writers run: they hold a queue themselves, to queue their retries.
    jobs: Arc<std::sync::OnceLock<Lanes<Job>>>,
    client: Client,
}

impl std::fmt::Debug for StatusQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusQueue").finish_non_exhaustive()
    }
}

impl StatusQueue {
    /// Starts the writers; they stop at `stop`.
    pub fn start(client: Client, memo: Arc<StatusMemo>, gate: Arc<Gate>, stop: Shared<BoxFuture<'static, ()>>) -> Self {
        let queue = StatusQueue {
            memo,
            jobs: Default::default(),
            client,
        };
        let writer = queue.clone();
        let lanes = Lanes::start(gate, WRITERS, stop, move |job| {
            let writer = writer.clone();
            async move { writer.write(job).await }
        });
        let _ = queue.jobs.set(lanes);
        queue
    }

    /// Records the status decided for `key` (`namespace/name`) and queues its write.
    pub fn decide(&self, key: String, status: SecretRefStatus, urgency: Urgency) {
        self.memo.decide(key.clone(), &status);
        self.send(key, urgency, 0);
    }

    fn send(&self, key: String, urgency: Urgency, failures: u32) {
        let job = Job { key, urgency, failures };
        // The writers stopped (shutdown): the next leader decides the status again.
        if let Some(lanes) = self.jobs.get() {
            lanes.send(urgency, job);
        }
    }

    /// Writes the newest unwritten status of the job's SecretRef, if it still has one and no
    /// other writer is writing it (that one writes the newest before it stops).
    async fn write(&self, job: Job) {
        let Some((claim, mut status)) = self.memo.claim(&job.key) else {
            return;
        };
        loop {
            match self.patch(&job.key, &status).await {
                Ok(()) => match claim.written(&status) {
                    // Decided while this write was in flight: written now, without waiting
                    // for the gate again (one write, and the job queued for it found us busy).
                    Some(newer) => status = newer,
                    None => return,
                },
                Err(kube::Error::Api(e)) if e.code == 404 => return self.memo.observe(&job.key, None),
                Err(e) => {
                    drop(claim);
                    let delay = RETRY_BASE.saturating_mul(1 << job.failures.min(10)).min(RETRY_CAP);
                    warn!(secretref = %job.key, error = %e, ?delay, "status not written, retrying");
                    let queue = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        queue.send(job.key, job.urgency, job.failures + 1);
                    });
                    return;
                }
            }
        }
    }

    async fn patch(&self, key: &str, status: &SecretRefStatus) -> Result<(), kube::Error> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let api: Api<SecretRef> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Writes every status still unwritten at once (on shutdown, while still the leader),
    /// for at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let keys = self.memo.unwritten_keys();
        let all = futures::stream::iter(keys).for_each_concurrent(FLUSH_WRITERS, |key| async move {
            if let Some((claim, status)) = self.memo.claim(&key)
                && self.patch(&key, &status).await.is_ok()
            {
                // A decision newer than this one is left to the next leader: the syncs stopped.
                claim.written(&status);
            }
        });
        if tokio::time::timeout(limit, all).await.is_err() {
            warn!("statuses not all written before shutdown: the next leader decides them again");
        }
    }
}
