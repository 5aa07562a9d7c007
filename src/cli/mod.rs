//! Command-line interface: `secretref run | crds | secret ...`.

pub mod input;
pub mod secret;
pub mod status;
pub mod store;

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
    /// The environments of a store.
    #[command(subcommand)]
    Env(EnvCommand),
    /// What is synced where: SecretRefs and ClusterSecretRefs with their state.
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// List the environments that hold secrets, each with its secret count.
    List {
        /// The ClusterSecretStore to use (default: the one marked `default: true`).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// How `status` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace (and the ClusterSecretRefs).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
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
    /// Create a secret from KEY=VALUE arguments, keys of your own environment (--from-env), a
    /// dotenv file and/or a JSON file (merged in that order; later wins). `KEY=-` reads that
    /// value from stdin.
    Create {
        /// The secret's name (1-64 characters of [A-Za-z0-9._-]).
        name: String,
        /// KEY=VALUE pairs.
        assignments: Vec<String>,
        /// Take KEY's value from this command's own environment (repeatable); an unset KEY is
        /// an error.
        #[arg(long, value_name = "KEY")]
        from_env: Vec<String>,
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
    /// List the secrets of an environment (never their values).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every environment, not only the one chosen by -e (or the store's default).
        #[arg(long)]
        all_environments: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show a secret's keys (never its values) and the SecretRefs that use it.
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
