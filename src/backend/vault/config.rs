//! A `vault` provider spec resolved for use: the server's base URL, the KV paths, the trusted
//! certificates and the auth method with its credential references made absolute.

use crate::{
    api::{SecretKeySelector, ServiceAccountSelector, VaultAuth, VaultProvider},
    backend::{BackendError, BuildContext, credentials::SecretKeyRef},
};

/// How the backend logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// A token read from a Secret, used as it is.
    Token { secret: SecretKeyRef },
    /// Vault's Kubernetes auth method with a TokenRequest token of a ServiceAccount.
    Kubernetes {
        mount_path: String,
        role: String,
        namespace: String,
        service_account: String,
        audiences: Vec<String>,
    },
    /// Vault's AppRole auth method.
    AppRole {
        mount_path: String,
        role_id: String,
        secret: SecretKeyRef,
    },
}

impl AuthMethod {
    /// Names the credential source (never a credential value), for the backend's identity.
    pub fn describe(&self) -> String {
        match self {
            AuthMethod::Token { secret } => format!("token:{}/{}/{}", secret.namespace, secret.name, secret.key),
            AuthMethod::Kubernetes {
                mount_path,
                role,
                namespace,
                service_account,
                audiences,
            } => format!(
                "kubernetes:{mount_path}/{role}/{namespace}/{service_account}/{}",
                audiences.join(",")
            ),
            AuthMethod::AppRole {
                mount_path,
                role_id,
                secret,
            } => format!(
                "approle:{mount_path}/{role_id}/{}/{}/{}",
                secret.namespace, secret.name, secret.key
            ),
        }
    }
}

/// A resolved `vault` provider.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// The server address without a trailing slash (`https://vault.example:8200`).
    pub server: String,
    pub mount: String,
    /// The folder under the mount, without slashes at either end; may be empty.
    pub prefix: String,
    pub namespace: Option<String>,
    /// PEM certificates to trust instead of the system's roots.
    pub ca_bundle: Option<Vec<u8>>,
    pub auth: AuthMethod,
}

impl VaultConfig {
    pub fn resolve(ctx: &BuildContext, spec: &VaultProvider) -> Result<Self, BackendError> {
        let server = spec.server.trim_end_matches('/').to_string();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(BackendError::Misconfigured(format!(
                "vault.server {server:?} is not an http:// or https:// URL"
            )));
        }
        Ok(VaultConfig {
            server,
            mount: spec.mount.trim_matches('/').to_string(),
            prefix: spec.prefix.trim_matches('/').to_string(),
            namespace: spec.namespace.clone().filter(|n| !n.is_empty()),
            ca_bundle: spec.ca_bundle.as_deref().map(decode_ca_bundle).transpose()?,
            auth: resolve_auth(ctx, &spec.auth)?,
        })
    }
}

/// The PEM text of `caBundle` (the API server has checked it is base64).
fn decode_ca_bundle(base64: &str) -> Result<Vec<u8>, BackendError> {
    let compact: String = base64.split_whitespace().collect();
    data_encoding::BASE64
        .decode(compact.as_bytes())
        .map_err(|_| BackendError::Misconfigured("vault.caBundle is not base64".into()))
}

fn key_ref(ctx: &BuildContext, s: &SecretKeySelector) -> Result<SecretKeyRef, BackendError> {
    SecretKeyRef::for_store(ctx.store_namespace.as_deref(), s.namespace.as_deref(), &s.name, &s.key)
}

/// The ServiceAccount's namespace, by the rule credential Secrets follow: a SecretStore uses
/// its own namespace's ServiceAccounts only (a tenant must not log in as another namespace's),
/// a ClusterSecretStore names the namespace.
fn service_account_namespace(ctx: &BuildContext, s: &ServiceAccountSelector) -> Result<String, BackendError> {
    match (ctx.store_namespace.as_deref(), s.namespace.as_deref()) {
        (Some(own), None) => Ok(own.to_string()),
        (Some(own), Some(given)) if own == given => Ok(own.to_string()),
        (Some(own), Some(given)) => Err(BackendError::Misconfigured(format!(
            "a SecretStore logs in to Vault with ServiceAccounts of its own namespace {own:?} only, not {given:?}"
        ))),
        (None, Some(given)) => Ok(given.to_string()),
        (None, None) => Err(BackendError::Misconfigured(format!(
            "the ServiceAccount {:?} of a ClusterSecretStore must name its namespace",
            s.name
        ))),
    }
}

fn resolve_auth(ctx: &BuildContext, auth: &VaultAuth) -> Result<AuthMethod, BackendError> {
    match auth {
        VaultAuth {
            token: Some(t),
            kubernetes: None,
            app_role: None,
        } => Ok(AuthMethod::Token {
            secret: key_ref(ctx, &t.secret_ref)?,
        }),
        VaultAuth {
            kubernetes: Some(k),
            token: None,
            app_role: None,
        } => Ok(AuthMethod::Kubernetes {
            mount_path: k.mount_path.trim_matches('/').to_string(),
            role: k.role.clone(),
            namespace: service_account_namespace(ctx, &k.service_account_ref)?,
            service_account: k.service_account_ref.name.clone(),
            audiences: k.service_account_ref.audiences.clone(),
        }),
        VaultAuth {
            app_role: Some(a),
            token: None,
            kubernetes: None,
        } => Ok(AuthMethod::AppRole {
            mount_path: a.mount_path.trim_matches('/').to_string(),
            role_id: a.role_id.clone(),
            secret: key_ref(ctx, &a.secret_ref)?,
        }),
        _ => Err(BackendError::Misconfigured(
            "vault.auth must set exactly one of token, kubernetes and appRole".into(),
        )),
    }
}
