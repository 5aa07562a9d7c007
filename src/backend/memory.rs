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
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following call fail with `Unavailable` (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
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
}
