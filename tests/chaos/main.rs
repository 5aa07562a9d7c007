//! The chaos and security suite (issue 13): faults on a real control plane of each scenario's
//! own, hostile store content, hostile specs and tenants, all against the real operator binary.
//! An independent sampler checks the invariant of every scenario: no target ever disappears,
//! loses a key or holds a value its store never held; at the end every SecretRef is Synced and
//! every target holds the newest value; no value appears in a log line, Event, status or metric.
//!
//! `scripts/test` runs it at small sizes; `scripts/chaos` at the sizes, the load test
//! included (`SECRETREF_CHAOS=full cargo test --release --test chaos -- --include-ignored`).

#[path = "../support/mod.rs"]
mod support;

mod churn;
mod cluster;
mod faults;
mod hostile;
mod load;
mod operator;
mod sampler;
mod specs;
mod tenancy;
mod world;
