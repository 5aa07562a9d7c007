//! SecretRef status: the next status from the last one and a sync's outcome (pure), and the
//! memo of decided statuses until the watch shows them written (`status_queue` writes them).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::priority::Urgency;
use crate::{
    api::{Condition, Reason, SecretRefStatus, SourceStatus, condition::find_ready},
    error::SyncError,
};

/// What a successful sync produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub data_hash: String,
    pub sources: Vec<SourceStatus>,
    /// The store's label and the environment read.
    pub store: String,
    pub environment: String,
    /// How many keys the target holds from this SecretRef.
    pub key_count: u32,
    /// Whether the target was written (its data really changed, or drift was repaired).
    pub wrote: bool,
    pub message: String,
}

/// The status after a sync. A failure keeps the last good `dataHash`, `sources` and
/// `lastSyncTime`: the target still holds that data.
pub fn next_status(
    previous: Option<&SecretRefStatus>,
    generation: Option<i64>,
    outcome: &Result<Synced, SyncError>,
    now: Time,
) -> SecretRefStatus {
    let previous = previous.cloned().unwrap_or_default();
    let prev_ready = find_ready(&previous.conditions);
    let (condition, mut status) = match outcome {
        Ok(s) => {
            let changed = s.wrote
                || previous.data_hash.as_deref() != Some(&s.data_hash)
                || prev_ready.is_none_or(|c| c.status != "True");
            let status = SecretRefStatus {
                data_hash: Some(s.data_hash.clone()),
                sources: s.sources.clone(),
                store: Some(s.store.clone()),
                environment: Some(s.environment.clone()),
                key_count: Some(s.key_count),
                last_sync_time: if changed {
                    Some(now.clone())
                } else {
                    previous.last_sync_time.clone()
                },
                ..previous.clone()
            };
            (
                Condition::ready(Reason::Synced, &s.message, generation, prev_ready, now),
                status,
            )
        }
        Err(e) => (
            Condition::ready(e.reason(), e.to_string(), generation, prev_ready, now),
            previous.clone(),
        ),
    };
    status.observed_generation = generation;
    status.conditions.retain(|c| c.type_ != condition.type_);
    status.conditions.push(condition);
    status
}

/// How soon a decided status must be written: promptly when it says something a user or a
/// tool waits for (the first status, Ready's status or reason changing, a new
/// observedGeneration); lazily when it only records another sync of a SecretRef that stays
/// Ready (new dataHash, sources, lastSyncTime, message).
pub fn urgency(previous: Option<&SecretRefStatus>, next: &SecretRefStatus) -> Urgency {
    let ready = |s: &SecretRefStatus| find_ready(&s.conditions).map(|c| (c.status.clone(), c.reason.clone()));
    match previous {
        Some(p)
            if p.observed_generation == next.observed_generation
                && ready(p).is_some_and(|r| r.0 == "True")
                && ready(p) == ready(next) =>
        {
            Urgency::Lazy
        }
        _ => Urgency::Prompt,
    }
}

/// A decided status kept as its JSON: one allocation where the struct takes a dozen, for the
/// thousands a fan-out or a cold start holds until the syncs pause. Equal JSON is an equal
/// status (the same serialization of the same type).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided(Box<str>);

impl Decided {
    fn of(status: &SecretRefStatus) -> Decided {
        // A struct of strings, numbers and lists always serializes.
        Decided(serde_json::to_string(status).unwrap_or_default().into())
    }

    fn status(&self) -> Option<SecretRefStatus> {
        // Our own serialization of the same type: cannot fail, but never silently.
        serde_json::from_str(&self.0)
            .inspect_err(|e| tracing::error!(error = %e, "a decided status does not read back"))
            .ok()
    }

    fn shows_in(&self, cached: Option<&SecretRefStatus>) -> bool {
        cached.is_some_and(|c| *self == Decided::of(c))
    }
}

#[derive(Debug)]
struct Entry {
    decided: Decided,
    written: bool,
    /// A writer is sending a status of this SecretRef. Writes of one SecretRef go one at a
    /// time: two in flight may land in either order, and an older status landing last would
    /// stay (the memo takes the newer one as written, and the next sync decides the same).
    writing: bool,
}

/// The status last decided for each SecretRef (`namespace/name`): newer than the cached
/// object's until the watch delivers our own write, and kept as well when the write failed
/// (the API server was down), marked unwritten, so that the retry writes it and does not act
/// twice on the same change (a second Event, a second rollout restart).
#[derive(Debug, Default)]
pub struct StatusMemo(std::sync::Mutex<std::collections::HashMap<String, Entry>>);

impl StatusMemo {
    /// The newest status of a SecretRef: what we decided last, until the cached object shows
    /// it too (then the entry is dropped, so the memo only holds writes in flight or failed).
    pub fn current(&self, key: &str, cached: Option<&SecretRefStatus>) -> Option<SecretRefStatus> {
        let mut memo = self.lock();
        match memo.get(key) {
            Some(e) if e.written && e.decided.shows_in(cached) => {
                memo.remove(key);
                cached.cloned()
            }
            Some(e) => e.decided.status().or_else(|| cached.cloned()),
            None => cached.cloned(),
        }
    }

