//! An OpenAI-compatible Chat Completions backend (vLLM, LiteLLM, Ollama): the HTTP call with
//! timeouts and bounded retries, and the answer (JSON or SSE) turned into [`ModelEvent`]s.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::chat_wire::{ChatChunk, ChatCompletion, ChatErrorBody, ChatLogprobs, ChatUsage};
use super::{FinishReason, ModelEvent, ModelStream, Provider};
use crate::error::{Error, Result};
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::{
    InputTokensDetails, LogProb, OutputTokensDetails, TopLogProb, Usage,
};

/// How to reach one backend and how patient to be with it.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub name: String,
    /// Base URL ending in `/v1`, e.g. `http://vllm:8000/v1`.
    pub url: String,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Streaming: time until the backend's response headers. Non-streaming: the whole answer.
    pub first_byte_timeout: Duration,
    pub request_timeout: Duration,
    /// Streaming: the longest silence between two chunks before the backend counts as stalled.
    pub idle_timeout: Duration,
    /// Extra attempts after a connect failure, timeout or 5xx before the first byte.
    pub max_retries: u32,
    pub retry_backoff: Duration,
}

pub struct ChatCompletionsProvider {
    settings: BackendSettings,
    completions_url: String,
    models_url: String,
    client: reqwest::Client,
}

impl ChatCompletionsProvider {
    pub fn new(settings: BackendSettings) -> Result<Self> {
        let base = settings.url.trim_end_matches('/');
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| {
                Error::Internal(format!("building the HTTP client for {}: {e}", settings.name))
            })?;
        Ok(Self {
            completions_url: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            settings,
            client,
        })
    }

    async fn send(&self, body: bytes::Bytes, stream: bool) -> Result<reqwest::Response> {
        let timeout =
            if stream { self.settings.first_byte_timeout } else { self.settings.request_timeout };
        let mut attempt = 0;
        loop {
            let mut headers = HeaderMap::new();
            antwort_common::telemetry::inject_trace_context(&mut headers);
            headers
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if stream {
                headers.insert(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
            }
            let mut builder =
                self.client.post(&self.completions_url).headers(headers).body(body.clone());
            if let Some(key) = &self.settings.api_key {
                builder = builder.bearer_auth(key);
            }
            let outcome = match tokio::time::timeout(timeout, builder.send()).await {
                Err(_) => Err((Error::BackendTimeout { after: timeout }, true)),
                Ok(Err(err)) => Err((
                    Error::Backend {
                        message: format!("{}: {}", self.settings.name, error_chain(&err)),
                    },
                    true,
                )),
                Ok(Ok(response)) if response.status().is_success() => Ok(response),
                Ok(Ok(response)) => Err(self.status_error(response).await),
            };
            match outcome {
                Ok(response) => return Ok(response),
                Err((error, retryable)) if retryable && attempt < self.settings.max_retries => {
                    attempt += 1;
                    tracing::warn!(backend = %self.settings.name, attempt, %error, "retrying backend request");
                    tokio::time::sleep(
                        self.settings.retry_backoff * 2u32.saturating_pow(attempt - 1),
                    )
                    .await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Maps a non-2xx answer to an error and whether trying again could help.
    async fn status_error(&self, response: reqwest::Response) -> (Error, bool) {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ChatErrorBody>(&body)
            .ok()
            .and_then(|b| b.error.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        let described = format!("{} answered {}: {}", self.settings.name, status.as_u16(), message);
        match status {
            StatusCode::TOO_MANY_REQUESTS => (Error::RateLimited { retry_after, message }, false),
            // Authentication and routing failures are the operator's problem, not the client's.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                (Error::Backend { message: described }, false)
            }
            s if s.is_client_error() => (Error::BackendRejected { message }, false),
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::INTERNAL_SERVER_ERROR => (Error::Backend { message: described }, true),
            _ => (Error::Backend { message: described }, false),
        }
    }
}

impl Provider for ChatCompletionsProvider {
    fn start<'a>(
        &'a self,
        request: &'a CreateResponse,
        upstream_model: &'a str,
        stream: bool,
    ) -> Pin<Box<dyn Future<Output = Result<ModelStream>> + Send + 'a>> {
        Box::pin(async move {
            let chat = super::translate::chat_request(request, upstream_model, stream);
            let body = bytes::Bytes::from(
                serde_json::to_vec(&chat).map_err(|e| Error::Internal(e.to_string()))?,
            );
            let response = self.send(body, stream).await?;
            let name = self.settings.name.clone();
            if stream {
                Ok(sse_events(response, name, self.settings.idle_timeout))
            } else {
                let events = futures::stream::once(async move {
                    let body = response.bytes().await.map_err(|e| Error::Backend {
                        message: format!("{name}: reading the answer failed: {}", error_chain(&e)),
                    })?;
                    let completion: ChatCompletion =
                        serde_json::from_slice(&body).map_err(|e| Error::Backend {
                            message: format!("{name}: the answer is not a chat completion: {e}"),
                        })?;
                    completion_events(completion).ok_or_else(|| Error::Backend {
                        message: format!("{name}: the answer has no choices"),
                    })
                });
                Ok(Box::pin(events) as ModelStream)
            }
        })
    }

    fn check_ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let mut builder = self.client.get(&self.models_url).timeout(Duration::from_secs(2));
            if let Some(key) = &self.settings.api_key {
                builder = builder.bearer_auth(key);
            }
            match builder.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{} answered {} on /models", self.settings.name, r.status())),
                Err(e) => Err(format!("{} unreachable: {}", self.settings.name, error_chain(&e))),
            }
        })
    }

    fn name(&self) -> &str {
        &self.settings.name
    }
}

