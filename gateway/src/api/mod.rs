//! ROUTE: the HTTP surface. Handlers extract and validate, call the engine, and turn its result
//! into a response; authentication, request ids and metrics wrap every route here.

mod background;
mod compact;
mod containers;
mod conversations;
mod error;
mod health;
mod list;
mod models;
mod responses;
mod resume;
mod sse;
pub mod websocket;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderValue;

use crate::auth::{Auth, Principal};
use crate::engine::Engine;
use crate::error::Error;
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// Where responses and conversations live (the engine holds the same store).
    pub store: Arc<dyn crate::store::Store>,
    /// WebSocket mode limits.
    pub websocket: websocket::WebSocketSettings,
    /// Background mode settings (the API's side: cancel waits, resume polling).
    pub background: crate::worker::BackgroundSettings,
    /// The background workers of this app (they live as long as its routes).
    pub workers: Arc<crate::worker::Workers>,
    /// Authentication, scopes and rate limits (see [`crate::auth`]).
    pub auth: Arc<Auth>,
    /// Silence after which a stream gets a keep-alive comment.
    pub sse_keep_alive: std::time::Duration,
}

/// Routes that answer without authentication: probes and scrapes.
const UNAUTHENTICATED_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/responses", post(responses::create).get(responses::list_or_websocket))
        .route("/v1/responses/compact", post(compact::compact))
        .route("/v1/responses/{id}/cancel", post(background::cancel))
        .route("/v1/responses/{id}", get(resume::get).delete(responses::delete))
        .route("/v1/responses/{id}/input_items", get(responses::input_items))
        .route("/v1/conversations", post(conversations::create))
        .route(
            "/v1/conversations/{id}",
            get(conversations::get).post(conversations::update).delete(conversations::delete),
        )
        .route(
            "/v1/conversations/{id}/items",
            get(conversations::list_items).post(conversations::add_items),
        )
        .route(
            "/v1/conversations/{id}/items/{item_id}",
            get(conversations::get_item).delete(conversations::delete_item),
        )
        .route("/v1/containers", post(containers::create).get(containers::list))
        .route("/v1/containers/{id}", get(containers::get).delete(containers::delete))
        .route(
            "/v1/containers/{id}/files",
            // Uploads count their own bytes against `tools.code_interpreter.max_upload_bytes`.
            get(containers::list_files)
                .post(containers::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/containers/{id}/files/{file_id}",
            get(containers::get_file).delete(containers::delete_file),
        )
        .route("/v1/containers/{id}/files/{file_id}/content", get(containers::file_content))
        .route("/v1/models", get(models::list))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(request: Request) -> Error {
    Error::UnknownRoute(format!("{} {}", request.method(), request.uri().path()))
}

/// Establishes the [`Principal`] of every request (see [`crate::auth`]) and inserts it as a
/// request extension; the probes stay open.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if UNAUTHENTICATED_ROUTES.contains(&request.uri().path()) {
        request.extensions_mut().insert(Principal::anonymous());
        return next.run(request).await;
    }
    match state.auth.check(request.method(), request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// One request id per request (the client's `x-request-id` when it sent a sane one), a tracing
/// span carrying it, and the request metrics.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| crate::ids::new_id("req"));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(), route = %route);
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };
    let status = response.status();
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "answered"
        )
    });
    state.metrics.requests.with_label_values(&[&route, status.as_str()]).inc();
    state
        .metrics
        .request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
