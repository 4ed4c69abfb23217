//! HTTP edge: the claim API (served over mTLS to the allowed callers only) and the admin routes
//! (plain HTTP: `/healthz`, `/readyz`, `/metrics`). Handlers parse and call [`Manager`]; errors
//! become the common error envelope once, in [`Error`]'s `IntoResponse`.

use std::sync::Arc;

use antwort_common::error::ErrorEnvelope;
use antwort_common::identity::SharedSource;
use antwort_common::pool_api::{ClaimRequest, PoolList, RenewRequest, codes};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::error::Error;
use crate::manager::Manager;
use crate::runtime::Runtime;

/// The claim API. Serve it with `MtlsServer` (which admits only the allowed callers). Its
/// `/healthz` lets a caller check, with its own identity, that it gets through.
pub fn claim_router<R: Runtime>(manager: Arc<Manager<R>>) -> Router {
    let limit = manager.claims.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/claims", post(claim::<R>))
        .route("/v1/claims/{id}/renew", post(renew::<R>))
        .route("/v1/claims/{id}", delete(release::<R>))
        .route("/v1/pools", get(pools::<R>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(manager)
}

/// What `/readyz` needs besides the manager.
struct Admin<R: Runtime> {
    manager: Arc<Manager<R>>,
    identity: SharedSource,
}

// By hand: a derive would ask for `R: Clone`.
impl<R: Runtime> Clone for Admin<R> {
    fn clone(&self) -> Self {
        Admin { manager: self.manager.clone(), identity: self.identity.clone() }
    }
}

/// `/healthz` (alive), `/readyz` (an SVID and a reachable runtime), `/metrics`.
pub fn admin_router<R: Runtime>(manager: Arc<Manager<R>>, identity: SharedSource) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics::<R>))
        .fallback(not_found)
        .with_state(Admin { manager, identity })
}

async fn readyz<R: Runtime>(State(admin): State<Admin<R>>) -> Response {
    if !admin.identity.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: no SVID yet\n").into_response();
    }
    match admin.manager.runtime.pools().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {error}\n")).into_response()
        }
    }
}

async fn metrics<R: Runtime>(State(admin): State<Admin<R>>) -> Response {
    let manager = &admin.manager;
    manager.metrics.leader.set(i64::from(manager.is_leader()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], manager.metrics.render())
        .into_response()
}

async fn claim<R: Runtime>(State(manager): State<Arc<Manager<R>>>, body: Bytes) -> Response {
    let request: ClaimRequest = match parse(&body, false) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    match manager.claim(request).await {
        Ok(claim) => Json(claim).into_response(),
        Err(error) => with_retry_after(error, manager.claims.retry_after_secs),
    }
}

async fn renew<R: Runtime>(
    State(manager): State<Arc<Manager<R>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request: RenewRequest = match parse(&body, true) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    match manager.renew(&id, request.ttl_secs).await {
        Ok(claim) => Json(claim).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn release<R: Runtime>(
    State(manager): State<Arc<Manager<R>>>,
    Path(id): Path<String>,
) -> Response {
    match manager.release(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn pools<R: Runtime>(State(manager): State<Arc<Manager<R>>>) -> Response {
    match manager.pool_statuses().await {
        Ok(pools) => Json(PoolList { pools }).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn not_found() -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        codes::ROUTE_NOT_FOUND,
        "no such route",
    )
}

/// JSON with our envelope for bad bodies; an empty body is `{}` where `empty_ok`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], empty_ok: bool) -> Result<T, Error> {
    let body: &[u8] =
        if empty_ok && body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

fn with_retry_after(error: Error, seconds: u64) -> Response {
    let retry = matches!(error, Error::PoolExhausted(_) | Error::PoolStarting(_));
    let mut response = error.into_response();
    if retry {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

fn envelope(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorEnvelope::new(kind, code, message))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind, code) = match &self {
            Error::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", codes::INVALID_REQUEST)
            }
            Error::PoolNotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", codes::POOL_NOT_FOUND)
            }
            Error::ClaimNotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", codes::CLAIM_NOT_FOUND)
            }
            Error::PoolExhausted(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", codes::POOL_EXHAUSTED)
            }
            Error::PoolStarting(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", codes::POOL_STARTING)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", codes::INTERNAL),
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Logged once here; the caller gets no internals.
            tracing::error!(error = %self, "claim API request failed");
            "the pool manager failed; see its log".to_owned()
        } else {
            self.to_string()
        };
        envelope(status, kind, code, message)
    }
}
