//! The `aws` provider against a real AWS Secrets Manager API (moto's server, one per test, on
//! a free loopback port) and the real local control plane: the operator and the binary CLI end
//! to end, changes made straight in AWS, failures, credentials, and what change detection costs
//! in AWS calls (counted from moto's own request log).

#[path = "../support/mod.rs"]
mod support;

mod api;
mod cli;
mod cost;
mod credentials;
mod fixture;
mod sync;
