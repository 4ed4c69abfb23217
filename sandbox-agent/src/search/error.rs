//! The search module's one error type, turned into an HTTP status and
//! [`ErrorEnvelope`] in exactly one place ([`IntoResponse`]).

use antwort_common::error::ErrorEnvelope;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything file search and web search can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Malformed or unacceptable input; `code` is the stable machine-readable reason.
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestTooLarge { limit: u64 },
    #[error("file is larger than the limit of {limit} bytes")]
    FileTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The file claims a supported type but its text cannot be read (broken PDF, bad UTF-8).
    #[error("{0}")]
    Unreadable(String),
    #[error("no file with id {0:?}")]
    FileNotFound(String),
    /// A store-wide limit (file count, total text) would be exceeded.
    #[error("{0}")]
    StoreFull(String),
    #[error("{provider} failed: {message}")]
    Upstream { provider: &'static str, message: String },
    #[error("{provider} did not answer within {timeout_ms} ms")]
    UpstreamTimeout { provider: &'static str, timeout_ms: u64 },
    /// Bad configuration, every problem listed (startup only).
    #[error("invalid search configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// A bug or resource failure on our side; the details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

impl SearchError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        SearchError::InvalidRequest { code, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            SearchError::InvalidRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            SearchError::RequestTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
            }
            SearchError::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"),
            SearchError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            SearchError::Unreadable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unreadable_file"),
            SearchError::FileNotFound(_) => (StatusCode::NOT_FOUND, "file_not_found"),
            SearchError::StoreFull(_) => (StatusCode::CONFLICT, "file_store_full"),
            SearchError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            SearchError::UpstreamTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            }
            SearchError::Config(_) | SearchError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(err: tantivy::TantivyError) -> Self {
        SearchError::Internal(format!("search index: {err}"))
    }
}

impl IntoResponse for SearchError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (kind, message) = if status.is_server_error() {
            match self {
                // Upstream failures are the caller's business: say which provider and why.
                SearchError::Upstream { .. } | SearchError::UpstreamTimeout { .. } => {
                    tracing::warn!(error = %self, "web search upstream failed");
                    ("upstream_error", self.to_string())
                }
                _ => {
                    tracing::error!(error = %self, "search request failed");
                    ("server_error", "internal error in the search service".to_owned())
                }
            }
        } else {
            ("invalid_request_error", self.to_string())
        };
        (status, Json(ErrorEnvelope::new(kind, code, message))).into_response()
    }
}
