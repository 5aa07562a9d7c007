//! Target writes first. A change of a store secret wakes every SecretRef that uses it, and
//! what the user waits for is the targets; statuses and Events report on those writes and can
//! wait until the syncs have run, so they never compete with them for the API server. They
//! wait a bounded time, so a steady stream of syncs delays them but never starves them.
//!
//! How long depends on what a report says. One a user or a tool waits for (Ready appearing or
//! changing, a failure, the record a rollout restart is decided by) goes once no target has
//! been written for [`QUIET`], and waits at most [`MAX_DEFER`]. One that only records another
//! sync of a SecretRef that stays Ready (its new dataHash after a store change) waits for a
//! longer pause, [`LAZY_QUIET`], up to [`LAZY_MAX_DEFER`]: with the short bound, the reports
//! of one fan-out were written in the middle of the next (measured: a store change 4 s after
//! another reached its last target 2.5x later than the API server can apply them; with the
//! reports waiting for the pause, 1.1x), and with the short pause, in the second between two
//! fan-outs, delaying the next one's first targets. Each kind has its own lane of writers, so
//! a prompt report never queues behind a lazy one.
//!
//! Only syncs that wrote a target end a pause: refreshes that find everything in step (at
//! 10,000 SecretRefs, hundreds a second) hold reports back while they run, not after, or no
//! pause would ever come and every report would wait for its bound.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

/// How long a prompt report waits for the syncs at most.
pub const MAX_DEFER: Duration = Duration::from_secs(5);
/// How long a lazy report waits for the syncs at most.
pub const LAZY_MAX_DEFER: Duration = Duration::from_secs(60);

/// How soon a report must reach the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Someone waits for it: at most [`MAX_DEFER`] behind the syncs.
    Prompt,
    /// Only a record of another sync: behind the syncs, up to [`LAZY_MAX_DEFER`].
    Lazy,
}

impl Urgency {
    fn max_defer(self) -> Duration {
        match self {
            Urgency::Prompt => MAX_DEFER,
            Urgency::Lazy => LAZY_MAX_DEFER,
        }
    }

    fn quiet(self) -> Duration {
        match self {
            Urgency::Prompt => QUIET,
            Urgency::Lazy => LAZY_QUIET,
        }
    }
}

/// Work done behind the syncs: one lane of `per_lane` workers per [`Urgency`], each item
/// started once no sync runs or its deadline has passed.
#[derive(Debug)]
pub struct Lanes<T> {
    prompt: mpsc::UnboundedSender<(T, Instant)>,
    lazy: mpsc::UnboundedSender<(T, Instant)>,
}

impl<T> Clone for Lanes<T> {
    fn clone(&self) -> Self {
        Lanes {
            prompt: self.prompt.clone(),
            lazy: self.lazy.clone(),
        }
    }
}

impl<T: Send + 'static> Lanes<T> {
    /// Starts the workers; they run `work` on each item until `stop` completes or every
    /// sender is dropped.
    pub fn start<F, Fut>(
        gate: Arc<Gate>,
        per_lane: usize,
        stop: impl Future<Output = ()> + Clone + Send + 'static,
        work: F,
    ) -> Self
    where
        F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let lane = |urgency: Urgency, stop: futures::future::BoxFuture<'static, ()>| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(T, Instant)>();
            let (gate, work) = (gate.clone(), work.clone());
            let workers = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).for_each_concurrent(
                per_lane,
                move |(item, deadline)| {
                    let (gate, work) = (gate.clone(), work.clone());
                    async move {
                        gate.idle_or(urgency.quiet(), deadline).await;
                        work(item).await;
                    }
                },
            );
            tokio::spawn(async move {
                futures::future::select(Box::pin(workers), stop).await;
            });
            tx
        };
        Lanes {
            prompt: lane(Urgency::Prompt, stop.clone().boxed()),
            lazy: lane(Urgency::Lazy, stop.boxed()),
        }
    }

    /// Queues `item`; false when the workers have stopped.
    pub fn send(&self, urgency: Urgency, item: T) -> bool {
        let deadline = Instant::now() + urgency.max_defer();
        let lane = match urgency {
            Urgency::Prompt => &self.prompt,
            Urgency::Lazy => &self.lazy,
        };
        lane.send((item, deadline)).is_ok()
    }
}

/// How long no sync that wrote may have run before prompt reports go: the syncs of a fan-out
/// follow each other with short gaps (the controller's dispatch between two of them), and
/// reports sent in every such gap would compete with the fan-out after all.
pub const QUIET: Duration = Duration::from_millis(250);
/// The same for lazy reports: long enough that a burst of store changes a second or so apart
/// writes all its targets first.
pub const LAZY_QUIET: Duration = Duration::from_secs(2);

/// Counts the syncs running and wakes whoever waits for none to run.
#[derive(Debug, Default)]
pub struct Gate {
    busy: AtomicUsize,
    idle: Notify,
    /// When the last sync that wrote ended (none yet: `None`).
    last_write_end: std::sync::Mutex<Option<Instant>>,
}

/// A sync in progress; dropping it ends it.
#[derive(Debug)]
pub struct Busy<'a> {
    gate: &'a Gate,
    wrote: bool,
}

impl Gate {
    /// Marks a sync as running until the guard is dropped.
    pub fn enter(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy {
            gate: self,
            wrote: true,
        }
    }

