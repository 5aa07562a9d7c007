//! Command-line interface: `secretref run | crds | secret ...`.

use clap::{Parser, Subcommand};

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
}
