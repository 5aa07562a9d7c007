//! secretref on a real node (`scripts/cluster up --node`, images from `scripts/image`): the
//! Helm chart and the kustomize manifests install and run two replicas through their real
//! probes, pods consume a target as env vars and files, a rotation reaches a mounted file,
//! rolloutRestart replaces pods once per real change, and a deleted leader hands over.
//! The two installs share the namespace `secretref-system`, so they run one after the other.

#[path = "../support/mod.rs"]
mod support;

mod image;
mod install;
mod node;
mod workload;

/// Held by each test that installs the operator into `secretref-system`.
pub static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
