//! ENGINE: one response from request to final event. Resolves the model's backend, calls the
//! provider, and feeds what the model produces through a [`builder::ResponseBuilder`]. No HTTP
//! types here: the API layer hands in a validated request and gets a Response or events back.
//!
//! A streaming response goes through three phases, and each fails differently:
//! 1. before the backend accepted the request: an [`Error`] (the client gets an HTTP status);
//! 2. backend accepted, no output yet: an `error` event (the response does not exist yet);
//! 3. after `response.created`: `response.failed` with the response so far.
//!
//! Layout: `mod.rs` the response and its storage; [`tool_loop`] the turns (model call, server
//! tool calls, model call again...); [`builder`] events into a Response; [`context`] what a
//! request continues; [`recorder`] a stored stream's record and events while it runs.

pub mod builder;
pub mod context;
pub mod recorder;
pub mod tool_loop;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::ids::{new_id, unix_now};
use crate::metrics::Metrics;
use crate::openresponses::events::{ErrorPayload, StreamEvent};
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::{ResponseObject, ResponseStatus};
use crate::provider::{Route, Router};
use crate::store::{Access, NewResponse, Owner, Store};
use builder::ResponseBuilder;
use recorder::{EventBatching, Recorder};

pub struct Engine {
    router: Router,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    /// How a stored stream writes its events ([`recorder`]).
    event_batching: EventBatching,
    /// Server-side tools and the tool loop's limits ([`tool_loop`]).
    tools: tool_loop::ServerTools,
}

impl Engine {
    pub fn new(router: Router, metrics: Arc<Metrics>, store: Arc<dyn Store>) -> Self {
        Self {
            router,
            metrics,
            store,
            event_batching: EventBatching::default(),
            tools: tool_loop::ServerTools::default(),
        }
    }

    /// Sets the server-side tools (default: none, 10 turns).
    pub fn with_tools(mut self, tools: tool_loop::ServerTools) -> Self {
        self.tools = tools;
        self
    }

    pub fn tools(&self) -> &tool_loop::ServerTools {
        &self.tools
    }

