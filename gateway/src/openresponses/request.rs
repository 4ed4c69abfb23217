//! `CreateResponseBody`: parsing and validation of a `POST /v1/responses` body into a typed
//! [`CreateResponse`].
//!
//! Parsing walks the JSON by hand rather than through one big `#[derive(Deserialize)]` so that every
//! error names the exact parameter path (`input[2].content[0].image_url`), unknown fields are
//! ignored, and an item without `type` is a message (as the OpenAI SDKs send it).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;

/// Longest string input the spec allows (`maxLength` of `input` and of text parts).
pub const MAX_INPUT_CHARS: usize = 10 * 1024 * 1024;
const MAX_IMAGE_URL_CHARS: usize = 20 * 1024 * 1024;
const MAX_FILE_DATA_CHARS: usize = 32 * 1024 * 1024;
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 512;
const MAX_IDENTIFIER_CHARS: usize = 64;

/// A validated create request. Everything the client sent that the spec defines is kept, so it can
/// be echoed even where the backend cannot honour it.
#[derive(Debug, Clone)]
pub struct CreateResponse {
    pub model: String,
    pub input: Vec<InputItem>,
    /// `item_reference` items of `input`, taken out of it: each stands at `position` in `input`
    /// once the engine has resolved it to the stored item.
    pub item_references: Vec<ItemReference>,
    pub previous_response_id: Option<String>,
    /// The conversation (`conversation: "conv_..."` or `{id}`) this response joins.
    pub conversation: Option<String>,
    pub include: Vec<Include>,
    /// The client's function tools (run by the client).
    pub tools: Vec<FunctionTool>,
    /// The `code_interpreter` tool, when the request asked for it (run by the gateway).
    pub code_interpreter: Option<super::code_interpreter::CodeInterpreterTool>,
    pub tool_choice: ToolChoice,
    pub metadata: Map<String, Value>,
    pub text: TextConfig,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub parallel_tool_calls: Option<bool>,
    pub stream: bool,
    pub background: bool,
    pub max_output_tokens: Option<u64>,
    pub max_tool_calls: Option<u64>,
    pub reasoning: Option<ReasoningConfig>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
    pub truncation: Truncation,
    pub instructions: Option<String>,
    pub store: bool,
    pub service_tier: Option<ServiceTier>,
    pub top_logprobs: Option<u8>,
}

/// An `item_reference` input item: the stored item `id` goes at `position` of `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemReference {
    pub position: usize,
    pub id: String,
}

