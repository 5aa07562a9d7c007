//! The `vault` backend: HashiCorp Vault's KV version 2 secrets engine. Each Modal-style secret is
//! one KV secret at `<mount>/data/<prefix>/<environment>/<name>` whose data is the key-value map
//! and whose `custom_metadata` marks it as secretref's with its exact environment and name.
//! Versions are KV versions: `versions` costs one metadata read per secret and no data read,
//! writes use check-and-set so a concurrent writer is never overwritten.

mod auth;
mod client;
mod config;
pub mod kv;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::json;

use self::{
    auth::Auth,
    client::{Body, Http, Reply},
    config::VaultConfig,
    kv::{DataRead, Layout, Listing, SecretMetadata, Subkeys},
};
use super::{BackendError, BuildContext, SecretBackend, SecretId, SecretSummary, StoredSecret};
use crate::{api::VaultProvider, model::SecretData};

/// Requests one call of `versions`, `get_many` or `list` keeps in flight.
const CONCURRENCY: usize = 16;

/// What a check-and-set write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Written as the given version string.
    Version(String),
    /// The secret's current version was not the expected one: nothing was written.
    Conflict,
}

#[derive(Debug)]
pub struct VaultBackend {
    config: VaultConfig,
    layout: Layout,
    http: Http,
    auth: Auth,
}

impl VaultBackend {
    /// Builds the backend; no request is sent until it is used (`check` is the readiness probe).
    pub async fn new(ctx: &BuildContext, spec: &VaultProvider) -> Result<Self, BackendError> {
        let config = VaultConfig::resolve(ctx, spec)?;
        let http = Http::new(&config, ctx.metrics.clone())?;
        let auth = Auth::new(
            config.auth.clone(),
            http.clone(),
            ctx.credentials.clone(),
            ctx.client.clone(),
        );
        Ok(VaultBackend {
            layout: Layout {
                mount: config.mount.clone(),
                prefix: config.prefix.clone(),
            },
            config,
            http,
            auth,
        })
    }

    /// One authenticated request. A 403 drops the token (re-reading or logging in again) and
    /// retries once; a second 403 is explained as an invalid token or a policy denial.
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Reply, BackendError> {
        let token = self.auth.token().await?;
        let reply = self
            .http
            .send(op, method.clone(), path, query, Some(&token), body)
            .await?;
        let Reply::Denied(_) = reply else { return Ok(reply) };
        self.auth.refused(&token).await;
        let token = self.auth.token().await?;
        match self.http.send(op, method, path, query, Some(&token), body).await? {
            Reply::Denied(errors) => Err(self.auth.diagnose_denial(&token, what, &errors).await),
            reply => Ok(reply),
        }
    }

    fn unexpected(&self, what: &str, status: u16, errors: &[String]) -> BackendError {
        BackendError::Unavailable(format!(
            "Vault at {} refused {what} ({status}): {}",
            self.http.server(),
            errors.join("; ")
        ))
    }

    fn describe(id: &SecretId) -> String {
        format!("secret {:?} (environment {:?})", id.name, id.environment)
    }

