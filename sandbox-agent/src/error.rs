//! The agent's one error type, mapped to an HTTP status and the internal error envelope in one
//! place ([`IntoResponse`]). Bad input is not logged; internal failures are, once, here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use antwort_common::error::ErrorEnvelope;

/// Everything that can go wrong outside an execution (an execution that ran is a result, not an
/// error, whatever its status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("no session {0}")]
    SessionNotFound(String),
    #[error("session {0} is running another execution")]
    SessionBusy(String),
    #[error("session {0} has no live interpreter; restart it")]
    SessionDead(String),
    #[error("at most {0} sessions may exist at once")]
    TooManySessions(usize),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("path not allowed: {0}")]
    BadPath(String),
    #[error("no file {0}")]
    FileNotFound(String),
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("the interpreter failed to start: {0}")]
    Spawn(String),
    /// The spawner in the sandbox container cannot be reached (or is not who it should be).
    #[error("the sandbox spawner is unavailable: {0}")]
    SpawnerUnavailable(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
    /// A client error decided at the HTTP edge (unknown route, wrong method, body too large).
    #[error("{2}")]
    Http(StatusCode, &'static str, String),
}

/// `Result` with the agent [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status and the stable machine-readable code.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "config"),
            Error::SessionNotFound(_) => (StatusCode::NOT_FOUND, "session_not_found"),
            Error::SessionBusy(_) => (StatusCode::CONFLICT, "session_busy"),
            Error::SessionDead(_) => (StatusCode::CONFLICT, "session_dead"),
            Error::TooManySessions(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::BadPath(_) => (StatusCode::BAD_REQUEST, "path_not_allowed"),
            Error::FileNotFound(_) => (StatusCode::NOT_FOUND, "file_not_found"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Spawn(_) => (StatusCode::INTERNAL_SERVER_ERROR, "interpreter_start_failed"),
            Error::SpawnerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "spawner_unavailable")
            }
            Error::Io(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Error::Http(status, code, _) => (*status, code),
        }
    }

    /// The wire form: client errors carry their message, server errors a generic one.
    pub fn envelope(&self) -> (StatusCode, ErrorEnvelope) {
        let (status, code) = self.classify();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
            let message = match self {
                Error::Spawn(_) | Error::SpawnerUnavailable(_) | Error::ShuttingDown => {
                    self.to_string()
                }
                _ => "internal error in the sandbox agent".to_string(),
            };
            (status, ErrorEnvelope::new("server_error", code, message))
        } else {
            (status, ErrorEnvelope::new("invalid_request_error", code, self.to_string()))
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, envelope) = self.envelope();
        let mut response = (status, Json(envelope)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so this connection cannot carry another
            // request; saying so keeps clients from reusing it and failing their next call.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