/// One item of `input`.
#[derive(Debug, Clone, PartialEq)]
pub enum InputItem {
    Message {
        role: Role,
        content: Vec<ContentPart>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    FunctionCallOutput {
        call_id: String,
        output: Vec<ContentPart>,
    },
    Reasoning {
        summary: Vec<String>,
        content: Vec<String>,
    },
    /// A `code_interpreter_call` from an earlier turn: the model sees its `python` call and
    /// what the call printed.
    CodeInterpreterCall {
        id: String,
        code: String,
        container_id: String,
        output: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    System,
    Developer,
    Assistant,
}

/// A content part of a message or of a function call's output.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    /// `input_text`, or `output_text` in an assistant message.
    Text(String),
    Refusal(String),
    Image {
        url: String,
        detail: Option<ImageDetail>,
    },
    File {
        filename: Option<String>,
        file_data: Option<String>,
        file_url: Option<String>,
    },
    Video {
        url: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDetail {
    Low,
    High,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Include {
    #[serde(rename = "reasoning.encrypted_content")]
    ReasoningEncryptedContent,
    #[serde(rename = "message.output_text.logprobs")]
    OutputTextLogprobs,
    /// Not in OpenResponses (it has no code interpreter); OpenAI's name, accepted as a superset.
    #[serde(rename = "code_interpreter_call.outputs")]
    CodeInterpreterCallOutputs,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    _type: FunctionTag,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FunctionTag {
    Function,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Function {
        name: String,
    },
    /// The model may only call these tools; a hard constraint enforced by the engine too.
    AllowedTools {
        mode: ToolChoiceMode,
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextConfig {
    pub format: TextFormat,
    pub verbosity: Option<Verbosity>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum TextFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Map<String, Value>,
        strict: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ReasoningConfig {
    #[serde(default)]
    pub effort: Option<ReasoningEffort>,
    #[serde(default)]
    pub summary: Option<ReasoningSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

impl ReasoningEffort {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Xhigh => "xhigh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningSummary {
    Concise,
    Detailed,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    Auto,
    #[default]
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTier {
    Auto,
    Default,
    Flex,
    Priority,
}

impl CreateResponse {
    /// Parses and validates a request body.
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Error::invalid_request(None, "invalid_json", format!("The body is not valid JSON: {e}"))
        })?;
        let Value::Object(mut body) = value else {
            return Err(Error::invalid_request(
                None,
                "invalid_type",
                "The body must be a JSON object.",
            ));
        };
        Self::from_map(&mut body)
    }

    fn from_map(body: &mut Map<String, Value>) -> Result<Self, Error> {
        let model: Option<String> = field(body, "model")?;
        let model = match model {
            Some(m) if !m.is_empty() => m,
            _ => {
                return Err(Error::invalid_request(
                    Some("model"),
                    "missing_required_parameter",
                    "Missing required parameter: 'model'.",
                ));
            }
        };
        let previous_response_id: Option<String> = field(body, "previous_response_id")?;
        let mut item_references = Vec::new();
        let input = match body.remove("input") {
            None | Some(Value::Null) => {
                if previous_response_id.is_none()
                    && body.get("conversation").is_none_or(Value::is_null)
                {
                    return Err(Error::invalid_request(
                        Some("input"),
                        "missing_required_parameter",
                        "Missing required parameter: 'input'.",
                    ));
                }
                Vec::new()
            }
            Some(Value::String(text)) => {
                check_len("input", &text, MAX_INPUT_CHARS)?;
                vec![InputItem::Message {
                    role: Role::User,
                    content: vec![ContentPart::Text(text)],
                }]
            }
            Some(Value::Array(items)) => {
                let mut parsed = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("input[{i}]");
                    if item.get("type").and_then(Value::as_str) == Some("item_reference") {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
                        if id.is_empty() {
                            return Err(Error::invalid_request(
                                Some(&format!("{path}.id")),
                                "missing_required_parameter",
                                format!("Missing required parameter: '{path}.id'."),
                            ));
                        }
                        item_references
                            .push(ItemReference { position: parsed.len(), id: id.into() });
                        continue;
                    }
                    parsed.push(parse_item(&path, item)?);
                }
                parsed
            }
            Some(_) => {
                return Err(Error::invalid_type("input", "a string or an array of input items"));
            }
        };
        let conversation = match body.remove("conversation") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(Value::Object(map)) => match map.get("id") {
                Some(Value::String(id)) => Some(id.clone()),
                _ => return Err(Error::invalid_type("conversation.id", "a string")),
            },
            Some(_) => {
                return Err(Error::invalid_type(
                    "conversation",
                    "a conversation id or {\"id\": ...}",
                ));
            }
        };
        if conversation.is_some() && previous_response_id.is_some() {
            return Err(Error::invalid_request(
                Some("conversation"),
                "invalid_value",
                "Use either 'conversation' or 'previous_response_id', not both.",
            ));
        }

        let include: Vec<Include> = field(body, "include")?.unwrap_or_default();
        let (tools, code_interpreter) = parse_tools(body)?;
        let tool_choice = parse_tool_choice(body, &tools)?;
        let metadata = parse_metadata(body)?;
        let text = parse_text(body)?;
        let temperature = number_in(body, "temperature", 0.0, 2.0)?;
        let top_p = number_in(body, "top_p", 0.0, 1.0)?;
        let presence_penalty = number_in(body, "presence_penalty", -2.0, 2.0)?;
        let frequency_penalty = number_in(body, "frequency_penalty", -2.0, 2.0)?;
        let parallel_tool_calls: Option<bool> = field(body, "parallel_tool_calls")?;
        let stream: bool = field(body, "stream")?.unwrap_or(false);
        let stream_options: Option<Map<String, Value>> = field(body, "stream_options")?;
        if let Some(options) = &stream_options
            && let Some(v) = options.get("include_obfuscation")
            && !v.is_boolean()
        {
            return Err(Error::invalid_type("stream_options.include_obfuscation", "a boolean"));
        }
        let background: bool = field(body, "background")?.unwrap_or(false);
        let max_output_tokens = integer_at_least(body, "max_output_tokens", 16)?;
        let max_tool_calls = integer_at_least(body, "max_tool_calls", 1)?;
        let reasoning: Option<ReasoningConfig> = field(body, "reasoning")?;
        let safety_identifier = bounded_string(body, "safety_identifier", MAX_IDENTIFIER_CHARS)?;
        let prompt_cache_key = bounded_string(body, "prompt_cache_key", MAX_IDENTIFIER_CHARS)?;
        let truncation: Truncation = field(body, "truncation")?.unwrap_or_default();
        let instructions: Option<String> = field(body, "instructions")?;
        if let Some(text) = &instructions {
            check_len("instructions", text, MAX_INPUT_CHARS)?;
        }
        let store: bool = field(body, "store")?.unwrap_or(true);
        let service_tier: Option<ServiceTier> = field(body, "service_tier")?;
        let top_logprobs: Option<u8> = match field::<i64>(body, "top_logprobs")? {
            None => None,
            Some(n @ 0..=20) => Some(n as u8),
            Some(n) => {
                return Err(Error::invalid_value(
                    "top_logprobs",
                    format!("top_logprobs must be between 0 and 20, got {n}."),
                ));
            }
        };
        Ok(Self {
            model,
            input,
            item_references,
            previous_response_id,
            conversation,
            include,
            tools,
            code_interpreter,
            tool_choice,
            metadata,
            text,
            temperature,
            top_p,
            presence_penalty,
            frequency_penalty,
            parallel_tool_calls,
            stream,
            background,
            max_output_tokens,
            max_tool_calls,
            reasoning,
            safety_identifier,
            prompt_cache_key,
            truncation,
            instructions,
            store,
            service_tier,
            top_logprobs,
        })
    }

    /// Whether the client asked for log probabilities on output text.
    pub fn wants_logprobs(&self) -> bool {
        self.top_logprobs.is_some() || self.include.contains(&Include::OutputTextLogprobs)
    }
}

// === parsing helpers ===

/// Takes `key` out of `body` and deserializes it; `null` and absence are `None`. Errors carry the
/// full parameter path.
fn field<T: DeserializeOwned>(
    body: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<T>, Error> {
    match body.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => typed(key, value).map(Some),
    }
}

/// Deserializes `value` (found at `path`) into `T`, naming the nested path on failure.
fn typed<T: DeserializeOwned>(path: &str, value: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let param = if inner == "." || inner.is_empty() {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            format!("{path}.{inner}")
        };
        let message = err.into_inner().to_string();
        Error::invalid_request(
            Some(&param),
            "invalid_value",
            format!("Invalid value for '{param}': {message}."),
        )
    })
}

fn check_len(param: &str, text: &str, max_chars: usize) -> Result<(), Error> {
    // Bytes bound chars from above, so counting chars is needed only for long strings.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(Error::invalid_request(
            Some(param),
            "string_above_max_length",
            format!(
                "Invalid '{param}': string too long. Expected a string with maximum length {max_chars}."
            ),
        ));
    }
    Ok(())
}

