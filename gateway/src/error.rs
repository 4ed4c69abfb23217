//! The gateway's one error type. Every failure becomes an [`Error`] where it happens; the HTTP
//! status, the OpenResponses error `type`/`code` and the message are decided here, and turned into
//! the wire envelope in exactly one place (`api::error`).

use std::time::Duration;

use http::StatusCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `param` is the offending parameter path.
    #[error("{message}")]
    InvalidRequest { param: Option<String>, code: &'static str, message: String },
    /// No credential, or an API key nobody knows (401, `invalid_api_key`).
    #[error("{0}")]
    Unauthorized(String),
    /// A bearer token (JWT) that does not verify (401, `invalid_token`).
    #[error("{0}")]
    InvalidToken(String),
    /// Authenticated, but the credential lacks the scope the request needs (403).
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller exceeded its own request rate (429 with `Retry-After`).
    #[error(
        "Rate limit of {per_minute} requests per minute exceeded; retry after {retry_after_secs}s."
    )]
    TooManyRequests { per_minute: u32, retry_after_secs: u64 },
    /// Credentials cannot be checked right now (the OIDC issuer's keys are unreachable).
    #[error("{0}")]
    AuthUnavailable(String),
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Unknown route: {0}")]
    UnknownRoute(String),
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    #[error("The request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Unsupported Content-Type '{0}'; send 'application/json'.")]
    UnsupportedMediaType(String),
    /// The backend said 429; its `Retry-After` is passed on.
    #[error("The model backend is rate limiting requests: {message}")]
    RateLimited { retry_after: Option<String>, message: String },
    /// The backend rejected the request as invalid (4xx other than 429, e.g. a context overflow).
    #[error("The model backend rejected the request: {message}")]
    BackendRejected { message: String },
    /// The backend failed or answered with something that is not a valid completion.
    #[error("The model backend failed: {message}")]
    Backend { message: String },
    #[error("The model backend did not answer within {}s.", .after.as_secs_f64())]
    BackendTimeout { after: Duration },
    #[error("Internal error: {0}")]
    Internal(String),
    /// A stored object (response, conversation, item) that does not exist or belongs to someone
    /// else: the two are indistinguishable on purpose.
    #[error("No {object} found with id '{id}'.")]
    NotFound { object: &'static str, id: String },
    /// The database cannot be reached (down, restarting, pool exhausted); retrying may succeed.
    #[error("The storage backend is unavailable, try again shortly: {0}")]
    StoreUnavailable(String),
    /// A container's sandbox cannot be claimed or reached (the containers API; the code
    /// interpreter hands such failures to the model instead).
    #[error("The sandbox is unavailable, try again shortly: {0}")]
    SandboxUnavailable(String),
}

impl Error {
    pub fn invalid_request(
        param: Option<&str>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::InvalidRequest { param: param.map(str::to_string), code, message: message.into() }
    }

    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::invalid_request(Some(param), "invalid_value", message)
    }

    pub fn invalid_type(param: &str, expected: &str) -> Self {
        Self::invalid_request(
            Some(param),
            "invalid_type",
            format!("Invalid type for '{param}': expected {expected}."),
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::BackendRejected { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::AuthUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ModelNotFound(_) | Self::PreviousResponseNotFound(_) | Self::UnknownRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Backend { .. } => StatusCode::BAD_GATEWAY,
            Self::BackendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::StoreUnavailable(_) | Self::SandboxUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The envelope's `type`: the broad class of the error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. }
            | Self::PayloadTooLarge { .. }
            | Self::UnsupportedMediaType(_)
            | Self::BackendRejected { .. } => "invalid_request_error",
            Self::Unauthorized(_) | Self::InvalidToken(_) => "authentication_error",
            Self::PermissionDenied(_) => "permission_error",
            Self::TooManyRequests { .. } => "rate_limit_error",
            Self::AuthUnavailable(_) => "server_error",
            Self::ModelNotFound(_) | Self::PreviousResponseNotFound(_) | Self::UnknownRoute(_) => {
                "not_found_error"
            }
            Self::RateLimited { .. } => "rate_limit_error",
            Self::Backend { .. }
            | Self::BackendTimeout { .. }
            | Self::Internal(_)
            | Self::StoreUnavailable(_)
            | Self::SandboxUnavailable(_) => "server_error",
            Self::NotFound { .. } => "not_found_error",
        }
    }

    /// The envelope's `code`: a stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { code, .. } => code,
            Self::Unauthorized(_) => "invalid_api_key",
            Self::InvalidToken(_) => "invalid_token",
            Self::PermissionDenied(_) => "permission_denied",
            Self::TooManyRequests { .. } => "rate_limit_exceeded",
            Self::AuthUnavailable(_) => "auth_unavailable",
            Self::ModelNotFound(_) => "model_not_found",
            Self::PreviousResponseNotFound(_) => "previous_response_not_found",
            Self::UnknownRoute(_) => "unknown_route",
            Self::PayloadTooLarge { .. } => "request_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::BackendRejected { .. } => "backend_rejected_request",
            Self::Backend { .. } => "backend_error",
            Self::BackendTimeout { .. } => "backend_timeout",
            Self::Internal(_) => "internal_error",
            Self::NotFound { .. } => "not_found",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::SandboxUnavailable(_) => "sandbox_unavailable",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) => Some("model"),
            Self::PreviousResponseNotFound(_) => Some("previous_response_id"),
            _ => None,
        }
    }

    /// A label for the `backend_errors_total` metric, or `None` when the backend is not at fault.
    pub fn backend_error_kind(&self) -> Option<&'static str> {
        match self {
            Self::RateLimited { .. } => Some("rate_limited"),
            Self::BackendRejected { .. } => Some("rejected"),
            Self::Backend { .. } => Some("failed"),
            Self::BackendTimeout { .. } => Some("timeout"),
            _ => None,
        }
    }
}
