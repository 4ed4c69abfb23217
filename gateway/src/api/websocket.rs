//! WebSocket mode on `/v1/responses` (`GET` upgrade): the client sends `response.create`
//! messages (a create body plus `"type": "response.create"`), the server answers each with the
//! same events an SSE stream carries, one JSON text frame per event, numbered from 0 per
//! response. Responses run one after another; messages that arrive while one runs wait their
//! turn (up to [`MAX_PENDING`]).
//!
//! Continuation: `previous_response_id` naming a response of this connection is served from a
//! small per-connection cache. A `store: false` response exists nowhere else, so its context
//! (input and output) is kept here and expanded into the next request; a stored one is chained by
//! the engine through the store. A `function_call_output` whose `call_id` the previous response
//! did not produce is rejected, and a continuation that fails evicts its previous response from
//! the cache, so the client cannot build on state the server no longer trusts.
//!
//! Failures that concern one message (bad JSON, validation, unknown previous response) are an
//! `error` frame (`WebSocketErrorEvent`: `status` plus the usual error object) and the socket
//! stays open. Authentication happens on the upgrade request, like any other request.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::openresponses::events::{Sequenced, StreamEvent};
use crate::openresponses::request::{CreateResponse, InputItem};
use crate::openresponses::response::{OutputItem, ResponseObject};

/// `response.create` messages that may wait while a response runs; more is an error frame.
const MAX_PENDING: usize = 16;

/// Create-body fields that belong to HTTP and must not appear in a WebSocket message.
const DISALLOWED: [&str; 3] = ["stream", "stream_options", "background"];

/// WebSocket limits (`websocket:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// Largest client message accepted; a larger one closes the socket (1009, message too big).
    pub max_message_bytes: usize,
    /// A socket with no response running and no client message for this long is closed.
    pub idle_timeout_secs: f64,
    /// Responses of one connection remembered for `previous_response_id` (most recent first).
    pub max_cached_responses: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            idle_timeout_secs: 300.0,
            max_cached_responses: 4,
        }
    }
}

impl WebSocketSettings {
    /// Pushes one line per invalid field onto `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if self.max_message_bytes < 1024 {
            errors.push(format!(
                "websocket.max_message_bytes: {} is too small (at least 1024)",
                self.max_message_bytes
            ));
        }
        if !(self.idle_timeout_secs.is_finite() && self.idle_timeout_secs > 0.0) {
            errors.push(format!(
                "websocket.idle_timeout_secs: must be a positive number of seconds, got {}",
                self.idle_timeout_secs
            ));
        }
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }
}

/// `GET /v1/responses`: upgrades to a WebSocket, or explains that this path wants one.
pub async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return Error::invalid_request(
                None,
                "websocket_upgrade_required",
                format!(
                    "GET /v1/responses opens a WebSocket ({rejection}); create a response with POST /v1/responses."
                ),
            )
            .into_response();
        }
    };
    let settings = state.websocket.clone();
    upgrade
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let connection = Connection { state, principal, settings, cache: VecDeque::new() };
            connection.run(socket).await
        })
}

/// A response this connection produced, as the next turn may need it.
struct Cached {
    id: String,
    /// `store: true` responses are chained by the engine; only their call ids are needed here.
    stored: bool,
    /// For `store: false`: everything the model saw and said, as input for the next turn.
    context: Vec<InputItem>,
    call_ids: HashSet<String>,
}

struct Connection {
    state: AppState,
    principal: Principal,
    settings: WebSocketSettings,
    cache: VecDeque<Cached>,
}

/// The socket is gone (or broke): stop serving it.
struct Closed;