fn number_in(
    body: &mut Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, Error> {
    match field::<f64>(body, key)? {
        Some(n) if !(min..=max).contains(&n) => Err(Error::invalid_value(
            key,
            format!("'{key}' must be between {min} and {max}, got {n}."),
        )),
        other => Ok(other),
    }
}

fn integer_at_least(
    body: &mut Map<String, Value>,
    key: &str,
    min: i64,
) -> Result<Option<u64>, Error> {
    match field::<i64>(body, key)? {
        Some(n) if n < min => {
            Err(Error::invalid_value(key, format!("'{key}' must be at least {min}, got {n}.")))
        }
        Some(n) => Ok(Some(n as u64)),
        None => Ok(None),
    }
}

fn bounded_string(
    body: &mut Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, Error> {
    let value: Option<String> = field(body, key)?;
    if let Some(v) = &value {
        check_len(key, v, max)?;
    }
    Ok(value)
}

fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

type Tools = (Vec<FunctionTool>, Option<super::code_interpreter::CodeInterpreterTool>);

fn parse_tools(body: &mut Map<String, Value>) -> Result<Tools, Error> {
    use super::code_interpreter::{PYTHON_TOOL_NAME, parse_tool};
    let Some(tools) = field::<Vec<Value>>(body, "tools")? else {
        return Ok((Vec::new(), None));
    };
    let mut parsed: Vec<FunctionTool> = Vec::with_capacity(tools.len());
    let mut code_interpreter = None;
    let mut python_at = None;
    for (i, tool) in tools.into_iter().enumerate() {
        let path = format!("tools[{i}]");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "code_interpreter" {
            if code_interpreter.is_some() {
                return Err(Error::invalid_value(
                    &format!("{path}.type"),
                    "Only one 'code_interpreter' tool may be given.",
                ));
            }
            code_interpreter = Some(parse_tool(&path, tool)?);
            continue;
        }
        if kind != "function" {
            return Err(Error::invalid_request(
                Some(&format!("{path}.type")),
                "unsupported_tool_type",
                format!(
                    "Tool type '{kind}' is not supported here; supported tool types: 'function', 'code_interpreter'."
                ),
            ));
        }
        let tool: FunctionTool = typed(&path, tool)?;
        if !valid_function_name(&tool.name) {
            return Err(Error::invalid_value(
                &format!("{path}.name"),
                format!(
                    "Invalid function name '{}': 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'.",
                    tool.name
                ),
            ));
        }
        if parsed.iter().any(|t| t.name == tool.name) {
            return Err(Error::invalid_value(
                &format!("{path}.name"),
                format!("Duplicate function name '{}' in tools.", tool.name),
            ));
        }
        if tool.name == PYTHON_TOOL_NAME {
            python_at = Some(i);
        }
        parsed.push(tool);
    }
    if code_interpreter.is_some()
        && let Some(i) = python_at
    {
        // The model calls code_interpreter as the function `python`; a client function of the
        // same name would be indistinguishable.
        return Err(Error::invalid_value(
            &format!("tools[{i}].name"),
            format!(
                "The function name '{PYTHON_TOOL_NAME}' is reserved when the 'code_interpreter' tool is used."
            ),
        ));
    }
    Ok((parsed, code_interpreter))
}

fn parse_tool_choice(
    body: &mut Map<String, Value>,
    tools: &[FunctionTool],
) -> Result<ToolChoice, Error> {
    let known = |path: &str, name: &str| -> Result<(), Error> {
        if tools.iter().any(|t| t.name == name) {
            Ok(())
        } else {
            Err(Error::invalid_value(
                path,
                format!("Tool choice '{name}' not found in 'tools' parameter."),
            ))
        }
    };
    let choice = match body.remove("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Mode(ToolChoiceMode::Auto),
        Some(v @ Value::String(_)) => ToolChoice::Mode(typed("tool_choice", v)?),
        Some(Value::Object(map)) => match map.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = match map.get("name") {
                    Some(Value::String(name)) => name.clone(),
                    _ => return Err(Error::invalid_type("tool_choice.name", "a string")),
                };
                known("tool_choice.name", &name)?;
                ToolChoice::Function { name }
            }
            Some("allowed_tools") => {
                let mode = match map.get("mode") {
                    None | Some(Value::Null) => ToolChoiceMode::Auto,
                    Some(v) => typed("tool_choice.mode", v.clone())?,
                };
                let list = match map.get("tools") {
                    Some(Value::Array(list)) if !list.is_empty() && list.len() <= 128 => list,
                    _ => {
                        return Err(Error::invalid_value(
                            "tool_choice.tools",
                            "'tool_choice.tools' must be an array of 1 to 128 tools.",
                        ));
                    }
                };
                let mut names = Vec::with_capacity(list.len());
                for (i, entry) in list.iter().enumerate() {
                    let path = format!("tool_choice.tools[{i}]");
                    if entry.get("type").and_then(Value::as_str) != Some("function") {
                        return Err(Error::invalid_value(
                            &format!("{path}.type"),
                            "Only tools of type 'function' can be allowed.",
                        ));
                    }
                    let Some(name) = entry.get("name").and_then(Value::as_str) else {
                        return Err(Error::invalid_type(&format!("{path}.name"), "a string"));
                    };
                    known(&format!("{path}.name"), name)?;
                    names.push(name.to_string());
                }
                ToolChoice::AllowedTools { mode, names }
            }
            other => {
                return Err(Error::invalid_value(
                    "tool_choice.type",
                    format!(
                        "Unsupported tool_choice type {}; expected 'function' or 'allowed_tools'.",
                        other.map_or("(missing)".to_string(), |t| format!("'{t}'"))
                    ),
                ));
            }
        },
        Some(_) => {
            return Err(Error::invalid_type(
                "tool_choice",
                "'none', 'auto', 'required' or an object",
            ));
        }
    };
    if matches!(choice, ToolChoice::Mode(ToolChoiceMode::Required)) && tools.is_empty() {
        return Err(Error::invalid_value(
            "tool_choice",
            "tool_choice 'required' needs at least one tool in 'tools'.",
        ));
    }
    Ok(choice)
}

