//! Command-line interface: `secretref run | crds | secret ...`.

pub mod input;
pub mod secret;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Modal-style secrets for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "secretref", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: watch SecretRefs and stores, and keep target Secrets in step.
    Run(crate::controller::RunArgs),
    /// Print the CustomResourceDefinitions as YAML (the content of crds/secretref.dev.yaml).
    Crds,
    /// Manage Modal-style secrets in a store.
    #[command(subcommand)]
    Secret(SecretCommand),
}

/// Where a `secret` command works: the store and the environment.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The environment (default: $SECRETREF_ENVIRONMENT, else the store's defaultEnvironment).
    #[arg(short = 'e', long = "env", env = "SECRETREF_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The ClusterSecretStore to use (default: the one marked `default: true`).
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from KEY=VALUE arguments, a dotenv file and/or a JSON file
    /// (merged in that order; later wins). `KEY=-` reads that value from stdin.
    Create {
        /// The secret's name (1-64 characters of [A-Za-z0-9._-]).
        name: String,
        /// KEY=VALUE pairs.
        assignments: Vec<String>,
        /// Read keys from a dotenv file.
        #[arg(long, value_name = "PATH")]
        from_dotenv: Option<PathBuf>,
        /// Read keys from a JSON file holding a flat object of strings.
        #[arg(long, value_name = "PATH")]
        from_json: Option<PathBuf>,
        /// Replace an existing secret whole (keys not given are removed).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List secrets (never their values).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show a secret's keys (never its values).
    Describe {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a secret, after naming the SecretRefs that use it.
    Delete {
        name: String,
        /// Succeed if the secret does not exist.
        #[arg(long)]
        allow_missing: bool,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        target: Target,
    },
}
