//! Property tests of everything that turns untrusted text into secretref's data: JSON input,
//! `files` templates and rendering, store Secret decoding, and the target Secret built from a
//! spec. Each property holds for arbitrary input: no panic, exact round trips, and no value in
//! any error. (Dotenv parsing has its own differential properties in `ingest_props`.)
//!
//! 256 cases each in the suite; the long run (100,000 cases each, a few minutes):
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_props`. Failures found by a run
//! are kept in `tests/fuzz_props.proptest-regressions` and replayed first by every later run;
//! the ones worth naming are also plain tests at the end of this file.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use proptest::prelude::*;
use secretref::{
    api::{FileFormat, FileSpec, SecretRef},
    backend::kubernetes::{
        ENVIRONMENT_ANNOTATION, NAME_ANNOTATION, STORE_SECRET_LABEL, decode, object_name, secret_id,
    },
    cli::input::parse_json,
    desired::{MANAGED_BY, MANAGED_BY_LABEL, SECRETREF_LABEL, desired_secret},
    model::{SecretData, SecretValue, is_env_key},
    render::{self, render_files},
};

/// In every generated value: an error or a message that contains it has leaked a value.
const MARKER: &str = "q9VAL";

fn value() -> impl Strategy<Value = String> {
    // Any text (NUL, CRLF, emoji included), marked.
    "(?s).{0,24}".prop_map(|v| format!("{MARKER}{v}"))
}

fn env_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,10}"
}

fn data() -> impl Strategy<Value = SecretData> {
    proptest::collection::btree_map(env_key(), value(), 0..6)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, SecretValue::new(v))).collect())
}

/// Arbitrary JSON documents whose every string holds the marker.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        value().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("(?s).{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Template sources built from Jinja syntax, the data's keys, filters and loose characters.
fn template(keys: Vec<String>) -> impl Strategy<Value = String> {
    let key = if keys.is_empty() {
        Just("X".to_string()).boxed()
    } else {
        proptest::sample::select(keys).boxed()
    };
    let piece = prop_oneof![
        key.clone().prop_map(|k| format!("{{{{ {k} }}}}")),
        key.clone().prop_map(|k| format!("{{{{ {k}|upper }}}}")),
        key.clone().prop_map(|k| format!("{{{{ {k}|int }}}}")),
        key.clone().prop_map(|k| format!("{{{{ {k}[1:] ~ {k} }}}}")),
        key.clone().prop_map(|k| format!("{{{{ {k} * 3 }}}}")),
        key.clone()
            .prop_map(|k| format!("{{% if {k} %}}y{{% else %}}n{{% endif %}}")),
        key.prop_map(|k| format!("{{% for c in {k} %}}{{{{ c }}}}{{% endfor %}}")),
        Just("{{ MISSING }}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("%}".to_string()),
        Just("{% endfor %}".to_string()),
        Just("{{ range(10)|join(',') }}".to_string()),
        "[a-z|(). ,'\"0-9-]{0,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn store_secret(
    object: String,
    labelled: bool,
    annotations: Option<(String, String)>,
    data: BTreeMap<String, Vec<u8>>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(object),
            labels: labelled.then(|| [(STORE_SECRET_LABEL.to_string(), "true".to_string())].into()),
            annotations: annotations.map(|(environment, name)| {
                [
                    (NAME_ANNOTATION.to_string(), name),
                    (ENVIRONMENT_ANNOTATION.to_string(), environment),
                ]
                .into()
            }),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

fn secret_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn environment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

/// Store Secrets of every shape: at the right address or not, labelled or not, annotated as
/// themselves, as another secret or not at all, holding text or arbitrary bytes.
fn store_secrets() -> impl Strategy<Value = (String, String, Secret)> {
    (
        environment(),
        secret_name(),
        prop_oneof![Just(0u8), Just(1), Just(2)],
        any::<bool>(),
        prop_oneof![Just(0u8), Just(1), Just(2)],
        proptest::collection::btree_map(
            "[-._a-zA-Z0-9]{1,12}",
            prop_oneof![
                value().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| [MARKER.as_bytes(), &b].concat()),
            ],
            0..5,
        ),
    )
        .prop_map(|(environment, name, object_kind, labelled, annotated, data)| {
            let object = match object_kind {
                0 => object_name(&environment, &name),
                1 => object_name(&environment, &format!("{name}x")),
                _ => format!("hand-{}", name.to_lowercase().replace(['.', '_'], "-")),
            };
            let annotations = match annotated {
                0 => Some((environment.clone(), name.clone())),
                1 => Some((environment.clone(), format!("{name}y"))),
                _ => None,
            };
            let secret = store_secret(object, labelled, annotations, data);
            (environment, name, secret)
        })
}

fn secret_ref() -> impl Strategy<Value = SecretRef> {
    (
        "[a-z0-9]([-a-z0-9]{0,70}[a-z0-9])?",
        prop_oneof![Just("Owner"), Just("Merge"), Just("Orphan")],
        prop_oneof![Just("Delete"), Just("Retain")],
        prop_oneof![Just("Opaque".to_string()), "[a-z./-]{1,30}"],
        proptest::collection::btree_map("[a-z./-]{1,20}", "[a-z0-9]{0,10}", 0..3),
        proptest::collection::btree_map("[a-z./-]{1,20}", "(?s).{0,10}", 0..3),
    )
        .prop_map(|(name, policy, deletion, type_, labels, annotations)| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                "metadata": { "name": name, "namespace": "ns", "uid": "u-1" },
                "spec": { "secrets": [{ "name": "a" }],
                          "target": { "creationPolicy": policy, "deletionPolicy": deletion, "type": type_,
                                      "labels": labels, "annotations": annotations } }
            }))
            .expect("a SecretRef")
        })
}

fn no_marker(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!text.contains(MARKER), "a value in an error: {}", text);
    Ok(())
}

proptest! {
    /// JSON input: a flat object of strings is read exactly; anything else is an error that
    /// names no value; nothing panics.
    #[test]
    fn json_input_is_exact_or_refused_without_values(doc in json_value()) {
        let text = doc.to_string();
        match parse_json("in.json", &text) {
            Ok(parsed) => {
                let serde_json::Value::Object(map) = &doc else {
                    return Err(TestCaseError::fail("a non-object was accepted"));
                };
                prop_assert_eq!(parsed.len(), map.len());
                for (k, v) in map {
                    prop_assert!(is_env_key(k), "accepted key {:?}", k);
                    prop_assert_eq!(Some(parsed[k].expose()), v.as_str());
                }
            }
            Err(e) => no_marker(&e.to_string())?,
        }
    }

    #[test]
    fn json_input_never_panics(text in "(?s).{0,300}") {
        let _ = parse_json("in.json", &text);
    }

    /// Rendering: JSON files are a flat object that reads back exactly; each key's own
    /// template renders its value untouched.
    #[test]
    fn rendered_files_hold_the_values_exactly(d in data()) {
        let parsed: BTreeMap<String, String> = serde_json::from_str(&render::json(&d)).expect("valid JSON");
        prop_assert_eq!(parsed.len(), d.len());
        let files: Vec<FileSpec> = d
            .keys()
            .map(|k| FileSpec { key: format!("f.{k}"), format: FileFormat::Template, template: Some(format!("{{{{ {k} }}}}")) })
            .collect();
        let out = render_files(&files, &d).expect("plain substitutions render");
        for (k, v) in &d {
            prop_assert_eq!(parsed[k].as_str(), v.expose());
            prop_assert_eq!(out[&format!("f.{k}")].expose(), v.expose());
        }
    }

    /// Templates: arbitrary sources never panic, and an error never shows a value.
    #[test]
    fn templates_never_panic_nor_leak(
        (d, source) in data().prop_flat_map(|d| {
            let keys: Vec<String> = d.keys().cloned().collect();
            (Just(d), template(keys))
        })
    ) {
        let file = FileSpec { key: "t".into(), format: FileFormat::Template, template: Some(source) };
        if let Err(e) = render_files(&[file], &d) {
            no_marker(&e.to_string())?;
        }
    }

    /// Store Secrets: served only when secretref could have written them, byte for byte;
    /// otherwise refused with a reason that names no value; never panics.
    #[test]
    fn store_secrets_decode_exactly_or_are_refused((environment, name, secret) in store_secrets()) {
        let object = secret.metadata.name.clone().unwrap_or_default();
        let at_address = object == object_name(&environment, &name);
        match decode(&secret) {
            Ok(stored) => {
                prop_assert!(at_address, "served from {}", object);
                prop_assert_eq!(&stored.name, &name);
                prop_assert_eq!(&stored.environment, &environment);
                let raw = secret.data.as_ref().expect("data");
                prop_assert_eq!(stored.data.len(), raw.len());
                for (k, v) in raw {
                    prop_assert_eq!(stored.data[k].expose().as_bytes(), v.0.as_slice());
                }
            }
            Err(why) => no_marker(&why)?,
        }
        // Watches go by the address an object name encodes, and only a canonical one.
        match secret_id(&object) {
            Some(id) => prop_assert_eq!(object_name(&id.environment, &id.name), object),
            None => prop_assert!(!at_address, "no address for {}", object),
        }
    }

    #[test]
    fn object_names_invert(environment in environment(), name in secret_name()) {
        let id = secret_id(&object_name(&environment, &name)).expect("an address");
        prop_assert_eq!((id.environment, id.name), (environment, name));
    }

    /// The target Secret: exactly the data; secretref's labels present and winning; under
    /// Merge no type and nothing but secretref's own labels and annotations; an owner
    /// reference only for Owner with Delete; label values valid.
    #[test]
    fn desired_secrets_hold_exactly_the_data(sr in secret_ref(), d in data()) {
        let secret = desired_secret(&sr, &d, "hmac-sha256:x");
        let data = secret.data.clone().unwrap_or_default();
        prop_assert_eq!(data.len(), d.len());
        for (k, v) in &d {
            prop_assert_eq!(data[k].0.as_slice(), v.expose().as_bytes());
        }
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        prop_assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY));
        let ours = labels.get(SECRETREF_LABEL).expect("our label");
        prop_assert!(ours.len() <= 63 && ours.ends_with(|c: char| c.is_ascii_alphanumeric()), "label {}", ours);
        let target = &sr.spec.target;
        let merge = target.creation_policy == secretref::api::CreationPolicy::Merge;
        if merge {
            prop_assert_eq!(secret.type_, None);
            prop_assert_eq!(labels.len(), 2);
            prop_assert_eq!(secret.metadata.annotations.map(|a| a.len()), Some(1));
        } else {
            prop_assert_eq!(secret.type_.as_deref(), Some(target.r#type.as_str()));
        }
        let owned = secret.metadata.owner_references.is_some_and(|o| !o.is_empty());
        prop_assert_eq!(owned, secretref::desired::owns_target(&sr));
    }
}

// Regressions worth naming (the persisted seeds replay the rest).

#[test]
fn an_empty_json_object_is_no_keys() {
    assert_eq!(parse_json("in.json", "{}").expect("valid").len(), 0);
}

#[test]
fn a_template_error_on_a_value_does_not_show_it() {
    let d: SecretData = [("A".to_string(), SecretValue::new(format!("{MARKER}not-a-number")))].into();
    let file = FileSpec {
        key: "t".into(),
        format: FileFormat::Template,
        template: Some("{{ A|int }}{{ A + 1 }}{{ A.x.y }}".into()),
    };
    if let Err(e) = render_files(&[file], &d) {
        assert!(!e.to_string().contains(MARKER), "{e}");
    }
}
