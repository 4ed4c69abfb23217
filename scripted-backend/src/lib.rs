//! antwort's scripted OpenAI-compatible Chat Completions backend: a deterministic stand-in
//! for vLLM / LiteLLM / Ollama in tests, the benchmark baseline, and the one-machine stack.
//!
//! ```no_run
//! # async fn demo() {
//! use antwort_scripted_backend::{ScriptedBackend, Script};
//! let backend = ScriptedBackend::start().await;
//! backend.enqueue(Script::tool_call("python", r#"{"code":"print(1)"}"#));
//! backend.on_model("m", Script::text("done").ttft(std::time::Duration::from_millis(50)));
//! // point the gateway at backend.base_url(), then:
//! let seen = backend.requests();
//! # }
//! ```
//!
//! Routes: `POST /v1/chat/completions` (plain and `stream: true`), `GET /v1/models`,
//! `GET /health`. With nothing scripted a request gets `You said: <last user message>`, or,
//! when it offers tools and ends with a user message, a call of the first (or the named) tool
//! with arguments made from the tool's schema: so an unmodified client (the OpenResponses
//! compliance suite, an SDK) sees the same kinds of answers a model gives.
//! A system, developer or user message starting with `SCRIPT:` followed by a JSON [`Script`]
//! scripts that request from outside (its turn is the number of assistant messages so far).
//! `script-example.yaml` beside `Cargo.toml` documents the file format (`--script FILE`);
//! the binary's `--admin` adds a `/_scripted/` HTTP control API (see `admin`).
//! For benchmarks turn recording off (`Options { record_limit: 0, .. }`): it copies every
//! request.
//!
//! # Layout
//! Data flows down the list for each request:
//! - `backend`: [`ScriptedBackend`], the handle: start, script, read records, shut down.
//! - `server`: accept loop (TCP_NODELAY), routes, `prepare` a reply then `deliver` it on time.
//! - `request`: read-only view of the request JSON (model, stream, limits, messages).
//! - `book`: picks the turn: queue, then `SCRIPT:` directive, then per-model, then default.
//! - `script`: [`Script`] / [`Turn`] and friends, the builder API and the file format.
//! - `reply`: what to say: echo and truncation, deltas, tool-call fragments, token counts.
//! - `wire`: the JSON shapes (completion, chunk, usage, logprobs, models, error).
//! - `sse`: renders the chunk events and sends them with delays and mid-stream failures.
//! - `admin`: optional `/_scripted/` HTTP control API (queue, scripts, records) for the binary.
//! - `record`: [`RecordedRequest`]s and [`Cancellation`]s (a client gone before the end).
//! - `error`: the crate's [`Error`].
//!
//! Architecture invariant: a reply is fully decided and rendered before the first byte is
//! sent, so the delivery path only sleeps and writes slices of one buffer.

#![forbid(unsafe_code)]

mod admin;
mod backend;
mod book;
mod error;
mod record;
mod reply;
mod request;
mod script;
mod server;
mod sse;
mod wire;

pub use backend::{Options, ScriptedBackend};
pub use error::{Error, Result};
pub use record::{Cancellation, RecordedRequest};
pub use request::DIRECTIVE_PREFIX;
pub use script::{
    DEFAULT_CHUNK_CHARS, Failure, HttpError, ReasoningField, Script, ScriptFile, Text, ToolCall,
    ToolCallLayout, Turn, UsageOverride,
};
pub use server::DEFAULT_MODEL;
