//! The optional control API under `/_scripted/`, for harnesses that run the binary and cannot
//! call the library: script it (queue, per-model, default) and read what it recorded.
//! Off unless [`crate::Options::admin`] is set (the binary's `--admin`).
//!
//! - `POST /_scripted/queue` (a [`Script`] as JSON) appends to the FIFO queue.
//! - `PUT /_scripted/models/{model}` and `PUT /_scripted/default` set those scripts.
//! - `GET /_scripted/requests`, `GET /_scripted/cancellations` list what was recorded;
//!   `DELETE /_scripted/requests` forgets both.

use std::collections::BTreeMap;

use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::script::Script;
use crate::server::Shared;

pub(crate) const PREFIX: &str = "/_scripted/";

/// Carries out an admin request: `Some(json)` to send back, `None` for 204 No Content.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<Vec<u8>>> {
    let route = path.strip_prefix(PREFIX).unwrap_or(path);
    match (method, route) {
        (&Method::POST, "queue") => {
            shared.book.enqueue(script(body)?);
            Ok(None)
        }
        (&Method::PUT, "default") => {
            shared.book.set_fallback(script(body)?);
            Ok(None)
        }
        (&Method::PUT, route) if route.starts_with("models/") => {
            let model = &route["models/".len()..];
            if model.is_empty() {
                return Err(Error::BadRequest("the model name is empty".to_owned()));
            }
            shared.book.on_model(model.to_owned(), script(body)?);
            Ok(None)
        }
        (&Method::GET, "requests") => Ok(Some(requests(shared))),
        (&Method::GET, "cancellations") => Ok(Some(cancellations(shared))),
        (&Method::DELETE, "requests") => {
            shared.recorder.clear();
            Ok(None)
        }
        _ => Err(Error::NotFound { method: method.to_string(), path: path.to_owned() }),
    }
}

fn script(body: &[u8]) -> Result<Script> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::BadRequest("the script is not UTF-8".to_owned()))?;
    Script::from_json(text)
}

#[derive(Serialize)]
struct RequestView<'a> {
    method: &'a str,
    path: &'a str,
    /// Repeated headers joined with ", ".
    headers: BTreeMap<&'a str, String>,
    body: &'a Value,
    /// Milliseconds since the backend started.
    received_ms: f64,
}

#[derive(Serialize)]
struct CancellationView<'a> {
    request_index: Option<usize>,
    model: &'a str,
    events_sent: usize,
    /// Milliseconds since the backend started.
    at_ms: f64,
}

fn requests(shared: &Shared) -> Vec<u8> {
    let started = shared.recorder.started;
    let requests = shared.recorder.requests();
    let views: Vec<_> = requests
        .iter()
        .map(|request| {
            let mut headers: BTreeMap<&str, String> = BTreeMap::new();
            for (name, value) in &request.headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                headers
                    .entry(name.as_str())
                    .and_modify(|joined| {
                        joined.push_str(", ");
                        joined.push_str(&value);
                    })
                    .or_insert_with(|| value.into_owned());
            }
            RequestView {
                method: request.method.as_str(),
                path: &request.path,
                headers,
                body: &request.body,
                received_ms: millis_since(started, request.received_at),
            }
        })
        .collect();
    serde_json::to_vec(&views).expect("serializing plain structs cannot fail")
}

fn cancellations(shared: &Shared) -> Vec<u8> {
    let started = shared.recorder.started;
    let cancellations = shared.recorder.cancellations();
    let views: Vec<_> = cancellations
        .iter()
        .map(|cancellation| CancellationView {
            request_index: cancellation.request_index,
            model: &cancellation.model,
            events_sent: cancellation.events_sent,
            at_ms: millis_since(started, cancellation.at),
        })
        .collect();
    serde_json::to_vec(&views).expect("serializing plain structs cannot fail")
}

fn millis_since(start: std::time::Instant, at: std::time::Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64() * 1000.0
}