impl Connection {
    async fn run(mut self, mut socket: WebSocket) {
        let mut pending: VecDeque<Utf8Bytes> = VecDeque::new();
        loop {
            let text = match pending.pop_front() {
                Some(text) => text,
                None => {
                    let received =
                        tokio::time::timeout(self.settings.idle_timeout(), socket.recv()).await;
                    match received {
                        Err(_) => {
                            let frame = CloseFrame {
                                code: close_code::NORMAL,
                                reason: Utf8Bytes::from_static("idle timeout"),
                            };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                            return;
                        }
                        Ok(None | Some(Err(_))) => return,
                        Ok(Some(Ok(message))) => match message {
                            Message::Text(text) => text,
                            Message::Binary(_) => {
                                let error = Error::invalid_request(
                                    None,
                                    "invalid_message",
                                    "Send response.create events as text frames holding JSON.",
                                );
                                if send_error(&mut socket, &error).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            Message::Close(_) => return,
                            Message::Ping(_) | Message::Pong(_) => continue,
                        },
                    }
                }
            };
            if self.respond(&mut socket, &text, &mut pending).await.is_err() {
                return;
            }
        }
    }

    /// Serves one `response.create` message, from parsing to the response's final event.
    async fn respond(
        &mut self,
        socket: &mut WebSocket,
        text: &str,
        pending: &mut VecDeque<Utf8Bytes>,
    ) -> Result<(), Closed> {
        let mut request = match parse_create(text) {
            Ok(request) => request,
            Err(error) => return send_error(socket, &error).await,
        };
        let previous = request.previous_response_id.clone();
        // A `store: false` chain is expanded here; the echo still names the previous response.
        let mut local_previous: Option<String> = None;
        if let Some(previous_id) = &previous
            && let Some(index) = self.cache.iter().position(|c| c.id == *previous_id)
        {
            if let Err(error) = check_call_outputs(&request.input, &self.cache[index].call_ids) {
                self.cache.remove(index);
                return send_error(socket, &error).await;
            }
            if !self.cache[index].stored {
                let mut input = self.cache[index].context.clone();
                input.append(&mut request.input);
                request.input = input;
                request.previous_response_id = None;
                local_previous = Some(previous_id.clone());
            }
        }
        let context = (!request.store).then(|| request.input.clone());
        let events = match start(&self.state, &self.principal, request).await {
            Ok(events) => events,
            Err(error) => {
                self.evict(previous.as_deref());
                return send_error(socket, &error).await;
            }
        };
        let mut events = std::pin::pin!(events);
        let mut sequence_number = 0u64;
        let mut finished: Option<ResponseObject> = None;
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(mut event) = event else { break };
                    if let Some(previous_id) = &local_previous {
                        set_previous(&mut event, previous_id);
                    }
                    match &event {
                        StreamEvent::Completed { response } | StreamEvent::Incomplete { response } => {
                            finished = Some(response.clone());
                        }
                        _ => {}
                    }
                    let frame = serde_json::to_string(&Sequenced { event: &event, sequence_number })
                        .expect("stream events always serialize");
                    sequence_number += 1;
                    if socket.send(Message::Text(frame.into())).await.is_err() {
                        // Dropping `events` drops the backend request: the model stops too.
                        return Err(Closed);
                    }
                }
                message = socket.recv() => match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Closed),
                    Some(Ok(Message::Text(text))) => {
                        if pending.len() >= MAX_PENDING {
                            let error = Error::invalid_request(
                                None,
                                "too_many_pending_messages",
                                format!("At most {MAX_PENDING} response.create messages may wait while a response runs."),
                            );
                            send_error(socket, &error).await?;
                        } else {
                            pending.push_back(text);
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        match finished {
            Some(response) => self.remember(&response, context),
            None => self.evict(previous.as_deref()),
        }
        Ok(())
    }

    fn remember(&mut self, response: &ResponseObject, context: Option<Vec<InputItem>>) {
        let call_ids = response
            .output
            .iter()
            .filter_map(|item| match item {
                OutputItem::FunctionCall { call_id, .. } => Some(call_id.clone()),
                _ => None,
            })
            .collect();
        let stored = response.store;
        let context = match context {
            Some(mut context) if !stored => {
                context.extend(response.output.iter().filter_map(OutputItem::as_input));
                context
            }
            _ => Vec::new(),
        };
        self.cache.retain(|c| c.id != response.id);
        self.cache.push_front(Cached { id: response.id.clone(), stored, context, call_ids });
        self.cache.truncate(self.settings.max_cached_responses);
    }

    fn evict(&mut self, id: Option<&str>) {
        if let Some(id) = id {
            self.cache.retain(|c| c.id != id);
        }
    }
}

/// Runs one response's stream for `principal`.
async fn start(
    state: &AppState,
    principal: &Principal,
    request: CreateResponse,
) -> Result<impl futures::Stream<Item = StreamEvent> + Send + 'static, Error> {
    state.engine.create_stream(principal, request).await
}