    /// Sets how stored streams batch their event writes (default: [`EventBatching::default`]).
    pub fn with_event_batching(mut self, event_batching: EventBatching) -> Self {
        self.event_batching = event_batching;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    fn route(&self, request: &CreateResponse) -> Result<Route> {
        if request.background {
            return Err(Error::invalid_request(
                Some("background"),
                "background_not_supported",
                "background responses need storage, which this gateway does not have yet.",
            ));
        }
        self.router.route(&request.model).ok_or_else(|| Error::ModelNotFound(request.model.clone()))
    }

    /// The request's server-side tools can run here: code_interpreter is configured, and a
    /// container it names is the caller's (else 404, as for any object of another owner) and
    /// has not expired (400 `container_expired`).
    async fn check_tools(&self, owner: &Owner, request: &CreateResponse) -> Result<()> {
        let Some(tool) = &request.code_interpreter else { return Ok(()) };
        let Some(ci) = &self.tools.code_interpreter else {
            return Err(Error::invalid_request(
                Some("tools"),
                "unsupported_tool_type",
                "The 'code_interpreter' tool is not enabled on this gateway (config `tools.code_interpreter`).",
            ));
        };
        match &tool.container {
            crate::openresponses::code_interpreter::ContainerParam::Id(id) => {
                ci.validate_container(owner, id).await
            }
            crate::openresponses::code_interpreter::ContainerParam::Auto {
                memory_limit: Some(limit),
                ..
            } => ci.pool_for(Some(limit.as_str())).map(|_| ()).map_err(|message| {
                Error::invalid_value(&format!("{}.container.memory_limit", tool.path), message)
            }),
            _ => Ok(()),
        }
    }

    fn record_backend_error(&self, route: &Route, error: &Error) {
        if let Some(kind) = error.backend_error_kind() {
            self.metrics.backend_errors.with_label_values(&[route.provider.name(), kind]).inc();
        }
    }

    fn record_usage(&self, response: &ResponseObject) {
        if let Some(usage) = &response.usage {
            self.metrics
                .tokens
                .with_label_values(&[&response.model, "input"])
                .inc_by(usage.input_tokens);
            self.metrics
                .tokens
                .with_label_values(&[&response.model, "output"])
                .inc_by(usage.output_tokens);
        }
    }

    /// A whole response for `principal`, for `stream: false`: resolves what the request
    /// continues ([`context::resolve`]), runs the model, and with `store: true` writes the
    /// response before returning it (a failed write is the request's error, e.g. 503).
    pub async fn create(
        &self,
        principal: &Principal,
        mut request: CreateResponse,
    ) -> Result<ResponseObject> {
        let access = Access::of(principal);
        let resolved = context::resolve(self.store.as_ref(), &access, &mut request).await?;
        let store = request.store;
        let conversation = request.conversation.clone();
        let response = self.respond(&Owner::of(principal), request).await?;
        if store {
            self.save(principal, &response, resolved.own_input, conversation).await?;
        }
        Ok(response)
    }

    /// [`Engine::create`] for `stream: true`: the final event (`response.completed`,
    /// `.incomplete`, `.failed`) leaves only once the response is stored; if the write fails, an
    /// `error` event takes its place. With `store: true` the response is also stored as
    /// `in_progress` when it starts and its events as they go (see [`recorder`]: batching, and
    /// what a client disconnect does).
    pub async fn create_stream(
        self: &Arc<Self>,
        principal: &Principal,
        mut request: CreateResponse,
    ) -> Result<impl Stream<Item = StreamEvent> + Send + 'static> {
        let access = Access::of(principal);
        let resolved = context::resolve(self.store.as_ref(), &access, &mut request).await?;
        let store = request.store;
        let conversation = request.conversation.clone();
        let owner = Owner::of(principal);
        let events = self.stream(&owner, request).await?;
        let engine = self.clone();
        let principal = principal.clone();
        let mut own_input = Some(resolved.own_input);
        Ok(async_stream::stream! {
            futures::pin_mut!(events);
            if !store {
                while let Some(event) = events.next().await {
                    yield event;
                }
                return;
            }
            let mut recorder =
                Recorder::new(engine.store.clone(), Owner::of(&principal), engine.event_batching);
            loop {
                let next = match recorder.flush_deadline() {
                    Some(due) => match tokio::time::timeout_at(due, events.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let _ = recorder.flush().await;
                            continue;
                        }
                    },
                    None => events.next().await,
                };
                let Some(event) = next else { break };
                match &event {
                    StreamEvent::Created { response } => {
                        let record = engine.stored_form(
                            &principal,
                            response,
                            ResponseStatus::InProgress,
                            own_input.clone().unwrap_or_default(),
                            conversation.clone(),
                        );
                        let started = match record {
                            Ok(record) => recorder.start(record).await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = started {
                            tracing::error!(%error, id = %response.id, "storing a starting response failed");
                            yield StreamEvent::Error { error: error_payload(&error) };
                            return;
                        }
                        recorder.record(&event);
                        yield event;
                    }
                    StreamEvent::Completed { response }
                    | StreamEvent::Incomplete { response }
                    | StreamEvent::Failed { response } => {
                        recorder.record(&event);
                        let input = own_input.take().unwrap_or_default();
                        let saved = match recorder.flush().await {
                            Ok(()) => engine.save(&principal, response, input, conversation.clone()).await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = saved {
                            tracing::error!(%error, id = %response.id, "storing a streamed response failed");
                            let error_event = StreamEvent::Error { error: error_payload(&error) };
                            recorder.final_write_failed(&error_event, error.code(), error.to_string());
                            yield error_event;
                            return;
                        }
                        recorder.settle();
                        yield event;
                        return;
                    }
                    _ => {
                        recorder.record(&event);
                        yield event;
                        if recorder.batch_full() {
                            let _ = recorder.flush().await;
                        }
                    }
                }
            }
        })
    }

    /// Writes a finished response (status from the object) with its own input items.
    async fn save(
        &self,
        principal: &Principal,
        response: &ResponseObject,
        own_input: Vec<serde_json::Value>,
        conversation: Option<String>,
    ) -> Result<()> {
        let record =
            self.stored_form(principal, response, response.status, own_input, conversation)?;
        self.store.save_response(&record).await
    }

    /// The stored form of `response` with `status`.
    fn stored_form(
        &self,
        principal: &Principal,
        response: &ResponseObject,
        status: ResponseStatus,
        own_input: Vec<serde_json::Value>,
        conversation: Option<String>,
    ) -> Result<NewResponse> {
        let mut json = serde_json::to_value(response.for_storage())
            .map_err(|e| Error::Internal(format!("encoding a response failed: {e}")))?;
        json["status"] = serde_json::json!(status);
        Ok(NewResponse {
            id: response.id.clone(),
            owner: Owner::of(principal),
            created_at: response.created_at,
            status,
            previous_response_id: response.previous_response_id.clone(),
            conversation_id: conversation,
            response: json,
            input: own_input,
            request: None,
        })
    }

    /// A whole response, for `stream: false`, from `request.input` exactly as given: nothing is
    /// looked up or stored (see [`Engine::create`] for that). Server-side tool calls run as
    /// `owner`.
    pub async fn respond(&self, owner: &Owner, request: CreateResponse) -> Result<ResponseObject> {
        let route = self.route(&request)?;
        self.check_tools(owner, &request).await?;
        let response = ResponseObject::new(new_id("resp"), unix_now(), &request);
        let mut builder = ResponseBuilder::new(response, &request, false, self.tools.naming());
        let result = async {
            let first = route
                .provider
                .start(&request, &route.upstream_model, false)
                .instrument(backend_span(&route))
                .await?;
            let mut started = false;
            tool_loop::run(self, &route, request, &mut builder, first, owner, &None, &mut started)
                .await
        }
        .await;
        let (response, _) = match result {
            Ok(tool_loop::LoopEnd::Answered) => builder.finish(),
            Ok(tool_loop::LoopEnd::TurnLimit(calls)) => builder.finish_at_turn_limit(&calls),
            Err(error) => {
                self.record_backend_error(&route, &error);
                return Err(error);
            }
        };
        self.record_usage(&response);
        Ok(response)
    }

    /// Phase 1 of a streaming response from `request.input` as given (nothing looked up or
    /// stored; see [`Engine::create_stream`]); the returned stream runs phases 2 and 3 over every
    /// turn of the tool loop. Dropping the stream drops the backend request and running tool
    /// calls with it, which is how a client disconnect cancels the response.
    pub async fn stream(
        self: &Arc<Self>,
        owner: &Owner,
        request: CreateResponse,
    ) -> Result<impl Stream<Item = StreamEvent> + Send + 'static + use<>> {
        let route = self.route(&request)?;
        self.check_tools(owner, &request).await?;
        let first = match route
            .provider
            .start(&request, &route.upstream_model, true)
            .instrument(backend_span(&route))
            .await
        {
            Ok(stream) => stream,
            Err(error) => {
                self.record_backend_error(&route, &error);
                return Err(error);
            }
        };
        let engine = self.clone();
        let owner = owner.clone();
        let response = ResponseObject::new(new_id("resp"), unix_now(), &request);
        let mut builder = ResponseBuilder::new(response, &request, true, self.tools.naming());
        Ok(async_stream::stream! {
            let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
            let sink = Some(sink);
            let mut started = false;
            let result = {
                let run = tool_loop::run(&engine, &route, request, &mut builder, first, &owner, &sink, &mut started);
                futures::pin_mut!(run);
                // The loop only runs while this stream is polled, so a slow client slows the
                // model down instead of buffering its whole answer.
                loop {
                    tokio::select! {
                        biased;
                        Some(event) = events.recv() => yield event,
                        result = &mut run => break result,
                    }
                }
            };
            while let Ok(event) = events.try_recv() {
                yield event;
            }
            let (response, events) = match result {
                Ok(tool_loop::LoopEnd::Answered) => builder.finish(),
                Ok(tool_loop::LoopEnd::TurnLimit(calls)) => builder.finish_at_turn_limit(&calls),
                Err(error) => {
                    engine.record_backend_error(&route, &error);
                    tracing::warn!(%error, started, "backend failed during a streamed response");
                    if started {
                        let (_, events) = builder.fail(&error);
                        for event in events {
                            yield event;
                        }
                    } else {
                        yield StreamEvent::Error { error: error_payload(&error) };
                    }
                    return;
                }
            };
            engine.record_usage(&response);
            for event in events {
                yield event;
            }
        })
    }
}

/// One span per backend call; the W3C trace context sent to the backend names it as the parent.
fn backend_span(route: &Route) -> tracing::Span {
    tracing::info_span!("backend_call", backend = %route.provider.name(), upstream_model = %route.upstream_model)
}

/// The `error` event's payload for a failure before the response existed.
pub fn error_payload(error: &Error) -> ErrorPayload {
    let mut headers = std::collections::BTreeMap::new();
    if let Error::RateLimited { retry_after: Some(after), .. } = error {
        headers.insert("retry-after".to_string(), after.clone());
    }
    ErrorPayload {
        kind: error.error_type(),
        code: Some(error.code()),
        message: error.to_string(),
        param: error.param().map(str::to_string),
        headers,
    }
}
