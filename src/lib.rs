//! secretref: Modal-style secrets for Kubernetes.
//!
//! A Modal-style secret is a named set of environment variables kept in a backend and scoped to
//! an environment. A `SecretRef` asks for secrets by name; the controller merges them (later
//! wins) and keeps a native `Secret` in step for pods to consume.

pub mod admin;
pub mod api;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod desired;
pub mod dotenv;
pub mod error;
pub mod hash;
pub mod metrics;
pub mod model;
pub mod render;

/// Makes rustls use ring, the one crypto provider secretref links (kube's and the AWS SDK's TLS
/// share it). Explicit, so that no feature combination of a dependency can leave rustls
/// unable to choose (it panics at run time when two providers are linked and none is chosen).
/// Call it first thing in every process; later calls are no-ops.
pub fn install_crypto_provider() {
    // Err: a provider is installed already (an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}
