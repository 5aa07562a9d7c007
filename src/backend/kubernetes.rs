//! The embedded `kubernetes` backend: each Modal-style secret is one native Secret in the
//! store namespace. The object name is a reversible encoding of (environment, name), so names
//! round-trip exactly, differ only in case without colliding, and environments stay apart.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PartialObjectMeta, PostParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};

use super::{BackendError, Change, SecretBackend, SecretId, SecretSummary, StoredSecret};
use crate::model::{SecretData, SecretValue};

/// Label on every store Secret (and the selector `list` and watches use).
pub const STORE_SECRET_LABEL: &str = "secretref.dev/store-secret";
/// Annotation holding the exact secret name.
pub const NAME_ANNOTATION: &str = "secretref.dev/name";
/// Annotation holding the exact environment name.
pub const ENVIRONMENT_ANNOTATION: &str = "secretref.dev/environment";
/// Annotation holding when the secret's data was last replaced.
pub const UPDATED_ANNOTATION: &str = "secretref.dev/updated-at";

/// The Secret name of (environment, name): `s` + lowercase base32 of `environment/name`.
/// Base32 (a-z, 2-7) is a valid DNS label alphabet, `/` appears in neither part, and the
/// encoding is injective, so distinct pairs never share an object. At most 208 characters.
pub fn object_name(environment: &str, name: &str) -> String {
    let raw = format!("{environment}/{name}");
    format!(
        "s{}",
        data_encoding::BASE32_NOPAD.encode(raw.as_bytes()).to_ascii_lowercase()
    )
}

#[derive(Clone)]
pub struct KubernetesBackend {
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    client: Client,
    api: Api<Secret>,
    namespaces: Api<Namespace>,
    namespace: String,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl KubernetesBackend {
    pub fn new(client: Client, namespace: &str) -> Self {
        KubernetesBackend {
            metrics: None,
            api: Api::namespaced(client.clone(), namespace),
            client: client.clone(),
            namespaces: Api::all(client),
            namespace: namespace.to_string(),
        }
    }

