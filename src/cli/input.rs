//! Parses what `secretref secret create` is given (KEY=VALUE arguments, a dotenv file, a JSON
//! file) into secret data, all or nothing. Errors name the argument, file, line or key, never a
//! value. Pure apart from reading the named files and stdin.

use std::{ffi::OsString, io::Read, path::Path};

use crate::{
    dotenv::{self, DotenvError},
    model::{SecretData, SecretValue, is_env_key},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("argument {index}: expected KEY=VALUE (the argument is not shown: it may be a value)")]
    NotAnAssignment { index: usize },
    #[error("key {key:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*){origin}")]
    InvalidKey { key: String, origin: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: {error}")]
    Dotenv { path: String, error: DotenvError },
    #[error("{path}: key {key:?} must have a string value, not {kind}")]
    JsonNotString {
        path: String,
        key: String,
        kind: &'static str,
    },
    #[error("{0}")]
    Stdin(String),
    #[error("--from-env {key}: {why} in this environment")]
    EnvUnset { key: String, why: &'static str },
    #[error("no keys given: pass KEY=VALUE arguments, --from-env, --from-dotenv or --from-json")]
    Empty,
}

/// Where stdin-sourced values (`KEY=-`) come from, so tests can stand in for a terminal.
pub trait ValueSource {
    fn read_value(&mut self, key: &str) -> Result<String, InputError>;
}

/// The process's stdin: a hidden prompt on a terminal, else the whole stream (one trailing
/// newline dropped), which can feed only one key.
#[derive(Debug, Default)]
pub struct Stdin {
    used: bool,
}

impl ValueSource for Stdin {
    fn read_value(&mut self, key: &str) -> Result<String, InputError> {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() {
            return rpassword::prompt_password(format!("Value for {key}: "))
                .map_err(|e| InputError::Stdin(format!("reading {key} from the terminal: {e}")));
        }
        if std::mem::replace(&mut self.used, true) {
            return Err(InputError::Stdin(format!(
                "{key}=-: stdin can feed only one key when it is not a terminal"
            )));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| InputError::Stdin(format!("reading {key} from stdin: {e}")))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(text)
    }
}

/// Takes `keys` from the caller's own environment (Modal's `Secret.from_local_environ`): a key
/// that is not set (or not UTF-8 text) is an error naming it.
pub fn from_env(
    keys: &[String],
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<SecretData, InputError> {
    let mut data = SecretData::new();
    for key in keys {
        check_key(key, " (--from-env)")?;
        let value = lookup(key).ok_or_else(|| InputError::EnvUnset {
            key: key.clone(),
            why: "is not set",
        })?;
        let value = value.into_string().map_err(|_| InputError::EnvUnset {
            key: key.clone(),
            why: "is not UTF-8 text",
        })?;
        data.insert(key.clone(), SecretValue::new(value));
    }
    Ok(data)
}

/// Merges the inputs in order (arguments, then `environment` (the `--from-env` keys), then
/// the dotenv file, then the JSON file; later wins) and checks every key. Nothing is returned
/// unless everything is valid.
pub fn collect(
    assignments: &[String],
    environment: SecretData,
    dotenv: Option<&Path>,
    json: Option<&Path>,
    stdin: &mut dyn ValueSource,
) -> Result<SecretData, InputError> {
    let mut data = SecretData::new();
    for (i, arg) in assignments.iter().enumerate() {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(InputError::NotAnAssignment { index: i + 1 });
        };
        check_key(key, "")?;
        let value = if value == "-" {
            stdin.read_value(key)?
        } else {
            value.to_string()
        };
        data.insert(key.to_string(), SecretValue::new(value));
    }
    data.extend(environment);
    if let Some(path) = dotenv {
        let env = dotenv::process_environment();
        data.extend(parse_dotenv(&path.display().to_string(), &read(path)?, &env)?);
    }
    if let Some(path) = json {
        data.extend(parse_json(&path.display().to_string(), &read(path)?)?);
    }
    if data.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(data)
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| InputError::File {
        path: path.display().to_string(),
        message: e.kind().to_string(),
    })
}

