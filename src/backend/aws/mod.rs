//! The `aws` backend: each Modal-style secret is one AWS Secrets Manager secret named
//! `<prefix>/<environment>/<name>`, tagged as secretref's, whose SecretString is a flat JSON
//! object of key -> string (see `format`). Change detection is cheap: `versions` pages
//! ListSecrets over the prefix (100 secrets per call, each with its AWSCURRENT VersionId) and
//! confirms a secret that vanished from the list with DescribeSecret before calling it gone
//! (ListSecrets may lag); `get_many` reads what changed with BatchGetSecretValue, 20 per call.

mod config;
mod errors;
pub mod format;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use aws_sdk_secretsmanager::{
    Client,
    types::{Filter, FilterNameStringType, Tag},
};
use jiff::Timestamp;

use self::errors::{Failure, classify};
use super::{
    BackendError, BuildContext, SecretBackend, SecretId, SecretSummary, StoredSecret,
    credentials::{Credentials, SecretKeyRef},
};
use crate::{api::AwsProvider, model::SecretData};

/// AWS's limit on a SecretString.
const MAX_SECRET_STRING: usize = 65_536;
/// AWS's limit of secret ids per BatchGetSecretValue.
const BATCH: usize = 20;
/// ListSecrets' largest page.
const PAGE: i32 = 100;
/// The staging label of a secret's current version.
const CURRENT: &str = "AWSCURRENT";

pub struct AwsBackend {
    client: Client,
    prefix: String,
    /// The endpoint (or the region) for messages.
    at: String,
    identity: String,
    credentials: Credentials,
    key_refs: Vec<SecretKeyRef>,
    /// What `versions` last reported of each secret, so a secret already known to be absent
    /// costs no DescribeSecret per cycle.
    known: Mutex<HashMap<SecretId, Option<String>>>,
}

impl std::fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsBackend")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A secret as ListSecrets shows it (no value).
#[derive(Debug)]
struct Listed {
    environment: String,
    name: String,
    version: Option<String>,
    created: Option<Timestamp>,
    updated: Option<Timestamp>,
}

