//! Builds one store's Secrets Manager client from its `aws` provider: region and endpoint, one
//! TLS stack (rustls with ring, the one kube uses), throttling and transient failures retried
//! with exponential backoff and jitter, the credentials (static keys from a Secret through the
//! shared [`Credentials`], or the SDK's default chain; a role assumed on top of either), and a
//! counter of every call attempt by operation.

use std::{sync::Arc, time::Duration};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, sts::AssumeRoleProvider, timeout::TimeoutConfig};
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_secretsmanager::{
    Client,
    config::{
        ConfigBag, IdentityCache, Intercept, RuntimeComponents, SharedCredentialsProvider,
        interceptors::BeforeTransmitInterceptorContextRef,
    },
};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};

use crate::{
    api::AwsProvider,
    backend::{
        BackendError, BuildContext,
        credentials::{Credentials, SecretKeyRef},
    },
    metrics::Metrics,
};

/// Every Secrets Manager operation secretref calls (the metric's `operation` label values).
pub const OPERATIONS: [&str; 7] = [
    "ListSecrets",
    "DescribeSecret",
    "GetSecretValue",
    "BatchGetSecretValue",
    "CreateSecret",
    "PutSecretValue",
    "DeleteSecret",
];

/// What `build` returns: the client and where its static keys come from (if anywhere).
pub struct Built {
    pub client: Client,
    pub key_refs: Vec<SecretKeyRef>,
    /// The credential source, for the store identity: `default` or `secret:<ns>/<name>`.
    pub auth: String,
}

pub async fn build(ctx: &BuildContext, provider: &AwsProvider) -> Result<Built, BackendError> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .region(Region::new(provider.region.clone()))
        .http_client(http)
        // Standard mode: exponential backoff with full jitter, throttling and transient errors
        // retried; what still fails after the attempts surfaces as BackendUnavailable.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = &provider.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let auth = provider.auth.as_ref();
    let mut key_refs = Vec::new();
    let mut label = "default".to_string();
    if let Some(secret_ref) = auth.and_then(|a| a.secret_ref.as_ref()) {
        let key = |key: &str| {
            SecretKeyRef::for_store(
                ctx.store_namespace.as_deref(),
                secret_ref.namespace.as_deref(),
                &secret_ref.name,
                key,
            )
        };
        let keys = SecretKeys {
            credentials: ctx.credentials.clone(),
            access_key_id: key(&secret_ref.access_key_id_key)?,
            secret_access_key: key(&secret_ref.secret_access_key_key)?,
        };
        key_refs = vec![keys.access_key_id.clone(), keys.secret_access_key.clone()];
        label = format!("secret:{}/{}", keys.access_key_id.namespace, secret_ref.name);
        // No SDK cache on top: `Credentials` already caches for 30 s and drops its copy when
        // AWS refuses a key, which an SDK cache would not know.
        loader = loader
            .credentials_provider(keys)
            .identity_cache(IdentityCache::no_cache());
    }
    let mut sdk = loader.load().await;
    if let Some(role) = auth.and_then(|a| a.role_arn.as_ref()) {
        let base = sdk
            .credentials_provider()
            .ok_or_else(|| BackendError::Misconfigured("no AWS credentials to assume the role with".into()))?;
        let assume = AssumeRoleProvider::builder(role)
            .session_name("secretref")
            .configure(&sdk)
            .build_from_provider(base)
            .await;
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(assume))
            // Assumed credentials last an hour: cache them until shortly before they expire.
            .identity_cache(IdentityCache::lazy().build())
            .build();
    }
    let config = aws_sdk_secretsmanager::config::Builder::from(&sdk)
        .interceptor(CountCalls(ctx.metrics.clone()))
        .build();
    Ok(Built {
        client: Client::from_conf(config),
        key_refs,
        auth: label,
    })
}

/// Static keys read from a Secret on demand.
#[derive(Debug)]
struct SecretKeys {
    credentials: Credentials,
    access_key_id: SecretKeyRef,
    secret_access_key: SecretKeyRef,
}

impl ProvideCredentials for SecretKeys {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let id = self
                .credentials
                .get(&self.access_key_id)
                .await
                .map_err(CredentialsError::provider_error)?;
            let secret = self
                .credentials
                .get(&self.secret_access_key)
                .await
                .map_err(CredentialsError::provider_error)?;
            // Keys pasted into a Secret often carry a trailing newline.
            Ok(aws_credential_types::Credentials::new(
                id.expose().trim(),
                secret.expose().trim(),
                None,
                None,
                "secretref-secret",
            ))
        })
    }
}

/// Counts each attempt (retries included: each is a billed call) by operation.
#[derive(Debug)]
struct CountCalls(Option<Arc<Metrics>>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "secretref-count-calls"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metrics) = &self.0 {
            let name = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
            let operation = OPERATIONS.iter().find(|o| **o == name).copied().unwrap_or("other");
            metrics.backend_call("aws", operation);
        }
        Ok(())
    }
}
