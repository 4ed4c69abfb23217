//! `GET /v1/responses/{id}?stream=true&starting_after=N`: the stored events of a response after
//! sequence number `N` (all of them without it), then, while the response is still running,
//! its new events as its worker stores them, until the final one. Events go out exactly as they
//! were first sent (same `sequence_number`s), as SSE frames ending with `data: [DONE]`.
//!
//! Following is polling the store (every `background.poll_interval_ms`), so it works on any
//! replica, whichever replica's worker runs the response.

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
                "This response has no stored events to stream; only background responses (and stored responses still running) can be streamed from GET.",
            ));
        }
    }
    let store = state.store.clone();
    let poll = state.background.poll_interval();
    let frames = async_stream::stream! {
        let mut after = starting_after;
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
                Ok(Some(_)) => tokio::time::sleep(poll).await,
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
    Ok(axum::Json(stored.response).into_response())
}