impl AwsBackend {
    pub async fn new(ctx: &BuildContext, provider: &AwsProvider) -> Result<Self, BackendError> {
        let built = config::build(ctx, provider).await?;
        let role = provider
            .auth
            .as_ref()
            .and_then(|a| a.role_arn.as_deref())
            .unwrap_or("-");
        Ok(AwsBackend {
            client: built.client,
            prefix: provider.prefix.clone(),
            at: provider
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("region {}", provider.region)),
            // Everything that decides what may be read, never a credential value.
            identity: format!(
                "aws/{}/{}/{}/{}/{role}",
                provider.region,
                provider.endpoint.as_deref().unwrap_or("-"),
                provider.prefix,
                built.auth
            ),
            credentials: ctx.credentials.clone(),
            key_refs: built.key_refs,
            known: Mutex::default(),
        })
    }

    fn name(&self, environment: &str, name: &str) -> String {
        format::aws_name(&self.prefix, environment, name)
    }

    /// Turns a failed call into its backend error, dropping refused static keys first.
    fn fail(&self, failure: Failure) -> BackendError {
        if failure.refused_credentials {
            for r in &self.key_refs {
                self.credentials.invalidate(r);
            }
        }
        failure.error
    }

    fn failure<E, R>(&self, what: &str, err: aws_sdk_secretsmanager::error::SdkError<E, R>) -> Failure
    where
        E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        classify(what, &self.at, err)
    }

    /// Every secret of ours under `prefix/<within>`, page by page (100 per call).
    async fn list_all(&self, environment: Option<&str>) -> Result<BTreeMap<String, Listed>, BackendError> {
        let filter = match environment {
            Some(e) => format!("{}/{e}/", self.prefix),
            None => format!("{}/", self.prefix),
        };
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(&filter)
                        .build(),
                )
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.fail(self.failure("listing secrets", e)))?;
            for entry in page.secret_list() {
                let Some(aws_name) = entry.name() else { continue };
                // AWS's name filter is a case-insensitive prefix match: keep exact matches only.
                if !aws_name.starts_with(&filter) || entry.deleted_date().is_some() {
                    continue;
                }
                let Some((environment, name)) = format::parse_aws_name(&self.prefix, aws_name) else {
                    continue;
                };
                let version = entry
                    .secret_versions_to_stages()
                    .and_then(|v| v.iter().find(|(_, stages)| stages.iter().any(|s| s == CURRENT)))
                    .map(|(id, _)| id.clone());
                out.insert(
                    aws_name.to_string(),
                    Listed {
                        environment: environment.to_string(),
                        name: name.to_string(),
                        version,
                        created: entry.created_date().map(timestamp),
                        updated: entry.last_changed_date().map(timestamp),
                    },
                );
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// DescribeSecret: the current version of a secret ListSecrets did not show (None: gone).
    async fn describe(&self, id: &SecretId) -> Result<Option<String>, BackendError> {
        match self
            .client
            .describe_secret()
            .secret_id(self.name(&id.environment, &id.name))
            .send()
            .await
        {
            Ok(d) if d.deleted_date().is_some() => Ok(None),
            Ok(d) => Ok(d
                .version_ids_to_stages()
                .and_then(|v| v.iter().find(|(_, stages)| stages.iter().any(|s| s == CURRENT)))
                .map(|(id, _)| id.clone())),
            Err(e) => {
                let f = self.failure(
                    &format!("describing secret {:?} (environment {:?})", id.name, id.environment),
                    e,
                );
                if f.is("ResourceNotFoundException") {
                    Ok(None)
                } else {
                    Err(self.fail(f))
                }
            }
        }
    }

    /// A read value (SecretString or SecretBinary) as a Modal-style secret.
    fn stored(
        &self,
        id: &SecretId,
        version: Option<&str>,
        secret_string: Option<&str>,
        binary: bool,
        updated: Option<Timestamp>,
    ) -> Result<StoredSecret, BackendError> {
        let invalid = |why: String| BackendError::Invalid {
            environment: id.environment.clone(),
            name: id.name.clone(),
            why: format!("AWS secret {:?} {why}", self.name(&id.environment, &id.name)),
        };
        let data = match (secret_string, binary) {
            (Some(text), _) => format::decode(text).map_err(invalid)?,
            (None, true) => return Err(invalid("holds binary data (SecretBinary), not a SecretString".into())),
            (None, false) => return Err(invalid("holds no SecretString".into())),
        };
        Ok(StoredSecret {
            name: id.name.clone(),
            environment: id.environment.clone(),
            data,
            version: version.unwrap_or_default().to_string(),
            created: None,
            updated,
        })
    }

    /// BatchGetSecretValue of up to 20 secrets. Secrets whose value is not a flat object of
    /// strings are left out of the result (the caller reads them alone, with `get`, to learn
    /// why): one bad secret must not hold up the others.
    async fn batch(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<StoredSecret>)>, BackendError> {
        let by_name: HashMap<String, &SecretId> = ids
            .iter()
            .map(|id| (self.name(&id.environment, &id.name), id))
            .collect();
        let out = self
            .client
            .batch_get_secret_value()
            .set_secret_id_list(Some(by_name.keys().cloned().collect()))
            .send()
            .await
            .map_err(|e| self.fail(self.failure(&format!("reading {} secrets", ids.len()), e)))?;
        let mut found: HashMap<&SecretId, Option<StoredSecret>> = HashMap::new();
        for value in out.secret_values() {
            let Some(id) = value.name().and_then(|n| by_name.get(n)) else {
                continue;
            };
            if let Ok(s) = self.stored(
                id,
                value.version_id(),
                value.secret_string(),
                value.secret_binary().is_some(),
                value.created_date().map(timestamp),
            ) {
                found.insert(id, Some(s));
            }
        }
        for error in out.errors() {
            let Some(id) = error.secret_id().and_then(|n| by_name.get(n)) else {
                continue;
            };
            match error.error_code() {
                Some("ResourceNotFoundException") => {
                    found.insert(id, None);
                }
                // Marked for deletion: as good as gone.
                Some("InvalidRequestException") => {
                    found.insert(id, None);
                }
                code => {
                    let code = code.unwrap_or("unknown error");
                    if errors::is_refused(code) {
                        for r in &self.key_refs {
                            self.credentials.invalidate(r);
                        }
                    }
                    return Err(BackendError::Unavailable(format!(
                        "reading secret {:?} (environment {:?}) at {}: {code}: {}",
                        id.name,
                        id.environment,
                        self.at,
                        error.message().unwrap_or("no message")
                    )));
                }
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id).map(|s| (id.clone(), s)))
            .collect())
    }
}

