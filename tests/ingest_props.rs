//! Property tests of the CLI's dotenv and JSON ingestion: what secretref renders, it reads back
//! exactly, and no input makes the parsers panic. Bounded by PROPTEST_CASES (default 256);
//! a longer soak: `PROPTEST_CASES=20000 cargo test --test ingest_props`. (That python-dotenv
//! reads the same values is `tests/dotenv_diff.rs`'s job.)

use std::ffi::OsString;

use proptest::prelude::*;
use secretref::{
    cli::input::{parse_dotenv, parse_json},
    model::{SecretData, SecretValue},
    render,
};

/// `${NAME}` sees this environment: set, so a rendered value that expanded would show it.
fn env(_: &str) -> Option<OsString> {
    Some("from-the-environment".into())
}

fn data() -> impl Strategy<Value = SecretData> {
    // Keys are env-var names; values are any text, with the characters dotenv treats specially
    // made frequent.
    let value = proptest::collection::vec(
        prop_oneof!["[$\\{}\"'#= \n\r\t:-]", any::<char>().prop_map(String::from)],
        0..40,
    )
    .prop_map(|chars| chars.concat());
    proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,12}", value, 0..8)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, SecretValue::new(v))).collect())
}

proptest! {
    #[test]
    fn dotenv_round_trips(d in data()) {
        let parsed = parse_dotenv("p.env", &render::dotenv(&d), &env).expect("renders valid dotenv");
        prop_assert_eq!(parsed, d);
    }

    #[test]
    fn json_round_trips(d in data()) {
        let parsed = parse_json("p.json", &render::json(&d)).expect("renders valid JSON");
        prop_assert_eq!(parsed, d);
    }

    #[test]
    fn arbitrary_dotenv_never_panics(text in "(?s).{0,200}") {
        let _ = parse_dotenv("p.env", &text, &env);
    }

    #[test]
    fn arbitrary_json_never_panics(text in "(?s).{0,200}") {
        let _ = parse_json("p.json", &text);
    }

    #[test]
    fn dotenv_lines_with_structure_never_panic(lines in proptest::collection::vec("(export )?[A-Za-z_#]{0,4}[= ]?[\"'\\\\$ a-z\n]{0,10}", 0..10)) {
        let _ = parse_dotenv("p.env", &lines.join("\n"), &env);
    }
}