fn parse_metadata(body: &mut Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let Some(metadata) = field::<Map<String, Value>>(body, "metadata")? else {
        return Ok(Map::new());
    };
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(Error::invalid_value(
            "metadata",
            format!(
                "'metadata' can hold at most {MAX_METADATA_PAIRS} pairs, got {}.",
                metadata.len()
            ),
        ));
    }
    for (key, value) in &metadata {
        if key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(Error::invalid_value(
                &format!("metadata.{key}"),
                format!("Metadata keys are at most {MAX_METADATA_KEY_CHARS} characters."),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() <= MAX_METADATA_VALUE_CHARS => {}
            Value::String(_) => {
                return Err(Error::invalid_value(
                    &format!("metadata.{key}"),
                    format!("Metadata values are at most {MAX_METADATA_VALUE_CHARS} characters."),
                ));
            }
            _ => return Err(Error::invalid_type(&format!("metadata.{key}"), "a string")),
        }
    }
    Ok(metadata)
}

fn parse_text(body: &mut Map<String, Value>) -> Result<TextConfig, Error> {
    let Some(mut text) = field::<Map<String, Value>>(body, "text")? else {
        return Ok(TextConfig::default());
    };
    let verbosity = match text.remove("verbosity") {
        None | Some(Value::Null) => None,
        Some(v) => Some(typed("text.verbosity", v)?),
    };
    let format = match text.remove("format") {
        None | Some(Value::Null) => TextFormat::Text,
        Some(Value::Object(mut format)) => match format.get("type").and_then(Value::as_str) {
            Some("text") => TextFormat::Text,
            Some("json_object") => TextFormat::JsonObject,
            Some("json_schema") => {
                let name = match format.remove("name") {
                    Some(Value::String(name)) if valid_function_name(&name) => name,
                    Some(Value::String(_)) => {
                        return Err(Error::invalid_value(
                            "text.format.name",
                            "The schema name must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'.",
                        ));
                    }
                    _ => {
                        return Err(Error::invalid_request(
                            Some("text.format.name"),
                            "missing_required_parameter",
                            "Missing required parameter: 'text.format.name'.",
                        ));
                    }
                };
                let schema = match format.remove("schema") {
                    Some(Value::Object(schema)) => schema,
                    None | Some(Value::Null) => {
                        return Err(Error::invalid_request(
                            Some("text.format.schema"),
                            "missing_required_parameter",
                            "Missing required parameter: 'text.format.schema'.",
                        ));
                    }
                    Some(_) => return Err(Error::invalid_type("text.format.schema", "an object")),
                };
                let description = match format.remove("description") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(typed("text.format.description", v)?),
                };
                let strict = match format.remove("strict") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(typed("text.format.strict", v)?),
                };
                TextFormat::JsonSchema { name, description, schema, strict }
            }
            other => {
                return Err(Error::invalid_value(
                    "text.format.type",
                    format!(
                        "Unsupported text format type {}; expected 'text', 'json_object' or 'json_schema'.",
                        other.map_or("(missing)".to_string(), |t| format!("'{t}'"))
                    ),
                ));
            }
        },
        Some(_) => return Err(Error::invalid_type("text.format", "an object")),
    };
    Ok(TextConfig { format, verbosity })
}

