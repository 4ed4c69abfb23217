//! `GET /v1/responses/{id}?stream=true&starting_after=N`: the stored events of a response after
//! sequence number `N` (all of them without it), then, while the response is still running,
//! its new events as they are stored, until the final one. Events go out exactly as they were
//! first sent (same `sequence_number`s), as SSE frames ending with `data: [DONE]`.
//!
//! Two kinds of response store their events while running: background responses (their worker
//! writes them) and `stream: true, store: true` responses while they stream to their first
//! client (`engine::recorder` writes them in batches). A stored response that never streamed has
//! nothing to replay (400).
//!
//! Following is polling the store (every `background.poll_interval_ms`), so it works on any
//! replica, whichever replica runs the response. A background response is always ended by some
//! replica (its lease expires when its worker dies); a non-background one is not when its gateway
//! dies mid-stream, so following such a response gives up with an `error` event
//! (`stream_stalled`) after `background.resume_idle_secs` without a new event.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, header};
use serde_json::Value;

use super::AppState;
use crate::error::Error;
use crate::store::{Access, is_terminal};

/// Events fetched from the store per query.
const PAGE: usize = 256;

/// Event types after which a response's stream has nothing more to say.
const FINAL_EVENTS: [&str; 4] =
    ["response.completed", "response.incomplete", "response.failed", "error"];

pub async fn stream(
    state: &AppState,
    access: Access,
    id: String,
    starting_after: Option<u64>,
) -> Result<Response, Error> {
    let stored = state
        .store
        .get_response(&access, &id)
        .await?
        .ok_or_else(|| Error::NotFound { object: "response", id: id.clone() })?;
    let background = stored.response.get("background").and_then(Value::as_bool) == Some(true);
    if !background && is_terminal(stored.status) {
        let first = state.store.events_after(&access, &id, None, 1).await?;
        if first.is_empty() {
            return Err(Error::invalid_request(
                Some("stream"),
                "invalid_request",
                "This response has no stored events to stream: only background responses and responses created with `stream: true` and `store: true` can be streamed from GET.",
            ));
        }
    }
    let store = state.store.clone();
    let poll = state.background.poll_interval();
    let idle_limit = state.background.resume_idle();
    let frames = async_stream::stream! {
        let mut after = starting_after;
        let mut last_progress = tokio::time::Instant::now();
        'follow: loop {
            let events = match store.events_after(&access, &id, after, PAGE).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, response_id = %id, "reading stored events failed");
                    yield Ok::<_, std::convert::Infallible>(error_frame(&error, after));
                    break 'follow;
                }
            };
            let full_page = events.len() == PAGE;
            if !events.is_empty() {
                last_progress = tokio::time::Instant::now();
            }
            for event in events {
                after = Some(event.sequence_number);
                let kind = event.event.get("type").and_then(Value::as_str).unwrap_or("").to_string();
                yield Ok(frame(&kind, &event.event));
                if FINAL_EVENTS.contains(&kind.as_str()) {
                    break 'follow;
                }
            }
            if full_page {
                continue;
            }
            match store.get_response(&access, &id).await {
                // Finished, and every event it stored has been sent (a cancelled response has no
                // final event of its own).
                Ok(Some(current)) if is_terminal(current.status) => {
                    match store.events_after(&access, &id, after, 1).await {
                        Ok(more) if more.is_empty() => break 'follow,
                        Ok(_) => continue,
                        Err(_) => break 'follow,
                    }
                }
                Ok(Some(current)) => {
                    let background =
                        current.response.get("background").and_then(Value::as_bool) == Some(true);
                    if !background && last_progress.elapsed() >= idle_limit {
                        tracing::warn!(response_id = %id, "a followed response stored no event for too long; giving up");
                        yield Ok(stalled_frame(idle_limit, after));
                        break 'follow;
                    }
                    tokio::time::sleep(poll).await;
                }
                Ok(None) => break 'follow, // deleted meanwhile
                Err(error) => {
                    yield Ok(error_frame(&error, after));
                    break 'follow;
                }
            }
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
    };
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn frame(kind: &str, event: &Value) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_slice(b"event: ");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\ndata: ");
    let mut writer = buf.writer();
    serde_json::to_writer(&mut writer, event).expect("JSON values always serialize");
    let mut buf = writer.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// An `error` event for a failure of the resumed stream itself (the store went away).
fn error_frame(error: &Error, after: Option<u64>) -> Bytes {
    let payload = crate::engine::error_payload(error);
    let event = serde_json::json!({
        "type": "error",
        "error": payload,
        "sequence_number": after.map_or(0, |a| a + 1),
    });
    frame("error", &event)
}

/// An `error` event for a followed response that stopped storing events.
fn stalled_frame(idle_limit: std::time::Duration, after: Option<u64>) -> Bytes {
    let event = serde_json::json!({
        "type": "error",
        "error": {
            "type": "server_error",
            "code": "stream_stalled",
            "message": format!(
                "The response stored no new event for {} s; the gateway running it may have stopped. Its stored status may stay in_progress.",
                idle_limit.as_secs_f64()
            ),
            "param": null,
        },
        "sequence_number": after.map_or(0, |a| a + 1),
    });
    frame("error", &event)
}

/// The query of `GET /v1/responses/{id}`.
#[derive(serde::Deserialize)]
pub struct GetQuery {
    #[serde(default)]
    stream: bool,
    starting_after: Option<u64>,
}

/// `GET /v1/responses/{id}`: the stored Response, or with `stream=true` its events.
pub async fn get(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Extension(principal): axum::extract::Extension<crate::auth::Principal>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<GetQuery>,
    axum::extract::RawQuery(raw_query): axum::extract::RawQuery,
) -> Result<Response, Error> {
    let access = Access::of(&principal);
    if query.stream {
        return stream(&state, access, id, query.starting_after).await;
    }
    let stored = state
        .store
        .get_response(&access, &id)
        .await?
        .ok_or_else(|| Error::NotFound { object: "response", id: id.clone() })?;
    let mut response = stored.response;
    if !super::list::includes(
        raw_query.as_deref(),
        crate::openresponses::code_interpreter::INCLUDE_OUTPUTS,
    ) {
        hide_code_interpreter_outputs(&mut response);
    }
    Ok(axum::Json(response).into_response())
}

/// The store keeps `code_interpreter_call` outputs (a chain's next turn reads them); clients
/// see them only when they `include` them, as on create.
pub(super) fn hide_code_interpreter_outputs(response: &mut Value) {
    if let Some(output) = response.get_mut("output").and_then(Value::as_array_mut) {
        crate::openresponses::response::hide_code_interpreter_outputs(output);
    }
}