    /// Counts this backend's API calls in `metrics` (`secretref_backend_calls_total`).
    pub fn with_metrics(mut self, metrics: Option<std::sync::Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    fn count(&self, operation: &'static str) {
        if let Some(m) = &self.metrics {
            m.backend_call("kubernetes", operation);
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Maps a client error to a backend error that names the namespace, never a value.
    fn unavailable(&self, what: &str, err: kube::Error) -> BackendError {
        let detail = match &err {
            kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
            other => other.to_string(),
        };
        BackendError::Unavailable(format!("{what} in store namespace {:?}: {detail}", self.namespace))
    }

    fn secret(&self, environment: &str, name: &str, data: &SecretData) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(object_name(environment, name)),
                namespace: Some(self.namespace.clone()),
                labels: Some([(STORE_SECRET_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [
                        (NAME_ANNOTATION.to_string(), name.to_string()),
                        (ENVIRONMENT_ANNOTATION.to_string(), environment.to_string()),
                        (UPDATED_ANNOTATION.to_string(), Timestamp::now().to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec())))
                    .collect(),
            ),
            type_: Some("Opaque".to_string()),
            ..Default::default()
        }
    }
}

/// The identity of the kubernetes store over `namespace` (see `SecretBackend::identity`).
pub fn identity(namespace: &str) -> String {
    format!("kubernetes/{namespace}")
}

/// Reads a store Secret back into a Modal-style secret. Anything secretref could not have
/// written is refused, with why (naming the object and keys, never a value), rather than served
/// half-understood: a Secret without the store label (its changes would go unnoticed), without
/// the name and environment annotations, whose annotations name a secret that lives under
/// another object name (it must never be served as that secret), or with a value that is not
/// UTF-8 text (serving it lossily would put a value in the target that the store never held).
pub fn decode(secret: &Secret) -> Result<StoredSecret, String> {
    let object = secret.metadata.name.as_deref().unwrap_or_default();
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(STORE_SECRET_LABEL))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Err(format!(
            "its Secret {object:?} lacks the label {STORE_SECRET_LABEL}=true, so it was not written by secretref"
        ));
    }
    let annotation = |key: &str| secret.metadata.annotations.as_ref().and_then(|a| a.get(key));
    let (Some(name), Some(environment)) = (annotation(NAME_ANNOTATION), annotation(ENVIRONMENT_ANNOTATION)) else {
        return Err(format!(
            "its Secret {object:?} lacks the {NAME_ANNOTATION} or {ENVIRONMENT_ANNOTATION} annotation"
        ));
    };
    if object_name(environment, name) != object {
        return Err(format!(
            "its Secret {object:?} is annotated as secret {name:?} of environment {environment:?}, \
             which lives under another name: ignored"
        ));
    }
    let mut data = SecretData::new();
    for (key, value) in secret.data.iter().flatten() {
        let text = String::from_utf8(value.0.clone())
            .map_err(|_| format!("the value of key {key:?} in its Secret {object:?} is not UTF-8 text"))?;
        data.insert(key.clone(), SecretValue::new(text));
    }
    let created = secret.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let updated = annotation(UPDATED_ANNOTATION).and_then(|t| t.parse().ok()).or(created);
    Ok(StoredSecret {
        name: name.clone(),
        environment: environment.clone(),
        data,
        version: secret.metadata.resource_version.clone().unwrap_or_default(),
        created,
        updated,
    })
}

/// The secret whose address a store Secret's object name is: the inverse of [`object_name`].
/// Changes are reported by this, not by annotations, so an object at a secret's address that
/// was edited by hand (its annotations removed, say) still reports that secret as changed, and
/// then fails to decode; and an object under any other name never stands for a secret.
pub fn secret_id(object: &str) -> Option<SecretId> {
    let encoded = object.strip_prefix('s')?.to_ascii_uppercase();
    let raw = data_encoding::BASE32_NOPAD.decode(encoded.as_bytes()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (environment, name) = raw.split_once('/')?;
    // Only the canonical spelling counts: one address, one object name.
    (object_name(environment, name) == object).then(|| SecretId::new(environment, name))
}

/// Turns the watch of one store namespace into changes. A re-list (after the watch expired)
/// reports every secret again and, as deleted, those that disappeared meanwhile.
#[derive(Default)]
struct Follow {
    known: HashMap<String, SecretId>,
    relisted: Option<HashMap<String, SecretId>>,
}

impl Follow {
    fn changes(&mut self, event: watcher::Event<PartialObjectMeta<Secret>>) -> Vec<Change> {
        let seen = |s: &PartialObjectMeta<Secret>| secret_id(&s.name_any()).map(|id| (s.name_any(), id));
        match event {
            watcher::Event::Apply(s) => seen(&s)
                .map(|(object, id)| {
                    self.known.insert(object, id.clone());
                    vec![Change {
                        id,
                        version: s.resource_version(),
                    }]
                })
                .unwrap_or_default(),
            watcher::Event::Delete(s) => self
                .known
                .remove(&s.name_any())
                .map(|id| vec![Change { id, version: None }])
                .unwrap_or_default(),
            watcher::Event::Init => {
                self.relisted = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(s) => match (seen(&s), self.relisted.as_mut()) {
                (Some((object, id)), Some(relisted)) => {
                    relisted.insert(object, id.clone());
                    vec![Change {
                        id,
                        version: s.resource_version(),
                    }]
                }
                _ => Vec::new(),
            },
            watcher::Event::InitDone => {
                let relisted = self.relisted.take().unwrap_or_default();
                let gone = self
                    .known
                    .iter()
                    .filter(|(object, _)| !relisted.contains_key(*object))
                    .map(|(_, id)| Change {
                        id: id.clone(),
                        version: None,
                    })
                    .collect();
                self.known = relisted;
                gone
            }
        }
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

#[async_trait]
impl SecretBackend for KubernetesBackend {
    async fn get(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, BackendError> {
        self.count("get");
        let secret = self
            .api
            .get_opt(&object_name(environment, name))
            .await
            .map_err(|e| self.unavailable(&format!("reading secret {name:?} (environment {environment:?})"), e))?;
        // An object at this secret's address that secretref could not have written is never
        // served (as this secret or another): the sync fails with InvalidSecret, saying why.
        secret
            .as_ref()
            .map(decode)
            .transpose()
            .map_err(|why| BackendError::Invalid {
                environment: environment.to_string(),
                name: name.to_string(),
                why,
            })
    }

    async fn list(&self, environment: Option<&str>) -> Result<Vec<SecretSummary>, BackendError> {
        self.count("list");
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{STORE_SECRET_LABEL}=true")))
            .await
            .map_err(|e| self.unavailable("listing secrets", e))?;
        let mut out: Vec<SecretSummary> = list
            .items
            .iter()
            // Objects that are not secretref's (see `decode`) are not listed as secrets.
            .filter_map(|s| decode(s).ok())
            .filter(|s| environment.is_none_or(|e| s.environment == e))
            .map(|s| SecretSummary::from(&s))
            .collect();
        out.sort_by(|a, b| (&a.environment, &a.name).cmp(&(&b.environment, &b.name)));
        Ok(out)
    }

    async fn create(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        match self
            .api
            .create(&PostParams::default(), &self.secret(environment, name, &data))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Err(BackendError::AlreadyExists {
                name: name.to_string(),
                environment: environment.to_string(),
            }),
            Err(e) => Err(self.unavailable(&format!("creating secret {name:?}"), e)),
        }
    }

    async fn replace(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let object = object_name(environment, name);
        let what = format!("replacing secret {name:?}");
        let mut desired = self.secret(environment, name, &data);
        match self
            .api
            .get_opt(&object)
            .await
            .map_err(|e| self.unavailable(&what, e))?
        {
            None => return self.create(environment, name, data).await,
            Some(existing) => {
                // A PUT with the resourceVersion we read: one atomic write of the whole data
                // (keys not given are gone), refused if someone changed it in between.
                desired.metadata.resource_version = existing.metadata.resource_version;
                desired.metadata.creation_timestamp = existing.metadata.creation_timestamp;
            }
        }
        self.api
            .replace(&object, &PostParams::default(), &desired)
            .await
            .map_err(|e| self.unavailable(&what, e))?;
        Ok(())
    }

    async fn delete(&self, environment: &str, name: &str) -> Result<(), BackendError> {
        let object = object_name(environment, name);
        let what = format!("deleting secret {name:?}");
        let Some(existing) = self
            .api
            .get_opt(&object)
            .await
            .map_err(|e| self.unavailable(&what, e))?
        else {
            return Err(BackendError::NotFound {
                name: name.to_string(),
                environment: environment.to_string(),
            });
        };
        // Delete exactly what we looked at (never a same-named object created meanwhile).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.metadata.uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&object, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(BackendError::NotFound {
                name: name.to_string(),
                environment: environment.to_string(),
            }),
            Err(e) => Err(self.unavailable(&what, e)),
        }
    }

    fn identity(&self) -> String {
        identity(&self.namespace)
    }

    /// One metadata-only watch of the store namespace's labelled Secrets: never a watch of
    /// Secrets anywhere else, so a labelled Secret in another namespace is invisible.
    fn watch(&self) -> Option<BoxStream<'static, Change>> {
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels(&format!("{STORE_SECRET_LABEL}=true"));
        let namespace = self.namespace.clone();
        let mut follow = Follow::default();
        let changes = watcher(api, config).default_backoff().flat_map(move |event| {
            let changes = match event {
                Ok(event) => follow.changes(event),
                Err(e) => {
                    tracing::warn!(namespace = %namespace, error = %e, "watch of store secrets failed, retrying");
                    Vec::new()
                }
            };
            futures::stream::iter(changes)
        });
        Some(changes.boxed())
    }

    async fn check(&self) -> Result<(), BackendError> {
        // Listing succeeds in a namespace that does not exist, so ask for the namespace first.
        // An identity that may not read namespaces skips that part of the check.
        match self.namespaces.get_opt(&self.namespace).await {
            Ok(None) => {
                return Err(BackendError::Misconfigured(format!(
                    "store namespace {:?} does not exist",
                    self.namespace
                )));
            }
            Ok(Some(_)) => {}
            Err(e) if is_status(&e, 403) => {}
            Err(e) => return Err(self.unavailable("reading the store namespace", e)),
        }
        let params = ListParams::default()
            .labels(&format!("{STORE_SECRET_LABEL}=true"))
            .limit(1);
        self.api
            .list_metadata(&params)
            .await
            .map(drop)
            .map_err(|e| self.unavailable("listing secrets", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(object: &str, environment: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": object, "namespace": "store", "resourceVersion": rv,
                "annotations": { NAME_ANNOTATION: name, ENVIRONMENT_ANNOTATION: environment },
            }
        }))
        .expect("metadata")
    }

