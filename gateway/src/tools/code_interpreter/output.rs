//! ExecuteResult -> what the client sees (`logs` and `image` outputs) and what the model reads.

use antwort_common::agent_api::{ExecStatus, ExecuteResult, FileChangeKind};
use base64::Engine as _;

use super::config::Limits;
use super::containers::Container;
use crate::openresponses::code_interpreter::{CallOutput, CallStatus};
use crate::tools::{ContainerFile, ToolFailure};

/// The mapped result of one execution.
pub struct Mapped {
    pub outputs: Vec<CallOutput>,
    pub status: CallStatus,
    pub failure: Option<ToolFailure>,
    pub model_text: String,
    pub files: Vec<ContainerFile>,
}

/// Cuts `text` to at most `limit` bytes on a character boundary; true when it cut.
fn cut(text: &mut String, limit: usize) -> bool {
    if text.len() <= limit {
        return false;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// The logs as a notebook shows them: stdout, stderr, then the traceback of an exception or the
/// value of a trailing expression.
fn logs_of(result: &ExecuteResult) -> String {
    let mut logs = String::with_capacity(result.stdout.len() + result.stderr.len());
    logs.push_str(&result.stdout);
    logs.push_str(&result.stderr);
    let mut line = |text: &str| {
        if !logs.is_empty() && !logs.ends_with('\n') {
            logs.push('\n');
        }
        logs.push_str(text);
    };
    match (&result.error, &result.value) {
        (Some(error), _) if result.status == ExecStatus::Error || !error.traceback.is_empty() => {
            if error.traceback.is_empty() {
                line(&format!("{}: {}", error.name, error.value));
            } else {
                line(&error.traceback.join("\n"));
            }
        }
        (_, Some(value)) => line(value),
        _ => {}
    }
    logs
}

pub fn map_result(result: ExecuteResult, limits: &Limits, container: &Container) -> Mapped {
    let mut logs = logs_of(&result);
    let cut_here = cut(&mut logs, limits.max_logs_bytes);
    let mut outputs = Vec::new();
    if !logs.is_empty() {
        outputs.push(CallOutput::Logs { logs: logs.clone() });
    }
    let mut images_dropped = false;
    let mut image_count = 0;
    for image in result.rich_outputs.iter() {
        if image_count == limits.max_images {
            images_dropped = true;
            break;
        }
        // The agent sends standard base64; re-check so the client never gets a broken URL.
        if base64::engine::general_purpose::STANDARD.decode(&image.data).is_err() {
            continue;
        }
        outputs.push(CallOutput::Image {
            url: format!("data:{};base64,{}", image.mime_type, image.data),
        });
        image_count += 1;
    }
    let mut files = Vec::new();
    for change in &result.files {
        match change.change {
            FileChangeKind::Deleted => container.forget_file(&change.path),
            FileChangeKind::Created | FileChangeKind::Modified => files.push(ContainerFile {
                container_id: container.id.clone(),
                file_id: container.file_id(&change.path),
                path: change.path.clone(),
                size_bytes: change.size_bytes,
            }),
        }
    }
    let failure = match result.status {
        ExecStatus::Ok | ExecStatus::Error if !(cut_here || images_dropped) => None,
        ExecStatus::Ok | ExecStatus::Error | ExecStatus::OutputTruncated => {
            Some(ToolFailure::OutputTruncated { limit_bytes: limits.max_logs_bytes })
        }
        ExecStatus::Timeout => Some(ToolFailure::Timeout { after_ms: result.duration_ms }),
        ExecStatus::OutOfMemory => Some(ToolFailure::OutOfMemory),
        ExecStatus::Killed => Some(ToolFailure::Killed),
    };
    let status = match failure {
        None => CallStatus::Completed,
        Some(_) => CallStatus::Incomplete,
    };
    let mut model_text = logs;
    let mut note = |text: String| {
        if !model_text.is_empty() && !model_text.ends_with('\n') {
            model_text.push('\n');
        }
        model_text.push_str(&text);
    };
    if image_count > 0 {
        note(format!("[{image_count} image(s) shown to the user]"));
    }
    for file in &files {
        note(format!("[file written: {} ({} bytes)]", file.path, file.size_bytes));
    }
    if let Some(failure) = &failure {
        let typed = failure_note(failure);
        note(typed.clone());
        append_logs(&mut outputs, &typed, limits.max_logs_bytes);
    }
    if model_text.is_empty() {
        model_text.push_str("(no output)");
    }
    Mapped { outputs, status, failure, model_text, files }
}

/// How a typed failure reads, for the model and in the client's logs: `[code] message`.
pub fn failure_note(failure: &ToolFailure) -> String {
    format!("[{}] {}", failure.code(), failure.message())
}

/// Adds `line` to the call's `logs` output (made when the code printed nothing), so a client
/// reading outputs sees why the call did not complete, as the model does. The logs stay within
/// `limit` bytes: what the code printed gives way to the note.
pub fn append_logs(outputs: &mut Vec<CallOutput>, line: &str, limit: usize) {
    let existing = outputs.iter_mut().find_map(|o| match o {
        CallOutput::Logs { logs } => Some(logs),
        _ => None,
    });
    let Some(logs) = existing else {
        let mut logs = line.to_string();
        cut(&mut logs, limit);
        outputs.insert(0, CallOutput::Logs { logs });
        return;
    };
    let room = limit.saturating_sub(line.len() + 1);
    cut(logs, room);
    if !logs.is_empty() && !logs.ends_with('\n') {
        logs.push('\n');
    }
    logs.push_str(line);
    cut(logs, limit);
}
