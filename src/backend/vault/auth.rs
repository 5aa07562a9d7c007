//! Getting a Vault token: read from a Secret (token auth), or by logging in with a
//! ServiceAccount token (Kubernetes auth) or a role ID and secret ID (AppRole). A login's token
//! is kept and replaced before two thirds of its lease have passed, and at once when Vault
//! refuses it. Tokens, JWTs and secret IDs stay `SecretValue`s and never reach a message.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams};
use reqwest::Method;
use serde_json::json;

use super::{
    client::{Http, Reply},
    config::AuthMethod,
};
use crate::{
    backend::{BackendError, credentials::Credentials},
    model::SecretValue,
};

/// How long the ServiceAccount tokens secretref requests live (the API server's minimum): they
/// are only presented once, at login.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 600;
/// How long a login token without a lease (`lease_duration` 0: it never expires) is used before
/// logging in again anyway, so that a changed role takes effect.
const UNLEASED_RELOGIN: Duration = Duration::from_secs(3600);

/// A token obtained by a login and when to replace it.
struct Lease {
    token: SecretValue,
    renew_at: Instant,
}

pub struct Auth {
    method: AuthMethod,
    http: Http,
    credentials: Credentials,
    client: kube::Client,
    lease: tokio::sync::Mutex<Option<Lease>>,
    /// The last secret ID Vault refused and why. It is not presented again: Vault's user
    /// lockout (on by default for AppRole) locks the role out for 15 minutes after 5 refused
    /// logins, which would outlast the fix. A login waits for a different secret ID instead.
    refused: std::sync::Mutex<Option<(SecretValue, String)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(method: AuthMethod, http: Http, credentials: Credentials, client: kube::Client) -> Self {
        Auth {
            method,
            http,
            credentials,
            client,
            lease: tokio::sync::Mutex::new(None),
            refused: std::sync::Mutex::new(None),
        }
    }

    pub fn method(&self) -> &AuthMethod {
        &self.method
    }

    /// A token to send, logging in first when there is none or its lease is two thirds over.
    /// Concurrent callers share one login.
    pub async fn token(&self) -> Result<SecretValue, BackendError> {
        if let AuthMethod::Token { secret } = &self.method {
            return self.credentials.get(secret).await;
        }
        let mut lease = self.lease.lock().await;
        if let Some(l) = lease.as_ref()
            && Instant::now() < l.renew_at
        {
            return Ok(l.token.clone());
        }
        let fresh = self.login().await?;
        let token = fresh.token.clone();
        *lease = Some(fresh);
        Ok(token)
    }

    /// Vault refused `token`: forget it, so the next `token()` reads the Secret again or logs
    /// in again (the credential may have been rotated, or the login token revoked).
    pub async fn refused(&self, token: &SecretValue) {
        match &self.method {
            AuthMethod::Token { secret } => self.credentials.invalidate(secret),
            _ => {
                let mut lease = self.lease.lock().await;
                if lease.as_ref().is_some_and(|l| l.token == *token) {
                    *lease = None;
                }
            }
        }
    }

    /// Explains a 403 that persisted after a fresh token: the token itself is refused (token
    /// auth: invalid, expired or revoked), or its policies do not allow `what`.
    pub async fn diagnose_denial(&self, token: &SecretValue, what: &str, errors: &[String]) -> BackendError {
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        match &self.method {
            AuthMethod::Token { secret } if errors.iter().any(|e| e.contains("invalid token")) => {
                BackendError::Misconfigured(format!(
                    "Vault refused the token in {secret}: it is invalid, expired or revoked; put a valid token there"
                ))
            }
            AuthMethod::Token { secret } => {
                let lookup = self
                    .http
                    .send(
                        "token.lookup-self",
                        Method::GET,
                        "auth/token/lookup-self",
                        "",
                        Some(token),
                        None,
                    )
                    .await;
                match lookup {
                    Ok(Reply::Denied(_)) => BackendError::Misconfigured(format!(
                        "Vault refused the token in {secret}: it is invalid, expired or revoked; put a valid token there"
                    )),
                    Err(e @ BackendError::Unavailable(_)) => e,
                    _ => BackendError::Misconfigured(format!(
                        "the policies of the Vault token in {secret} do not allow {what}{detail}"
                    )),
                }
            }
            AuthMethod::Kubernetes { role, .. } => BackendError::Misconfigured(format!(
                "the policies of Vault's Kubernetes auth role {role:?} do not allow {what}{detail}"
            )),
            AuthMethod::AppRole { role_id, .. } => BackendError::Misconfigured(format!(
                "the policies of the AppRole with role ID {role_id:?} do not allow {what}{detail}"
            )),
        }
    }

