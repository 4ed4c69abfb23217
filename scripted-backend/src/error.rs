//! The crate's one error type. Request errors become OpenAI error bodies in `server.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::StatusCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot read script file {}: {source}", path.display())]
    ReadScript { path: PathBuf, source: std::io::Error },
    #[error("invalid script file {}: {message}", path.display())]
    ParseScript { path: PathBuf, message: String },
    #[error("invalid script: {0}")]
    InvalidScript(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("cannot read request body: {0}")]
    ReadBody(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
}

impl Error {
    /// The HTTP status and OpenAI error `type` when this error answers a request.
    pub(crate) fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidScript(_) | Error::BadRequest(_) | Error::ReadBody(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found_error"),
            Error::Bind { .. } | Error::ReadScript { .. } | Error::ParseScript { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
        }
    }
}
