//! `POST /v1/responses`: read and validate the body, then hand it to the engine and send back a
//! Response object or its event stream. Also the stored responses: `DELETE /v1/responses/{id}`,
//! `GET /v1/responses` (list) and `GET /v1/responses/{id}/input_items`, each seeing only the
//! caller's objects (an admin: its tenant's).

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;

use serde_json::json;

use super::{AppState, list, sse};
use crate::auth::Principal;
use crate::error::Error;
use crate::openresponses::request::CreateResponse;
use crate::store::Access;

pub async fn create(State(state): State<AppState>, request: Request) -> Result<Response, Error> {
    let principal = request.extensions().get::<crate::auth::Principal>().cloned();
    let body = json_body(request, state.max_body_bytes).await?;
    let create = CreateResponse::from_json(&body)?;
    if create.background {
        let principal = principal
            .ok_or_else(|| Error::Internal("a request reached a handler unauthenticated".into()))?;
        return super::background::create(&state, &principal, create, &body).await;
    }
    drop(body);
    let principal = principal
        .ok_or_else(|| Error::Internal("a request reached a handler unauthenticated".into()))?;
    if create.stream {
        let events = state.engine.create_stream(&principal, create).await?;
        Ok(sse::response(events, state.sse_keep_alive))
    } else {
        let response = state.engine.create(&principal, create).await?;
        Ok(Json(response).into_response())
    }
}

/// `GET /v1/responses`: a WebSocket upgrade opens WebSocket mode; anything else lists the
/// caller's stored responses.
pub async fn list_or_websocket(State(state): State<AppState>, request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return axum::handler::Handler::call(super::websocket::upgrade, request, state).await;
    }
    list(state, request).await.unwrap_or_else(IntoResponse::into_response)
}

async fn list(state: AppState, request: Request) -> Result<Response, Error> {
    let principal = principal_of(&request)?;
    let page = list::page(request.uri().query())?;
    let listed = state.store.list_responses(&Access::of(&principal), &page).await?;
    let responses = listed
        .data
        .into_iter()
        .map(|r| {
            let mut response = r.response;
            super::resume::hide_code_interpreter_outputs(&mut response);
            response
        })
        .collect();
    Ok(Json(list::body(responses, listed.has_more)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    if !state.store.delete_response(&Access::of(&principal), &id).await? {
        return Err(Error::NotFound { object: "response", id });
    }
    Ok(Json(json!({"id": id, "object": "response", "deleted": true})).into_response())
}

pub async fn input_items(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let page = list::page(query.as_deref())?;
    let listed = state
        .store
        .list_input_items(&Access::of(&principal), &id, &page)
        .await?
        .ok_or(Error::NotFound { object: "response", id })?;
    Ok(Json(list::body(listed.data, listed.has_more)).into_response())
}

fn principal_of(request: &Request) -> Result<Principal, Error> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Internal("a request reached a handler unauthenticated".into()))
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
