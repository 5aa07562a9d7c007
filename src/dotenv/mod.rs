//! Modal's dotenv dialect: the one python-dotenv 1.2.4's `dotenv_values` reads (Modal's
//! `Secret.from_dotenv` calls it, with interpolation on). [`parse`] reads a file into secret
//! data, all or nothing; [`write`] renders secret data as a file python-dotenv reads back to the
//! same values. Pure: the process environment comes in as a lookup function.

mod expand;
mod parse;
mod write;

use std::{collections::HashMap, ffi::OsString};

pub use parse::{DotenvError, parse};
pub use write::write;

/// A snapshot of the process environment as a lookup for `${NAME}`, as python-dotenv sees it
/// (`os.environ`, itself a snapshot taken at start-up).
pub fn process_environment() -> impl Fn(&str) -> Option<OsString> {
    let vars: HashMap<OsString, OsString> = std::env::vars_os().collect();
    move |name: &str| vars.get(std::ffi::OsStr::new(name)).cloned()
}
