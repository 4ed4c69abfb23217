//! `GET /v1/models`: the model names configured for routing, in the OpenAI list format.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .engine
        .router()
        .model_names()
        .iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "antwort"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