/// The SSE answer as batches of events. Ends after `[DONE]`; a stream that stops before it (and
/// before any `finish_reason`), garbled data, or silence longer than `idle_timeout` is an error.
fn sse_events(response: reqwest::Response, name: String, idle_timeout: Duration) -> ModelStream {
    let mut source = response.bytes_stream().eventsource();
    Box::pin(async_stream::stream! {
        let mut finished = false;
        loop {
            let next = match tokio::time::timeout(idle_timeout, source.next()).await {
                Err(_) => {
                    yield Err(Error::BackendTimeout { after: idle_timeout });
                    return;
                }
                Ok(next) => next,
            };
            match next {
                None => {
                    if !finished {
                        yield Err(Error::Backend { message: format!("{name}: the stream ended before the answer was complete") });
                    }
                    return;
                }
                Some(Err(err)) => {
                    yield Err(Error::Backend { message: format!("{name}: reading the stream failed: {err}") });
                    return;
                }
                Some(Ok(event)) => {
                    let data = event.data.trim();
                    if data == "[DONE]" {
                        if !finished {
                            yield Err(Error::Backend { message: format!("{name}: the stream ended without a finish_reason") });
                        }
                        return;
                    }
                    if data.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<ChatChunk>(data) {
                        Ok(chunk) => {
                            let events = chunk_events(chunk);
                            finished |= events.iter().any(|e| matches!(e, ModelEvent::Finish(_)));
                            if !events.is_empty() {
                                yield Ok(events);
                            }
                        }
                        Err(err) => {
                            yield Err(Error::Backend { message: format!("{name}: garbled stream data ({err}): {}", &data[..data.len().min(200)]) });
                            return;
                        }
                    }
                }
            }
        }
    })
}

fn chunk_events(chunk: ChatChunk) -> Vec<ModelEvent> {
    let mut events = Vec::new();
    if let Some(choice) = chunk.choices.into_iter().next() {
        let delta = choice.delta;
        if let Some(r) = delta.reasoning_content.or(delta.reasoning).filter(|r| !r.is_empty()) {
            events.push(ModelEvent::ReasoningDelta(r));
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            events.push(ModelEvent::TextDelta { text, logprobs: logprobs(choice.logprobs) });
        }
        if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
            events.push(ModelEvent::RefusalDelta(refusal));
        }
        for (position, call) in delta.tool_calls.into_iter().enumerate() {
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments.unwrap_or_default()),
                None => (None, String::new()),
            };
            events.push(ModelEvent::ToolCallDelta {
                index: call.index.unwrap_or(position as u32),
                id: call.id,
                name,
                arguments,
            });
        }
        if let Some(reason) = choice.finish_reason {
            events.push(ModelEvent::Finish(FinishReason::from_wire(&reason)));
        }
    }
    if let Some(usage) = chunk.usage {
        events.push(ModelEvent::Usage(usage_of(usage)));
    }
    events
}

fn completion_events(completion: ChatCompletion) -> Option<Vec<ModelEvent>> {
    let choice = completion.choices.into_iter().next()?;
    let message = choice.message;
    let mut events = Vec::new();
    if let Some(r) = message.reasoning_content.or(message.reasoning).filter(|r| !r.is_empty()) {
        events.push(ModelEvent::ReasoningDelta(r));
    }
    if let Some(text) = message.content.filter(|t| !t.is_empty()) {
        events.push(ModelEvent::TextDelta { text, logprobs: logprobs(choice.logprobs) });
    }
    if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
        events.push(ModelEvent::RefusalDelta(refusal));
    }
    for (index, call) in message.tool_calls.into_iter().enumerate() {
        events.push(ModelEvent::ToolCallDelta {
            index: index as u32,
            id: call.id,
            name: Some(call.function.name),
            arguments: call.function.arguments.unwrap_or_default(),
        });
    }
    events.push(ModelEvent::Finish(FinishReason::from_wire(
        choice.finish_reason.as_deref().unwrap_or("stop"),
    )));
    if let Some(usage) = completion.usage {
        events.push(ModelEvent::Usage(usage_of(usage)));
    }
    Some(events)
}

fn usage_of(usage: ChatUsage) -> Usage {
    Usage {
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens.unwrap_or(usage.prompt_tokens + usage.completion_tokens),
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: 0,
        },
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        },
    }
}

fn logprobs(logprobs: Option<ChatLogprobs>) -> Vec<LogProb> {
    logprobs
        .and_then(|l| l.content)
        .unwrap_or_default()
        .into_iter()
        .map(|t| LogProb {
            bytes: t.bytes.unwrap_or_else(|| t.token.as_bytes().to_vec()),
            token: t.token,
            logprob: t.logprob,
            top_logprobs: t
                .top_logprobs
                .into_iter()
                .map(|top| TopLogProb {
                    bytes: top.bytes.unwrap_or_else(|| top.token.as_bytes().to_vec()),
                    token: top.token,
                    logprob: top.logprob,
                })
                .collect(),
        })
        .collect()
}

/// reqwest's top-level message hides the cause ("error sending request"); the chain names it.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
