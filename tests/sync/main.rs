//! The SecretRef reconciler on the real control plane: each test runs its own operator,
//! scoped to a namespace of its own, against a store namespace of its own.

#[path = "../support/mod.rs"]
mod support;

mod fixture;
mod lifecycle;
mod outage;
mod reasons;
mod secrecy;
mod store_watch;
