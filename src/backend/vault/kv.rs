//! The KV version 2 layout secretref uses, and the pure decoding of Vault's answers: where a
//! Modal-style secret lives, what marks it as secretref's, which version is current, and whether
//! its data is a flat map of strings. No I/O, so it carries the unit tests.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use crate::{
    backend::SecretId,
    model::{SecretData, SecretValue, is_environment_name, is_secret_name},
};

/// `custom_metadata` key marking a KV secret as written by secretref.
pub const MANAGED_BY_KEY: &str = "managed-by";
pub const MANAGED_BY_VALUE: &str = "secretref";
/// `custom_metadata` keys holding the exact environment and secret name.
pub const ENVIRONMENT_KEY: &str = "secretref.dev/environment";
pub const NAME_KEY: &str = "secretref.dev/name";

/// Where a store's secrets live: `<mount>/{data,metadata,subkeys}/<prefix>/<environment>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub mount: String,
    /// Without slashes at either end; may be empty.
    pub prefix: String,
}

impl Layout {
    /// The secret's path below the mount's `data/` (and `metadata/`, `subkeys/`).
    pub fn secret_path(&self, id: &SecretId) -> String {
        let rest = format!("{}/{}", id.environment, encode_name(&id.name));
        if self.prefix.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    pub fn data(&self, id: &SecretId) -> String {
        format!("{}/data/{}", self.mount, self.secret_path(id))
    }

    pub fn metadata(&self, id: &SecretId) -> String {
        format!("{}/metadata/{}", self.mount, self.secret_path(id))
    }

    pub fn subkeys(&self, id: &SecretId) -> String {
        format!("{}/subkeys/{}", self.mount, self.secret_path(id))
    }

    /// The metadata folder listing the environments (no environment) or one environment's
    /// secrets, with the trailing slash Vault's LIST expects.
    pub fn folder(&self, environment: Option<&str>) -> String {
        let mut path = format!("{}/metadata/", self.mount);
        if !self.prefix.is_empty() {
            path.push_str(&self.prefix);
            path.push('/');
        }
        if let Some(env) = environment {
            path.push_str(env);
            path.push('/');
        }
        path
    }
}

/// A secret name as a path segment. Names are `[A-Za-z0-9._-]`, all safe in a Vault path, but a
/// segment of dots only (`.`, `..`, `...`) would be read as a relative path step: such names get
/// a leading `~`, which no name contains, so the mapping stays one-to-one.
pub fn encode_name(name: &str) -> String {
    if name.chars().all(|c| c == '.') {
        format!("~{name}")
    } else {
        name.to_string()
    }
}

/// The secret name a path segment holds, if it is one secretref could have written.
pub fn decode_name(segment: &str) -> Option<String> {
    let name = match segment.strip_prefix('~') {
        Some(dots) if !dots.is_empty() && dots.chars().all(|c| c == '.') => dots,
        Some(_) => return None,
        None if !segment.is_empty() && segment.chars().all(|c| c == '.') => return None,
        None => segment,
    };
    is_secret_name(name).then(|| name.to_string())
}

/// The environment a LIST entry (`prod/`) names, if it is a folder with a valid name.
pub fn decode_environment(entry: &str) -> Option<String> {
    let env = entry.strip_suffix('/')?;
    is_environment_name(env).then(|| env.to_string())
}

/// The `custom_metadata` secretref writes.
pub fn custom_metadata(id: &SecretId) -> BTreeMap<String, String> {
    [
        (MANAGED_BY_KEY, MANAGED_BY_VALUE),
        (ENVIRONMENT_KEY, id.environment.as_str()),
        (NAME_KEY, id.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Whether a KV secret at `id`'s path is `id`: its path says so, and its `custom_metadata`, when
/// it names a secret at all (one written with Vault's own tools may not), names the same one.
pub fn is_same_secret(custom: Option<&BTreeMap<String, String>>, id: &SecretId) -> bool {
    let Some(custom) = custom else { return true };
    custom.get(ENVIRONMENT_KEY).is_none_or(|e| *e == id.environment)
        && custom.get(NAME_KEY).is_none_or(|n| *n == id.name)
}

/// Whether `custom_metadata` already holds what secretref writes (so writing it is not needed).
pub fn has_marker(custom: Option<&BTreeMap<String, String>>, id: &SecretId) -> bool {
    let want = custom_metadata(id);
    custom.is_some_and(|c| want.iter().all(|(k, v)| c.get(k) == Some(v)))
}

/// The version string secretref reports: KV's version number and when that version was written.
/// The number alone is not enough: deleting a secret's metadata and writing it again starts
/// over at version 1, and change detection must not take the new version 1 for the old one.
pub fn version_string(number: u64, created_time: &str) -> String {
    format!("{number}@{created_time}")
}

/// Whether a version's `deletion_time` has passed (a future one is a scheduled deletion from
/// `delete_version_after`: the version still exists until then).
fn deleted(deletion_time: &str, now: Timestamp) -> bool {
    !deletion_time.is_empty() && deletion_time.parse::<Timestamp>().is_ok_and(|t| t <= now)
}

/// `GET <mount>/metadata/<path>` -> `data`.
#[derive(Debug, Deserialize)]
pub struct SecretMetadata {
    pub current_version: u64,
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionState>,
}

/// One entry of `versions` in a metadata answer.
#[derive(Debug, Deserialize)]
pub struct VersionState {
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub deletion_time: String,
    #[serde(default)]
    pub destroyed: bool,
}

impl SecretMetadata {
    /// The current version's number and version string, or None when there is no readable
    /// current version (never written, soft-deleted or destroyed).
    pub fn current(&self, now: Timestamp) -> Option<(u64, String)> {
        let state = self.versions.get(&self.current_version.to_string())?;
        if self.current_version == 0 || state.destroyed || deleted(&state.deletion_time, now) {
            return None;
        }
        Some((
            self.current_version,
            version_string(self.current_version, &state.created_time),
        ))
    }

    /// When the secret was first written.
    pub fn created(&self) -> Option<Timestamp> {
        self.created_time.parse().ok()
    }

    /// When the current version was written.
    pub fn updated(&self) -> Option<Timestamp> {
        self.versions
            .get(&self.current_version.to_string())
            .and_then(|v| v.created_time.parse().ok())
    }
}

/// `GET <mount>/data/<path>` -> `data`: the values (never printed) and the version.
#[derive(Deserialize)]
pub struct DataRead {
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    pub metadata: VersionMetadata,
}

impl std::fmt::Debug for DataRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataRead")
            .field("data", &"<redacted>")
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The `metadata` of a data read: the version read.
#[derive(Debug, Deserialize)]
pub struct VersionMetadata {
    pub version: u64,
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub deletion_time: String,
    #[serde(default)]
    pub destroyed: bool,
    #[serde(default)]
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

impl VersionMetadata {
    pub fn readable(&self, now: Timestamp) -> bool {
        self.version > 0 && !self.destroyed && !deleted(&self.deletion_time, now)
    }

    pub fn version_string(&self) -> String {
        version_string(self.version, &self.created_time)
    }
}

/// The key-value map of a data read, or why it is not a flat map of strings. The reason names
/// keys and JSON types, never a value.
pub fn flat_map(data: Option<serde_json::Value>) -> Result<SecretData, String> {
    let map = match data {
        Some(serde_json::Value::Object(map)) => map,
        Some(other) => return Err(format!("its data is {}, not a JSON object", json_type(&other))),
        None => return Err("it has no data".to_string()),
    };
    let mut out = SecretData::new();
    let mut wrong = Vec::new();
    for (key, value) in map {
        match value {
            serde_json::Value::String(s) => {
                out.insert(key, SecretValue::new(s));
            }
            other => wrong.push(format!("{key:?} holds {}", json_type(&other))),
        }
    }
    if wrong.is_empty() {
        Ok(out)
    } else {
        Err(format!("keys whose values are not strings: {}", wrong.join(", ")))
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `GET <mount>/subkeys/<path>?depth=1` -> `data`: the key names (values come back as null).
#[derive(Debug, Deserialize)]
pub struct Subkeys {
    #[serde(default)]
    pub subkeys: BTreeMap<String, serde_json::Value>,
}

/// `LIST` -> `data`.
#[derive(Debug, Deserialize)]
pub struct Listing {
    #[serde(default)]
    pub keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id(env: &str, name: &str) -> SecretId {
        SecretId::new(env, name)
    }

    #[test]
    fn paths() {
        let layout = Layout {
            mount: "secret".into(),
            prefix: "teams/a".into(),
        };
        assert_eq!(layout.data(&id("prod", "stripe")), "secret/data/teams/a/prod/stripe");
        assert_eq!(layout.metadata(&id("prod", "..")), "secret/metadata/teams/a/prod/~..");
        assert_eq!(layout.folder(None), "secret/metadata/teams/a/");
        assert_eq!(layout.folder(Some("prod")), "secret/metadata/teams/a/prod/");
        let bare = Layout {
            mount: "kv".into(),
            prefix: String::new(),
        };
        assert_eq!(bare.subkeys(&id("main", "a.b")), "kv/subkeys/main/a.b");
        assert_eq!(bare.folder(None), "kv/metadata/");
    }

    #[test]
    fn names_round_trip_and_stay_distinct() {
        let names = [".", "..", "...", ".env", "a..b", "-x", "_", "API"];
        let encoded: std::collections::BTreeSet<String> = names.iter().map(|n| encode_name(n)).collect();
        assert_eq!(encoded.len(), names.len());
        for n in names {
            assert_eq!(decode_name(&encode_name(n)).as_deref(), Some(n), "{n}");
            assert!(!matches!(encode_name(n).as_str(), "." | ".."), "{n}");
        }
        assert_eq!(decode_name("~x"), None);
        assert_eq!(decode_name("~"), None);
        assert_eq!(
            decode_name(".."),
            None,
            "written by someone else, not a name we map here"
        );
        assert_eq!(decode_name("a b"), None);
        assert_eq!(decode_environment("prod/").as_deref(), Some("prod"));
        assert_eq!(decode_environment("prod"), None, "a secret, not a folder");
        assert_eq!(decode_environment("-x/"), None);
    }

    #[test]
    fn flat_maps_only() {
        let data = flat_map(Some(json!({"A": "1", "B": ""}))).expect("flat");
        assert_eq!(data["A"].expose(), "1");
        assert_eq!(data.len(), 2);
        let why = flat_map(Some(json!({"A": "hunter2", "PORT": 5432, "N": {"x": "secret-ish"}}))).expect_err("nested");
        assert!(why.contains("\"PORT\" holds a number"), "{why}");
        assert!(why.contains("\"N\" holds an object"), "{why}");
        assert!(
            !why.contains("hunter2") && !why.contains("5432") && !why.contains("secret-ish"),
            "{why}"
        );
        assert!(flat_map(Some(json!("plain"))).expect_err("string").contains("a string"));
        assert!(flat_map(None).is_err());
    }

    fn metadata(value: serde_json::Value) -> SecretMetadata {
        serde_json::from_value(value).expect("metadata")
    }

    #[test]
    fn current_version_skips_deleted_and_destroyed() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let live = metadata(
            json!({"current_version": 2, "created_time": "2025-01-01T00:00:00Z", "custom_metadata": null,
            "versions": {"1": {"created_time": "2025-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                         "2": {"created_time": "2025-06-01T00:00:00.5Z", "deletion_time": "", "destroyed": false}}}),
        );
        assert_eq!(live.current(now), Some((2, "2@2025-06-01T00:00:00.5Z".to_string())));
        let soft = metadata(json!({"current_version": 1,
            "versions": {"1": {"created_time": "2025-01-01T00:00:00Z", "deletion_time": "2025-02-01T00:00:00Z", "destroyed": false}}}));
        assert_eq!(soft.current(now), None);
        let scheduled = metadata(json!({"current_version": 1,
            "versions": {"1": {"created_time": "2025-01-01T00:00:00Z", "deletion_time": "2027-01-01T00:00:00Z", "destroyed": false}}}));
        assert!(
            scheduled.current(now).is_some(),
            "a future deletion_time is not a deletion yet"
        );
        let destroyed = metadata(json!({"current_version": 1,
            "versions": {"1": {"created_time": "2025-01-01T00:00:00Z", "deletion_time": "", "destroyed": true}}}));
        assert_eq!(destroyed.current(now), None);
        let empty = metadata(json!({"current_version": 0, "versions": {}}));
        assert_eq!(empty.current(now), None);
    }

    #[test]
    fn markers() {
        let me = id("prod", "stripe");
        let ours = custom_metadata(&me);
        assert!(is_same_secret(Some(&ours), &me));
        assert!(has_marker(Some(&ours), &me));
        assert!(is_same_secret(None, &me), "written with Vault's own tools");
        assert!(!has_marker(None, &me));
        let other: BTreeMap<String, String> = [(NAME_KEY.to_string(), "Stripe".to_string())].into();
        assert!(!is_same_secret(Some(&other), &me));
    }
}
