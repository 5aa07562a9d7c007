//! The keyed `dataHash`: an HMAC-SHA256 of the synced data. A plain hash of a short value could
//! be brute-forced from the status; the key lives in a Secret only the operator reads.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::SecretData;

/// The HMAC key. Its `Debug` is redacted like a secret value's.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        HashKey(bytes)
    }

    /// 32 fresh random bytes.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(HashKey(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `hmac-sha256:<hex>` of `data` (keys and values, length-prefixed so that no two different
    /// maps encode alike) and the Secret type.
    pub fn data_hash(&self, secret_type: &str, data: &SecretData) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        let mut feed = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        feed(secret_type.as_bytes());
        for (key, value) in data {
            feed(key.as_bytes());
            feed(value.expose().as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", data_encoding::HEXLOWER.encode(&digest))
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::secret_data;

    #[test]
    fn hash_changes_with_data_and_key_only() {
        let key = HashKey::new(b"k1".to_vec());
        let a = key.data_hash("Opaque", &secret_data(&[("A", "1")]));
        assert_eq!(a, key.data_hash("Opaque", &secret_data(&[("A", "1")])));
        assert_ne!(a, key.data_hash("Opaque", &secret_data(&[("A", "2")])));
        assert_ne!(a, key.data_hash("Opaque", &secret_data(&[("A", "1"), ("B", "")])));
        assert_ne!(
            a,
            HashKey::new(b"k2".to_vec()).data_hash("Opaque", &secret_data(&[("A", "1")]))
        );
        // Length prefixes keep ("AB","") and ("A","B") apart.
        assert_ne!(
            key.data_hash("Opaque", &secret_data(&[("AB", "")])),
            key.data_hash("Opaque", &secret_data(&[("A", "B")]))
        );
        assert!(a.starts_with("hmac-sha256:") && a.len() == "hmac-sha256:".len() + 64);
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", HashKey::new(b"topsecret".to_vec())),
            "HashKey(<redacted>)"
        );
    }
}
