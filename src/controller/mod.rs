//! The operator: leader election, the admin endpoints, and the SecretRef and store controllers
//! sharing one [`Context`].

mod backends;
mod changes;
mod cluster_secretref;
mod context;
mod created;
mod events;
mod hash_key;
mod leader;
mod preflight;
mod priority;
mod reads;
mod refresh;
mod resolve;
mod rollout;
mod scope;
mod secretref;
mod status;
mod status_queue;
mod store;
mod target;
mod usage;
mod watched;
mod wiring;

use std::{future::Future, net::SocketAddr, sync::Arc};

use clap::{Args, ValueEnum};
use futures::FutureExt;
use kube::Client;
use tracing::info;

pub use context::{Backoff, Context};
pub use resolve::glob_match;
pub use rollout::RESTARTED_AT_ANNOTATION;
pub use target::FIELD_MANAGER;

use crate::metrics::Metrics;

/// How long a stopping leader spends writing the statuses it decided and sending the Events it
/// queued but did not send yet. (Within Kubernetes' default 30 s termination grace period.)
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(15);

/// Annotation on a SecretRef: any new value forces a sync.
pub const FORCE_SYNC_ANNOTATION: &str = "secretref.dev/force-sync";

/// Options of `secretref run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Only watch SecretRefs, SecretStores and target Secrets in these namespaces (repeat the
    /// flag or separate with commas; default: all namespaces). Store namespaces are watched as
    /// stores name them.
    #[arg(long = "namespace", value_delimiter = ',', env = "SECRETREF_NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Serve the cluster-scoped kinds, ClusterSecretStore and ClusterSecretRef
    /// (`--cluster-scoped=false` for a namespace-scoped install, whose permissions stop at its
    /// namespaces: it then neither watches nor uses them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SECRETREF_CLUSTER_SCOPED")]
    pub cluster_scoped: bool,
    /// How many SecretRefs to reconcile at once.
    #[arg(long, default_value_t = 16, env = "SECRETREF_CONCURRENCY")]
    pub concurrency: u16,
    /// The namespace the operator runs in; it keeps the hash key and the leader Lease there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "secretref-system")]
    pub operator_namespace: String,
    /// The Secret (in the operator namespace) holding the key of the keyed data hash; created
    /// with a random key if absent.
    #[arg(long, default_value = "secretref-hash-key")]
    pub hash_key_secret: String,
    /// Elect a leader on a Lease so that only one replica writes (`--leader-elect=false` to
    /// run alone without one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SECRETREF_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease (in the operator namespace) used for leader election.
    #[arg(long, default_value = "secretref-leader")]
    pub lease_name: String,
    /// Where to serve /livez, /readyz and /metrics (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SECRETREF_METRICS_ADDRESS")]
    pub metrics_bind_address: SocketAddr,
    /// How long a shared backend read may serve other SecretRefs at most (each SecretRef also
    /// caps it at its own refreshInterval), as a Go duration.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub read_cache_ttl: std::time::Duration,
    /// How many shared backend reads to keep at most.
    #[arg(long, default_value_t = 10_000)]
    pub read_cache_entries: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SECRETREF_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `secretref run`: connects with the kubeconfig or in-cluster config and runs until SIGINT or
/// SIGTERM. The log level comes from `RUST_LOG` (default `info`).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.init(),
    }
    let client = Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes configuration found ({}): set KUBECONFIG, or run in a pod with a service account",
            e.to_string().replace('\n', " ")
        )
    })?;
    preflight::check(&client, &args).await?;
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

/// Runs the operator on `client` until `shutdown` completes (in-flight writes finish and the
/// Lease is released) or, under leader election, until the Lease is lost (an error).
pub async fn run_with(
    client: Client,
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let (addr, admin) =
        crate::admin::serve(args.metrics_bind_address, metrics.clone(), ready, shutdown.clone()).await?;
    info!(%addr, "serving /livez, /readyz and /metrics");

    let leadership = if args.leader_elect {
        // A standby is ready: it serves its purpose by waiting.
        ready_tx.send_replace(true);
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        match leader::acquire(
            client.clone(),
            &args.operator_namespace,
            &args.lease_name,
            &identity,
            shutdown.clone(),
        )
        .await?
        {
            Some(l) => Some(l),
            None => return Ok(()),
        }
    } else {
        None
    };
    metrics.leader.set(1);

    // Only the leader writes, and the hash key is a write (on first start).
    let hash_key = hash_key::load_hash_key(&client, &args.operator_namespace, &args.hash_key_secret).await?;
    ready_tx.send_replace(true);
    let lost = match &leadership {
        Some(l) => leader::Leadership::lost(l.leading.clone()).boxed(),
        None => futures::future::pending().boxed(),
    };
    let lost = lost.shared();
    let stop = futures::future::select(shutdown.clone(), lost.clone())
        .map(|_| ())
        .boxed()
        .shared();
    info!(
        "secretref is up: syncing SecretRefs in {}{}; /metrics, /livez and /readyz on http://{addr}; check with `kubectl get secretrefs -A` or `secretref status -A`",
        if args.namespaces.is_empty() {
            "all namespaces".to_string()
        } else {
            format!("namespaces {}", args.namespaces.join(", "))
        },
        if args.cluster_scoped {
            " (SecretStores, ClusterSecretStores, ClusterSecretRefs)"
        } else {
            " (SecretStores only: namespace-scoped)"
        },
    );
    let (statuses, events) = wiring::run_controllers(client, &args, hash_key, metrics.clone(), stop).await;
    let lost_lease = lost.peek().is_some();
    // Still the leader: the statuses decided but not yet written, and the Events of those
    // syncs, go out before the Lease (a successor finds the targets in step: it would not
    // report those changes again).
    if !lost_lease {
        tokio::join!(statuses.flush(SHUTDOWN_FLUSH), events.flush(SHUTDOWN_FLUSH));
    }
    metrics.leader.set(0);

    // `lost` holds a receiver of the election channel; the Lease is released only once every
    // receiver is gone.
    drop(lost);
    if let Some(l) = leadership {
        l.release().await;
    }
    let _ = admin.await;
    if lost_lease {
        anyhow::bail!("lost the leader Lease: stopping so that only the new leader writes");
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<kube::core::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "secretref".into())
}
