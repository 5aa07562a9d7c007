//! The key of the keyed data hash: one random key per installation, kept in a Secret of the
//! operator's namespace so that every replica and every restart hashes alike (a new key would
//! change every dataHash and restart every rolloutRestart workload).

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{desired::MANAGED_BY_LABEL, hash::HashKey};

/// Reads the data-hash key, creating it on first start. Two replicas racing both end up with
/// the one that was created first.
pub async fn load_hash_key(client: &Client, namespace: &str, name: &str) -> anyhow::Result<HashKey> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |s: Secret| -> anyhow::Result<HashKey> {
        let bytes = s
            .data
            .and_then(|mut d| d.remove("key"))
            .map(|b| b.0)
            .filter(|b| b.len() >= 16);
        bytes
            .map(HashKey::new)
            .ok_or_else(|| anyhow::anyhow!("Secret {namespace}/{name} has no usable `key` (16 bytes or more)"))
    };
    if let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!("reading hash key Secret {namespace}/{name}: {e}"))?
    {
        return read(s);
    }
    let key = HashKey::generate().map_err(|e| anyhow::anyhow!("generating the hash key: {e}"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(MANAGED_BY_LABEL.to_string(), "secretref-operator".to_string())].into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(key.bytes().to_vec()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(key),
        Err(kube::Error::Api(s)) if s.code == 409 => read(api.get(name).await?),
        Err(e) => Err(anyhow::anyhow!("creating hash key Secret {namespace}/{name}: {e}")),
    }
}