/// Parses a stored item (the wire form of an input or output item) back into model input.
pub fn parse_stored_item(item: Value) -> Result<InputItem, Error> {
    parse_item("item", item)
}

fn parse_item(path: &str, item: Value) -> Result<InputItem, Error> {
    let Value::Object(mut item) = item else {
        return Err(Error::invalid_type(path, "an input item object"));
    };
    let kind = match item.remove("type") {
        None | Some(Value::Null) => "message".to_string(),
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(Error::invalid_type(&format!("{path}.type"), "a string")),
    };
    match kind.as_str() {
        "message" => parse_message(path, item),
        "function_call" => {
            let call_id = call_id(path, &mut item)?;
            let name: String = required(path, &mut item, "name")?;
            if !valid_function_name(&name) {
                return Err(Error::invalid_value(
                    &format!("{path}.name"),
                    format!("Invalid function name '{name}'."),
                ));
            }
            let arguments: String = required(path, &mut item, "arguments")?;
            check_status(path, &mut item)?;
            Ok(InputItem::FunctionCall { call_id, name, arguments })
        }
        "function_call_output" => {
            let call_id = call_id(path, &mut item)?;
            let output_path = format!("{path}.output");
            let output = match item.remove("output") {
                Some(Value::String(text)) => {
                    check_len(&output_path, &text, MAX_INPUT_CHARS)?;
                    vec![ContentPart::Text(text)]
                }
                Some(Value::Array(parts)) => parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, part)| {
                        parse_part(&format!("{output_path}[{i}]"), part, PartContext::ToolOutput)
                    })
                    .collect::<Result<_, _>>()?,
                None | Some(Value::Null) => {
                    return Err(Error::invalid_request(
                        Some(&output_path),
                        "missing_required_parameter",
                        format!("Missing required parameter: '{output_path}'."),
                    ));
                }
                Some(_) => return Err(Error::invalid_type(&output_path, "a string or an array")),
            };
            check_status(path, &mut item)?;
            Ok(InputItem::FunctionCallOutput { call_id, output })
        }
        "reasoning" => {
            #[derive(Deserialize)]
            struct Summary {
                #[serde(rename = "type")]
                _kind: SummaryTag,
                text: String,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "snake_case")]
            enum SummaryTag {
                SummaryText,
            }
            #[derive(Deserialize)]
            struct Text {
                text: String,
            }
            let summary: Vec<Summary> = required(path, &mut item, "summary")?;
            let content: Option<Vec<Text>> = match item.remove("content") {
                None | Some(Value::Null) => None,
                Some(v) => Some(typed(&format!("{path}.content"), v)?),
            };
            Ok(InputItem::Reasoning {
                summary: summary.into_iter().map(|s| s.text).collect(),
                content: content.unwrap_or_default().into_iter().map(|t| t.text).collect(),
            })
        }
        "item_reference" => Err(Error::invalid_request(
            Some(path),
            "item_reference_not_supported",
            "item_reference input items need stored items, which this gateway does not keep yet; send the item itself instead.",
        )),
        "compaction" => super::compaction::parse_item(path, item),
        kind if super::code_interpreter::Naming::is_item_type(kind) => {
            super::code_interpreter::parse_input_item(path, item)
        }
        other => Err(Error::invalid_value(
            &format!("{path}.type"),
            format!(
                "Unknown input item type '{other}'; expected one of 'message', 'function_call', 'function_call_output', 'reasoning', 'item_reference', 'compaction', 'code_interpreter_call'."
            ),
        )),
    }
}

