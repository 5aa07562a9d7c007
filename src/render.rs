//! Renders `files` entries (dotenv, JSON, Jinja template) from the merged keys. Pure: no I/O.

use minijinja::{Environment, UndefinedBehavior};

use crate::{
    api::{FileFormat, FileSpec},
    error::SyncError,
    model::{SecretData, SecretValue},
};

/// Upper bound on template work, so a runaway loop fails instead of stalling the controller.
const TEMPLATE_FUEL: u64 = 100_000;

/// Renders every `files` entry; the result maps each file key to its content.
pub fn render_files(files: &[FileSpec], data: &SecretData) -> Result<SecretData, SyncError> {
    files
        .iter()
        .map(|file| Ok((file.key.clone(), render(file, data)?)))
        .collect()
}

fn render(file: &FileSpec, data: &SecretData) -> Result<SecretValue, SyncError> {
    Ok(SecretValue::new(match file.format {
        FileFormat::Dotenv => dotenv(data),
        FileFormat::Json => json(data),
        FileFormat::Template => template(&file.key, file.template.as_deref().unwrap_or_default(), data)?,
    }))
}

/// `KEY="value"` lines that python-dotenv, so Modal, reads back to exactly these values (see
/// [`crate::dotenv::write`]); the differential tests check the round trip through python-dotenv.
pub fn dotenv(data: &SecretData) -> String {
    crate::dotenv::write(data)
}

/// A flat JSON object of strings, keys sorted.
pub fn json(data: &SecretData) -> String {
    let map: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose().to_string())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn template(key: &str, source: &str, data: &SecretData) -> Result<String, SyncError> {
    let mut env = Environment::new();
    // A typo in a variable name must fail loudly, not render an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let context: std::collections::BTreeMap<String, String> =
        data.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
    env.render_str(source, context).map_err(|err| SyncError::Template {
        key: key.to_string(),
        message: describe(&err),
    })
}

/// The error's kind, detail and line: never the debug dump, which can show variable values.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::secret_data;

    fn file(key: &str, format: FileFormat, template: Option<&str>) -> FileSpec {
        FileSpec {
            key: key.into(),
            format,
            template: template.map(Into::into),
        }
    }

    #[test]
    fn json_is_a_flat_object() {
        let text = json(&secret_data(&[("B", "2"), ("A", "1\"")]));
        assert_eq!(text, r#"{"A":"1\"","B":"2"}"#);
    }

    #[test]
    fn templates_see_every_key() {
        let out = render_files(
            &[file("c.yaml", FileFormat::Template, Some("k: {{ STRIPE_KEY }}"))],
            &secret_data(&[("STRIPE_KEY", "sk")]),
        )
        .expect("renders");
        assert_eq!(out["c.yaml"].expose(), "k: sk");
    }

    #[test]
    fn template_errors_name_the_file_not_the_values() {
        let values = secret_data(&[("SECRET", "hunter2")]);
        let err = render_files(
            &[file("c", FileFormat::Template, Some("{{ SECRET }} {{ MISSING }}"))],
            &values,
        )
        .expect_err("undefined variable");
        assert_eq!(err.reason(), crate::api::Reason::TemplateError);
        let text = err.to_string();
        assert!(text.contains("files[c]"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = render_files(&[file("c", FileFormat::Template, Some("{% for x in "))], &values).expect_err("syntax");
        assert!(err.to_string().contains("syntax"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let err = render_files(
            &[file(
                "c",
                FileFormat::Template,
                Some("{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}"),
            )],
            &SecretData::new(),
        )
        .expect_err("fuel");
        assert_eq!(err.reason(), crate::api::Reason::TemplateError);
    }

    /// Templates a hostile spec can hold: each fails as TemplateError, quickly and without a
    /// large allocation (fuel pays for every byte a template makes), and never shows a value.
    #[test]
    fn hostile_templates_fail_fast_and_bounded() {
        let values = secret_data(&[("TOKEN", "hunter2-value")]);
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(5_000), ")".repeat(5_000));
        let hostile = [
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ TOKEN }}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d(TOKEN, 64) }}",
            "{{ TOKEN * 1000000000 }}",
            "{{ [TOKEN] * 1000000000 }}",
            "{{ '%999999999s'|format(TOKEN) }}",
            "{{ TOKEN|indent(1000000000) }}",
            "{{ TOKEN|center(1000000000) }}",
            "{{ range(1000000000)|list|length }}",
            "{{ (range(100000)|map('string')|join(TOKEN)) * 100 }}",
            "{{ TOKEN|replace('', TOKEN * 100000) }}",
            "{% set ns = namespace(s=TOKEN) %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "{% include '/etc/passwd' %}",
            "{% from '/proc/self/environ' import x %}{{ x }}",
            "{% extends '/etc/hosts' %}",
            &deep,
        ];
        for template in hostile {
            let started = std::time::Instant::now();
            let err = render_files(&[file("t", FileFormat::Template, Some(template))], &values)
                .expect_err(&format!("refused: {}", &template[..template.len().min(80)]));
            assert_eq!(err.reason(), crate::api::Reason::TemplateError, "{template:.80}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{template:.80} took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn a_large_value_renders_within_the_fuel() {
        let big = "x".repeat(1024 * 1024);
        let out = render_files(
            &[file("t", FileFormat::Template, Some("cert: {{ CERT }}"))],
            &secret_data(&[("CERT", &big)]),
        )
        .expect("a 1 MiB value renders");
        assert_eq!(out["t"].len(), big.len() + 6);
    }
}
