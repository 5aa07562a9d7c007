//! Writes secret data as a dotenv file that python-dotenv 1.2.4 (so Modal) reads back to exactly
//! the same values, whatever they hold.

use crate::model::SecretData;

/// One `KEY="value"` line per key, in key order. Inside the double quotes `\` `"` and the line
/// ends are escaped (`\\ \" \n \r`: a raw `\r` would read as `\n` in Python's text mode). `$` needs
/// no escape except in `${`, which python-dotenv would expand even in quotes and has no escape for:
/// its `$` is written as `${=:-$}`, a reference that always yields `$` because no variable can be
/// named `=` (the process environment cannot hold one, and every key here is an env-var name).
pub fn write(data: &SecretData) -> String {
    let mut out = String::new();
    for (key, value) in data {
        out.push_str(key);
        out.push_str("=\"");
        let mut chars = value.expose().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '$' if chars.peek() == Some(&'{') => out.push_str("${=:-$}"),
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dotenv::parse, model::secret_data};

    #[test]
    fn reads_back_through_the_parser() {
        let data = secret_data(&[
            ("A", "plain"),
            ("B", "with \"quotes\" 'single' and \\ and $HOME and ${HOME} and ${"),
            ("C", "line1\nline2\r\nline3\r"),
            ("D", ""),
            ("E", " # not a comment ${A:-x}"),
            ("F", "\\n \\${A} $${A} ${=:-$}"),
        ]);
        let text = write(&data);
        assert!(
            text.contains("B=\"with \\\"quotes\\\" 'single' and \\\\ and $HOME and ${=:-$}{HOME}"),
            "{text}"
        );
        let env = |_: &str| Some("from the environment".into());
        let exposed = |d: &SecretData| -> Vec<(String, String)> {
            d.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect()
        };
        assert_eq!(parse(&text, &env).map(|d| exposed(&d)), Ok(exposed(&data)));
    }
}