    /// Records the status decided for a SecretRef, not written yet.
    pub fn decide(&self, key: String, status: &SecretRefStatus) {
        let decided = Decided::of(status);
        let mut memo = self.lock();
        match memo.get_mut(&key) {
            Some(e) => {
                e.decided = decided;
                e.written = false;
            }
            None => {
                memo.insert(
                    key,
                    Entry {
                        decided,
                        written: false,
                        writing: false,
                    },
                );
            }
        }
    }

    /// The unwritten status of a SecretRef, to write, unless another writer is writing one
    /// of it: that writer writes the newest before it lets go ([`Claim::written`]).
    pub fn claim<'a>(&'a self, key: &'a str) -> Option<(Claim<'a>, SecretRefStatus)> {
        let mut memo = self.lock();
        let entry = memo.get_mut(key).filter(|e| !e.written && !e.writing)?;
        let status = entry.decided.status()?;
        entry.writing = true;
        Some((Claim { memo: self, key }, status))
    }

    /// The watch delivered the SecretRef (`None`: its deletion): a written status it shows is
    /// no longer needed, and a deleted SecretRef's status never will be.
    pub fn observe(&self, key: &str, cached: Option<Option<&SecretRefStatus>>) {
        let mut memo = self.lock();
        match cached {
            None => {
                memo.remove(key);
            }
            Some(cached) => {
                if matches!(memo.get(key), Some(e) if e.written && e.decided.shows_in(cached)) {
                    memo.remove(key);
                }
            }
        }
        // A burst (a cold start) grows the table; give the room back once it drained.
        if memo.capacity() > 64 && memo.len() < memo.capacity() / 8 {
            memo.shrink_to_fit();
        }
    }

    /// The SecretRefs whose decided status is not written yet.
    pub fn unwritten_keys(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| !e.written)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The right to write a SecretRef's status, until dropped (also when the write is cancelled).
#[derive(Debug)]
pub struct Claim<'a> {
    memo: &'a StatusMemo,
    key: &'a str,
}

impl Claim<'_> {
    /// Marks `status` written; the status decided meanwhile, if any, is the next to write.
    pub fn written(&self, status: &SecretRefStatus) -> Option<SecretRefStatus> {
        let mut memo = self.memo.lock();
        let entry = memo.get_mut(self.key)?;
        if entry.decided.shows_in(Some(status)) {
            entry.written = true;
            None
        } else {
            entry.decided.status()
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.memo.lock().get_mut(self.key) {
            entry.writing = false;
        }
    }
}

