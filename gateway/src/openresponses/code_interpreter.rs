//! The `code_interpreter` tool on the wire: the request tool, the `python` function the model
//! sees, the `code_interpreter_call` output item, its streaming events and the
//! `container_file_citation` annotation, shaped as OpenAI's Responses API shapes them.
//!
//! **Naming.** OpenResponses defines none of these types and asks implementations to prefix the
//! types they add with their own name (`antwort:`); OpenAI's SDKs parse the unprefixed names.
//! [`Naming`] switches between the two; OpenAI names are the default because that is what
//! clients parse. Only the `type` strings change, never the fields.
//!
//! **Images.** An `image` output's `url` is a `data:image/png;base64,...` URL: self-contained,
//! valid after the container expired, and needing no second authenticated request.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::Error;

/// The function name the model calls to run code.
pub const PYTHON_TOOL_NAME: &str = "python";

/// The `include` value that asks for `outputs` on `code_interpreter_call` items.
pub const INCLUDE_OUTPUTS: &str = "code_interpreter_call.outputs";

/// The container prefix of `cntr_...` ids.
pub const CONTAINER_ID_PREFIX: &str = "cntr";

/// How the types this module adds are named on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `code_interpreter_call`, `response.code_interpreter_call.in_progress`: what OpenAI's SDKs
    /// parse.
    #[default]
    Openai,
    /// `antwort:code_interpreter_call`, `response.antwort:code_interpreter_call.in_progress`:
    /// strict OpenResponses, which wants implementation-defined types prefixed.
    Vendor,
}

impl Naming {
    /// The output item's `type`.
    pub fn item_type(self) -> &'static str {
        match self {
            Naming::Openai => "code_interpreter_call",
            Naming::Vendor => "antwort:code_interpreter_call",
        }
    }

    /// The annotation's `type`.
    pub fn citation_type(self) -> &'static str {
        match self {
            Naming::Openai => "container_file_citation",
            Naming::Vendor => "antwort:container_file_citation",
        }
    }

    /// The event's `type` (`response.` + the possibly prefixed name).
    pub fn event_type(self, kind: EventKind) -> &'static str {
        use EventKind::*;
        match (self, kind) {
            (Naming::Openai, InProgress) => "response.code_interpreter_call.in_progress",
            (Naming::Openai, CodeDelta) => "response.code_interpreter_call_code.delta",
            (Naming::Openai, CodeDone) => "response.code_interpreter_call_code.done",
            (Naming::Openai, Interpreting) => "response.code_interpreter_call.interpreting",
            (Naming::Openai, Completed) => "response.code_interpreter_call.completed",
            (Naming::Vendor, InProgress) => "response.antwort:code_interpreter_call.in_progress",
            (Naming::Vendor, CodeDelta) => "response.antwort:code_interpreter_call_code.delta",
            (Naming::Vendor, CodeDone) => "response.antwort:code_interpreter_call_code.done",
            (Naming::Vendor, Interpreting) => "response.antwort:code_interpreter_call.interpreting",
            (Naming::Vendor, Completed) => "response.antwort:code_interpreter_call.completed",
            // Never an OpenAI type: always prefixed.
            (_, OutputDelta) => "response.antwort:code_interpreter_call_output.delta",
        }
    }

    /// Whether `kind` is an item `type` this module writes, under either naming (stored items
    /// and client-sent input may carry either).
    pub fn is_item_type(kind: &str) -> bool {
        kind == Naming::Openai.item_type() || kind == Naming::Vendor.item_type()
    }
}

// === the request tool ===

/// The `memory_limit` values OpenAI defines (containers and `auto` containers).
pub const MEMORY_LIMITS: &[&str] = &["1g", "4g", "16g", "64g"];

/// `memory_limit` of an `auto` container, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryLimit {
    #[serde(rename = "1g")]
    OneGb,
    #[serde(rename = "4g")]
    FourGb,
    #[serde(rename = "16g")]
    SixteenGb,
    #[serde(rename = "64g")]
    SixtyFourGb,
}