    #[test]
    fn the_watch_reports_changes_deletions_and_what_a_relist_misses() {
        let mut f = Follow::default();
        let a = object_name("main", "a");
        let b = object_name("main", "b");
        let change = |name: &str, v: Option<&str>| Change {
            id: SecretId::new("main", name),
            version: v.map(str::to_string),
        };
        assert_eq!(
            f.changes(watcher::Event::Apply(meta(&a, "main", "a", "1"))),
            [change("a", Some("1"))]
        );
        f.changes(watcher::Event::Apply(meta(&b, "main", "b", "2")));
        assert_eq!(
            f.changes(watcher::Event::Delete(meta(&b, "main", "b", "3"))),
            [change("b", None)]
        );
        f.changes(watcher::Event::Apply(meta(&b, "main", "b", "4")));
        // The watch expires; while it was down `a` was deleted.
        f.changes(watcher::Event::Init);
        assert_eq!(
            f.changes(watcher::Event::InitApply(meta(&b, "main", "b", "5"))),
            [change("b", Some("5"))]
        );
        assert_eq!(f.changes(watcher::Event::InitDone), [change("a", None)]);
    }

    #[test]
    fn a_store_secret_stands_only_for_the_secret_its_name_encodes() {
        let a = object_name("main", "a");
        let mut f = Follow::default();
        let change_of_a = |v: &str| {
            [Change {
                id: SecretId::new("main", "a"),
                version: Some(v.to_string()),
            }]
        };
        // Annotations naming another secret: a change of `a` (whose read then refuses the
        // object), never of `other`.
        assert_eq!(
            f.changes(watcher::Event::Apply(meta(&a, "main", "other", "1"))),
            change_of_a("1")
        );
        assert!(
            f.changes(watcher::Event::Apply(meta("hand-made", "main", "a", "2")))
                .is_empty(),
            "an object under another name never stands for a secret"
        );
        // An edit that drops the annotations is still a change of `a`: its SecretRefs learn
        // that it can no longer be read, instead of keeping a value the store no longer has.
        let mut bare = meta(&a, "main", "a", "3");
        bare.metadata.annotations = None;
        assert_eq!(f.changes(watcher::Event::Apply(bare)), change_of_a("3"));
    }

