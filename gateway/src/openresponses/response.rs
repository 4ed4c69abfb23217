//! The Response object (`ResponseResource`) and the output items it carries, as they go on the
//! wire. Every key the spec requires is always present, with `null` or `[]` where it has no value.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::code_interpreter::{CodeInterpreterCall, Naming};
use super::request::{
    ContentPart, CreateResponse, InputItem, Role, TextFormat, ToolChoice, ToolChoiceMode,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Queued,
    InProgress,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub status: ResponseStatus,
    pub incomplete_details: Option<IncompleteDetails>,
    pub model: String,
    pub previous_response_id: Option<String>,
    pub instructions: Option<String>,
    pub output: Vec<OutputItem>,
    pub error: Option<ResponseError>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub truncation: super::request::Truncation,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub top_p: f64,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub top_logprobs: u8,
    pub temperature: f64,
    pub reasoning: Value,
    pub usage: Option<Usage>,
    pub max_output_tokens: Option<u64>,
    pub max_tool_calls: Option<u64>,
    pub store: bool,
    pub background: bool,
    pub service_tier: &'static str,
    pub metadata: Map<String, Value>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
    /// The conversation this response joined (`{"id": ...}`), when it was created with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    /// antwort extension: tool calls the model made that the request did not allow
    /// (`tool_choice.allowed_tools`, `max_tool_calls`, `parallel_tool_calls: false`). They are
    /// never returned as `function_call` items.
    #[serde(rename = "antwort:suppressed_tool_calls", skip_serializing_if = "Vec::is_empty")]
    pub suppressed_tool_calls: Vec<SuppressedToolCall>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SuppressedToolCall {
    pub call_id: String,
    pub name: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens_details: OutputTokensDetails,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    /// Tokens written to the backend's prompt cache. Chat Completions backends do not report it;
    /// OpenAI's SDKs require the field (openai-python 3.x), so it is always present.
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: ItemStatus,
        role: &'static str,
        content: Vec<OutputContent>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: ItemStatus,
    },
    Reasoning {
        id: String,
        summary: Vec<Value>,
        content: Vec<OutputContent>,
    },
    /// A `code_interpreter_call` (its `type` depends on the configured naming).
    #[serde(untagged)]
    CodeInterpreterCall(CodeInterpreterItem),
}

impl OutputItem {
    /// The item as the model's input for a next turn (a chain held in memory, or the next
    /// model call of a tool loop).
    pub fn as_input(&self) -> Option<InputItem> {
        match self {
            OutputItem::Message { content, .. } => {
                let content: Vec<ContentPart> = content
                    .iter()
                    .filter_map(|part| match part {
                        OutputContent::OutputText { text, .. } => {
                            Some(ContentPart::Text(text.clone()))
                        }
                        OutputContent::Refusal { refusal } => {
                            Some(ContentPart::Refusal(refusal.clone()))
                        }
                        OutputContent::ReasoningText { .. } => None,
                    })
                    .collect();
                Some(InputItem::Message { role: Role::Assistant, content })
            }
            OutputItem::FunctionCall { call_id, name, arguments, .. } => {
                Some(InputItem::FunctionCall {
                    call_id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                })
            }
            OutputItem::Reasoning { summary, content, .. } => Some(InputItem::Reasoning {
                summary: summary
                    .iter()
                    .filter_map(|s| s.get("text").and_then(Value::as_str).map(str::to_string))
                    .collect(),
                content: content
                    .iter()
                    .filter_map(|c| match c {
                        OutputContent::ReasoningText { text } => Some(text.clone()),
                        _ => None,
                    })
                    .collect(),
            }),
            OutputItem::CodeInterpreterCall(item) => Some(item.call.as_input()),
        }
    }
}

/// A `code_interpreter_call` item with how it goes on the wire: the naming switch, and
/// whether `outputs` are shown (`include: ["code_interpreter_call.outputs"]`). The store
/// always keeps them (the next turn of a chain reads them); see [`ResponseObject::for_storage`].
#[derive(Debug, Clone, PartialEq)]
pub struct CodeInterpreterItem {
    pub call: CodeInterpreterCall,
    pub naming: Naming,
    pub include_outputs: bool,
}