    /// Returns once no sync runs and none that wrote has ended for `quiet`, or at `deadline`.
    pub async fn idle_or(&self, quiet: Duration, deadline: Instant) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end of the last sync in between is not missed.
            notified.as_mut().enable();
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if self.busy.load(Ordering::SeqCst) == 0 {
                let last_end = *self.last_write_end.lock().unwrap_or_else(|p| p.into_inner());
                let quiet_from = last_end.map_or(now, |t| t + quiet);
                if now >= quiet_from {
                    return;
                }
                // Look again then: a sync may have started (and ended) meanwhile.
                tokio::time::sleep_until(quiet_from.min(deadline)).await;
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Busy<'_> {
    /// The sync wrote nothing (a refresh that found everything in step): its end does not
    /// start a quiet period.
    pub fn wrote_nothing(&mut self) {
        self.wrote = false;
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let gate = self.gate;
        if self.wrote {
            *gate.last_write_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        if gate.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            gate.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reports_wait_for_the_syncs_but_not_forever() {
        let gate = std::sync::Arc::new(Gate::default());
        let start = Instant::now();
        gate.idle_or(QUIET, start + MAX_DEFER).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing runs: no wait");

        let busy = gate.enter();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.idle_or(QUIET, Instant::now() + MAX_DEFER).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(busy);
        let woke = waiter.await.expect("waiter");
        assert_eq!(
            woke - start,
            Duration::from_secs(1) + QUIET,
            "woken once the last sync ended and nothing followed"
        );

        // A gap shorter than QUIET between two syncs does not let reports through.
        drop(gate.enter());
        let start = Instant::now();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.idle_or(QUIET, Instant::now() + MAX_DEFER).await;
                Instant::now()
            }
        });
        tokio::time::sleep(QUIET / 2).await;
        let _busy = gate.enter();
        assert_eq!(waiter.await.expect("waiter") - start, MAX_DEFER);

        let start = Instant::now();
        gate.idle_or(QUIET, start + MAX_DEFER).await;
        assert_eq!(
            start.elapsed(),
            MAX_DEFER,
            "a steady stream of syncs delays, never starves"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn syncs_that_wrote_nothing_do_not_hold_reports_back() {
        let gate = Arc::new(Gate::default());
        drop(gate.enter());
        let start = Instant::now();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.idle_or(QUIET, Instant::now() + LAZY_MAX_DEFER).await;
                Instant::now()
            }
        });
        // Refreshes that find everything in step, every 100 ms, each running for 10 ms
        // (45 to 55 ms, 145 to 155 ms, ...: one runs when the quiet period ends).
        tokio::time::sleep(Duration::from_millis(45)).await;
        for _ in 0..20 {
            let mut busy = gate.enter();
            tokio::time::sleep(Duration::from_millis(10)).await;
            busy.wrote_nothing();
            drop(busy);
            tokio::time::sleep(Duration::from_millis(90)).await;
        }
        assert_eq!(
            waiter.await.expect("waiter") - start,
            Duration::from_millis(255),
            "the quiet period after the last write, stretched only by the refresh running at its end"
        );
    }

    /// Lanes of one worker each that report which item they ran, and when (since now).
    fn recording_lanes(gate: &Arc<Gate>) -> (Lanes<&'static str>, mpsc::UnboundedReceiver<(&'static str, Duration)>) {
        let (done, finished) = mpsc::unbounded_channel();
        let start = Instant::now();
        let lanes = Lanes::start(gate.clone(), 1, futures::future::pending::<()>(), move |name| {
            let done = done.clone();
            async move {
                let _ = done.send((name, start.elapsed()));
            }
        });
        (lanes, finished)
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_between_two_fan_outs_lets_news_through_not_records() {
        let gate = Arc::new(Gate::default());
        let (lanes, mut finished) = recording_lanes(&gate);
        let first = gate.enter();
        assert!(lanes.send(Urgency::Lazy, "record"));
        assert!(lanes.send(Urgency::Prompt, "news"));
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = gate.enter();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(second);
        assert_eq!(finished.recv().await, Some(("news", QUIET)));
        assert_eq!(
            finished.recv().await,
            Some(("record", Duration::from_secs(2) + LAZY_QUIET)),
            "after the second fan-out, not between the two"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_report_never_waits_behind_a_lazy_one() {
        let gate = Arc::new(Gate::default());
        let start = Instant::now();
        let (lanes, mut finished) = recording_lanes(&gate);
        let busy = gate.enter();
        assert!(lanes.send(Urgency::Lazy, "lazy"));
        assert!(lanes.send(Urgency::Prompt, "prompt"));
        assert_eq!(
            finished.recv().await,
            Some(("prompt", MAX_DEFER)),
            "one worker per lane"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(busy);
        assert_eq!(
            finished.recv().await,
            Some(("lazy", MAX_DEFER + Duration::from_secs(10) + LAZY_QUIET)),
            "a lazy report goes at the longer pause"
        );
        let _busy = gate.enter();
        let queued = Instant::now();
        assert!(lanes.send(Urgency::Lazy, "starved?"));
        assert_eq!(
            finished.recv().await,
            Some(("starved?", queued - start + LAZY_MAX_DEFER)),
            "never starved"
        );
    }
}
