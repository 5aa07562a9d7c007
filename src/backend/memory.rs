//! An in-memory backend for unit tests: the same contract as a real store, plus a switch that
//! makes every call fail as an unreachable backend would.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use jiff::Timestamp;

use super::{BackendError, SecretBackend, SecretSummary, StoredSecret};
use crate::model::SecretData;

type Secrets = BTreeMap<(String, String), StoredSecret>;

#[derive(Debug, Default)]
pub struct MemoryBackend {
    secrets: Mutex<Secrets>,
    next_version: AtomicU64,
    unavailable: AtomicBool,
    reads: AtomicU64,
    read_delay_ms: AtomicU64,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following call fail with `Unavailable` (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Makes every following `get` take this long, as a remote store's would (concurrent
    /// callers then overlap).
    pub fn set_read_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.read_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many `get` calls reached this backend.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn guard(&self) -> Result<std::sync::MutexGuard<'_, Secrets>, BackendError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("memory backend switched off".into()));
        }
        self.secrets
            .lock()
            .map_err(|_| BackendError::Unavailable("memory backend poisoned".into()))
    }

    fn stored(&self, environment: &str, name: &str, data: SecretData, created: Option<Timestamp>) -> StoredSecret {
        let now = Timestamp::now();
        StoredSecret {
            name: name.to_string(),
            environment: environment.to_string(),
            data,
            version: self.next_version.fetch_add(1, Ordering::SeqCst).to_string(),
            created: created.or(Some(now)),
            updated: Some(now),
        }
    }
}

fn key(environment: &str, name: &str) -> (String, String) {
    (environment.to_string(), name.to_string())
}

#[async_trait]
impl SecretBackend for MemoryBackend {
    async fn get(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, BackendError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = self.read_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        Ok(self.guard()?.get(&key(environment, name)).cloned())
    }

    async fn list(&self, environment: Option<&str>) -> Result<Vec<SecretSummary>, BackendError> {
        Ok(self
            .guard()?
            .values()
            .filter(|s| environment.is_none_or(|e| s.environment == e))
            .map(SecretSummary::from)
            .collect())
    }

    async fn create(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let mut secrets = self.guard()?;
        if secrets.contains_key(&key(environment, name)) {
            return Err(BackendError::AlreadyExists {
                name: name.into(),
                environment: environment.into(),
            });
        }
        secrets.insert(key(environment, name), self.stored(environment, name, data, None));
        Ok(())
    }

    async fn replace(&self, environment: &str, name: &str, data: SecretData) -> Result<(), BackendError> {
        let mut secrets = self.guard()?;
        let created = secrets.get(&key(environment, name)).and_then(|s| s.created);
        secrets.insert(key(environment, name), self.stored(environment, name, data, created));
        Ok(())
    }

    async fn delete(&self, environment: &str, name: &str) -> Result<(), BackendError> {
        match self.guard()?.remove(&key(environment, name)) {
            Some(_) => Ok(()),
            None => Err(BackendError::NotFound {
                name: name.into(),
                environment: environment.into(),
            }),
        }
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.guard().map(|_| ())
    }

    fn identity(&self) -> String {
        format!("memory/{:p}", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SecretValue;
    use crate::model::secret_data;

    /// The contract every backend keeps, on the in-memory one.
    #[tokio::test]
    async fn backend_contract() {
        let b = MemoryBackend::new();
        b.create("main", "a", secret_data(&[("K", "1")])).await.expect("create");
        assert!(matches!(
            b.create("main", "a", secret_data(&[])).await,
            Err(BackendError::AlreadyExists { .. })
        ));
        b.create("prod", "a", secret_data(&[("K", "2")]))
            .await
            .expect("environments are apart");
        let v1 = b.get("main", "a").await.expect("get").expect("exists").version;
        b.replace("main", "a", secret_data(&[("J", "3")]))
            .await
            .expect("replace");
        let replaced = b.get("main", "a").await.expect("get").expect("exists");
        assert_ne!(replaced.version, v1, "a write changes the version");
        assert_eq!(
            replaced.data.keys().collect::<Vec<_>>(),
            ["J"],
            "replace drops keys not given"
        );
        assert!(
            b.get("main", "A").await.expect("get").is_none(),
            "names are case-sensitive"
        );
        assert_eq!(b.list(Some("prod")).await.expect("list").len(), 1);
        assert_eq!(b.list(None).await.expect("list").len(), 2);
        b.delete("main", "a").await.expect("delete");
        assert!(matches!(
            b.delete("main", "a").await,
            Err(BackendError::NotFound { .. })
        ));
        b.set_unavailable(true);
        assert!(matches!(b.get("prod", "a").await, Err(BackendError::Unavailable(_))));
        assert!(b.check().await.is_err());
        b.set_unavailable(false);
        assert_eq!(b.reads(), 4);
    }

    /// The merge core fed through the trait, as the reconciler does it.
    #[tokio::test]
    async fn merge_reads_through_the_trait() {
        let b: std::sync::Arc<dyn SecretBackend> = std::sync::Arc::new(MemoryBackend::new());
        b.create("main", "a", secret_data(&[("X", "a"), ("Y", "a")]))
            .await
            .expect("create");
        b.create("main", "b", secret_data(&[("Y", "b")])).await.expect("create");
        let spec: crate::api::SecretRefSpec =
            serde_json::from_value(serde_json::json!({ "secrets": [{ "name": "a" }, { "name": "b" }] })).expect("spec");
        let reads = vec![
            b.get("main", "a").await.expect("a"),
            b.get("main", "b").await.expect("b"),
        ];
        let merged = crate::desired::merge(&spec, reads, "memory", "main").expect("merge");
        assert_eq!(merged.data.get("Y").map(SecretValue::expose), Some("b"));
    }
}
