//! The pure core of a sync: merge the secrets read, take `keys` subsets, check `requiredKeys`,
//! add rendered `files`, and build the target Secret. No I/O, so it carries most unit tests.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, api::ObjectMeta};

use crate::{
    api::{CreationPolicy, DeletionPolicy, SecretRef, SecretRefSpec, SourceStatus},
    backend::StoredSecret,
    error::SyncError,
    model::{SecretData, is_env_key, is_secret_data_key},
    render::render_files,
};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "secretref";
pub const SECRETREF_LABEL: &str = "secretref.dev/secretref";
pub const DATA_HASH_ANNOTATION: &str = "secretref.dev/data-hash";
/// The most a Secret's data may hold (the API server's own limit).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// The result of merging the secrets a SecretRef asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// Every key of the target: merged keys plus rendered files.
    pub data: SecretData,
    /// What was read, in spec order, with versions.
    pub sources: Vec<SourceStatus>,
    /// Keys that are valid Secret keys but not environment variable names: `envFrom` skips
    /// them, so they earn a warning, not a failure.
    pub not_env_keys: Vec<String>,
}

/// Merges `reads` (one per `spec.secrets` entry, in order; `None` = the secret does not exist)
/// and renders `files`. `store` and `environment` only name things in errors.
pub fn merge(
    spec: &SecretRefSpec,
    reads: Vec<Option<StoredSecret>>,
    store: &str,
    environment: &str,
) -> Result<Merged, SyncError> {
    let mut data = SecretData::new();
    let mut sources = Vec::with_capacity(spec.secrets.len());
    for (source, read) in spec.secrets.iter().zip(reads) {
        let Some(secret) = read else {
            if source.optional {
                sources.push(SourceStatus {
                    name: source.name.clone(),
                    version: None,
                });
                continue;
            }
            return Err(SyncError::SecretNotFound {
                store: store.to_string(),
                environment: environment.to_string(),
                name: source.name.clone(),
            });
        };
        sources.push(SourceStatus {
            name: source.name.clone(),
            version: Some(secret.version),
        });
        for (key, value) in secret.data {
            // Later secrets override earlier ones: plain insertion in list order does it.
            if source.keys.as_ref().is_none_or(|keys| keys.contains(&key)) {
                data.insert(key, value);
            }
        }
    }

    let missing: Vec<String> = spec
        .required_keys
        .iter()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(SyncError::MissingRequiredKeys { keys: missing });
    }
    let invalid: Vec<String> = data.keys().filter(|k| !is_secret_data_key(k)).cloned().collect();
    if !invalid.is_empty() {
        return Err(SyncError::InvalidKeys { keys: invalid });
    }
    let not_env_keys = data.keys().filter(|k| !is_env_key(k)).cloned().collect();

    let files = render_files(&spec.files, &data)?;
    // A file key wins over a merged key of the same name: the user asked for that file.
    data.extend(files);
    Ok(Merged {
        data,
        sources,
        not_env_keys,
    })
}

/// Total bytes of a Secret's values, the figure the API server limits to 1 MiB.
pub fn data_size(data: &SecretData) -> usize {
    data.values().map(|v| v.len()).sum()
}

/// Labels on every Secret the operator writes. Label values hold at most 63 characters, so a
/// longer SecretRef name is shortened with a hash suffix (still unique).
pub fn target_labels(secret_ref_name: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (SECRETREF_LABEL.to_string(), label_value(secret_ref_name)),
    ]
    .into()
}

fn label_value(name: &str) -> String {
    if name.len() <= 63 && name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return name.to_string();
    }
    use sha2::Digest;
    let digest = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(name.as_bytes()));
    let prefix: String = name.chars().take(52).collect();
    format!(
        "{}-{}",
        prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()),
        &digest[..10]
    )
}

/// Whether the target carries a controller ownerReference (and so is garbage-collected with
/// the SecretRef): only for creationPolicy Owner with deletionPolicy Delete.
pub fn owns_target(sr: &SecretRef) -> bool {
    sr.spec.target.creation_policy == CreationPolicy::Owner && sr.spec.target.deletion_policy == DeletionPolicy::Delete
}