fn required<T: DeserializeOwned>(
    path: &str,
    item: &mut Map<String, Value>,
    key: &str,
) -> Result<T, Error> {
    let full = format!("{path}.{key}");
    match item.remove(key) {
        None | Some(Value::Null) => Err(Error::invalid_request(
            Some(&full),
            "missing_required_parameter",
            format!("Missing required parameter: '{full}'."),
        )),
        Some(v) => typed(&full, v),
    }
}

fn call_id(path: &str, item: &mut Map<String, Value>) -> Result<String, Error> {
    let id: String = required(path, item, "call_id")?;
    if id.is_empty() || id.chars().count() > 64 {
        return Err(Error::invalid_value(
            &format!("{path}.call_id"),
            "'call_id' must be 1 to 64 characters.",
        ));
    }
    Ok(id)
}

fn check_status(path: &str, item: &mut Map<String, Value>) -> Result<(), Error> {
    match item.remove("status") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s))
            if matches!(s.as_str(), "in_progress" | "completed" | "incomplete") =>
        {
            Ok(())
        }
        Some(_) => Err(Error::invalid_value(
            &format!("{path}.status"),
            "'status' must be one of 'in_progress', 'completed', 'incomplete'.",
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PartContext {
    User,
    /// System and developer messages: text only.
    Instruction,
    Assistant,
    ToolOutput,
}

fn parse_message(path: &str, mut item: Map<String, Value>) -> Result<InputItem, Error> {
    let role: Role = required(path, &mut item, "role")?;
    let context = match role {
        Role::User => PartContext::User,
        Role::System | Role::Developer => PartContext::Instruction,
        Role::Assistant => PartContext::Assistant,
    };
    let content_path = format!("{path}.content");
    let content = match item.remove("content") {
        Some(Value::String(text)) => {
            check_len(&content_path, &text, MAX_INPUT_CHARS)?;
            vec![ContentPart::Text(text)]
        }
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| parse_part(&format!("{content_path}[{i}]"), part, context))
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => {
            return Err(Error::invalid_request(
                Some(&content_path),
                "missing_required_parameter",
                format!("Missing required parameter: '{content_path}'."),
            ));
        }
        Some(_) => {
            return Err(Error::invalid_type(
                &content_path,
                "a string or an array of content parts",
            ));
        }
    };
    check_status(path, &mut item)?;
    if let Some(phase) = item.remove("phase")
        && !matches!(phase.as_str(), Some("commentary" | "final_answer"))
        && !phase.is_null()
    {
        return Err(Error::invalid_value(
            &format!("{path}.phase"),
            "'phase' must be 'commentary' or 'final_answer'.",
        ));
    }
    Ok(InputItem::Message { role, content })
}

fn parse_part(path: &str, part: Value, context: PartContext) -> Result<ContentPart, Error> {
    let Value::Object(mut part) = part else {
        return Err(Error::invalid_type(path, "a content part object"));
    };
    let kind = match part.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => {
            return Err(Error::invalid_request(
                Some(&format!("{path}.type")),
                "missing_required_parameter",
                format!("Missing required parameter: '{path}.type'."),
            ));
        }
    };
    let allowed: &[&str] = match context {
        PartContext::User => &["input_text", "input_image", "input_file"],
        PartContext::Instruction => &["input_text"],
        // Clients replaying their own history sometimes send assistant text as input_text.
        PartContext::Assistant => &["output_text", "refusal", "input_text"],
        PartContext::ToolOutput => &["input_text", "input_image", "input_file", "input_video"],
    };
    if !allowed.contains(&kind.as_str()) {
        return Err(Error::invalid_value(
            &format!("{path}.type"),
            format!("Content part type '{kind}' is not allowed here; expected one of {allowed:?}."),
        ));
    }
    match kind.as_str() {
        "input_text" | "output_text" => {
            let text: String = required(path, &mut part, "text")?;
            check_len(&format!("{path}.text"), &text, MAX_INPUT_CHARS)?;
            Ok(ContentPart::Text(text))
        }
        "refusal" => Ok(ContentPart::Refusal(required(path, &mut part, "refusal")?)),
        "input_image" => {
            let detail: Option<ImageDetail> = match part.remove("detail") {
                None | Some(Value::Null) => None,
                Some(v) => Some(typed(&format!("{path}.detail"), v)?),
            };
            let url_path = format!("{path}.image_url");
            match part.remove("image_url") {
                Some(Value::String(url)) => {
                    check_len(&url_path, &url, MAX_IMAGE_URL_CHARS)?;
                    check_url(&url_path, &url, "image/")?;
                    Ok(ContentPart::Image { url, detail })
                }
                None | Some(Value::Null) => {
                    if part.get("file_id").is_some_and(|v| !v.is_null()) {
                        return Err(Error::invalid_request(
                            Some(&format!("{path}.file_id")),
                            "file_id_not_supported",
                            "Images by file_id are not supported yet; send image_url (a URL or a data URL).",
                        ));
                    }
                    Err(Error::invalid_request(
                        Some(&url_path),
                        "missing_required_parameter",
                        format!("Missing required parameter: '{url_path}'."),
                    ))
                }
                Some(_) => Err(Error::invalid_type(&url_path, "a string")),
            }
        }
        "input_file" => {
            let filename = optional_string(path, &mut part, "filename")?;
            let file_data = optional_string(path, &mut part, "file_data")?;
            let file_url = optional_string(path, &mut part, "file_url")?;
            if let Some(data) = &file_data {
                check_len(&format!("{path}.file_data"), data, MAX_FILE_DATA_CHARS)?;
            }
            if let Some(url) = &file_url {
                check_url(&format!("{path}.file_url"), url, "")?;
            }
            if file_data.is_none() && file_url.is_none() {
                let code = if part.get("file_id").is_some_and(|v| !v.is_null()) {
                    "file_id_not_supported"
                } else {
                    "missing_required_parameter"
                };
                return Err(Error::invalid_request(
                    Some(path),
                    code,
                    "An input_file needs 'file_data' or 'file_url' (file_id is not supported yet).",
                ));
            }
            Ok(ContentPart::File { filename, file_data, file_url })
        }
        "input_video" => {
            let url: String = required(path, &mut part, "video_url")?;
            Ok(ContentPart::Video { url })
        }
        _ => unreachable!("filtered by `allowed` above"),
    }
}