    #[test]
    fn object_names_are_valid_and_distinct() {
        let pairs = [
            ("main", "stripe"),
            ("main", "Stripe"),
            ("main", "STRIPE"),
            ("prod", "stripe"),
            ("ma", "in/stripe"),
        ];
        let names: std::collections::BTreeSet<String> = pairs.iter().map(|(e, n)| object_name(e, n)).collect();
        assert_eq!(names.len(), pairs.len(), "{names:?}");
        for n in &names {
            assert!(crate::model::is_dns_subdomain(n), "{n}");
        }
        let longest = object_name(&"e".repeat(64), &"N".repeat(64));
        assert!(
            longest.len() <= 253 && crate::model::is_dns_subdomain(&longest),
            "{longest}"
        );
    }

    fn store_secret(object: &str, annotations: &[(&str, &str)], data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(object.to_string()),
                labels: Some([(STORE_SECRET_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn secret_ids_invert_object_names() {
        for (e, n) in [
            ("main", "stripe"),
            ("prod", "A.b-c_d"),
            (&*"e".repeat(64), &*"N".repeat(64)),
        ] {
            assert_eq!(secret_id(&object_name(e, n)), Some(SecretId::new(e, n)));
        }
        for other in [
            "",
            "s",
            "x",
            "sonlyname",
            "kube-root-ca.crt",
            &object_name("main", "a").to_uppercase(),
        ] {
            assert_eq!(secret_id(other), None, "{other}");
        }
    }

    #[test]
    fn decode_serves_exact_text_and_refuses_what_secretref_did_not_write() {
        let object = object_name("main", "app");
        let ours = [(NAME_ANNOTATION, "app"), (ENVIRONMENT_ANNOTATION, "main")];
        let odd = "nul\0 crlf\r\n emoji \u{1F511}";
        let s = decode(&store_secret(&object, &ours, &[("A", odd.as_bytes())])).expect("valid");
        assert_eq!(
            (s.name.as_str(), s.environment.as_str(), s.version.as_str()),
            ("app", "main", "7")
        );
        assert_eq!(s.data["A"].expose(), odd);

        let why = decode(&store_secret(&object, &ours, &[("BIN", &[0xff, 0xfe, b's'])])).expect_err("binary");
        assert!(why.contains("\"BIN\"") && why.contains("not UTF-8"), "{why}");

        let why = decode(&store_secret(&object, &ours[..1], &[])).expect_err("no environment");
        assert!(why.contains(ENVIRONMENT_ANNOTATION), "{why}");
        // Annotated as another secret: never served as that one (nor as this one).
        let why = decode(&store_secret(
            &object,
            &[(NAME_ANNOTATION, "other"), (ENVIRONMENT_ANNOTATION, "main")],
            &[],
        ))
        .expect_err("mismatch");
        assert!(why.contains("\"other\"") && why.contains("ignored"), "{why}");
        let mut unlabelled = store_secret(&object, &ours, &[]);
        unlabelled.metadata.labels = None;
        assert!(
            decode(&unlabelled)
                .expect_err("unlabelled")
                .contains(STORE_SECRET_LABEL)
        );
    }
}