#[async_trait]
impl SecretBackend for AwsBackend {
    async fn get(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, BackendError> {
        let id = SecretId::new(environment, name);
        let aws_name = self.name(environment, name);
        match self.client.get_secret_value().secret_id(&aws_name).send().await {
            // A name ending in a hyphen and six characters can match another secret's partial
            // ARN: only the exact name counts.
            Ok(v) if v.name() != Some(aws_name.as_str()) => Ok(None),
            Ok(v) => self
                .stored(
                    &id,
                    v.version_id(),
                    v.secret_string(),
                    v.secret_binary().is_some(),
                    v.created_date().map(timestamp),
                )
                .map(Some),
            Err(e) => {
                let f = self.failure(&format!("reading secret {name:?} (environment {environment:?})"), e);
                // Absent, or scheduled for deletion (InvalidRequestException).
                if f.is("ResourceNotFoundException") || f.is("InvalidRequestException") {
                    Ok(None)
                } else {
                    Err(self.fail(f))
                }
            }
        }
    }

    async fn list(&self, environment: Option<&str>) -> Result<Vec<SecretSummary>, BackendError> {
        let listed = self.list_all(environment).await?;
        let ids: Vec<SecretId> = listed
            .values()
            .map(|l| SecretId::new(&l.environment, &l.name))
            .collect();
        // Key counts need the values (never printed): BatchGetSecretValue, 20 per call.
        let mut keys: HashMap<SecretId, Vec<String>> = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            for (id, secret) in self.batch(chunk).await? {
                if let Some(s) = secret {
                    keys.insert(id, s.data.keys().cloned().collect());
                }
            }
        }
        let mut out: Vec<SecretSummary> = listed
            .into_values()
            .map(|l| {
                let id = SecretId::new(&l.environment, &l.name);
                SecretSummary {
                    keys: keys.remove(&id).unwrap_or_default(),
                    name: l.name,
                    environment: l.environment,
                    version: l.version.unwrap_or_default(),
                    created: l.created,
                    updated: l.updated,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.environment, &a.name).cmp(&(&b.environment, &b.name)));
        Ok(out)
    }

    async fn create(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let text = self.encode(environment, name, &data)?;
        let tags = format::tags(environment, name)
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        match self
            .client
            .create_secret()
            .name(self.name(environment, name))
            .description(format!(
                "Modal-style secret {name:?} of environment {environment:?}, managed by secretref"
            ))
            .secret_string(text)
            .set_tags(Some(tags))
            // The SDK retries with the same token, so a retried create never makes two versions.
            .client_request_token(request_token())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = self.failure(&format!("creating secret {name:?} (environment {environment:?})"), e);
                if f.is("ResourceExistsException") {
                    Err(BackendError::AlreadyExists {
                        name: name.to_string(),
                        environment: environment.to_string(),
                    })
                } else {
                    Err(self.fail(f))
                }
            }
        }
    }

    async fn replace(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let text = self.encode(environment, name, &data)?;
        // PutSecretValue makes a new AWSCURRENT version in one step. Never delete-then-create:
        // AWS deletes asynchronously, and readers would see the secret missing meanwhile.
        for _ in 0..2 {
            match self
                .client
                .put_secret_value()
                .secret_id(self.name(environment, name))
                .secret_string(text.clone())
                .client_request_token(request_token())
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let f = self.failure(&format!("replacing secret {name:?} (environment {environment:?})"), e);
                    if !f.is("ResourceNotFoundException") {
                        return Err(self.fail(f));
                    }
                }
            }
            match self.create(environment, name, data.clone()).await {
                // Created by someone else in between: put again.
                Err(BackendError::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
        Err(BackendError::Unavailable(format!(
            "replacing secret {name:?} (environment {environment:?}): it keeps appearing and disappearing"
        )))
    }

    async fn delete(&self, environment: &str, name: &str) -> Result<(), BackendError> {
        match self
            .client
            .delete_secret()
            .secret_id(self.name(environment, name))
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = self.failure(&format!("deleting secret {name:?} (environment {environment:?})"), e);
                if f.is("ResourceNotFoundException") {
                    Err(BackendError::NotFound {
                        name: name.to_string(),
                        environment: environment.to_string(),
                    })
                } else {
                    Err(self.fail(f))
                }
            }
        }
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client
            .list_secrets()
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(format!("{}/", self.prefix))
                    .build(),
            )
            .max_results(1)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.fail(self.failure("listing secrets", e)))
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    /// One ListSecrets page per 100 secrets under the prefix, whatever `ids` holds; plus one
    /// DescribeSecret for each secret of `ids` that was present (or never seen) and is now
    /// missing from the list, to confirm it is really gone.
    async fn versions(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<String>)>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let listed = self.list_all(None).await?;
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::with_capacity(ids.len());
        let mut confirm = Vec::new();
        for id in ids {
            match listed.get(&self.name(&id.environment, &id.name)) {
                Some(l) => out.push((id.clone(), l.version.clone())),
                None if known.get(id) == Some(&None) => out.push((id.clone(), None)),
                None => confirm.push(id.clone()),
            }
        }
        let confirmed = futures::future::try_join_all(confirm.iter().map(|id| self.describe(id))).await?;
        out.extend(confirm.into_iter().zip(confirmed));
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for (id, version) in &out {
            known.insert(id.clone(), version.clone());
        }
        Ok(out)
    }

    /// GetSecretValue for one secret, else BatchGetSecretValue per 20. A secret whose value is
    /// not a flat object of strings is left out of the result: read it with `get` to learn why.
    async fn get_many(&self, ids: &[SecretId]) -> Result<Vec<(SecretId, Option<StoredSecret>)>, BackendError> {
        match ids {
            [] => Ok(Vec::new()),
            [id] => match self.get(&id.environment, &id.name).await {
                Ok(s) => Ok(vec![(id.clone(), s)]),
                Err(BackendError::Invalid { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            _ => {
                let reads = futures::future::try_join_all(ids.chunks(BATCH).map(|c| self.batch(c))).await?;
                Ok(reads.into_iter().flatten().collect())
            }
        }
    }
}

impl AwsBackend {
    fn encode(&self, environment: &str, name: &str, data: &SecretData) -> Result<String, BackendError> {
        let text = format::encode(data);
        if text.len() > MAX_SECRET_STRING {
            return Err(BackendError::Invalid {
                environment: environment.to_string(),
                name: name.to_string(),
                why: format!(
                    "its SecretString would be {} bytes, over AWS Secrets Manager's {MAX_SECRET_STRING}",
                    text.len()
                ),
            });
        }
        Ok(text)
    }
}

/// A random UUID (v4) for ClientRequestToken.
fn request_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the time and a counter still make each token unique.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = Timestamp::now().as_nanosecond().to_le_bytes();
        b = nanos;
        b[..8].copy_from_slice(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
        b[8..].copy_from_slice(&nanos[..8]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = data_encoding::HEXLOWER.encode(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn timestamp(t: &aws_sdk_secretsmanager::primitives::DateTime) -> Timestamp {
    Timestamp::new(t.secs(), t.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_tokens_are_uuids() {
        let a = request_token();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_ne!(a, request_token());
    }
}