    /// The KV metadata at `id`'s path, if there is a secret there that is `id`.
    async fn read_metadata(&self, id: &SecretId) -> Result<Option<SecretMetadata>, BackendError> {
        let path = self.layout.metadata(id);
        let what = format!("reading the metadata of {} at {path}", Self::describe(id));
        let metadata: SecretMetadata = match self.call("metadata.read", Method::GET, &path, "", None, &what).await? {
            Reply::Ok(body) => body.data(&what)?,
            Reply::NotFound => return Ok(None),
            Reply::Rejected { status, errors } => return Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        Ok(kv::is_same_secret(metadata.custom_metadata.as_ref(), id).then_some(metadata))
    }

    /// The current version string of `id` (None: absent, soft-deleted or destroyed).
    async fn version(&self, id: &SecretId) -> Result<Option<String>, BackendError> {
        Ok(self
            .read_metadata(id)
            .await?
            .and_then(|m| m.current(Timestamp::now()))
            .map(|(_, version)| version))
    }

    async fn version_of(&self, id: SecretId) -> Result<(SecretId, Option<String>), BackendError> {
        let version = self.version(&id).await?;
        Ok((id, version))
    }

    async fn data_of(&self, id: SecretId) -> Result<(SecretId, Option<StoredSecret>), BackendError> {
        let secret = self.read_data(&id).await?;
        Ok((id, secret))
    }

    /// The current data of `id` (one data read). `created` is left unknown: only the metadata
    /// has it, and the operator does not need it.
    async fn read_data(&self, id: &SecretId) -> Result<Option<StoredSecret>, BackendError> {
        let path = self.layout.data(id);
        let what = format!("reading {} at {path}", Self::describe(id));
        let body = match self.call("data.read", Method::GET, &path, "", None, &what).await? {
            Reply::Ok(body) => body,
            // A soft-deleted or destroyed current version also answers 404.
            Reply::NotFound => return Ok(None),
            Reply::Rejected { status, errors } => return Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        let read: DataRead = body.data(&what)?;
        if !read.metadata.readable(Timestamp::now()) || !kv::is_same_secret(read.metadata.custom_metadata.as_ref(), id)
        {
            return Ok(None);
        }
        let data = kv::flat_map(read.data).map_err(|why| BackendError::Invalid {
            environment: id.environment.clone(),
            name: id.name.clone(),
            why: format!("{}/{path}: {why}", self.http.server()),
        })?;
        Ok(Some(StoredSecret {
            name: id.name.clone(),
            environment: id.environment.clone(),
            data,
            version: read.metadata.version_string(),
            created: None,
            updated: read.metadata.created_time.parse().ok(),
        }))
    }

    /// Writes `data` as `id`'s next version if its current version number is `cas` (0: only if
    /// it has none), then marks it as secretref's. A concurrent writer makes this `Conflict`.
    pub async fn write_checked(&self, id: &SecretId, data: &SecretData, cas: u64) -> Result<Written, BackendError> {
        let path = self.layout.data(id);
        let what = format!("writing {} at {path}", Self::describe(id));
        let values: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose().to_string())))
            .collect();
        let body = json!({ "options": { "cas": cas }, "data": values });
        let written = match self
            .call("data.write", Method::POST, &path, "", Some(&body), &what)
            .await?
        {
            Reply::Ok(body) => body,
            Reply::Rejected { errors, .. } if errors.iter().any(|e| e.contains("check-and-set")) => {
                return Ok(Written::Conflict);
            }
            Reply::Rejected { status, errors } => return Err(self.unexpected(&what, status, &errors)),
            Reply::NotFound => {
                return Err(BackendError::Misconfigured(format!(
                    "Vault has no KV version 2 engine at {:?} ({what} found nothing there)",
                    self.layout.mount
                )));
            }
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        let version: kv::VersionMetadata = written.data(&what)?;
        self.mark(id).await?;
        Ok(Written::Version(version.version_string()))
    }

    /// Writes secretref's `custom_metadata` (environment and exact name) on `id`.
    async fn mark(&self, id: &SecretId) -> Result<(), BackendError> {
        let path = self.layout.metadata(id);
        let what = format!("marking {} at {path} as secretref's", Self::describe(id));
        let body = json!({ "custom_metadata": kv::custom_metadata(id) });
        match self
            .call("metadata.write", Method::POST, &path, "", Some(&body), &what)
            .await?
        {
            Reply::Ok(_) => Ok(()),
            Reply::Rejected { status, errors } => Err(self.unexpected(&what, status, &errors)),
            Reply::NotFound => Err(self.unexpected(&what, 404, &[])),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        }
    }

