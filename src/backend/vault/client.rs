//! Vault's HTTP API over reqwest (rustls with the ring provider, as kube uses): one request, its
//! status sorted into what the backend acts on. Tokens travel only in the `X-Vault-Token`
//! header; bodies are never logged or put into errors (they may hold values).

use std::{sync::Arc, time::Duration};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};

use super::config::VaultConfig;
use crate::{backend::BackendError, metrics::Metrics, model::SecretValue};

/// How long one request may take; Vault answers KV reads in milliseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What Vault answered, sorted by what the caller does next.
#[derive(Debug)]
pub enum Reply {
    /// 2xx, with the body (empty for 204).
    Ok(Body),
    /// 404: nothing there.
    NotFound,
    /// 403: the token is missing, invalid, expired or revoked, or its policies deny the call.
    Denied(Vec<String>),
    /// Another 4xx: the request was refused (for example a check-and-set mismatch).
    Rejected { status: u16, errors: Vec<String> },
}

/// A response body. Deliberately not `Debug`-printable: it may hold secret values.
pub struct Body(pub Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Body {
    /// Decodes the `data` field. The error never quotes the body: serde's messages can quote
    /// the value that did not fit, and values are secret.
    pub fn data<T: DeserializeOwned>(&self, what: &str) -> Result<T, BackendError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            data: T,
        }
        serde_json::from_slice::<Envelope<T>>(&self.0)
            .map(|e| e.data)
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "Vault's answer to {what} is not the JSON expected ({:?} at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
    }

    /// Decodes the `auth` field of a login answer.
    pub fn auth(&self, what: &str) -> Result<LoginAuth, BackendError> {
        #[derive(Deserialize)]
        struct Envelope {
            auth: LoginAuth,
        }
        serde_json::from_slice::<Envelope>(&self.0)
            .map(|e| e.auth)
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "Vault's answer to {what} is not the JSON expected ({:?} at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
    }
}

/// The `auth` block of a login: the token and how long it lives.
#[derive(Deserialize)]
pub struct LoginAuth {
    #[serde(deserialize_with = "secret_value")]
    pub client_token: SecretValue,
    #[serde(default)]
    pub lease_duration: u64,
}

fn secret_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    String::deserialize(d).map(SecretValue::new)
}

/// A connection to one Vault server (and Enterprise namespace).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    server: String,
    namespace: Option<String>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub fn new(config: &VaultConfig, metrics: Option<Arc<Metrics>>) -> Result<Self, BackendError> {
        // reqwest has no provider of its own (`rustls-no-provider`): the binary installs ring at
        // start; this covers library users (tests). Installing twice is harmless.
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("secretref/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                BackendError::Misconfigured(format!("vault.caBundle holds no usable PEM certificate: {e}"))
            })?;
            if certs.is_empty() {
                return Err(BackendError::Misconfigured(
                    "vault.caBundle holds no PEM certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| BackendError::Misconfigured(format!("cannot set up an HTTP client for Vault: {e}")))?;
        Ok(Http {
            client,
            server: config.server.clone(),
            namespace: config.namespace.clone(),
            metrics,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one request to `/v1/<path>` (with `query` appended as given), counted under `op`
    /// in `secretref_backend_calls_total`, and sorts the answer. Unreachable, sealed, overloaded
    /// or failing servers are `Unavailable`.
    pub async fn send(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &str,
        token: Option<&SecretValue>,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, BackendError> {
        if let Some(metrics) = &self.metrics {
            metrics.backend_call("vault", op);
        }
        let url = format!("{}/v1/{path}{query}", self.server);
        let mut request = self.client.request(method, &url).header("X-Vault-Request", "true");
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token.expose());
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("cannot reach Vault at {}: {}", self.server, chain(&e))))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            BackendError::Unavailable(format!("reading Vault's answer from {}: {}", self.server, chain(&e)))
        })?;
        let body = Body(bytes.to_vec());
        Ok(match status {
            s if s.is_success() => Reply::Ok(body),
            StatusCode::NOT_FOUND => Reply::NotFound,
            StatusCode::FORBIDDEN => Reply::Denied(errors(&body)),
            StatusCode::SERVICE_UNAVAILABLE => {
                let errors = errors(&body);
                let why = if errors.iter().any(|e| e.contains("sealed")) {
                    "Vault is sealed".to_string()
                } else {
                    format!("Vault is unavailable (503): {}", errors.join("; "))
                };
                return Err(BackendError::Unavailable(format!("{why} ({path} on {})", self.server)));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(BackendError::Unavailable(format!(
                    "Vault at {} is rate-limiting secretref (429)",
                    self.server
                )));
            }
            s if s.is_client_error() => Reply::Rejected {
                status: s.as_u16(),
                errors: errors(&body),
            },
            s => {
                return Err(BackendError::Unavailable(format!(
                    "Vault at {} answered {s} to {path}: {}",
                    self.server,
                    errors(&body).join("; ")
                )));
            }
        })
    }
}

/// Vault's `errors` list. Vault's error texts name paths, roles and reasons, not values.
fn errors(body: &Body) -> Vec<String> {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<Errors>(&body.0)
        .map(|e| e.errors.iter().flat_map(|e| flatten(e)).collect())
        .unwrap_or_default()
}

/// Vault's multi-error texts ("2 errors occurred:\n\t* permission denied\n\t* invalid token")
/// as their items, one line each.
fn flatten(error: &str) -> Vec<String> {
    let items: Vec<String> = error
        .lines()
        .map(str::trim)
        .filter(|l| !(l.is_empty() || l.ends_with("occurred:") && l.contains("error")))
        .map(|l| l.trim_start_matches("* ").to_string())
        .collect();
    if items.is_empty() {
        vec![error.trim().to_string()]
    } else {
        items
    }
}

/// An error with its causes ("error sending request: connection refused"), one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn multi_errors_become_items() {
        assert_eq!(
            super::flatten("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"),
            ["permission denied", "invalid token"]
        );
        assert_eq!(
            super::flatten("check-and-set parameter did not match the current version"),
            ["check-and-set parameter did not match the current version"]
        );
    }
}