impl MemoryLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryLimit::OneGb => "1g",
            MemoryLimit::FourGb => "4g",
            MemoryLimit::SixteenGb => "16g",
            MemoryLimit::SixtyFourGb => "64g",
        }
    }
}

/// Which container the tool's calls run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerParam {
    /// A container made (or reused along the response chain) by the gateway.
    Auto { memory_limit: Option<MemoryLimit>, file_ids: Vec<String> },
    /// An existing container of the caller's, by id.
    Id(String),
}

/// `{"type": "code_interpreter", "container": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInterpreterTool {
    pub container: ContainerParam,
    /// Where the tool sits in the request (`tools[2]`), for errors found after parsing.
    pub path: String,
}

impl CodeInterpreterTool {
    /// Echoes the tool as OpenAI does in the Response's `tools`.
    pub fn to_json(&self) -> Value {
        let container = match &self.container {
            ContainerParam::Id(id) => Value::String(id.clone()),
            ContainerParam::Auto { memory_limit, file_ids } => {
                let mut c = json!({ "type": "auto" });
                if let Some(limit) = memory_limit {
                    c["memory_limit"] = serde_json::to_value(limit).unwrap_or(Value::Null);
                }
                if !file_ids.is_empty() {
                    c["file_ids"] = json!(file_ids);
                }
                c
            }
        };
        json!({ "type": "code_interpreter", "container": container })
    }
}

/// Parses `tools[i]` whose `type` is `code_interpreter`; `path` is `tools[i]`, so errors name
/// e.g. `tools[0].container.memory_limit`.
pub fn parse_tool(path: &str, tool: Value) -> Result<CodeInterpreterTool, Error> {
    let Value::Object(mut tool) = tool else {
        return Err(Error::invalid_type(path, "an object"));
    };
    tool.remove("type");
    let container = match tool.remove("container") {
        None | Some(Value::Null) => {
            return Err(Error::invalid_request(
                Some(&format!("{path}.container")),
                "missing_required_parameter",
                format!("Missing required parameter: '{path}.container'."),
            ));
        }
        Some(Value::String(id)) => {
            if !valid_container_id(&id) {
                return Err(Error::invalid_value(
                    &format!("{path}.container"),
                    format!(
                        "Invalid container id '{id}': expected 'cntr_' followed by letters or digits."
                    ),
                ));
            }
            ContainerParam::Id(id)
        }
        Some(Value::Object(c)) => parse_auto(&format!("{path}.container"), c)?,
        Some(_) => {
            return Err(Error::invalid_type(
                &format!("{path}.container"),
                "a container id string or an object",
            ));
        }
    };
    if let Some(unknown) = tool.keys().next() {
        return Err(Error::invalid_request(
            Some(&format!("{path}.{unknown}")),
            "unknown_parameter",
            format!("Unknown parameter: '{path}.{unknown}'."),
        ));
    }
    Ok(CodeInterpreterTool { container, path: path.to_string() })
}

