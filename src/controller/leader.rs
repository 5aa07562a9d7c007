//! Leader election on a Lease, so that of several replicas exactly one writes. A replica that
//! loses the Lease stops its controllers and exits (its pod restarts as a standby), the usual
//! Kubernetes pattern: nothing half-led keeps writing.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::info;

/// Seconds a Lease stays valid without renewal; a dead leader is replaced within this.
pub const LEASE_DURATION: u64 = 15;
/// Seconds before expiry at which the leader renews.
pub const LEASE_GRACE: u64 = 5;

/// The held Lease: `leading` turns false if it is lost. Dropping it releases the Lease.
pub struct Leadership {
    pub leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("leading", &*self.leading.borrow())
            .finish()
    }
}

/// Waits until this replica holds the Lease `namespace/name`, or returns `None` if `shutdown`
/// comes first.
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<Leadership>> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_DURATION)
        .with_grace(LEASE_GRACE)
        .with_field_manager("secretref")
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("leader election on Lease {namespace}/{name}: {e}"))?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{name}"), %identity, "waiting to lead");
    tokio::pin!(shutdown);
    loop {
        if *leading.borrow_and_update() {
            info!(%identity, "leading");
            return Ok(Some(Leadership { leading, task }));
        }
        tokio::select! {
            changed = leading.changed() => changed.map_err(|_| anyhow::anyhow!("leader election stopped"))?,
            () = &mut shutdown => {
                drop(leading);
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                return Ok(None);
            }
        }
    }
}

impl Leadership {
    /// Completes when the Lease is lost.
    pub async fn lost(mut self_leading: watch::Receiver<bool>) {
        let _ = self_leading.wait_for(|leading| !*leading).await;
    }

    /// Releases the Lease (so a standby takes over at once rather than after expiry).
    pub async fn release(self) {
        drop(self.leading);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