fn optional_string(
    path: &str,
    part: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, Error> {
    match part.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid_type(&format!("{path}.{key}"), "a string")),
    }
}

/// Accepts `http(s)://` URLs and, for the given media prefix, `data:` URLs with base64 content.
fn check_url(param: &str, url: &str, data_media_prefix: &str) -> Result<(), Error> {
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, _) = rest.split_once(',').unwrap_or((rest, ""));
        if meta.starts_with(data_media_prefix) && meta.ends_with(";base64") {
            return Ok(());
        }
        return Err(Error::invalid_value(
            param,
            format!(
                "Invalid data URL in '{param}': expected 'data:{data_media_prefix}<type>;base64,<data>'."
            ),
        ));
    }
    Err(Error::invalid_value(
        param,
        format!("Invalid URL in '{param}': expected an http(s) URL or a base64 data URL."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CreateResponse, Error> {
        CreateResponse::from_json(v.to_string().as_bytes())
    }

    fn param_of(v: Value) -> String {
        match parse(v) {
            Err(e) => e.param().unwrap_or("").to_string(),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn string_input_is_a_user_message() {
        let req = parse(json!({"model": "m", "input": "hi"})).expect("valid");
        assert_eq!(
            req.input,
            vec![InputItem::Message {
                role: Role::User,
                content: vec![ContentPart::Text("hi".into())]
            }]
        );
        assert!(req.store);
        assert!(!req.stream);
    }

    #[test]
    fn missing_type_means_message_and_unknown_fields_are_ignored() {
        let req = parse(json!({
            "model": "m", "future_field": {"x": 1},
            "input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "input_text", "text": "q"}]}]
        }))
        .expect("valid");
        assert_eq!(req.input.len(), 2);
        assert!(matches!(req.input[0], InputItem::Message { role: Role::Developer, .. }));
    }

    #[test]
    fn errors_name_the_parameter_path() {
        let cases = [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": 3}), "input"),
            (json!({"model": "m", "input": "x", "temperature": 3}), "temperature"),
            (json!({"model": "m", "input": "x", "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "input": "x", "top_p": 1.5}), "top_p"),
            (json!({"model": "m", "input": "x", "max_output_tokens": 15}), "max_output_tokens"),
            (json!({"model": "m", "input": "x", "max_tool_calls": 0}), "max_tool_calls"),
            (json!({"model": "m", "input": "x", "top_logprobs": 21}), "top_logprobs"),
            (json!({"model": "m", "input": "x", "truncation": "sometimes"}), "truncation"),
            (json!({"model": "m", "input": "x", "service_tier": "gold"}), "service_tier"),
            (json!({"model": "m", "input": "x", "include": ["a.b"]}), "include[0]"),
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "max"}}),
                "reasoning.effort",
            ),
            (json!({"model": "m", "input": "x", "text": {"verbosity": "loud"}}), "text.verbosity"),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}),
                "text.format.schema",
            ),
            (json!({"model": "m", "input": "x", "metadata": {"k": 1}}), "metadata.k"),
            (
                json!({"model": "m", "input": "x", "safety_identifier": "x".repeat(65)}),
                "safety_identifier",
            ),
            (json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}), "input[0].role"),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "m", "input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "bad name", "arguments": "{}"}]}),
                "input[0].name",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}),
                "input[0].output",
            ),
            (json!({"model": "m", "input": [{"type": "item_reference"}]}), "input[0].id"),
            (
                json!({"model": "m", "input": "x", "conversation": "c", "previous_response_id": "r"}),
                "conversation",
            ),
            (json!({"model": "m", "input": [{"type": "teleport"}]}), "input[0].type"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "a b"}]}),
                "tools[0].name",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
                "tool_choice.name",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "allowed_tools", "tools": [{"type": "function", "name": "g"}]}}),
                "tool_choice.tools[0].name",
            ),
            (json!({"model": "m", "input": "x", "tool_choice": "sometimes"}), "tool_choice"),
        ];
        for (body, expected) in cases {
            assert_eq!(param_of(body.clone()), expected, "body: {body}");
        }
    }

    #[test]
    fn metadata_limits() {
        let mut many = Map::new();
        for i in 0..17 {
            many.insert(format!("k{i}"), json!("v"));
        }
        assert_eq!(param_of(json!({"model": "m", "input": "x", "metadata": many})), "metadata");
        let long_key = "k".repeat(65);
        assert_eq!(
            param_of(json!({"model": "m", "input": "x", "metadata": {long_key.clone(): "v"}})),
            format!("metadata.{long_key}")
        );
        assert_eq!(
            param_of(json!({"model": "m", "input": "x", "metadata": {"k": "v".repeat(513)}})),
            "metadata.k"
        );
    }

    #[test]
    fn input_string_limit_is_ten_mebi_chars() {
        let ok = "a".repeat(MAX_INPUT_CHARS);
        assert!(parse(json!({"model": "m", "input": ok})).is_ok());
        let too_long = "a".repeat(MAX_INPUT_CHARS + 1);
        let err = parse(json!({"model": "m", "input": too_long})).expect_err("too long");
        assert_eq!(err.param(), Some("input"));
        assert_eq!(err.code(), "string_above_max_length");
    }

    #[test]
    fn allowed_tools_and_structured_output_parse() {
        let req = parse(json!({
            "model": "m", "input": "x",
            "tools": [{"type": "function", "name": "a", "parameters": {"type": "object"}}, {"type": "function", "name": "b", "description": null}],
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}}
        }))
        .expect("valid");
        assert_eq!(
            req.tool_choice,
            ToolChoice::AllowedTools { mode: ToolChoiceMode::Required, names: vec!["b".into()] }
        );
        assert!(
            matches!(req.text.format, TextFormat::JsonSchema { ref name, strict: Some(true), .. } if name == "answer")
        );
    }
}
