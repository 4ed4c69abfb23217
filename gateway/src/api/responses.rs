//! `POST /v1/responses`: read and validate the body, then hand it to the engine and send back a
//! Response object or its event stream.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;

use super::{AppState, sse};
use crate::error::Error;
use crate::openresponses::request::CreateResponse;

pub async fn create(State(state): State<AppState>, request: Request) -> Result<Response, Error> {
    let body = json_body(request, state.max_body_bytes).await?;
    let create = CreateResponse::from_json(&body)?;
    drop(body);
    if create.stream {
        let events = state.engine.stream(create).await?;
        Ok(sse::response(events))
    } else {
        let response = state.engine.respond(create).await?;
        Ok(Json(response).into_response())
    }
}

/// The body of a JSON request, at most `limit` bytes.
pub(super) async fn json_body(request: Request, limit: usize) -> Result<Bytes, Error> {
    let headers = request.headers();
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let shown = if content_type.is_empty() { "(none)" } else { content_type };
        return Err(Error::UnsupportedMediaType(shown.to_string()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let body: Body = request.into_body();
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Error::PayloadTooLarge { limit }
        } else {
            Error::invalid_request(
                None,
                "invalid_body",
                format!("Reading the request body failed: {err}"),
            )
        }
    })
}