    async fn login(&self) -> Result<Lease, BackendError> {
        match &self.method {
            AuthMethod::Token { .. } => unreachable!("token auth never logs in"),
            AuthMethod::Kubernetes {
                mount_path,
                role,
                namespace,
                service_account,
                audiences,
            } => {
                let jwt = self
                    .service_account_token(namespace, service_account, audiences)
                    .await?;
                let body = json!({ "role": role, "jwt": jwt.expose() });
                let who = format!(
                    "Kubernetes auth login (mount {mount_path:?}, role {role:?}, ServiceAccount {namespace}/{service_account})"
                );
                self.login_with(mount_path, &body, &who).await
            }
            AuthMethod::AppRole {
                mount_path,
                role_id,
                secret,
            } => {
                let who = format!("AppRole login (mount {mount_path:?}, role ID {role_id:?}, secret ID in {secret})");
                let mut secret_id = self.credentials.get(secret).await?;
                if self.refused_before(&secret_id).is_some() {
                    // Perhaps rotated since it was read: read the Secret once more.
                    self.credentials.invalidate(secret);
                    secret_id = self.credentials.get(secret).await?;
                    if let Some(message) = self.refused_before(&secret_id) {
                        return Err(BackendError::Misconfigured(message));
                    }
                }
                let body = json!({ "role_id": role_id, "secret_id": secret_id.expose() });
                let result = self.login_with(mount_path, &body, &who).await;
                if let Err(BackendError::Misconfigured(message)) = &result {
                    // Re-read the Secret at the next attempt, and until it changes, answer
                    // with this refusal instead of asking Vault again.
                    self.credentials.invalidate(secret);
                    *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((secret_id, message.clone()));
                }
                result
            }
        }
    }

    /// Why Vault refused `secret_id` before, if it did.
    fn refused_before(&self, secret_id: &SecretValue) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .as_ref()
            .filter(|(id, _)| id == secret_id)
            .map(|(_, message)| message.clone())
    }

    async fn login_with(&self, mount_path: &str, body: &serde_json::Value, who: &str) -> Result<Lease, BackendError> {
        let path = format!("auth/{mount_path}/login");
        match self
            .http
            .send("login", Method::POST, &path, "", None, Some(body))
            .await?
        {
            Reply::Ok(body) => {
                let auth = body.auth(who)?;
                let lease = Duration::from_secs(auth.lease_duration);
                let renew_after = if lease.is_zero() {
                    UNLEASED_RELOGIN
                } else {
                    lease * 2 / 3
                };
                Ok(Lease {
                    token: auth.client_token,
                    renew_at: Instant::now() + renew_after,
                })
            }
            Reply::Denied(errors) | Reply::Rejected { errors, .. } => Err(BackendError::Misconfigured(format!(
                "Vault refused the {who}: {}",
                if errors.is_empty() {
                    "permission denied".to_string()
                } else {
                    errors.join("; ")
                }
            ))),
            Reply::NotFound => Err(BackendError::Misconfigured(format!(
                "Vault has no auth method at auth/{mount_path} for the {who}"
            ))),
        }
    }

    /// A TokenRequest token of the ServiceAccount, as a pod running under it would hold.
    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
    ) -> Result<SecretValue, BackendError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Empty: the API server's own audience.
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => BackendError::Misconfigured(format!(
                    "the ServiceAccount {namespace}/{name} for Vault's Kubernetes auth does not exist"
                )),
                kube::Error::Api(s) if s.code == 403 => BackendError::Misconfigured(format!(
                    "secretref may not request tokens of the ServiceAccount {namespace}/{name}: it needs create on serviceaccounts/token (the chart's rbac.serviceAccountTokens=true)"
                )),
                _ => BackendError::Unavailable(format!(
                    "requesting a token of the ServiceAccount {namespace}/{name}: {e}"
                )),
            })?;
        response
            .status
            .and_then(|s| s.token)
            .map(SecretValue::new)
            .ok_or_else(|| {
                BackendError::Unavailable(format!("the API server returned no token for {namespace}/{name}"))
            })
    }
}
