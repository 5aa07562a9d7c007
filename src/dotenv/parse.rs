//! Reads dotenv text the way python-dotenv 1.2.4's `dotenv_values(path)` does, and refuses
//! what a secret cannot hold. Written from python-dotenv's documented and observed behaviour;
//! the differential tests (`tests/dotenv_diff.rs`) compare it with python-dotenv itself.
//!
//! # Grammar
//!
//! The text is UTF-8. Python opens the file in text mode, so `\r\n` and a lone `\r` read as
//! `\n`; one leading byte-order mark is dropped. Below, *blank* is any Unicode white space but
//! `\n` (space, tab, `\v`, `\f`, U+001C–U+001F, U+0085, U+00A0, U+2028, ...: Python's `\s`
//! without the line end), and *space* is a blank or `\n`.
//!
//! ```text
//! file      = { space* statement } space*
//! statement = [ "export" blank+ ] ( comment | key blank* [ "=" blank* value ] [ blank* comment ] ) blank* eol
//! key       = "'" { any but "'" }+ "'"                  (may hold anything, even a line end)
//!           | { any but "=", "#" or space }+
//! value     = "'" { "\" any | any but "'" or "\" } "'"  (may span lines)
//!           | '"' { "\" any | any but '"' or "\" } '"'  (may span lines)
//!           | { any but "\n" }                          (unquoted: the rest of the line)
//! comment   = "#" { any but "\n" }
//! eol       = "\n" | end of text
//! ```
//!
//! - A value `'...'` decodes `\\` and `\'`; a value `"..."` decodes `\\ \' \" \a \b \f \n \r
//!   \t \v`. Every other backslash stays, with the character after it (`"\$"` is two
//!   characters), though it still keeps that character from closing the quotes.
//! - An unquoted value is cut at the first `#` that follows a blank (the blanks go too), then
//!   loses its trailing space; its quotes and backslashes are plain characters.
//! - Blanks after `=` followed by `#` make an empty value and a comment (`KEY= #c`); without
//!   the blank (`KEY=#c`) the `#` starts the value.
//! - A key without `=` has no value (python-dotenv: `None`).
//! - Then every value, whatever its quotes, is expanded (see `expand`): `${NAME}` and
//!   `${NAME:-DEFAULT}` from the keys above, then the process environment; `$NAME` is literal.
//!
//! A statement that does not fit (text after a closing quote, a second word after a key, an
//! unterminated quote) is one python-dotenv skips with a warning. secretref keeps its input all or
//! nothing instead and refuses the file, naming the line, as it does for what a secret cannot
//! hold: a key without `=` and a key that is not an environment variable name. Errors never
//! carry a value (nor the name of a key without `=`, which may be a stray value).

use std::ffi::OsString;

use super::expand::expand;
use crate::model::{SecretData, SecretValue, is_env_key};

/// Why a dotenv file is refused. Lines are 1-based (CRLF and a lone CR each end one) and name
/// the line where the statement starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    #[error("invalid dotenv syntax on line {line}")]
    Syntax { line: usize },
    #[error(
        "line {line} has a name without `=`, which python-dotenv (Modal) reads as unset and a secret cannot hold: \
         add `=` for an empty value, or remove the line"
    )]
    NoValue { line: usize },
    #[error("key {key:?} on line {line} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")]
    InvalidKey { line: usize, key: String },
    #[error("line {line}: ${{{name}}} expands an environment variable whose value is not UTF-8")]
    NotUnicode { line: usize, name: String },
}

/// Parses dotenv `text`; `${NAME}` not set by an earlier key is looked up with `env`.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Result<SecretData, DotenvError> {
    let text = normalize(text);
    let mut reader = Reader::new(&text);
    let mut data = SecretData::new();
    while let Some(statement) = reader.next_statement()? {
        let Statement { line, key, value } = statement;
        let Some(raw) = value else {
            return Err(DotenvError::NoValue { line });
        };
        if !is_env_key(&key) {
            return Err(DotenvError::InvalidKey { line, key });
        }
        let value = expand(&raw, |name| match data.get(name) {
            Some(value) => Ok(Some(value.expose().to_string())),
            // No environment holds a name with `=` (Python's `os.environ` cannot): `write`
            // relies on `${=:-$}` always being `$`.
            None if name.contains('=') => Ok(None),
            None => env(name)
                .map(|value| value.into_string())
                .transpose()
                .map_err(|_| DotenvError::NotUnicode {
                    line,
                    name: name.to_string(),
                }),
        })?;
        data.insert(key, SecretValue::new(value));
    }
    Ok(data)
}

