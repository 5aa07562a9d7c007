//! Credentials kept in Kubernetes Secrets (static keys, tokens, secret IDs), shared by every
//! provider: where a reference may point, reading it, re-reading it so that a rotated
//! credential is used without a restart, and keeping values redacted.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::BackendError;
use crate::model::SecretValue;

/// How long a credential read from a Secret is used before it is read again. A backend that
/// sees a credential refused calls [`Credentials::invalidate`] to read it at once.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A key of a Kubernetes Secret holding a credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl SecretKeyRef {
    /// Where a store's credential reference points. A SecretStore (`store_namespace` set)
    /// reads only its own namespace: a reference naming another one is refused, or a tenant
    /// could borrow credentials kept elsewhere. A ClusterSecretStore's reference must name one.
    pub fn for_store(
        store_namespace: Option<&str>,
        namespace: Option<&str>,
        name: &str,
        key: &str,
    ) -> Result<Self, BackendError> {
        let namespace = match (store_namespace, namespace) {
            (Some(own), None) => own,
            (Some(own), Some(given)) if own == given => own,
            (Some(own), Some(given)) => {
                return Err(BackendError::Misconfigured(format!(
                    "a SecretStore reads credentials from its own namespace {own:?} only, not {given:?}"
                )));
            }
            (None, Some(given)) => given,
            (None, None) => {
                return Err(BackendError::Misconfigured(format!(
                    "the credential Secret {name:?} of a ClusterSecretStore must name its namespace"
                )));
            }
        };
        Ok(SecretKeyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        })
    }
}

impl std::fmt::Display for SecretKeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {:?} of Secret {}/{}", self.key, self.namespace, self.name)
    }
}

/// A Secret's data as read, and when.
type Read = (Instant, Arc<BTreeMap<String, Option<SecretValue>>>);

/// Reads credential Secrets, each at most once per [`MAX_AGE`] however many stores use it.
#[derive(Clone)]
pub struct Credentials {
    client: Client,
    cache: Arc<Mutex<HashMap<(String, String), Read>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(client: Client) -> Self {
        Credentials {
            client,
            cache: Arc::default(),
        }
    }

    /// The credential's current value. A missing Secret or key, or one this operator may not
    /// read, is `Misconfigured` (nothing changes until someone fixes it); an API failure is
    /// `Unavailable`.
    pub async fn get(&self, r: &SecretKeyRef) -> Result<SecretValue, BackendError> {
        let data = self.secret(r).await?;
        match data.get(&r.key) {
            Some(Some(value)) => Ok(value.clone()),
            Some(None) => Err(BackendError::Misconfigured(format!("{r} is not UTF-8 text"))),
            None => Err(BackendError::Misconfigured(format!("{r} does not exist"))),
        }
    }

    /// Forgets what was read of `r`'s Secret (the backend refused it): the next `get` reads
    /// the Secret again, so a credential rotated meanwhile is picked up at once.
    pub fn invalidate(&self, r: &SecretKeyRef) {
        self.lock().remove(&(r.namespace.clone(), r.name.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Read>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn secret(&self, r: &SecretKeyRef) -> Result<Arc<BTreeMap<String, Option<SecretValue>>>, BackendError> {
        let key = (r.namespace.clone(), r.name.clone());
        if let Some((at, data)) = self.lock().get(&key)
            && at.elapsed() < MAX_AGE
        {
            return Ok(data.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        let what = format!("credential Secret {}/{}", r.namespace, r.name);
        let secret = match api.get_opt(&r.name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(BackendError::Misconfigured(format!("{what} does not exist"))),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(BackendError::Misconfigured(format!(
                    "the operator may not read {what} ({})",
                    s.reason
                )));
            }
            Err(kube::Error::Api(s)) => {
                return Err(BackendError::Unavailable(format!(
                    "reading {what}: {} ({})",
                    s.reason, s.code
                )));
            }
            Err(e) => return Err(BackendError::Unavailable(format!("reading {what}: {e}"))),
        };
        tracing::debug!(namespace = %r.namespace, name = %r.name, "credential Secret read");
        let data: BTreeMap<String, Option<SecretValue>> = secret
            .data
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, String::from_utf8(v.0).ok().map(SecretValue::new)))
            .collect();
        let data = Arc::new(data);
        self.lock().insert(key, (Instant::now(), data.clone()));
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_store_reads_only_its_own_namespace() {
        let own = SecretKeyRef::for_store(Some("team"), None, "creds", "token").expect("own namespace");
        assert_eq!(own.namespace, "team");
        assert!(SecretKeyRef::for_store(Some("team"), Some("team"), "creds", "token").is_ok());
        let err = SecretKeyRef::for_store(Some("team"), Some("secretref-system"), "creds", "token")
            .expect_err("another namespace");
        assert!(err.to_string().contains("own namespace"), "{err}");
    }

    #[test]
    fn a_cluster_store_names_the_namespace() {
        let r = SecretKeyRef::for_store(None, Some("secretref-system"), "creds", "token").expect("named");
        assert_eq!(r.to_string(), "key \"token\" of Secret secretref-system/creds");
        assert!(matches!(
            SecretKeyRef::for_store(None, None, "creds", "token"),
            Err(BackendError::Misconfigured(_))
        ));
    }
}
