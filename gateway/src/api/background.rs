//! Background mode over HTTP: `POST /v1/responses` with `background: true` (stored as `queued`
//! and answered at once; the `worker` pool runs it) and `POST /v1/responses/{id}/cancel`.

use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::{new_id, unix_now};
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::{ResponseObject, ResponseStatus};
use crate::store::{Access, NewResponse, Owner, is_terminal};

/// Stores a background request as a `queued` response; a worker of some replica runs it. With
/// `stream: true` the answer is the response's event stream, followed live from its start.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    request: CreateResponse,
    body: &[u8],
) -> Result<Response, Error> {
    if !request.store {
        return Err(Error::invalid_request(
            Some("store"),
            "invalid_value",
            "Background responses must be stored: set 'store' to true (the default) or leave it out.",
        ));
    }
    if state.engine.router().route(&request.model).is_none() {
        return Err(Error::ModelNotFound(request.model.clone()));
    }
    let access = Access::of(principal);
    if let Some(previous) = &request.previous_response_id
        && state.store.get_response(&access, previous).await?.is_none()
    {
        return Err(Error::PreviousResponseNotFound(previous.clone()));
    }
    if let Some(conversation) = &request.conversation
        && state.store.get_conversation(&access, conversation).await?.is_none()
    {
        return Err(Error::NotFound { object: "conversation", id: conversation.clone() });
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        Error::invalid_request(None, "invalid_json", format!("The body is not valid JSON: {e}"))
    })?;
    let mut response = ResponseObject::new(new_id("resp"), unix_now(), &request);
    response.status = ResponseStatus::Queued;
    let response_json = serde_json::to_value(&response)
        .map_err(|e| Error::Internal(format!("encoding a response: {e}")))?;
    let new = NewResponse {
        id: response.id.clone(),
        owner: Owner::of(principal),
        created_at: response.created_at,
        status: ResponseStatus::Queued,
        previous_response_id: request.previous_response_id.clone(),
        // The turn joins the conversation when it finishes (the store does that with the final
        // status), so the worker's context holds the conversation as it was before this turn.
        conversation_id: request.conversation.clone(),
        response: response_json.clone(),
        input: input_items(body.get("input")),
        request: Some(body),
    };
    state.store.save_response(&new).await?;
    if request.stream {
        return super::resume::stream(state, access, response.id, None).await;
    }
    Ok(Json(response_json).into_response())
}

/// `POST /v1/responses/{id}/cancel`: stops a queued or running background response and returns
/// it as it ended. Cancelling an already cancelled response returns it again; other finished
/// responses, and responses not created in background mode, cannot be cancelled (400).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let access = Access::of(&principal);
    let not_found = || Error::NotFound { object: "response", id: id.clone() };
    let stored = state.store.get_response(&access, &id).await?.ok_or_else(not_found)?;
    if stored.response.get("background").and_then(Value::as_bool) != Some(true) {
        return Err(Error::invalid_request(
            None,
            "invalid_request",
            "Only background responses can be cancelled.",
        ));
    }
    match stored.status {
        ResponseStatus::Cancelled => return Ok(Json(stored.response)),
        status if is_terminal(status) => {
            return Err(Error::invalid_request(
                None,
                "invalid_request",
                format!("Cannot cancel a response that is already {}.", status.as_str()),
            ));
        }
        _ => {}
    }
    let marked = state.store.request_cancel(&access, &id).await?.ok_or_else(not_found)?;
    if marked.status == ResponseStatus::Queued {
        // No worker holds it: cancel it here. A worker that claims it meanwhile sees the mark
        // first thing and stops.
        let mut response = marked.response;
        response["status"] = json!("cancelled");
        state.store.update_response(&access, &id, ResponseStatus::Cancelled, &response).await?;
        return Ok(Json(response));
    }
    // A worker runs it and notices the mark within one poll interval.
    let deadline = Instant::now() + state.background.cancel_wait();
    loop {
        let current = state.store.get_response(&access, &id).await?.ok_or_else(not_found)?;
        if is_terminal(current.status) || Instant::now() >= deadline {
            return Ok(Json(current.response));
        }
        tokio::time::sleep(state.background.poll_interval() / 2).await;
    }
}

/// The response's own input items as stored (each with an `id`), from the request's `input`.
fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(text)) => vec![json!({
            "type": "message",
            "id": new_id("msg"),
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Some(map) = item.as_object_mut() {
                    let kind = map.get("type").and_then(Value::as_str).unwrap_or("message");
                    let prefix = match kind {
                        "function_call" => "fc",
                        "function_call_output" => "fco",
                        "reasoning" => "rs",
                        "compaction" => "cmp",
                        _ => "msg",
                    };
                    let kind = kind.to_string();
                    map.entry("type").or_insert_with(|| json!(kind));
                    if !map.get("id").is_some_and(Value::is_string) {
                        map.insert("id".into(), json!(new_id(prefix)));
                    }
                }
                item
            })
            .collect(),
        _ => Vec::new(),
    }
}