/// The text as Python's text mode hands it over: universal line ends, no byte-order mark.
fn normalize(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Python's `str.isspace()` (and `\s`), spelled out so it does not move with Rust's Unicode
/// version: the White_Space property plus the separators U+001C–U+001F.
fn is_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
        | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

fn is_blank(c: char) -> bool {
    c != '\n' && is_space(c)
}

/// One `key[=value]` statement, its value still unexpanded (`None`: no `=`).
struct Statement {
    line: usize,
    key: String,
    value: Option<String>,
}

/// A statement does not fit the grammar (its line is added by the caller).
struct Unfit;

struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// Line ends before `counted`, so line numbers cost one pass over the text in all.
    counted: usize,
    lines: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            counted: 0,
            lines: 0,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// The 1-based line of the current position (which only moves forward between calls).
    fn line(&mut self) -> usize {
        self.lines += self.text[self.counted..self.pos].matches('\n').count();
        self.counted = self.pos;
        self.lines + 1
    }

    /// The next statement with a key, skipping space and comment lines; `None` at the end.
    fn next_statement(&mut self) -> Result<Option<Statement>, DotenvError> {
        loop {
            self.eat_while(is_space);
            if self.peek().is_none() {
                return Ok(None);
            }
            let line = self.line();
            match self.statement() {
                Ok(Some((key, value))) => return Ok(Some(Statement { line, key, value })),
                Ok(None) => {}
                Err(Unfit) => return Err(DotenvError::Syntax { line }),
            }
        }
    }

    /// One statement from its first character through its line end; `None` for a comment.
    fn statement(&mut self) -> Result<Option<(String, Option<String>)>, Unfit> {
        if let Some(after) = self.rest().strip_prefix("export")
            && after.starts_with(is_blank)
        {
            self.pos += "export".len();
            self.eat_while(is_blank);
        }
        let key = match self.peek() {
            Some('#') => None,
            Some('\'') => {
                self.bump();
                let key = self.eat_while(|c| c != '\'');
                if key.is_empty() || self.bump() != Some('\'') {
                    return Err(Unfit);
                }
                Some(key.to_string())
            }
            _ => {
                let key = self.eat_while(|c| c != '=' && c != '#' && !is_space(c));
                if key.is_empty() {
                    return Err(Unfit);
                }
                Some(key.to_string())
            }
        };
        self.eat_while(is_blank);
        let value = if self.peek() == Some('=') {
            self.bump();
            let blanks = self.eat_while(is_blank);
            if !blanks.is_empty() && self.peek() == Some('#') {
                Some(String::new())
            } else {
                Some(self.value()?)
            }
        } else {
            None
        };
        let before_comment = self.pos;
        self.eat_while(is_blank);
        if self.peek() == Some('#') {
            self.eat_while(|c| c != '\n');
        } else {
            self.pos = before_comment;
        }
        self.eat_while(is_blank);
        match self.bump() {
            None | Some('\n') => Ok(key.map(|key| (key, value))),
            Some(_) => Err(Unfit),
        }
    }

    fn value(&mut self) -> Result<String, Unfit> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => self.quoted(quote),
            None | Some('\n') => Ok(String::new()),
            Some(_) => Ok(unquoted(self.eat_while(|c| c != '\n'))),
        }
    }

    /// A quoted value: a backslash always takes the next character with it, so `\"` never
    /// closes it; only the quote style's own escapes are decoded.
    fn quoted(&mut self, quote: char) -> Result<String, Unfit> {
        self.bump();
        let mut value = String::new();
        loop {
            match self.bump().ok_or(Unfit)? {
                '\\' => {
                    let escaped = self.bump().ok_or(Unfit)?;
                    match decode(quote, escaped) {
                        Some(c) => value.push(c),
                        None => {
                            value.push('\\');
                            value.push(escaped);
                        }
                    }
                }
                c if c == quote => return Ok(value),
                c => value.push(c),
            }
        }
    }
}

/// The character a backslash escape stands for inside `quote`s, or `None` to keep it as is.
fn decode(quote: char, escaped: char) -> Option<char> {
    match (quote, escaped) {
        (_, '\\') => Some('\\'),
        (_, '\'') => Some('\''),
        ('\'', _) => None,
        (_, '"') => Some('"'),
        (_, 'a') => Some('\u{7}'),
        (_, 'b') => Some('\u{8}'),
        (_, 'f') => Some('\u{c}'),
        (_, 'n') => Some('\n'),
        (_, 'r') => Some('\r'),
        (_, 't') => Some('\t'),
        (_, 'v') => Some('\u{b}'),
        _ => None,
    }
}

