//! `/healthz` (the process is alive), `/readyz` (every backend and the store answer), `/metrics`.

use axum::extract::State;
use axum::response::IntoResponse;
use http::{StatusCode, header};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let checks = state
        .engine
        .router()
        .providers()
        .iter()
        .map(|p| async move { (p.name().to_string(), p.check_ready().await) });
    let results = futures::future::join_all(checks).await;
    let mut failures: Vec<_> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| json!({"backend": name, "error": e})))
        .collect();
    // Without its database the gateway cannot store or read a response.
    if let Err(err) = state.store.check_ready().await {
        failures.push(json!({"store": state.store.engine(), "error": err.to_string()}));
    }
    if failures.is_empty() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "failures": failures})),
        )
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