/// A `response.create` message as a validated create request (always streamed).
fn parse_create(text: &str) -> Result<CreateResponse, Error> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Error::invalid_request(None, "invalid_json", format!("The message is not valid JSON: {e}"))
    })?;
    let Value::Object(mut body) = value else {
        return Err(Error::invalid_request(
            None,
            "invalid_type",
            "A message must be a JSON object.",
        ));
    };
    match body.remove("type") {
        Some(Value::String(kind)) if kind == "response.create" => {}
        Some(Value::String(kind)) => {
            return Err(Error::invalid_value(
                "type",
                format!("Unknown event type '{kind}'; the only client event is 'response.create'."),
            ));
        }
        _ => {
            return Err(Error::invalid_request(
                Some("type"),
                "missing_required_parameter",
                "Missing required parameter: 'type' (always 'response.create').",
            ));
        }
    }
    if let Some(field) = DISALLOWED.iter().find(|f| body.contains_key(**f)) {
        return Err(Error::invalid_request(
            Some(field),
            "unsupported_parameter",
            format!("'{field}' is an HTTP option and is not allowed in WebSocket mode."),
        ));
    }
    let mut request = CreateResponse::from_json(
        &serde_json::to_vec(&Value::Object(body))
            .map_err(|e| Error::Internal(format!("re-encoding a parsed message failed: {e}")))?,
    )?;
    request.stream = true;
    Ok(request)
}

/// Every `function_call_output` must answer a call the previous response made (or a call sent
/// in the same input).
fn check_call_outputs(input: &[InputItem], previous_calls: &HashSet<String>) -> Result<(), Error> {
    let own_calls: HashSet<&str> = input
        .iter()
        .filter_map(|item| match item {
            InputItem::FunctionCall { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    for (i, item) in input.iter().enumerate() {
        if let InputItem::FunctionCallOutput { call_id, .. } = item
            && !previous_calls.contains(call_id)
            && !own_calls.contains(call_id.as_str())
        {
            return Err(Error::invalid_request(
                Some(&format!("input[{i}].call_id")),
                "invalid_function_call_output",
                format!("No tool call found for function call output with call_id '{call_id}'."),
            ));
        }
    }
    Ok(())
}

fn set_previous(event: &mut StreamEvent, previous_id: &str) {
    match event {
        StreamEvent::Created { response }
        | StreamEvent::InProgress { response }
        | StreamEvent::Completed { response }
        | StreamEvent::Incomplete { response }
        | StreamEvent::Failed { response } => {
            response.previous_response_id = Some(previous_id.to_string());
        }
        _ => {}
    }
}

/// The `WebSocketErrorEvent` for `error`; the socket stays open.
async fn send_error(socket: &mut WebSocket, error: &Error) -> Result<(), Closed> {
    let mut body = Map::new();
    body.insert("type".into(), json!(error.error_type()));
    body.insert("code".into(), json!(error.code()));
    body.insert("message".into(), json!(error.to_string()));
    body.insert("param".into(), json!(error.param()));
    let frame = json!({"type": "error", "status": error.status().as_u16(), "error": body});
    socket.send(Message::Text(frame.to_string().into())).await.map_err(|_| Closed)
}