/// An unquoted value: cut at the first `#` after a blank (with the blanks before it), then
/// trimmed at the end.
fn unquoted(raw: &str) -> String {
    let mut blanks_from = None;
    for (at, c) in raw.char_indices() {
        if c == '#'
            && let Some(cut) = blanks_from
        {
            return raw[..cut].trim_end_matches(is_space).to_string();
        }
        if is_space(c) {
            blanks_from.get_or_insert(at);
        } else {
            blanks_from = None;
        }
    }
    raw.trim_end_matches(is_space).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(name: &str) -> Option<OsString> {
        match name {
            "FROM_ENV" => Some("env-value".into()),
            "EMPTY_ENV" => Some("".into()),
            "A" => Some("env-A".into()),
            _ => None,
        }
    }

    fn read(text: &str) -> BTreeMap<String, String> {
        parse(text, &env)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_string()))
            .collect()
    }

    fn one(text: &str) -> String {
        let values = read(text);
        assert_eq!(values.len(), 1, "{text:?}: {values:?}");
        values.into_values().next().unwrap_or_default()
    }

    fn refused(text: &str) -> DotenvError {
        match parse(text, &env) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_quirks_the_issue_lists() {
        assert_eq!(one("B=two words"), "two words");
        assert_eq!(one("\u{feff}A=1"), "1");
        assert_eq!(one("T=\"tab\\there\""), "tab\there");
        assert_eq!(read("A=1\nD=\"bare $A\"")["D"], "bare $A");
        assert_eq!(read("A=1\nP=$A")["P"], "$A");
        assert_eq!(one("U=unquoted\\nbackslash"), "unquoted\\nbackslash");
        assert_eq!(one("X=${UNSET:-default}"), "default");
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(one("A='single \\' \\\\ \\n'"), "single ' \\ \\n");
        assert_eq!(
            one("A=\"d \\\" \\' \\\\ \\a\\b\\f\\n\\r\\t\\v \\$ \\x\""),
            "d \" ' \\ \u{7}\u{8}\u{c}\n\r\t\u{b} \\$ \\x"
        );
        assert_eq!(one("A=\"multi\nline\""), "multi\nline");
        assert_eq!(one("A='multi\r\nline'"), "multi\nline");
        assert_eq!(one("A=\"cr\rinside\""), "cr\ninside");
        assert_eq!(one("A=\"x\" # comment"), "x");
        assert_eq!(one("A=it's \"fine\""), "it's \"fine\"");
    }

    #[test]
    fn comments_and_whitespace() {
        assert_eq!(one("# c\n  \n\texport   A = plain # c # d  \n"), "plain");
        assert_eq!(one("A=#not-a-comment"), "#not-a-comment");
        assert_eq!(one("A= #comment"), "");
        assert_eq!(one("A=a#b"), "a#b");
        assert_eq!(one("A=a\t#b"), "a");
        assert_eq!(one("A=trailing \u{a0}\t"), "trailing");
        assert_eq!(one("A=\r\n"), "");
        assert_eq!(one("A="), "");
        assert_eq!(one("'A'=quoted key"), "quoted key");
        assert_eq!(one("export=1"), "1");
        assert!(read("# only\n\n").is_empty());
        assert!(read("").is_empty());
    }

    #[test]
    fn expansion() {
        assert_eq!(read("A=1\nB=${A}")["B"], "1");
        assert_eq!(one("B=${A}"), "env-A");
        assert_eq!(read("A=\nB=${A:-d}")["B"], "");
        assert_eq!(one("B=${EMPTY_ENV:-d}"), "");
        assert_eq!(one("B='${FROM_ENV}'"), "env-value");
        assert_eq!(one("B=${UNSET}"), "");
        assert_eq!(one("B=${UNSET:-${FROM_ENV}}"), "${FROM_ENV}");
        assert_eq!(one("B=${UNSET:x}"), "${UNSET:x}");
        assert_eq!(one("B=${unclosed"), "${unclosed");
        assert_eq!(read("A=x\nA=${A}y")["A"], "xy");
        assert_eq!(read("B=${C}\nC=later")["B"], "");
    }

    #[test]
    fn refusals_name_the_line_never_a_value() {
        assert_eq!(refused("A=1\n\n\nthis is hunter2"), DotenvError::Syntax { line: 4 });
        assert_eq!(refused("A=\"unterminated\nB=2"), DotenvError::Syntax { line: 1 });
        assert_eq!(refused("A=\"x\" trailing"), DotenvError::Syntax { line: 1 });
        assert_eq!(refused("A=1\r\nhunter2\r\n"), DotenvError::NoValue { line: 2 });
        assert_eq!(refused("export A"), DotenvError::NoValue { line: 1 });
        let err = refused("A=1\nBAD-KEY=hunter2");
        assert_eq!(
            err,
            DotenvError::InvalidKey {
                line: 2,
                key: "BAD-KEY".into()
            }
        );
        assert!(!err.to_string().contains("hunter2"));
        assert!(!refused("hunter2").to_string().contains("hunter2"));
    }

    #[test]
    fn an_environment_value_that_is_not_unicode_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = |_: &str| Some(OsString::from_vec(vec![0xff]));
        assert_eq!(
            parse("A=ok\nB=${X}", &bad),
            Err(DotenvError::NotUnicode {
                line: 2,
                name: "X".into()
            })
        );
    }
}
