//! The Modal-style secret model shared by every backend, the controller and the CLI: the naming
//! rules for secrets, environments and keys, and `SecretValue`, the type that keeps values out of
//! logs and `Debug` output.

use std::{collections::BTreeMap, fmt};

/// JSON-schema pattern of a secret name (kept in step with [`is_secret_name`] by a unit test).
pub const SECRET_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]{1,64}$";
/// JSON-schema pattern of an environment name (kept in step with [`is_environment_name`]).
pub const ENVIRONMENT_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// JSON-schema pattern of a key: a valid environment variable name (see [`is_env_key`]).
pub const ENV_KEY_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// JSON-schema pattern of a native Secret data key (see [`is_secret_data_key`]).
pub const SECRET_DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// JSON-schema pattern of a DNS-1123 subdomain, the rule for Secret names.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The environment a store uses when neither the SecretRef nor the store names one.
pub const DEFAULT_ENVIRONMENT: &str = "main";

fn secret_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A Modal-style secret name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn is_secret_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(secret_name_char)
}

/// An environment name: like a secret name, but starting with a letter or digit.
pub fn is_environment_name(s: &str) -> bool {
    is_secret_name(s) && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// A key that `envFrom` turns into an environment variable.
pub fn is_env_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A key the API server accepts in a Secret's `data`.
pub fn is_secret_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A DNS-1123 subdomain: the rule for Secret and most object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A secret value. It is deliberately not `Display`, and its `Debug` prints `<redacted>`, so a
/// value can only reach text through an explicit [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value. Every call site is a place where a value leaves the redacted world:
    /// only rendering the target Secret and writing to a backend should need it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// The keys and values of one Modal-style secret, or of a merge of several, ordered by key.
pub type SecretData = BTreeMap<String, SecretValue>;

/// Builds secret data from literal pairs (tests, tools and examples).
pub fn secret_data(pairs: &[(&str, &str)]) -> SecretData {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern_matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).expect("valid pattern").is_match(s)
    }

    /// The schema patterns (enforced by the API server) and the functions (enforced by the
    /// controller and CLI) must accept exactly the same strings.
    #[test]
    fn patterns_agree_with_functions() {
        let samples = [
            "",
            "a",
            "A",
            "0",
            "_",
            "-",
            ".",
            "..",
            "a.b",
            "a-b",
            "a_b",
            "-a",
            ".env",
            "_x",
            "9x",
            "x9",
            "API_KEY_1",
            "a b",
            "a/b",
            "é",
            "a$",
            &"a".repeat(64),
            &"a".repeat(65),
            &"b".repeat(253),
            &"b".repeat(254),
            "web-env",
            "Web",
            "a..b",
            "a.-b",
        ];
        for s in samples {
            assert_eq!(
                is_secret_name(s),
                pattern_matches(SECRET_NAME_PATTERN, s),
                "secret name {s:?}"
            );
            assert_eq!(
                is_environment_name(s),
                pattern_matches(ENVIRONMENT_PATTERN, s),
                "environment {s:?}"
            );
            assert_eq!(is_env_key(s), pattern_matches(ENV_KEY_PATTERN, s), "env key {s:?}");
            assert_eq!(
                is_dns_subdomain(s),
                pattern_matches(DNS_SUBDOMAIN_PATTERN, s) && s.len() <= 253,
                "dns {s:?}"
            );
            if s != "." && s != ".." && s.len() <= 253 {
                assert_eq!(
                    is_secret_data_key(s),
                    pattern_matches(SECRET_DATA_KEY_PATTERN, s),
                    "data key {s:?}"
                );
            }
        }
    }

    #[test]
    fn names_follow_the_modal_rules() {
        assert!(is_secret_name("api_key_1"));
        assert!(is_secret_name("-leading-dash-is-fine"));
        assert!(!is_secret_name(&"x".repeat(65)));
        assert!(is_environment_name("prod"));
        assert!(!is_environment_name("-prod"));
        assert!(is_env_key("STRIPE_KEY"));
        assert!(!is_env_key("1KEY"));
        assert!(!is_env_key("A-B"));
        assert!(is_secret_data_key(".env"));
        assert!(!is_secret_data_key(".."));
    }

    #[test]
    fn secret_value_debug_is_redacted() {
        let data: SecretData = [("K".to_string(), SecretValue::new("hunter2"))].into();
        let printed = format!("{data:?} {:?}", SecretValue::new("hunter2"));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
