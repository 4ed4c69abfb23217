//! ENGINE: one response from request to final event. Resolves the model's backend, calls the
//! provider, and feeds what the model produces through a [`builder::ResponseBuilder`]. No HTTP
//! types here: the API layer hands in a validated request and gets a Response or events back.
//!
//! A streaming response goes through three phases, and each fails differently:
//! 1. before the backend accepted the request: an [`Error`] (the client gets an HTTP status);
//! 2. backend accepted, no output yet: an `error` event (the response does not exist yet);
//! 3. after `response.created`: `response.failed` with the response so far.

pub mod builder;

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::ids::{new_id, unix_now};
use crate::metrics::Metrics;
use crate::openresponses::events::{ErrorPayload, StreamEvent};
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::ResponseObject;
use crate::provider::{Route, Router};
use builder::ResponseBuilder;

pub struct Engine {
    router: Router,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(router: Router, metrics: Arc<Metrics>) -> Self {
        Self { router, metrics }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    fn route(&self, request: &CreateResponse) -> Result<Route> {
        if let Some(id) = &request.previous_response_id {
            // Nothing is stored yet, so no previous response can be found.
            return Err(Error::PreviousResponseNotFound(id.clone()));
        }
        if request.background {
            return Err(Error::invalid_request(
                Some("background"),
                "background_not_supported",
                "background responses need storage, which this gateway does not have yet.",
            ));
        }
        self.router.route(&request.model).ok_or_else(|| Error::ModelNotFound(request.model.clone()))
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

    /// A whole response, for `stream: false`.
    pub async fn respond(&self, request: CreateResponse) -> Result<ResponseObject> {
        let route = self.route(&request)?;
        let response = ResponseObject::new(new_id("resp"), unix_now(), &request);
        let mut builder = ResponseBuilder::new(response, &request, false);
        let result = async {
            let mut events = route
                .provider
                .start(&request, &route.upstream_model, false)
                .instrument(backend_span(&route))
                .await?;
            while let Some(batch) = events.next().await {
                for event in batch? {
                    builder.apply(event);
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            self.record_backend_error(&route, &error);
            return Err(error);
        }
        let (response, _) = builder.finish();
        self.record_usage(&response);
        Ok(response)
    }

    /// Phase 1 of a streaming response; the returned stream runs phases 2 and 3. Dropping the
    /// stream drops the backend request with it, which is how a client disconnect cancels the
    /// model call.
    pub async fn stream(
        self: &Arc<Self>,
        request: CreateResponse,
    ) -> Result<impl Stream<Item = StreamEvent> + Send + 'static> {
        let route = self.route(&request)?;
        let started_at = Instant::now();
        let request = Arc::new(request);
        let model_stream = {
            let request = request.clone();
            match route
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
            }
        };
        let engine = self.clone();
        let response = ResponseObject::new(new_id("resp"), unix_now(), &request);
        let mut builder = ResponseBuilder::new(response, &request, true);
        let mut model_stream = model_stream;
        Ok(async_stream::stream! {
            let mut started = false;
            loop {
                match model_stream.next().await {
                    Some(Ok(batch)) => {
                        if !started {
                            started = true;
                            engine.metrics.time_to_first_token.with_label_values(&[&request.model]).observe(started_at.elapsed().as_secs_f64());
                            builder.start();
                        }
                        for event in batch {
                            builder.apply(event);
                        }
                        for event in builder.take_events() {
                            yield event;
                        }
                    }
                    Some(Err(error)) => {
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
                    None => {
                        if !started {
                            builder.start();
                        }
                        let (response, events) = builder.finish();
                        engine.record_usage(&response);
                        for event in events {
                            yield event;
                        }
                        return;
                    }
                }
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
