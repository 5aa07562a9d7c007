//! python-dotenv as the oracle: one long-lived Python process (`oracle.py`, in the venv that
//! `scripts/python-venv` keeps) answering over stdin/stdout, and the comparison of its reading of
//! a file with secretref's.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use secretref::{cli::input, dotenv::DotenvError};
use serde_json::{Value, json};

/// The pinned reference: the python-dotenv Modal's client uses.
pub const PYTHON_DOTENV: &str = "python-dotenv==1.2.4";

/// The whole process environment the oracle runs with (and secretref parses against), so
/// `${VAR}` falls back to known values. `A` and `B` are also keys the files set: the file wins.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("A", "env-A"),
    ("B", "env-B"),
    ("DIFF_SET", "from the environment"),
    ("DIFF_EMPTY", ""),
    ("DIFF_SPACES", "  two  spaces  "),
    ("DIFF_LINES", "line1\nline2"),
    ("DIFF_REF", "${A} $A"),
    ("DIFF_QUOTES", "'\"\\"),
    ("DIFF_UNICODE", "é 😀"),
    ("LC_ALL", "C.UTF-8"),
];

/// How a reader took a file: its values, or the first statement it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Values(BTreeMap<String, String>),
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Syntax { line: usize },
    NoValue { line: usize },
    InvalidKey { line: usize, key: String },
    Unreadable,
}

pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    environment: HashMap<String, String>,
    file: PathBuf,
}

impl Oracle {
    /// Starts the oracle, creating its venv first if this machine has none yet.
    pub fn start() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/python-venv"))
            .arg(PYTHON_DOTENV)
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/python-venv runs");
        assert!(out.status.success(), "scripts/python-venv {PYTHON_DOTENV} failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
        let python = stdout
            .lines()
            .last()
            .expect("the venv's python on the last line")
            .trim();
        let mut child = Command::new(python)
            // -I: no PYTHON* variables, user site or current folder on the path.
            .arg("-I")
            .arg(root.join("tests/dotenv_diff/oracle.py"))
            .env_clear()
            .envs(ENVIRONMENT.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the oracle starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = root.join("target/dotenv-diff").join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let mut oracle = Self {
            child,
            stdin,
            stdout,
            environment: HashMap::new(),
            file: dir.join("case.env"),
        };
        let version = oracle.call(&json!({"op": "version"}));
        assert_eq!(
            Some(version["version"].as_str().unwrap_or_default()),
            PYTHON_DOTENV.split("==").nth(1)
        );
        // What Python really has (it could add to what it was given): secretref parses with this.
        let environ = oracle.call(&json!({"op": "environ"}));
        oracle.environment = serde_json::from_value(environ["environ"].clone()).expect("a string map");
        oracle
    }

    fn call(&mut self, request: &Value) -> Value {
        writeln!(self.stdin, "{request}").expect("oracle request");
        self.stdin.flush().expect("oracle request");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("oracle answer");
        assert!(!line.is_empty(), "the oracle exited (see its stderr above)");
        serde_json::from_str(&line).expect("oracle answer is JSON")
    }

    /// How python-dotenv reads `path`.
    pub fn python(&mut self, path: &Path) -> Outcome {
        let answer = self.call(&json!({"op": "read", "path": path}));
        let refuse = &answer["refuse"];
        let line = || refuse["line"].as_u64().unwrap_or_default() as usize;
        match refuse["kind"].as_str() {
            None => Outcome::Values(serde_json::from_value(answer["values"].clone()).expect("string values")),
            Some("syntax") => Outcome::Refused(Refusal::Syntax { line: line() }),
            Some("no_value") => Outcome::Refused(Refusal::NoValue { line: line() }),
            Some("invalid_key") => Outcome::Refused(Refusal::InvalidKey {
                line: line(),
                key: refuse["key"].as_str().unwrap_or_default().to_string(),
            }),
            Some(_) => Outcome::Refused(Refusal::Unreadable),
        }
    }

    /// How secretref reads `path`, against the oracle's environment.
    pub fn secretref(&self, path: &Path) -> Outcome {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Outcome::Refused(Refusal::Unreadable);
        };
        let env = |name: &str| self.environment.get(name).map(OsString::from);
        match input::parse_dotenv("case.env", &text, &env) {
            Ok(data) => Outcome::Values(data.into_iter().map(|(k, v)| (k, v.expose().to_string())).collect()),
            Err(input::InputError::Dotenv { error, .. }) => Outcome::Refused(match error {
                DotenvError::Syntax { line } => Refusal::Syntax { line },
                DotenvError::NoValue { line } => Refusal::NoValue { line },
                DotenvError::InvalidKey { line, key } => Refusal::InvalidKey { line, key },
                DotenvError::NotUnicode { .. } => Refusal::Unreadable,
            }),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    /// Reads `text` as a file with both; `Err` describes a divergence.
    pub fn compare(&mut self, text: &str) -> Result<Outcome, String> {
        std::fs::write(&self.file, text).expect("write the case");
        let file = self.file.clone();
        compare_file(self, &file)
    }
}

/// Reads `path` with both; `Err` describes a divergence.
pub fn compare_file(oracle: &mut Oracle, path: &Path) -> Result<Outcome, String> {
    let python = oracle.python(path);
    let ours = oracle.secretref(path);
    if python == ours {
        Ok(python)
    } else {
        let text = std::fs::read(path).unwrap_or_default();
        Err(format!(
            "{}: {:?}\n  python-dotenv: {python:?}\n  secretref:     {ours:?}",
            path.display(),
            String::from_utf8_lossy(&text)
        ))
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
