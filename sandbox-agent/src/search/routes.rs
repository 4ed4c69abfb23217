//! HTTP edge of file search and web search: thin handlers that read the body under its limit,
//! parse it, call the service, and answer JSON (errors through [`SearchError`]'s one
//! `IntoResponse`).

use std::sync::Arc;

use antwort_common::search_api::{
    FILE_SEARCH_FILES_PATH, FILE_SEARCH_QUERY_PATH, FileList, FileSearchRequest, WEB_SEARCH_PATH,
    WebSearchRequest,
};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{Result, SearchError};
use super::files::FileSearch;
use super::web::WebSearch;

/// The file-search routes, with their state:
/// `POST|GET /v1/file_search/files`, `GET|DELETE /v1/file_search/files/{id}`,
/// `GET /v1/file_search/files/{id}/text`, `POST /v1/file_search/query`.
pub fn file_search_router(search: FileSearch) -> Router {
    Router::new()
        .route(FILE_SEARCH_FILES_PATH, post(upload).get(list))
        .route(&format!("{FILE_SEARCH_FILES_PATH}/{{id}}"), get(get_file).delete(delete_file))
        .route(&format!("{FILE_SEARCH_FILES_PATH}/{{id}}/text"), get(file_text))
        .route(FILE_SEARCH_QUERY_PATH, post(query))
        .with_state(search)
}

/// The web-search route, with its state: `POST /v1/web_search`.
pub fn web_search_router(search: WebSearch) -> Router {
    Router::new().route(WEB_SEARCH_PATH, post(web_search)).with_state(search)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    filename: String,
}

/// `POST /v1/file_search/files?filename=NAME`, the raw file as the body.
async fn upload(
    State(search): State<FileSearch>,
    params: std::result::Result<Query<UploadParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let Query(params) = params.map_err(|rejection| {
        SearchError::invalid(
            "invalid_filename",
            format!("upload needs a ?filename=NAME query parameter ({})", rejection.body_text()),
        )
    })?;
    let limit = search.config().max_file_bytes;
    let bytes = read_body(&headers, body, limit, SearchError::FileTooLarge { limit }).await?;
    let file = search.upload(&params.filename, bytes.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(file)).into_response())
}

async fn list(State(search): State<FileSearch>) -> Result<Json<FileList>> {
    Ok(Json(FileList { data: search.list()? }))
}

async fn get_file(State(search): State<FileSearch>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(search.get(&id)?).into_response())
}

async fn file_text(State(search): State<FileSearch>, Path(id): Path<String>) -> Result<Response> {
    let text: Arc<str> = search.text(&id)?;
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text.to_string()).into_response())
}

async fn delete_file(State(search): State<FileSearch>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(search.delete(&id).await?).into_response())
}

async fn query(
    State(search): State<FileSearch>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: FileSearchRequest =
        read_json(&headers, body, search.config().max_request_bytes).await?;
    Ok(Json(search.query(request).await?).into_response())
}

async fn web_search(
    State(search): State<WebSearch>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: WebSearchRequest =
        read_json(&headers, body, search.config().max_request_bytes).await?;
    Ok(Json(search.search(request).await?).into_response())
}

/// A JSON body under `limit` bytes, with `Content-Type: application/json`.
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(SearchError::UnsupportedMediaType(
            "expected a JSON body with Content-Type: application/json".to_owned(),
        ));
    }
    let limit = limit as u64;
    let bytes = read_body(headers, body, limit, SearchError::RequestTooLarge { limit }).await?;
    serde_json::from_slice(&bytes)
        .map_err(|err| SearchError::invalid("invalid_json", format!("invalid request body: {err}")))
}

/// The whole body, or `too_large` as soon as it is known to exceed `limit` (from
/// `Content-Length` before reading, or while reading).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    too_large: SearchError,
) -> Result<Bytes> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let over_limit = std::error::Error::source(&err)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large
        } else {
            SearchError::invalid("invalid_body", format!("could not read the request body: {err}"))
        }
    })
}