/// The Secret to server-side apply. Under `Merge` it holds only secretref's keys and labels, so
/// the apply touches nothing else in the existing Secret.
pub fn desired_secret(sr: &SecretRef, data: &SecretData, data_hash: &str) -> Secret {
    let name = sr.metadata.name.clone().unwrap_or_default();
    let target = &sr.spec.target;
    let merge = target.creation_policy == CreationPolicy::Merge;
    let mut labels = if merge { BTreeMap::new() } else { target.labels.clone() };
    labels.extend(target_labels(&name));
    let mut annotations = if merge {
        BTreeMap::new()
    } else {
        target.annotations.clone()
    };
    annotations.insert(DATA_HASH_ANNOTATION.to_string(), data_hash.to_string());
    let owner_references = owns_target(sr)
        .then(|| sr.controller_owner_ref(&()))
        .flatten()
        .map(|r| vec![r]);
    Secret {
        metadata: ObjectMeta {
            name: Some(sr.target_name()),
            namespace: sr.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec())))
                .collect(),
        ),
        // The type of an existing Secret is immutable and not ours to set under Merge.
        type_: (!merge).then(|| target.r#type.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{FileFormat, FileSpec, SecretSource, Target},
        model::SecretValue,
    };

    fn stored(name: &str, version: &str, pairs: &[(&str, &str)]) -> Option<StoredSecret> {
        Some(StoredSecret {
            name: name.into(),
            environment: "main".into(),
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
                .collect(),
            version: version.into(),
            created: None,
            updated: None,
        })
    }

    fn source(name: &str) -> SecretSource {
        SecretSource {
            name: name.into(),
            keys: None,
            optional: false,
        }
    }

    fn spec(secrets: Vec<SecretSource>) -> SecretRefSpec {
        SecretRefSpec {
            store_ref: None,
            environment: None,
            secrets,
            required_keys: vec![],
            target: Target::default(),
            files: vec![],
            refresh_interval: std::time::Duration::from_secs(60).into(),
            rollout_restart: vec![],
        }
    }

    fn values(m: &Merged) -> Vec<(&str, &str)> {
        m.data.iter().map(|(k, v)| (k.as_str(), v.expose())).collect()
    }

    #[test]
    fn later_secrets_win_and_order_is_kept_in_sources() {
        let m = merge(
            &spec(vec![source("a"), source("b")]),
            vec![
                stored("a", "1", &[("X", "a"), ("Y", "a")]),
                stored("b", "7", &[("Y", "b"), ("Z", "b")]),
            ],
            "store",
            "main",
        )
        .expect("merges");
        assert_eq!(values(&m), [("X", "a"), ("Y", "b"), ("Z", "b")]);
        assert_eq!(
            m.sources,
            [
                SourceStatus {
                    name: "a".into(),
                    version: Some("1".into())
                },
                SourceStatus {
                    name: "b".into(),
                    version: Some("7".into())
                }
            ]
        );
    }

    #[test]
    fn keys_subsets_and_optional_secrets() {
        let mut s = spec(vec![source("a"), source("b"), source("gone")]);
        s.secrets[0].keys = Some(vec!["X".into()]);
        s.secrets[2].optional = true;
        let m = merge(
            &s,
            vec![
                stored("a", "1", &[("X", "1"), ("Y", "1")]),
                stored("b", "2", &[("Z", "2")]),
                None,
            ],
            "st",
            "main",
        )
        .expect("merges");
        assert_eq!(values(&m), [("X", "1"), ("Z", "2")]);
        assert_eq!(
            m.sources[2],
            SourceStatus {
                name: "gone".into(),
                version: None
            }
        );
    }

    #[test]
    fn a_missing_secret_fails_naming_it() {
        let err = merge(
            &spec(vec![source("a"), source("nope")]),
            vec![stored("a", "1", &[]), None],
            "ClusterSecretStore/x",
            "prod",
        )
        .expect_err("missing");
        assert_eq!(err.reason(), crate::api::Reason::SecretNotFound);
        assert!(
            err.to_string().contains("\"nope\"") && err.to_string().contains("prod"),
            "{err}"
        );
    }

    #[test]
    fn required_keys_list_every_missing_key() {
        let mut s = spec(vec![source("a")]);
        s.required_keys = vec!["A".into(), "B".into(), "C".into()];
        let err = merge(&s, vec![stored("a", "1", &[("B", "secret-b")])], "st", "main").expect_err("missing");
        assert_eq!(err.reason(), crate::api::Reason::MissingRequiredKeys);
        assert_eq!(err.to_string(), "required keys missing after the merge: A, C");
    }

    #[test]
    fn invalid_and_non_env_keys() {
        let err = merge(
            &spec(vec![source("a")]),
            vec![stored("a", "1", &[("bad key", "v")])],
            "st",
            "main",
        )
        .expect_err("invalid");
        assert_eq!(err.reason(), crate::api::Reason::InvalidKeys);
        let m = merge(
            &spec(vec![source("a")]),
            vec![stored("a", "1", &[("tls.crt", "v"), ("OK", "v")])],
            "st",
            "main",
        )
        .expect("valid");
        assert_eq!(m.not_env_keys, ["tls.crt"]);
    }

    #[test]
    fn files_are_added_after_the_merge() {
        let mut s = spec(vec![source("a")]);
        s.files = vec![FileSpec {
            key: ".env".into(),
            format: FileFormat::Dotenv,
            template: None,
        }];
        let m = merge(&s, vec![stored("a", "1", &[("A", "1")])], "st", "main").expect("merges");
        assert_eq!(values(&m), [(".env", "A=\"1\"\n"), ("A", "1")]);
    }

    #[test]
    fn long_names_make_valid_distinct_labels() {
        let a = label_value(&"a".repeat(100));
        let b = label_value(&format!("{}b", "a".repeat(99)));
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        assert_eq!(label_value("web"), "web");
    }
}