    /// A LIST of a metadata folder (empty when it does not exist).
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>, BackendError> {
        let what = format!("listing {folder}");
        match self
            .call("metadata.list", Method::GET, folder, "?list=true", None, &what)
            .await?
        {
            Reply::Ok(body) => Ok(body.data::<Listing>(&what)?.keys),
            Reply::NotFound => Ok(Vec::new()),
            Reply::Rejected { status, errors } => Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        }
    }

    /// The summary `list` shows of one secret: metadata (times, current version) and subkeys
    /// (key names, never values). None when it has no readable current version.
    async fn summary(&self, id: SecretId) -> Result<Option<SecretSummary>, BackendError> {
        let Some(metadata) = self.read_metadata(&id).await? else {
            return Ok(None);
        };
        let Some((number, version)) = metadata.current(Timestamp::now()) else {
            return Ok(None);
        };
        let path = self.layout.subkeys(&id);
        let what = format!("reading the key names of {} at {path}", Self::describe(&id));
        let query = format!("?depth=1&version={number}");
        let keys = match self
            .call("subkeys.read", Method::GET, &path, &query, None, &what)
            .await?
        {
            Reply::Ok(body) => body.data::<Subkeys>(&what)?.subkeys.into_keys().collect(),
            Reply::NotFound => return Ok(None),
            Reply::Rejected { status, errors } => return Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        Ok(Some(SecretSummary {
            created: metadata.created(),
            updated: metadata.updated(),
            name: id.name,
            environment: id.environment,
            keys,
            version,
        }))
    }

    fn not_found(id: &SecretId) -> BackendError {
        BackendError::NotFound {
            name: id.name.clone(),
            environment: id.environment.clone(),
        }
    }
}

#[async_trait]
impl SecretBackend for VaultBackend {
    /// One data read plus one metadata read (for the creation time `describe` shows).
    async fn get(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, BackendError> {
        let id = SecretId::new(environment, name);
        let (data, metadata) = futures::try_join!(self.read_data(&id), self.read_metadata(&id))?;
        Ok(data.map(|s| StoredSecret {
            created: metadata.and_then(|m| m.created()),
            ..s
        }))
    }

    async fn list(&self, environment: Option<&str>) -> Result<Vec<SecretSummary>, BackendError> {
        let environments = match environment {
            Some(env) => vec![env.to_string()],
            None => self
                .list_folder(&self.layout.folder(None))
                .await?
                .iter()
                .filter_map(|e| kv::decode_environment(e))
                .collect(),
        };
        let mut ids = Vec::new();
        for env in environments {
            let entries = self.list_folder(&self.layout.folder(Some(&env))).await?;
            ids.extend(
                entries
                    .iter()
                    .filter_map(|e| kv::decode_name(e))
                    .map(|name| SecretId::new(env.clone(), name)),
            );
        }
        let mut out: Vec<SecretSummary> = stream::iter(ids)
            .map(|id| self.summary(id))
            .buffer_unordered(CONCURRENCY)
            .try_filter_map(|s| async move { Ok(s) })
            .try_collect()
            .await?;
        out.sort_by(|a, b| (&a.environment, &a.name).cmp(&(&b.environment, &b.name)));
        Ok(out)
    }

    /// Check-and-set 0: only if the secret has no version yet. A secret whose current version
    /// was deleted counts as absent and is written over its current version number instead.
    async fn create(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let id = SecretId::new(environment, name);
        let already = || BackendError::AlreadyExists {
            name: name.to_string(),
            environment: environment.to_string(),
        };
        if let Written::Version(_) = self.write_checked(&id, &data, 0).await? {
            return Ok(());
        }
        let metadata = self.read_metadata(&id).await?.ok_or_else(already)?;
        if metadata.current(Timestamp::now()).is_some() {
            return Err(already());
        }
        match self.write_checked(&id, &data, metadata.current_version).await? {
            Written::Version(_) => Ok(()),
            Written::Conflict => Err(already()),
        }
    }

    /// Check-and-set with the current version: a writer that gets in between makes this fail
    /// with nothing overwritten.
    async fn replace(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let id = SecretId::new(environment, name);
        let path = self.layout.metadata(&id);
        let what = format!("reading the metadata of {} at {path}", Self::describe(&id));
        // Not read_metadata: --force replaces whatever is at the path, secretref's or not.
        let current = match self.call("metadata.read", Method::GET, &path, "", None, &what).await? {
            Reply::Ok(body) => body.data::<SecretMetadata>(&what)?.current_version,
            Reply::NotFound => 0,
            Reply::Rejected { status, errors } => return Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        match self.write_checked(&id, &data, current).await? {
            Written::Version(_) => Ok(()),
            Written::Conflict => Err(BackendError::Unavailable(format!(
                "{} was changed by another writer while it was being replaced (check-and-set on version {current}); nothing was overwritten, try again",
                Self::describe(&id)
            ))),
        }
    }

    /// Deletes the metadata: every version goes, as `vault kv metadata delete` does.
    async fn delete(&self, environment: &str, name: &str) -> Result<(), BackendError> {
        let id = SecretId::new(environment, name);
        if self.read_metadata(&id).await?.is_none() {
            return Err(Self::not_found(&id));
        }
        let path = self.layout.metadata(&id);
        let what = format!("deleting {} at {path}", Self::describe(&id));
        match self
            .call("metadata.delete", Method::DELETE, &path, "", None, &what)
            .await?
        {
            Reply::Ok(_) => Ok(()),
            Reply::NotFound => Err(Self::not_found(&id)),
            Reply::Rejected { status, errors } => Err(self.unexpected(&what, status, &errors)),
            Reply::Denied(_) => unreachable!("call() explains denials"),
        }
    }

    /// Logs in (or reads the token) and asks Vault what the mount is, as Vault's own CLI does:
    /// proves the server answers, the credentials work and the mount is KV version 2.
    async fn check(&self) -> Result<(), BackendError> {
        let path = format!("sys/internal/ui/mounts/{}", self.layout.mount);
        let what = format!("looking up the mount {:?}", self.layout.mount);
        let body: Body = match self.call("mount.read", Method::GET, &path, "", None, &what).await? {
            Reply::Ok(body) => body,
            Reply::NotFound | Reply::Rejected { .. } => {
                return Err(BackendError::Misconfigured(format!(
                    "Vault has no secrets engine at {:?}",
                    self.layout.mount
                )));
            }
            Reply::Denied(_) => unreachable!("call() explains denials"),
        };
        #[derive(serde::Deserialize)]
        struct Mount {
            #[serde(rename = "type", default)]
            kind: String,
            #[serde(default)]
            options: Option<std::collections::BTreeMap<String, String>>,
        }
        let mount: Mount = body.data(&what)?;
        let version = mount
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .map(String::as_str);
        if mount.kind != "kv" || version != Some("2") {
            return Err(BackendError::Misconfigured(format!(
                "the secrets engine at {:?} is {:?} version {}, not KV version 2",
                self.layout.mount,
                mount.kind,
                version.unwrap_or("1")
            )));
        }
        Ok(())
    }

    fn identity(&self) -> String {
        format!(
            "vault/{}/{}/{}/{}/{}",
            self.config.server,
            self.config.namespace.as_deref().unwrap_or("-"),
            self.layout.mount,
            self.layout.prefix,
            self.auth.method().describe()
        )
    }

    /// One metadata read per secret (`current_version`), no data read.
    async fn versions(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<String>)>, BackendError> {
        stream::iter(ids.iter().cloned())
            .map(|id| self.version_of(id))
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// One data read per secret.
    async fn get_many(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<StoredSecret>)>, BackendError> {
        stream::iter(ids.iter().cloned())
            .map(|id| self.data_of(id))
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }
}