fn parse_auto(path: &str, mut c: Map<String, Value>) -> Result<ContainerParam, Error> {
    match c.remove("type") {
        Some(Value::String(t)) if t == "auto" => {}
        Some(Value::String(t)) => {
            return Err(Error::invalid_value(
                &format!("{path}.type"),
                format!("Invalid container type '{t}'; supported: 'auto'."),
            ));
        }
        _ => return Err(Error::invalid_type(&format!("{path}.type"), "the string 'auto'")),
    }
    let memory_limit = match c.remove("memory_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<MemoryLimit>(v.clone()).map_err(|_| {
            Error::invalid_value(
                &format!("{path}.memory_limit"),
                format!("Invalid memory_limit {v}; supported: '1g', '4g', '16g', '64g'."),
            )
        })?),
    };
    let file_ids = match c.remove("file_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| match id {
                Value::String(s) => Ok(s),
                _ => Err(Error::invalid_type(&format!("{path}.file_ids[{i}]"), "a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::invalid_type(&format!("{path}.file_ids"), "an array")),
    };
    if let Some(unknown) = c.keys().next() {
        return Err(Error::invalid_request(
            Some(&format!("{path}.{unknown}")),
            "unknown_parameter",
            format!("Unknown parameter: '{path}.{unknown}'."),
        ));
    }
    Ok(ContainerParam::Auto { memory_limit, file_ids })
}

/// `cntr_` + 1..=64 ASCII letters/digits.
pub fn valid_container_id(id: &str) -> bool {
    id.strip_prefix("cntr_").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

// === what the model sees ===

/// The function tool the model is offered for code_interpreter: (name, description, JSON schema
/// of the arguments). The engine adds it to the backend request in place of the
/// `code_interpreter` tool.
pub fn python_tool() -> (&'static str, &'static str, Value) {
    (
        PYTHON_TOOL_NAME,
        "Runs Python 3 code in a stateful sandbox (a Jupyter-like session): variables, imports \
         and files in the working directory persist between calls of this conversation. The \
         value of a trailing expression and everything printed are returned; matplotlib \
         figures are shown to the user as images. There is no network access. Use it for \
         calculations, data analysis and plots.",
        json!({
            "type": "object",
            "properties": {
                "code": { "type": "string", "description": "The Python code to run." }
            },
            "required": ["code"],
            "additionalProperties": false
        }),
    )
}

/// The `code` argument of a `python` call. Models sometimes send the code bare instead of as
/// JSON; that is accepted as the code itself.
pub fn code_from_arguments(arguments: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut args)) => match args.remove("code") {
            Some(Value::String(code)) => Ok(code),
            _ => Err("the arguments must be a JSON object with a string field 'code'".into()),
        },
        Ok(Value::String(code)) => Ok(code),
        _ if !arguments.trim().is_empty() => Ok(arguments.to_string()),
        _ => Err("no code given".into()),
    }
}

/// A `code_interpreter_call` item given back as input (a stored turn of a chain, or a client
/// keeping its own state): the model reads its code and what it printed.
pub fn parse_input_item(
    path: &str,
    mut item: Map<String, Value>,
) -> Result<super::request::InputItem, Error> {
    let text = |item: &mut Map<String, Value>, key: &str| match item.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Error::invalid_request(
            Some(&format!("{path}.{key}")),
            "missing_required_parameter",
            format!("Missing required parameter: '{path}.{key}'."),
        )),
        Some(_) => Err(Error::invalid_type(&format!("{path}.{key}"), "a string")),
    };
    let id = text(&mut item, "id")?;
    let code = text(&mut item, "code")?;
    let container_id = text(&mut item, "container_id")?;
    let outputs: Option<Vec<CallOutput>> = match item.remove("outputs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v).map_err(|_| {
            Error::invalid_type(&format!("{path}.outputs"), "an array of logs/image outputs")
        })?),
    };
    let status = item.get("status").and_then(Value::as_str).unwrap_or("completed");
    let output = match outputs {
        None => "(The output of this call is not available.)".to_string(),
        Some(outputs) => outputs_for_model(&outputs, status),
    };
    Ok(super::request::InputItem::CodeInterpreterCall { id, code, container_id, output })
}

/// What the model reads of a call's outputs when the call comes back as input.
fn outputs_for_model(outputs: &[CallOutput], status: &str) -> String {
    let mut text = String::new();
    for output in outputs {
        match output {
            CallOutput::Logs { logs } => text.push_str(logs),
            CallOutput::Image { .. } => text.push_str("\n[an image was shown to the user]\n"),
        }
    }
    match status {
        "failed" if text.is_empty() => "[failed] The code did not run.".into(),
        "incomplete" => format!("{text}\n[incomplete] The code did not finish."),
        _ => text,
    }
}

// === the output item ===

/// `status` of a `code_interpreter_call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    InProgress,
    Interpreting,
    Completed,
    /// Ran but was cut short (timeout, memory, output limit, killed).
    Incomplete,
    /// Did not run (no sandbox, container gone, bad arguments).
    Failed,
}