impl Serialize for CodeInterpreterItem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.call.to_json(self.naming, self.include_outputs).serialize(serializer)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText { text: String, annotations: Vec<Value>, logprobs: Vec<LogProb> },
    Refusal { refusal: String },
    ReasoningText { text: String },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogProb {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogProb>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLogProb {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

impl ResponseObject {
    /// A fresh `in_progress` response echoing the request's settings.
    pub fn new(id: String, created_at: i64, request: &CreateResponse) -> Self {
        Self {
            id,
            object: "response",
            created_at,
            completed_at: None,
            status: ResponseStatus::InProgress,
            incomplete_details: None,
            model: request.model.clone(),
            previous_response_id: request.previous_response_id.clone(),
            instructions: request.instructions.clone(),
            output: Vec::new(),
            error: None,
            tools: request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                        "strict": t.strict,
                    })
                })
                .chain(request.code_interpreter.as_ref().map(|t| t.to_json()))
                .collect(),
            tool_choice: tool_choice_echo(&request.tool_choice),
            truncation: request.truncation,
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            text: text_echo(request),
            top_p: request.top_p.unwrap_or(1.0),
            presence_penalty: request.presence_penalty.unwrap_or(0.0),
            frequency_penalty: request.frequency_penalty.unwrap_or(0.0),
            top_logprobs: request.top_logprobs.unwrap_or(0),
            temperature: request.temperature.unwrap_or(1.0),
            // Always an object, as OpenAI answers even for models that do not reason.
            reasoning: match &request.reasoning {
                Some(r) => json!({"effort": r.effort, "summary": r.summary}),
                None => json!({"effort": null, "summary": null}),
            },
            usage: None,
            max_output_tokens: request.max_output_tokens,
            max_tool_calls: request.max_tool_calls,
            store: request.store,
            background: request.background,
            service_tier: match request.service_tier {
                Some(super::request::ServiceTier::Auto) => "auto",
                Some(super::request::ServiceTier::Flex) => "flex",
                Some(super::request::ServiceTier::Priority) => "priority",
                Some(super::request::ServiceTier::Default) | None => "default",
            },
            metadata: request.metadata.clone(),
            safety_identifier: request.safety_identifier.clone(),
            prompt_cache_key: request.prompt_cache_key.clone(),
            conversation: request.conversation.as_ref().map(|id| json!({"id": id})),
            suppressed_tool_calls: Vec::new(),
        }
    }
}

impl ResponseObject {
    /// The response as the store keeps it: `code_interpreter_call` outputs always included.
    pub fn for_storage(&self) -> ResponseObject {
        let mut stored = self.clone();
        for item in &mut stored.output {
            if let OutputItem::CodeInterpreterCall(item) = item {
                item.include_outputs = true;
            }
        }
        stored
    }
}

/// Hides `outputs` of stored `code_interpreter_call` items (JSON as the store keeps it) unless
/// the client asked for them with `include`.
pub fn hide_code_interpreter_outputs(output: &mut [Value]) {
    for item in output {
        if item.get("type").and_then(Value::as_str).is_some_and(Naming::is_item_type)
            && let Some(outputs) = item.get_mut("outputs")
        {
            *outputs = Value::Null;
        }
    }
}

fn tool_choice_echo(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Mode(mode) => json!(mode),
        ToolChoice::Function { name } => json!({"type": "function", "name": name}),
        ToolChoice::AllowedTools { mode, names } => json!({
            "type": "allowed_tools",
            "mode": mode,
            "tools": names.iter().map(|n| json!({"type": "function", "name": n})).collect::<Vec<_>>(),
        }),
    }
}

fn text_echo(request: &CreateResponse) -> Value {
    let format = match &request.text.format {
        TextFormat::Text => json!({"type": "text"}),
        TextFormat::JsonObject => json!({"type": "json_object"}),
        TextFormat::JsonSchema { name, description, schema, strict } => json!({
            "type": "json_schema",
            "name": name,
            "description": description,
            "schema": schema,
            "strict": strict.unwrap_or(false),
        }),
    };
    // `medium` is the documented default ("use the model's default verbosity").
    let verbosity = request.text.verbosity.unwrap_or(super::request::Verbosity::Medium);
    json!({"format": format, "verbosity": verbosity})
}

impl ToolChoiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Auto => "auto",
            Self::Required => "required",
        }
    }
}
