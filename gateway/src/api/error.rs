//! The one place an [`Error`] becomes an HTTP response: the OpenResponses envelope
//! `{"error": {"type", "code", "message", "param"}}` with the error's status.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use serde_json::json;

use crate::error::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request rejected");
        }
        let body = json!({
            "error": {
                "type": self.error_type(),
                "code": self.code(),
                "message": self.to_string(),
                "param": self.param(),
            }
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Error::PayloadTooLarge { .. } = &self {
            // The rest of the body was not read, so the connection cannot carry another request.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Error::Unauthorized(_) | Error::InvalidToken(_) = &self {
            // RFC 6750 section 3: tell the client which scheme to use.
            let challenge = match &self {
                Error::InvalidToken(_) => r#"Bearer error="invalid_token""#,
                _ => "Bearer",
            };
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Error::TooManyRequests { retry_after_secs, .. } = &self {
            response.headers_mut().insert(http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        if let Error::RateLimited { retry_after: Some(after), .. } = &self
            && let Ok(value) = HeaderValue::from_str(after)
        {
            response.headers_mut().insert(http::header::RETRY_AFTER, value);
        }
        response
    }
}