fn call_status_str(status: CallStatus) -> &'static str {
    match status {
        CallStatus::InProgress => "in_progress",
        CallStatus::Interpreting => "interpreting",
        CallStatus::Completed => "completed",
        CallStatus::Incomplete => "incomplete",
        CallStatus::Failed => "failed",
    }
}

/// One entry of `outputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallOutput {
    Logs { logs: String },
    Image { url: String },
}

/// A `code_interpreter_call` output item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInterpreterCall {
    /// `ci_...`.
    pub id: String,
    pub status: CallStatus,
    pub code: String,
    pub container_id: String,
    /// Always kept here; serialized only when the request included
    /// [`INCLUDE_OUTPUTS`] (else `null`, as OpenAI does).
    pub outputs: Vec<CallOutput>,
}

impl CodeInterpreterCall {
    /// The call as the model's input for a later turn.
    pub fn as_input(&self) -> super::request::InputItem {
        super::request::InputItem::CodeInterpreterCall {
            id: self.id.clone(),
            code: self.code.clone(),
            container_id: self.container_id.clone(),
            output: self.as_input_output(),
        }
    }

    /// What the model reads of this call's outputs when it comes back as input.
    pub fn as_input_output(&self) -> String {
        outputs_for_model(&self.outputs, call_status_str(self.status))
    }

    /// The item as JSON, with `outputs` only when the request asked for them.
    pub fn to_json(&self, naming: Naming, include_outputs: bool) -> Value {
        json!({
            "id": self.id,
            "type": naming.item_type(),
            "status": self.status,
            "code": self.code,
            "container_id": self.container_id,
            "outputs": if include_outputs { json!(self.outputs) } else { Value::Null },
        })
    }
}

/// A `container_file_citation` annotation on an output text part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFileCitation {
    pub container_id: String,
    pub file_id: String,
    pub filename: String,
    pub start_index: usize,
    pub end_index: usize,
}

impl ContainerFileCitation {
    pub fn to_json(&self, naming: Naming) -> Value {
        json!({
            "type": naming.citation_type(),
            "container_id": self.container_id,
            "file_id": self.file_id,
            "filename": self.filename,
            "start_index": self.start_index,
            "end_index": self.end_index,
        })
    }
}

// === events ===

/// The code_interpreter events, in the order a call emits them (`OutputDelta` repeats while
/// the code runs, between `Interpreting` and `Completed`, only when live output is enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    InProgress,
    CodeDelta,
    CodeDone,
    Interpreting,
    Completed,
    OutputDelta,
}

/// One code_interpreter streaming event. `sequence_number` is added by the SSE writer, like
/// every other event's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeInterpreterEvent {
    InProgress {
        output_index: usize,
        item_id: String,
    },
    CodeDelta {
        output_index: usize,
        item_id: String,
        delta: String,
    },
    CodeDone {
        output_index: usize,
        item_id: String,
        code: String,
    },
    Interpreting {
        output_index: usize,
        item_id: String,
    },
    Completed {
        output_index: usize,
        item_id: String,
    },
    /// antwort extension: live output while the code runs (`stream`: `stdout` or `stderr`).
    OutputDelta {
        output_index: usize,
        item_id: String,
        stream: &'static str,
        delta: String,
    },
}

