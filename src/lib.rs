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
