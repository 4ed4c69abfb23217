//! Wire types of the sandbox agent's code-execution and file API, shared by the agent (server) and
//! its callers (the gateway, the pool manager).
//!
//! Routes (JSON unless noted; every error is an [`crate::error::ErrorEnvelope`]):
//! - `POST   /v1/sessions` [`CreateSessionRequest`] (body optional) -> 201 [`SessionInfo`]
//! - `GET    /v1/sessions` -> [`SessionList`]
//! - `GET    /v1/sessions/{id}` -> [`SessionInfo`]
//! - `DELETE /v1/sessions/{id}` -> 204
//! - `POST   /v1/sessions/{id}/execute` [`ExecuteRequest`] -> [`ExecuteResult`]
//! - `POST   /v1/sessions/{id}/execute/stream` [`ExecuteRequest`] -> `text/event-stream`: events
//!   `stdout` / `stderr` (data [`OutputChunk`]) as output appears, then one `result` (data
//!   [`ExecuteResult`]) or one `error` (data [`crate::error::ErrorEnvelope`]).
//! - `POST   /v1/sessions/{id}/interrupt` -> [`InterruptResult`]
//! - `POST   /v1/sessions/{id}/restart` -> [`SessionInfo`]
//! - `GET    /v1/sessions/{id}/files` -> [`FileList`]
//! - `PUT    /v1/sessions/{id}/files/{path}` raw bytes -> 201 [`FileInfo`]
//! - `GET    /v1/sessions/{id}/files/{path}` -> the raw bytes (`application/octet-stream`)
//! - `DELETE /v1/sessions/{id}/files/{path}` -> 204
//!
//! An execution that ran returns 200 whatever its [`ExecStatus`]; 4xx/5xx mean it did not run.

use serde::{Deserialize, Serialize};

/// Path prefix of the session routes.
pub const SESSIONS_PATH: &str = "/v1/sessions";

/// Event names of the streaming execute route.
pub const EVENT_STDOUT: &str = "stdout";
pub const EVENT_STDERR: &str = "stderr";
pub const EVENT_RESULT: &str = "result";
pub const EVENT_ERROR: &str = "error";

/// `POST /v1/sessions`. Every field is optional; an empty body is the same as `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Caller's label for the session (e.g. the gateway's container id), echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Lifecycle of a session's interpreter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Alive and waiting for code.
    Idle,
    /// Running an execution.
    Busy,
    /// The interpreter died (killed, out of memory, CPU limit); `restart` brings it back.
    Dead,
}

/// A session: one live interpreter and its workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub state: SessionState,
    /// The session's workspace directory as the code sees it (its working directory).
    pub workspace: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Executions run so far (across restarts).
    pub executions: u64,
    /// How often the interpreter was (re)started, 1 for a new session.
    pub generation: u64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// `POST /v1/sessions/{id}/execute`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Python source; a trailing expression's value is returned like in Jupyter.
    pub code: String,
    /// Wall-clock limit of this call; the agent's default when absent, capped by its maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How an execution ended. 200 responses always carry one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Ran to the end.
    Ok,
    /// Raised an exception (including `SyntaxError`); see [`ExecuteResult::error`].
    Error,
    /// Exceeded its wall-clock limit and was interrupted (or killed if it would not stop).
    Timeout,
    /// Hit the memory limit (`MemoryError` or killed by the kernel's OOM killer).
    OutOfMemory,
    /// Ran to the end but printed more than the output limit; the output was cut.
    OutputTruncated,
    /// The interpreter was killed (signal, CPU-time limit); the session must be restarted.
    Killed,
}

impl ExecStatus {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Ok => "ok",
            ExecStatus::Error => "error",
            ExecStatus::Timeout => "timeout",
            ExecStatus::OutOfMemory => "out_of_memory",
            ExecStatus::OutputTruncated => "output_truncated",
            ExecStatus::Killed => "killed",
        }
    }
}

/// An exception raised by the code, or the agent's account of why it stopped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecError {
    /// Exception class name (`ZeroDivisionError`, `SyntaxError`, `MemoryError`, `TimeoutError`).
    pub name: String,
    /// `str(exception)`.
    pub value: String,
    /// Formatted traceback lines, innermost last (empty when the interpreter was killed).
    pub traceback: Vec<String>,
}

/// A rich output (a matplotlib figure, a PIL image).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RichOutput {
    /// `image/png`.
    pub mime_type: String,
    /// Base64 (standard alphabet, padded) of the bytes.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// How a workspace file changed during an execution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileChangeKind {
    Created,
    Modified,
    Deleted,
}

/// A workspace file the execution created, modified or deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub change: FileChangeKind,
    /// Size after the execution (0 for deleted files).
    pub size_bytes: u64,
}

/// The outcome of one execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecuteResult {
    pub status: ExecStatus,
    pub stdout: String,
    pub stderr: String,
    /// `repr()` of the trailing expression, if the code ended with one that was not `None`.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rich_outputs: Vec<RichOutput>,
    #[serde(default)]
    pub files: Vec<FileChange>,
    #[serde(default)]
    pub error: Option<ExecError>,
    /// True when stdout+stderr exceeded the limit and were cut (also with non-`ok` statuses).
    #[serde(default)]
    pub output_truncated: bool,
    pub duration_ms: u64,
}

/// Data of a `stdout` / `stderr` event of the streaming execute route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputChunk {
    pub text: String,
}

/// `POST /v1/sessions/{id}/interrupt`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterruptResult {
    /// Whether an execution was running and got the interrupt.
    pub interrupted: bool,
}

/// One workspace file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub size_bytes: u64,
    /// Unix seconds.
    pub modified_at: u64,
}

/// `GET /v1/sessions/{id}/files`: regular files, recursively, sorted by path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileList {
    pub files: Vec<FileInfo>,
    /// True when the listing stopped at the agent's entry limit.
    #[serde(default)]
    pub truncated: bool,
}
