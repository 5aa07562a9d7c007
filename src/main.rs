//! The `secretref` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use secretref::cli::{Cli, Command};

/// jemalloc fragments less than glibc's malloc under the operator's many small, short-lived
/// allocations (watch events, JSON). Measured at 10,000 SecretRefs after a fresh resync: 58 MiB
/// RSS against glibc's 67 MiB for the same live heap (mimalloc peaked at 96 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One thread. kube's Controller drives its scheduler and runner in the task that polls it and
/// spawns each reconcile as a task of its own: on a multi-threaded runtime every sync crossed
/// threads twice (spawned to a worker, its result woken back), and those wake-ups cost more
/// than the syncs. At 10,000 SecretRefs refreshing every 30 s the operator's CPU per no-op
/// sync fell from 380 to 246 µs with nothing else changed (README, "Benchmark", seventh
/// pass). Its work is waiting on the API server; at 100,000 SecretRefs it used a fifth of one
/// core in a cold sync.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    secretref::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => secretref::controller::run(args).await,
        Command::Crds => secretref::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(anyhow::Error::from),
        Command::Secret(command) => secretref::cli::secret::run(command).await,
        Command::Env(command) => secretref::cli::secret::run_env(command).await,
        Command::Status(args) => secretref::cli::status::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("secretref: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
