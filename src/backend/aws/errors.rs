//! Maps the SDK's errors onto [`BackendError`]: unreachable, throttled (after the SDK's
//! retries) or failing AWS is `Unavailable`; refused credentials or permissions are
//! `Misconfigured` (nothing works until someone fixes them); both name the store's endpoint and
//! AWS's error code, never a value.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::backend::BackendError;

/// AWS's error codes for credentials it does not accept.
const REFUSED_CREDENTIALS: [&str; 6] = [
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AccessDeniedException",
];

/// Whether AWS's error `code` means it refused the credentials.
pub fn is_refused(code: &str) -> bool {
    REFUSED_CREDENTIALS.contains(&code)
}

/// A failed call: AWS's error code (for the caller's own cases, such as
/// `ResourceNotFoundException`) and the backend error it means otherwise.
#[derive(Debug)]
pub struct Failure {
    pub code: Option<String>,
    pub error: BackendError,
    /// AWS refused the credentials: the caller drops its cached copy.
    pub refused_credentials: bool,
}

impl Failure {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// What `what` (for example `reading secret "a" (environment "main")`) failing with `err` means.
pub fn classify<E, R>(what: &str, at: &str, err: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let code = service.err().code().map(str::to_string);
        let message = service.err().message().map(str::to_string);
        let detail = format!(
            "{}: {}",
            code.as_deref().unwrap_or("unknown error"),
            message.as_deref().unwrap_or("no message")
        );
        let refused = code.as_deref().is_some_and(is_refused);
        let error = match code.as_deref() {
            Some("ExpiredTokenException") => {
                BackendError::Unavailable(format!("{what} at {at}: AWS says the credentials expired ({detail})"))
            }
            Some("ThrottlingException") | Some("TooManyRequestsException") => BackendError::Unavailable(format!(
                "{what} at {at}: still throttled by AWS after retries ({detail})"
            )),
            _ if refused => BackendError::Misconfigured(format!(
                "{what} at {at}: AWS refused the credentials or permission ({detail})"
            )),
            _ => BackendError::Unavailable(format!("{what} at {at}: {detail}")),
        };
        return Failure {
            code,
            error,
            refused_credentials: refused,
        };
    }
    // Our own credential errors (a missing credential Secret or key) travel inside the SDK's
    // error chain: report them as they are.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(backend) = e.downcast_ref::<BackendError>() {
            return failure(backend.clone());
        }
        if let Some(CredentialsError::CredentialsNotLoaded(_)) = e.downcast_ref::<CredentialsError>() {
            return failure(BackendError::Misconfigured(format!(
                "{what} at {at}: no AWS credentials found ({})",
                DisplayErrorContext(&err)
            )));
        }
        source = e.source();
    }
    failure(BackendError::Unavailable(format!(
        "{what}: cannot reach AWS Secrets Manager at {at}: {}",
        DisplayErrorContext(&err)
    )))
}

fn failure(error: BackendError) -> Failure {
    Failure {
        code: None,
        error,
        refused_credentials: false,
    }
}
