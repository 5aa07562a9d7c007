//! Generators of dotenv files for the differential properties: statements assembled from the
//! pieces where dialects differ (quotes, escapes, `${...}`, `$VAR`, `#`, `export`, blanks of
//! every kind, line ends, byte-order marks), weighted so that most files are accepted and the
//! values get compared, while enough are refused to compare the refusals too.

use proptest::{prelude::*, sample::select};
use secretref::model::{SecretData, SecretValue};

/// Blanks: what Python's `\s` matches besides the line ends, and look-alikes it does not.
const BLANKS: &[&str] = &[
    " ", " ", " ", "\t", "\u{b}", "\u{c}", "\u{1c}", "\u{1f}", "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}", "\u{200b}",
    "\u{feff}",
];

const LINE_ENDS: &[&str] = &["\n", "\n", "\n", "\n", "\r\n", "\r\n", "\r"];

/// Keys: mostly valid names (some also set in the oracle's environment), a few that are not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(vec!["A", "B", "C", "DIFF_SET", "_x1", "export", "KEY_2"]).prop_map(String::from),
        2 => select(vec!["'A'", "'B'", "'export'"]).prop_map(String::from),
        2 => select(vec!["1BAD", "BAD-KEY", "'A B'", "\"A\"", "é", "A.B", "'A\nB'", "$A", "A\\", "'A", "'", "''",
            "", "#", "#A", "A'", "A\"", "\u{feff}A"]).prop_map(String::from),
    ]
}

/// Pieces of values: where the dialects disagree.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    // words and separators
    "x", "plain", "two words", "é😀", "0", "=", "==", ":", ":-", "-", "{", "}", "`",
    // references, expanded or not (A, B and C are also keys; DIFF_* come from the environment)
    "$", "$A", "$DIFF_SET", "${A}", "${B}", "${C}", "${DIFF_SET}", "${DIFF_EMPTY}", "${DIFF_EMPTY:-d}",
    "${UNSET:-default}", "${UNSET:-}", "${UNSET}", "${A:x}", "${A:-${B}}", "${", "${ A }", "${=:-$}", "$${A}",
    "${DIFF_SPACES}", "${DIFF_LINES}", "${DIFF_REF}", "${DIFF_QUOTES}", "${DIFF_UNICODE}",
    // backslashes and quotes
    "\\", "\\\\", "\\n", "\\t", "\\r", "\\$", "\\\"", "\\'", "\\x", "\\u00e9", "\\a", "\\v", "'", "\"", "\"\"", "''",
    // comments, blanks and line ends
    "#", " #", "\t#", " # c", "#c", " ", "  ", "\t", "\n", "\r\n", "\r", "export ", "\u{a0}", "\u{85}", "\u{0}", "\u{b}",
    "\u{1c}", "\u{2028}", "\u{feff}",
];

fn pieces(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => select(PIECES).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Pieces without a line end or a quote: stays one unquoted value more often.
fn unquoted() -> impl Strategy<Value = String> {
    pieces(6).prop_map(|v| v.replace(['\n', '\r', '"', '\''], ""))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => unquoted(),
        3 => pieces(6).prop_map(|v| format!("\"{}\"", v.replace('"', "\\\""))),
        2 => pieces(6).prop_map(|v| format!("'{}'", v.replace('\'', "\\'"))),
        1 => pieces(6),
    ]
}

fn blanks() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(String::new()),
        2 => select(BLANKS).prop_map(String::from),
        1 => proptest::collection::vec(select(BLANKS), 2..4).prop_map(|b| b.concat()),
    ]
}

fn statement() -> impl Strategy<Value = String> {
    let assignment = (
        blanks(),
        prop_oneof![6 => Just(""), 1 => Just("export "), 1 => Just("export\t"), 1 => Just("export")],
        key(),
        blanks(),
        prop_oneof![12 => Just("="), 1 => Just(""), 1 => Just("==")],
        blanks(),
        value(),
        prop_oneof![10 => Just(String::new()), 3 => blanks(), 2 => Just(" # comment".to_string()),
            1 => Just("#c".to_string()), 1 => Just(" junk".to_string())],
    )
        .prop_map(|(b1, export, key, b2, eq, b3, value, tail)| format!("{b1}{export}{key}{b2}{eq}{b3}{value}{tail}"));
    prop_oneof![
        10 => assignment,
        1 => pieces(4).prop_map(|c| format!("#{}", c.replace(['\n', '\r'], ""))),
        1 => blanks(),
    ]
}

/// A whole file: statements with mixed line ends, sometimes a byte-order mark, sometimes no final
/// line end.
pub fn file() -> impl Strategy<Value = String> {
    (
        prop_oneof![8 => Just(""), 1 => Just("\u{feff}")],
        proptest::collection::vec((statement(), select(LINE_ENDS)), 0..7),
        any::<bool>(),
    )
        .prop_map(|(bom, statements, final_end)| {
            let mut text = bom.to_string();
            for (statement, end) in statements {
                text.push_str(&statement);
                text.push_str(end);
            }
            if !final_end && text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        })
}

/// Secret data of every kind the store holds: env-var names, values of any text (NUL included),
/// with the characters dotenv treats specially made frequent.
pub fn secret_data() -> impl Strategy<Value = SecretData> {
    let value = proptest::collection::vec(
        prop_oneof![
            3 => select(PIECES).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..12,
    )
    .prop_map(|pieces| pieces.concat());
    proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", value, 0..8)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, SecretValue::new(v))).collect())
}
