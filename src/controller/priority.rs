//! Target writes first. A change of a store secret wakes every SecretRef that uses it, and
//! what the user waits for is the targets; statuses and Events report on those writes and can
//! wait until the syncs have run, so they never compete with them for the API server. They
//! wait a bounded time, so a steady stream of syncs delays them but never starves them.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// How long a report waits for the syncs at most.
pub const MAX_DEFER: Duration = Duration::from_secs(5);

/// Counts the syncs running and wakes whoever waits for none to run.
#[derive(Debug, Default)]
pub struct Gate {
    busy: AtomicUsize,
    idle: Notify,
}

/// A sync in progress; dropping it ends it.
#[derive(Debug)]
pub struct Busy<'a>(&'a Gate);

impl Gate {
    /// Marks a sync as running until the guard is dropped.
    pub fn enter(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// Returns once no sync runs, or at `deadline`.
    pub async fn idle_or(&self, deadline: Instant) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end of the last sync in between is not missed.
            notified.as_mut().enable();
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
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
        gate.idle_or(start + MAX_DEFER).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing runs: no wait");

        let busy = gate.enter();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.idle_or(Instant::now() + MAX_DEFER).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(busy);
        let woke = waiter.await.expect("waiter");
        assert_eq!(woke - start, Duration::from_secs(1), "woken when the last sync ended");

        let _busy = gate.enter();
        let start = Instant::now();
        gate.idle_or(start + MAX_DEFER).await;
        assert_eq!(
            start.elapsed(),
            MAX_DEFER,
            "a steady stream of syncs delays, never starves"
        );
    }
}
