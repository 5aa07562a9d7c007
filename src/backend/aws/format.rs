//! How a Modal-style secret is kept in AWS Secrets Manager: its AWS name
//! (`<prefix>/<environment>/<name>`), the tags that mark it as secretref's, and its
//! SecretString, a flat JSON object of key -> string. Pure: no I/O, unit-tested here.

use crate::model::{SecretData, SecretValue, is_environment_name, is_secret_name};

/// Tag naming the program that wrote the secret.
pub const MANAGED_BY_TAG: &str = "app.kubernetes.io/managed-by";
/// Tag holding the exact environment.
pub const ENVIRONMENT_TAG: &str = "secretref.dev/environment";
/// Tag holding the exact Modal-style secret name.
pub const NAME_TAG: &str = "secretref.dev/name";

/// The AWS secret name of (environment, name). Neither part may hold a `/`, so the name maps
/// back unambiguously.
pub fn aws_name(prefix: &str, environment: &str, name: &str) -> String {
    format!("{prefix}/{environment}/{name}")
}

/// The (environment, name) of an AWS secret name under `prefix`, if it is one of ours.
pub fn parse_aws_name<'a>(prefix: &str, aws_name: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = aws_name.strip_prefix(prefix)?.strip_prefix('/')?;
    let (environment, name) = rest.split_once('/')?;
    (is_environment_name(environment) && is_secret_name(name)).then_some((environment, name))
}

/// The tags written with a secret.
pub fn tags(environment: &str, name: &str) -> [(&'static str, String); 3] {
    [
        (MANAGED_BY_TAG, "secretref".to_string()),
        (ENVIRONMENT_TAG, environment.to_string()),
        (NAME_TAG, name.to_string()),
    ]
}

/// The SecretString of `data`: a flat JSON object, keys sorted.
pub fn encode(data: &SecretData) -> String {
    let object: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose().to_string())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Reads a SecretString back. `Err` says why it is not a flat JSON object of strings, naming
/// keys and JSON types only, never a value.
pub fn decode(secret_string: &str) -> Result<SecretData, String> {
    let value: serde_json::Value = serde_json::from_str(secret_string).map_err(|e| {
        // serde_json's messages give a position, not the text: safe to show.
        format!("its SecretString is not JSON ({})", e.classify_name())
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "its SecretString is a JSON {}, not an object",
            type_name(&value)
        ));
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => Ok((key, SecretValue::new(s))),
            other => Err(format!("key {key:?} holds a JSON {}, not a string", type_name(&other))),
        })
        .collect()
}

fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Names serde_json's error categories (its `Display` could in principle echo input).
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::secret_data;

    #[test]
    fn names_round_trip() {
        let name = aws_name("secretref", "prod", "Stripe.key-1");
        assert_eq!(name, "secretref/prod/Stripe.key-1");
        assert_eq!(parse_aws_name("secretref", &name), Some(("prod", "Stripe.key-1")));
        assert_eq!(
            parse_aws_name("team/a", &aws_name("team/a", "main", "x")),
            Some(("main", "x"))
        );
        assert_eq!(parse_aws_name("secretref", "secretref/prod"), None);
        assert_eq!(
            parse_aws_name("secretref", "secretref/prod/a/b"),
            None,
            "a slash in a name"
        );
        assert_eq!(parse_aws_name("secretref", "secretrefx/prod/a"), None, "another prefix");
        assert_eq!(
            parse_aws_name("secretref", "secretref/-prod/a"),
            None,
            "not an environment"
        );
    }

    #[test]
    fn values_round_trip_and_never_appear_in_errors() {
        let data = secret_data(&[("A", "1"), ("B", "two words \"quoted\" \n newline"), ("C", "")]);
        let text = encode(&data);
        let back = decode(&text).expect("decodes");
        assert_eq!(back, data);

        for (input, why) in [
            ("hunter2", "not JSON"),
            ("\"hunter2\"", "JSON string, not an object"),
            ("[\"hunter2\"]", "JSON array, not an object"),
            ("{\"K\": {\"inner\": \"hunter2\"}}", "key \"K\" holds a JSON object"),
            ("{\"K\": 12345}", "key \"K\" holds a JSON number"),
            ("{\"K\": \"hunter2\"", "not JSON (truncated)"),
        ] {
            let err = decode(input).expect_err(input);
            assert!(err.contains(why), "{input}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("12345"), "{err}");
        }
    }
}
