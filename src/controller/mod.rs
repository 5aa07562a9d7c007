//! The operator: watches SecretRefs and stores and reconciles target Secrets.

use clap::Args;

/// Options of `secretref run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Only watch SecretRefs in this namespace (default: all namespaces).
    #[arg(long, env = "SECRETREF_NAMESPACE")]
    pub namespace: Option<String>,
    /// How many SecretRefs to reconcile at once.
    #[arg(long, default_value_t = 16, env = "SECRETREF_CONCURRENCY")]
    pub concurrency: u16,
}

pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("the controller is not implemented yet")
}
