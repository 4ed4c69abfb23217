//! The error envelope every internal API (claims, agent) answers with: the same shape the gateway
//! uses for OpenResponses, minus `param`.

use serde::{Deserialize, Serialize};

/// `{"error": {...}}` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The inside of an [`ErrorEnvelope`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// A broad class such as `invalid_request_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A machine-readable reason, stable across releases.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
}

impl ErrorEnvelope {
    pub fn new(
        kind: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { error: ErrorBody { kind: kind.into(), code: code.into(), message: message.into() } }
    }
}
