//! TOOLS: server-side tools the engine runs for the model between model calls.
//!
//! # Layout
//! The engine hands a [`ToolCall`] and its [`ToolContext`] to a [`ToolExecutor`] and gets a
//! [`ToolOutcome`] back: the text the model reads next, the item the client sees, and, when the
//! call did not do its job, a typed [`ToolFailure`]. Failures are outcomes, never request errors:
//! the model reads them and can retry or explain.
//! - [`code_interpreter`]: the sandbox-backed `python` tool: claims a sandbox from the pool
//!   manager over mTLS, runs code in the agent's session, keeps `cntr_...` containers per owner.
//!
//! File search, web search and MCP come through the same trait later.

pub mod code_interpreter;

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use crate::openresponses::code_interpreter::CodeInterpreterCall;

/// Who owns the objects a call creates (containers): the same owner as every stored object,
/// so another owner's container is "not found", never "forbidden".
pub use crate::store::Owner;

/// One call the model made to a server-side tool.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The model's call id (`call_...`), echoed to the model with the output.
    pub call_id: String,
    /// The function name the model called (`python`).
    pub name: String,
    /// The raw JSON arguments as the model wrote them.
    pub arguments: String,
}

/// Which container a code_interpreter call runs in, as the request and the response chain say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerBinding {
    /// `container: {"type": "auto"}`: `current` is the container this response (or the
    /// `previous_response_id` chain) already uses, if any; a new one is made when it is absent
    /// or expired.
    Auto { current: Option<String> },
    /// `container: "cntr_..."`: exactly this one; unknown or another owner's is not found.
    Explicit(String),
}

/// What a call needs to know about the response it runs for.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub owner: Owner,
    pub container: ContainerBinding,
    /// Cancelled when the response is cancelled or the client went away: the execution is
    /// interrupted in the sandbox and the call returns [`ToolFailure::Cancelled`].
    pub cancel: CancellationToken,
    /// Set for streamed responses whose client asked for outputs, when the gateway streams
    /// live output (`tools.code_interpreter.stream_output`): pieces of output go here while the
    /// code runs.
    pub progress: Option<ProgressSink>,
    /// The request's `memory_limit` for a new `auto` container (picks its pool).
    pub memory_limit: Option<String>,
}

/// A piece of a running call's output (the `..._output.delta` antwort extension event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolProgress {
    /// The output item of the call.
    pub item_id: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

pub type ProgressSink = tokio::sync::mpsc::UnboundedSender<ToolProgress>;

/// Why a call did not (fully) do its job. Goes back to the model as text and to the client as
/// the item's status; never fails the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolFailure {
    /// The code ran past the execution time limit and was stopped.
    Timeout { after_ms: u64 },
    /// The code hit the sandbox's memory limit.
    OutOfMemory,
    /// The code printed more than the output limit; what fit is kept.
    OutputTruncated { limit_bytes: usize },
    /// The interpreter was killed (signal, CPU limit); its state is gone.
    Killed,
    /// Every sandbox is in use; try again after `retry_after_secs`.
    PoolExhausted { retry_after_secs: u64 },
    /// No sandbox could be reached or claimed (down, refused by identity, protocol error).
    SandboxUnavailable { reason: String },
    /// The container named by the request does not exist (or is not the caller's).
    ContainerNotFound { id: String },
    /// The container named by the request expired (idle past its `expires_after`): its
    /// sandbox is gone; a new container is needed.
    ContainerExpired { id: String },
    /// The model's arguments could not be used.
    InvalidArguments { reason: String },
    /// The response was cancelled while the code ran.
    Cancelled,
}

impl ToolFailure {
    /// The stable code (metrics labels, logs, the model's text).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory => "out_of_memory",
            Self::OutputTruncated { .. } => "output_truncated",
            Self::Killed => "killed",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::SandboxUnavailable { .. } => "sandbox_unavailable",
            Self::ContainerNotFound { .. } => "container_not_found",
            Self::ContainerExpired { .. } => "container_expired",
            Self::InvalidArguments { .. } => "invalid_arguments",
            Self::Cancelled => "cancelled",
        }
    }

    /// What the model reads about it.
    pub fn message(&self) -> String {
        match self {
            Self::Timeout { after_ms } => format!(
                "The code was stopped after {:.1}s: it exceeded the execution time limit.",
                *after_ms as f64 / 1000.0
            ),
            Self::OutOfMemory => "The code ran out of memory (the sandbox's memory limit).".into(),
            Self::OutputTruncated { limit_bytes } => {
                format!("The output exceeded {limit_bytes} bytes and was truncated.")
            }
            Self::Killed => {
                "The Python interpreter was killed; variables and imports were lost.".into()
            }
            Self::PoolExhausted { retry_after_secs } => {
                format!("No sandbox is free right now; try again in about {retry_after_secs}s.")
            }
            Self::SandboxUnavailable { reason } => {
                format!("The code could not run: the sandbox is unavailable ({reason}).")
            }
            Self::ContainerNotFound { id } => format!("Container '{id}' was not found."),
            Self::ContainerExpired { id } => format!(
                "Container '{id}' expired after being idle past its expiry; its files and \
                 variables are gone. Use a new container."
            ),
            Self::InvalidArguments { reason } => format!("Invalid tool arguments: {reason}."),
            Self::Cancelled => "The execution was cancelled.".into(),
        }
    }
}

/// The item a call adds to the response's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolItem {
    CodeInterpreter(CodeInterpreterCall),
}

/// A file the call wrote in its container: a candidate for a `container_file_citation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFile {
    pub container_id: String,
    pub file_id: String,
    /// Relative to the container's workspace.
    pub path: String,
    pub size_bytes: u64,
}

/// The result of one tool call.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    /// The call's output as the model reads it (the `function_call_output` text).
    pub output_for_model: String,
    /// The output item for the client.
    pub item: ToolItem,
    /// Files created or modified by the call.
    pub files: Vec<ContainerFile>,
    /// Set when the call did not fully succeed.
    pub failure: Option<ToolFailure>,
    /// The container the call ran in: the engine keeps it for the next calls of this response
    /// and stores it with the response so `previous_response_id` chains reuse it.
    pub container_id: Option<String>,
}

/// Boxed so the trait stays object-safe (`Arc<dyn ToolExecutor>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A server-side tool. Implementations must return an outcome for every call (never panic,
/// never hang past their own limits) and stop their work when the future is dropped or
/// `ctx.cancel` fires.
pub trait ToolExecutor: Send + Sync {
    /// The function name the model calls.
    fn name(&self) -> &'static str;
    /// `(description, JSON schema of the arguments)` the model is offered.
    fn definition(&self) -> (&'static str, serde_json::Value);
    /// Runs one call. `item_id` is the output item's id the engine already announced.
    fn execute<'a>(
        &'a self,
        ctx: &'a ToolContext,
        call: &'a ToolCall,
        item_id: &'a str,
    ) -> BoxFuture<'a, ToolOutcome>;
}