/// Now, as a status can hold it: whole seconds (metav1.Time's precision). A status decided
/// with finer times would never equal what the watch delivers back, and the memo of statuses
/// would keep every one of them.
pub fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid"))
    }

    fn synced(hash: &str, wrote: bool) -> Result<Synced, SyncError> {
        Ok(Synced {
            data_hash: hash.into(),
            sources: vec![],
            store: "SecretStore/s".into(),
            environment: "main".into(),
            key_count: 1,
            wrote,
            message: "ok".into(),
        })
    }

    #[test]
    fn a_no_op_resync_changes_nothing() {
        let first = next_status(None, Some(1), &synced("h1", true), t(10));
        let again = next_status(Some(&first), Some(1), &synced("h1", false), t(20));
        assert_eq!(first, again, "no new lastSyncTime or transition time on a no-op");
    }

    #[test]
    fn failures_keep_the_last_good_data_and_flip_the_condition() {
        let good = next_status(None, Some(1), &synced("h1", true), t(10));
        let bad = next_status(
            Some(&good),
            Some(1),
            &Err(SyncError::MissingRequiredKeys { keys: vec!["A".into()] }),
            t(20),
        );
        assert_eq!(bad.data_hash.as_deref(), Some("h1"));
        assert_eq!(bad.last_sync_time, good.last_sync_time);
        let ready = find_ready(&bad.conditions).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "MissingRequiredKeys")
        );
        assert_eq!(ready.last_transition_time, t(20));
        let worse = next_status(
            Some(&bad),
            Some(2),
            &Err(SyncError::InvalidKeys {
                keys: vec!["a b".into()],
            }),
            t(30),
        );
        let ready = find_ready(&worse.conditions).expect("ready");
        assert_eq!(ready.last_transition_time, t(20), "status stayed False: no transition");
        assert_eq!(worse.observed_generation, Some(2));
        let recovered = next_status(Some(&worse), Some(2), &synced("h2", true), t(40));
        assert_eq!(recovered.last_sync_time, Some(t(40)));
        assert_eq!(recovered.conditions.len(), 1);
    }

    #[test]
    fn only_news_is_prompt() {
        let first = next_status(None, Some(1), &synced("h1", true), t(10));
        assert_eq!(urgency(None, &first), Urgency::Prompt, "Ready appearing");
        let rotated = next_status(Some(&first), Some(1), &synced("h2", true), t(20));
        assert_eq!(
            urgency(Some(&first), &rotated),
            Urgency::Lazy,
            "another sync, still Ready"
        );
        let failed = next_status(
            Some(&rotated),
            Some(1),
            &Err(SyncError::MissingRequiredKeys { keys: vec!["A".into()] }),
            t(30),
        );
        assert_eq!(urgency(Some(&rotated), &failed), Urgency::Prompt, "a failure");
        let recovered = next_status(Some(&failed), Some(1), &synced("h3", true), t(40));
        assert_eq!(urgency(Some(&failed), &recovered), Urgency::Prompt, "a recovery");
        let edited = next_status(Some(&recovered), Some(2), &synced("h3", false), t(50));
        assert_eq!(urgency(Some(&recovered), &edited), Urgency::Prompt, "a new generation");
    }

    /// What a sync reports when the store is unreachable.
    fn down() -> Result<Synced, SyncError> {
        Err(SyncError::Kube {
            step: "reading secret \"a\"".into(),
            message: "connection refused".into(),
        })
    }

    /// Decides `status` for `key` and writes it (claim, then written), as the writers do.
    fn decide_and_write(memo: &StatusMemo, key: &str, status: &SecretRefStatus) {
        memo.decide(key.into(), status);
        let (claim, claimed) = memo.claim(key).expect("unwritten");
        assert_eq!(&claimed, status);
        assert_eq!(claim.written(&claimed), None, "nothing newer");
    }

    #[test]
    fn an_unwritten_status_stays_current_until_written_and_seen() {
        let memo = StatusMemo::default();
        let old = next_status(None, Some(1), &synced("h1", true), t(10));
        let new = next_status(Some(&old), Some(1), &synced("h2", true), t(20));
        memo.decide("ns/a".into(), &new);
        assert_eq!(memo.unwritten_keys(), vec!["ns/a".to_string()]);
        assert_eq!(
            memo.current("ns/a", Some(&old)),
            Some(new.clone()),
            "the decision, not the old cache"
        );
        assert_eq!(
            memo.current("ns/a", Some(&new)),
            Some(new.clone()),
            "kept until written"
        );
        decide_and_write(&memo, "ns/a", &new);
        assert!(memo.claim("ns/a").is_none(), "written: nothing to write");
        assert_eq!(memo.current("ns/a", Some(&new)), Some(new.clone()));
        assert_eq!(
            memo.current("ns/a", Some(&old)),
            Some(old),
            "dropped once the cache caught up"
        );
    }

    #[test]
    fn one_writer_per_secretref_and_it_writes_the_newest_last() {
        // An outage: the sync fails, then succeeds, while the failure's write is in flight.
        let memo = StatusMemo::default();
        let good = next_status(None, Some(1), &synced("h1", true), t(10));
        let down = next_status(Some(&good), Some(1), &down(), t(20));
        let back = next_status(Some(&down), Some(1), &synced("h1", false), t(30));
        memo.decide("ns/a".into(), &down);
        let (claim, writing) = memo.claim("ns/a").expect("first writer");
        assert_eq!(writing, down);
        memo.decide("ns/a".into(), &back);
        assert!(
            memo.claim("ns/a").is_none(),
            "a second write in flight could land first, and the older status stay"
        );
        assert_eq!(claim.written(&writing), Some(back.clone()), "the first writer goes on");
        assert_eq!(claim.written(&back), None);
        drop(claim);
        assert!(memo.unwritten_keys().is_empty());
        memo.observe("ns/a", Some(Some(&back)));
        assert_eq!(memo.current("ns/a", None), None, "dropped when the watch delivered it");

        // A writer that failed (or was cancelled) lets go: the retry can write.
        memo.decide("ns/a".into(), &down);
        drop(memo.claim("ns/a").expect("claim"));
        let (_claim, status) = memo.claim("ns/a").expect("claimable again");
        assert_eq!(status, down);
    }

    #[test]
    fn any_status_reads_back_equal() {
        let synced = next_status(None, Some(1), &synced("h1", true), now());
        let failed = next_status(Some(&synced), Some(2), &down(), now());
        let first_failure = next_status(None, Some(1), &down(), now());
        for status in [synced, failed, first_failure] {
            let back: SecretRefStatus =
                serde_json::from_value(serde_json::to_value(&status).expect("json")).expect("status");
            assert_eq!(back, status, "else the memo never sees its write come back");
            assert_eq!(Decided::of(&status).status(), Some(status.clone()));
            let memo = StatusMemo::default();
            decide_and_write(&memo, "ns/a", &status);
            memo.observe("ns/a", Some(Some(&back)));
            assert_eq!(memo.current("ns/a", None), None, "dropped when the watch delivered it");
            memo.decide("ns/a".into(), &status);
            memo.observe("ns/a", None);
            assert!(
                memo.unwritten_keys().is_empty(),
                "a deleted SecretRef's status is dropped"
            );
        }
    }
}