fn check_key(key: &str, origin: &str) -> Result<(), InputError> {
    if is_env_key(key) {
        Ok(())
    } else {
        Err(InputError::InvalidKey {
            key: key.to_string(),
            origin: origin.to_string(),
        })
    }
}

/// Parses dotenv text as Modal does (python-dotenv's `dotenv_values`, see [`crate::dotenv`]);
/// `${NAME}` not set by an earlier key is looked up with `env`.
pub fn parse_dotenv(path: &str, text: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Result<SecretData, InputError> {
    dotenv::parse(text, env).map_err(|error| InputError::Dotenv {
        path: path.to_string(),
        error,
    })
}

/// Parses a flat JSON object of strings.
pub fn parse_json(path: &str, text: &str) -> Result<SecretData, InputError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| InputError::File {
        path: path.to_string(),
        message: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(InputError::File {
            path: path.to_string(),
            message: "must be a JSON object of strings".into(),
        });
    };
    let mut data = SecretData::new();
    for (key, value) in map {
        check_key(&key, &format!(" in {path}"))?;
        let kind = match &value {
            serde_json::Value::String(_) => "",
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::Object(_) => "an object",
        };
        let serde_json::Value::String(s) = value else {
            return Err(InputError::JsonNotString {
                path: path.to_string(),
                key,
                kind,
            });
        };
        data.insert(key, SecretValue::new(s));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_takes_set_keys_and_names_unset_ones() {
        let lookup = |k: &str| (k == "TOKEN").then(|| std::ffi::OsString::from("s3cret"));
        let d = from_env(&["TOKEN".to_string()], lookup).expect("set");
        assert_eq!(d["TOKEN"].expose(), "s3cret");
        let err = from_env(&["TOKEN".to_string(), "MISSING".to_string()], lookup).expect_err("unset");
        assert_eq!(err.to_string(), "--from-env MISSING: is not set in this environment");
        let err = from_env(&["1BAD".to_string()], lookup).expect_err("bad key");
        assert!(err.to_string().contains("\"1BAD\""), "{err}");
        let merged = collect(&["TOKEN=arg".to_string()], d, None, None, &mut Fake(vec![])).expect("merge");
        assert_eq!(
            merged["TOKEN"].expose(),
            "s3cret",
            "--from-env comes after the arguments"
        );
    }

    struct Fake(Vec<&'static str>);
    impl ValueSource for Fake {
        fn read_value(&mut self, _key: &str) -> Result<String, InputError> {
            self.0
                .pop()
                .map(String::from)
                .ok_or_else(|| InputError::Stdin("empty".into()))
        }
    }

    fn values(d: &SecretData) -> Vec<(&str, &str)> {
        d.iter().map(|(k, v)| (k.as_str(), v.expose())).collect()
    }

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("secretref-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn arguments_then_dotenv_then_json_later_wins() {
        let env = temp("a.env", "A=from-dotenv\nB=from-dotenv\n");
        let json = temp("a.json", r#"{"B": "from-json", "C": "c"}"#);
        let args = vec!["A=arg".to_string(), "Z=z=with=equals".into()];
        let d = collect(&args, SecretData::new(), Some(&env), Some(&json), &mut Fake(vec![])).expect("valid");
        assert_eq!(
            values(&d),
            [
                ("A", "from-dotenv"),
                ("B", "from-json"),
                ("C", "c"),
                ("Z", "z=with=equals")
            ]
        );
    }

    #[test]
    fn dash_reads_the_value_from_stdin() {
        let d = collect(
            &["TOKEN=-".to_string()],
            SecretData::new(),
            None,
            None,
            &mut Fake(vec!["s3cret"]),
        )
        .expect("valid");
        assert_eq!(values(&d), [("TOKEN", "s3cret")]);
    }

    #[test]
    fn bad_arguments_name_the_problem_not_the_value() {
        let err = collect(
            &["hunter2".to_string()],
            SecretData::new(),
            None,
            None,
            &mut Fake(vec![]),
        )
        .expect_err("no =");
        assert!(err.to_string().starts_with("argument 1: expected KEY=VALUE") && !err.to_string().contains("hunter2"));
        let err = collect(
            &["1BAD=hunter2".to_string()],
            SecretData::new(),
            None,
            None,
            &mut Fake(vec![]),
        )
        .expect_err("bad key");
        assert!(err.to_string().contains("\"1BAD\"") && !err.to_string().contains("hunter2"));
        assert_eq!(
            collect(&[], SecretData::new(), None, None, &mut Fake(vec![])),
            Err(InputError::Empty)
        );
        let err = collect(
            &[],
            SecretData::new(),
            Some(Path::new("/nonexistent/x.env")),
            None,
            &mut Fake(vec![]),
        )
        .expect_err("missing");
        assert_eq!(err.to_string(), "/nonexistent/x.env: entity not found");
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn dotenv_conventions() {
        let text = "# comment\nexport A=1\nB='single $NOT_EXPANDED \\n'\nC=\"double\\nline\"\nD=\"multi\nline\"\nE=plain # trailing comment\n\nF=\n";
        let d = parse_dotenv("x.env", text, &no_env).expect("valid");
        assert_eq!(
            values(&d),
            [
                ("A", "1"),
                ("B", "single $NOT_EXPANDED \\n"),
                ("C", "double\nline"),
                ("D", "multi\nline"),
                ("E", "plain"),
                ("F", "")
            ]
        );
    }

    #[test]
    fn dotenv_errors_name_the_file_and_line_not_the_value() {
        let err = parse_dotenv("x.env", "A=1\nB=2\nthis is hunter2 broken\n", &no_env).expect_err("invalid");
        assert_eq!(err.to_string(), "x.env: invalid dotenv syntax on line 3");
        // python-dotenv reads `BAD-KEY` as a key, so this is a bad key now, not bad syntax.
        let err = parse_dotenv("x.env", "A=1\nBAD-KEY=hunter2\n", &no_env).expect_err("key");
        assert_eq!(
            err,
            InputError::Dotenv {
                path: "x.env".into(),
                error: DotenvError::InvalidKey {
                    line: 2,
                    key: "BAD-KEY".into()
                }
            }
        );
        let err = parse_dotenv("x.env", "A=1\n1BAD=hunter2\n", &no_env).expect_err("key");
        assert!(
            err.to_string().contains("x.env") && !err.to_string().contains("hunter2"),
            "{err}"
        );
        let err = parse_dotenv("x.env", "A=\"unterminated\n", &no_env).expect_err("quote");
        assert!(
            matches!(
                err,
                InputError::Dotenv {
                    error: DotenvError::Syntax { line: 1 },
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_dotenv("x.env", "A=1\nhunter2\n", &no_env).expect_err("no =");
        assert!(
            err.to_string().starts_with("x.env: line 2 has a name without `=`") && !err.to_string().contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn json_must_be_a_flat_object_of_strings() {
        assert_eq!(
            values(&parse_json("x.json", r#"{"A":"1"}"#).expect("valid")),
            [("A", "1")]
        );
        let err = parse_json("x.json", r#"{"A": 1}"#).expect_err("number");
        assert_eq!(
            err.to_string(),
            "x.json: key \"A\" must have a string value, not a number"
        );
        let err = parse_json("x.json", r#"{"A": {"nested": "hunter2"}}"#).expect_err("nested");
        assert!(err.to_string().contains("an object") && !err.to_string().contains("hunter2"));
        let err = parse_json("x.json", r#"["A"]"#).expect_err("array");
        assert!(err.to_string().contains("JSON object"));
        let err = parse_json("x.json", "{\"A\": \"hunter2\",\n oops}").expect_err("syntax");
        assert_eq!(err.to_string(), "x.json: invalid JSON at line 2 column 2");
    }
}