impl CodeInterpreterEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::InProgress { .. } => EventKind::InProgress,
            Self::CodeDelta { .. } => EventKind::CodeDelta,
            Self::CodeDone { .. } => EventKind::CodeDone,
            Self::Interpreting { .. } => EventKind::Interpreting,
            Self::Completed { .. } => EventKind::Completed,
            Self::OutputDelta { .. } => EventKind::OutputDelta,
        }
    }

    /// The event's JSON (with `sequence_number` when given), fields in OpenAI's order.
    pub fn to_json(&self, naming: Naming, sequence_number: Option<u64>) -> Value {
        let mut v = Map::new();
        v.insert("type".into(), naming.event_type(self.kind()).into());
        if let Some(n) = sequence_number {
            v.insert("sequence_number".into(), n.into());
        }
        let (output_index, item_id) = match self {
            Self::InProgress { output_index, item_id }
            | Self::CodeDelta { output_index, item_id, .. }
            | Self::CodeDone { output_index, item_id, .. }
            | Self::Interpreting { output_index, item_id }
            | Self::Completed { output_index, item_id }
            | Self::OutputDelta { output_index, item_id, .. } => (output_index, item_id),
        };
        v.insert("output_index".into(), (*output_index).into());
        v.insert("item_id".into(), item_id.clone().into());
        match self {
            Self::CodeDelta { delta, .. } => {
                v.insert("delta".into(), delta.clone().into());
            }
            Self::CodeDone { code, .. } => {
                v.insert("code".into(), code.clone().into());
            }
            Self::OutputDelta { stream, delta, .. } => {
                v.insert("stream".into(), (*stream).into());
                v.insert("delta".into(), delta.clone().into());
            }
            _ => {}
        }
        Value::Object(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tool: Value) -> Result<CodeInterpreterTool, Error> {
        parse_tool("tools[0]", tool)
    }

    fn param_of(err: Error) -> String {
        err.param().expect("a param path").to_string()
    }

    #[test]
    fn parses_auto_and_id_containers() {
        let t = parse(json!({"type": "code_interpreter", "container": {"type": "auto"}}))
            .expect("auto");
        assert_eq!(t.container, ContainerParam::Auto { memory_limit: None, file_ids: vec![] });
        let t = parse(json!({"type": "code_interpreter",
            "container": {"type": "auto", "memory_limit": "4g", "file_ids": ["file_1"]}}))
        .expect("auto with limit");
        assert_eq!(
            t.container,
            ContainerParam::Auto {
                memory_limit: Some(MemoryLimit::FourGb),
                file_ids: vec!["file_1".into()]
            }
        );
        assert_eq!(
            t.to_json(),
            json!({"type": "code_interpreter",
                "container": {"type": "auto", "memory_limit": "4g", "file_ids": ["file_1"]}})
        );
        let t = parse(json!({"type": "code_interpreter", "container": "cntr_abc123"})).expect("id");
        assert_eq!(t.container, ContainerParam::Id("cntr_abc123".into()));
    }

    #[test]
    fn errors_name_the_parameter_path() {
        let cases = [
            (json!({"type": "code_interpreter"}), "tools[0].container"),
            (json!({"type": "code_interpreter", "container": 5}), "tools[0].container"),
            (json!({"type": "code_interpreter", "container": "abc"}), "tools[0].container"),
            (json!({"type": "code_interpreter", "container": "cntr_../x"}), "tools[0].container"),
            (
                json!({"type": "code_interpreter", "container": {"type": "manual"}}),
                "tools[0].container.type",
            ),
            (
                json!({"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "2g"}}),
                "tools[0].container.memory_limit",
            ),
            (
                json!({"type": "code_interpreter", "container": {"type": "auto", "file_ids": [1]}}),
                "tools[0].container.file_ids[0]",
            ),
            (
                json!({"type": "code_interpreter", "container": {"type": "auto", "size": 1}}),
                "tools[0].container.size",
            ),
            (
                json!({"type": "code_interpreter", "container": "cntr_a", "extra": true}),
                "tools[0].extra",
            ),
        ];
        for (tool, path) in cases {
            let err = parse(tool.clone()).expect_err("invalid");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{tool}");
            assert_eq!(param_of(err), path, "{tool}");
        }
    }

    #[test]
    fn item_matches_openai_shape() {
        let call = CodeInterpreterCall {
            id: "ci_1".into(),
            status: CallStatus::Completed,
            code: "print(1)".into(),
            container_id: "cntr_1".into(),
            outputs: vec![
                CallOutput::Logs { logs: "1\n".into() },
                CallOutput::Image { url: "data:image/png;base64,AAAA".into() },
            ],
        };
        assert_eq!(
            call.to_json(Naming::Openai, true),
            json!({
                "id": "ci_1",
                "type": "code_interpreter_call",
                "status": "completed",
                "code": "print(1)",
                "container_id": "cntr_1",
                "outputs": [
                    {"type": "logs", "logs": "1\n"},
                    {"type": "image", "url": "data:image/png;base64,AAAA"}
                ]
            })
        );
        let hidden = call.to_json(Naming::Vendor, false);
        assert_eq!(hidden["outputs"], Value::Null);
        assert_eq!(hidden["type"], "antwort:code_interpreter_call");
        for (status, text) in [
            (CallStatus::InProgress, "in_progress"),
            (CallStatus::Interpreting, "interpreting"),
            (CallStatus::Incomplete, "incomplete"),
            (CallStatus::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(status).expect("status"), json!(text));
        }
    }

    #[test]
    fn events_match_openai_shapes() {
        let id = || "ci_1".to_string();
        let cases = [
            (
                CodeInterpreterEvent::InProgress { output_index: 2, item_id: id() },
                json!({"type": "response.code_interpreter_call.in_progress",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1"}),
            ),
            (
                CodeInterpreterEvent::CodeDelta {
                    output_index: 2,
                    item_id: id(),
                    delta: "pri".into(),
                },
                json!({"type": "response.code_interpreter_call_code.delta",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1", "delta": "pri"}),
            ),
            (
                CodeInterpreterEvent::CodeDone {
                    output_index: 2,
                    item_id: id(),
                    code: "print(1)".into(),
                },
                json!({"type": "response.code_interpreter_call_code.done",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1", "code": "print(1)"}),
            ),
            (
                CodeInterpreterEvent::Interpreting { output_index: 2, item_id: id() },
                json!({"type": "response.code_interpreter_call.interpreting",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1"}),
            ),
            (
                CodeInterpreterEvent::Completed { output_index: 2, item_id: id() },
                json!({"type": "response.code_interpreter_call.completed",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1"}),
            ),
            (
                CodeInterpreterEvent::OutputDelta {
                    output_index: 2,
                    item_id: id(),
                    stream: "stdout",
                    delta: "1\n".into(),
                },
                json!({"type": "response.antwort:code_interpreter_call_output.delta",
                    "sequence_number": 7, "output_index": 2, "item_id": "ci_1",
                    "stream": "stdout", "delta": "1\n"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event.to_json(Naming::Openai, Some(7)), expected);
        }
        let vendor = CodeInterpreterEvent::Completed { output_index: 0, item_id: id() }
            .to_json(Naming::Vendor, None);
        assert_eq!(vendor["type"], "response.antwort:code_interpreter_call.completed");
        assert!(vendor.get("sequence_number").is_none());
    }

    #[test]
    fn citation_matches_openai_shape() {
        let c = ContainerFileCitation {
            container_id: "cntr_1".into(),
            file_id: "cfile_1".into(),
            filename: "plot.png".into(),
            start_index: 3,
            end_index: 11,
        };
        assert_eq!(
            c.to_json(Naming::Openai),
            json!({"type": "container_file_citation", "container_id": "cntr_1",
                "file_id": "cfile_1", "filename": "plot.png", "start_index": 3, "end_index": 11})
        );
        assert_eq!(c.to_json(Naming::Vendor)["type"], "antwort:container_file_citation");
    }

    #[test]
    fn python_tool_and_arguments() {
        let (name, description, schema) = python_tool();
        assert_eq!(name, "python");
        assert!(description.contains("Python"));
        assert_eq!(schema["required"], json!(["code"]));
        assert_eq!(code_from_arguments(r#"{"code":"print(1)"}"#).expect("json"), "print(1)");
        assert_eq!(code_from_arguments("print(2)").expect("bare"), "print(2)");
        assert!(code_from_arguments(r#"{"source":"x"}"#).is_err());
        assert!(code_from_arguments("  ").is_err());
    }
}
