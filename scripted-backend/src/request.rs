//! A read-only view of a Chat Completions request body: the fields the reply depends on.

use serde_json::Value;

use crate::error::{Error, Result};

/// Messages starting with this (system, developer or user) carry a JSON [`crate::Script`].
pub const DIRECTIVE_PREFIX: &str = "SCRIPT:";

pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    pub stream: bool,
    /// `stream_options.include_usage`: add a final `choices: []` chunk with usage.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    pub logprobs: bool,
    pub top_logprobs: usize,
    pub messages: &'a [Value],
    /// `tools`, as sent (empty when absent).
    pub tools: &'a [Value],
    pub tool_choice: Option<&'a Value>,
}

impl<'a> ChatRequest<'a> {
    pub fn parse(body: &'a Value) -> Result<Self> {
        let object =
            body.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
        let model = match object.get("model") {
            Some(Value::String(model)) => model.as_str(),
            Some(_) => return Err(bad("`model` must be a string")),
            None => return Err(bad("`model` is required")),
        };
        let messages = match object.get("messages") {
            Some(Value::Array(messages)) => messages.as_slice(),
            Some(_) => return Err(bad("`messages` must be an array")),
            None => return Err(bad("`messages` is required")),
        };
        let flag = |name: &str| -> Result<bool> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(flag)) => Ok(*flag),
                Some(_) => Err(bad(&format!("`{name}` must be a boolean"))),
            }
        };
        let count = |name: &str| -> Result<Option<u64>> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(&format!("`{name}` must be a non-negative integer"))),
            }
        };
        let include_usage = match object.get("stream_options") {
            Some(Value::Object(options)) => {
                matches!(options.get("include_usage"), Some(Value::Bool(true)))
            }
            _ => false,
        };
        let max_tokens = count("max_completion_tokens")?.or(count("max_tokens")?);
        let top_logprobs = count("top_logprobs")?.unwrap_or(0);
        if top_logprobs > 20 {
            return Err(bad("`top_logprobs` must be at most 20"));
        }
        let tools = match object.get("tools") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(tools)) => tools.as_slice(),
            Some(_) => return Err(bad("`tools` must be an array")),
        };
        Ok(Self {
            tools,
            tool_choice: object.get("tool_choice").filter(|v| !v.is_null()),
            model,
            stream: flag("stream")?,
            include_usage,
            max_tokens,
            logprobs: flag("logprobs")?,
            top_logprobs: usize::try_from(top_logprobs).expect("at most 20"),
            messages,
        })
    }

    /// The text of the last user message (text parts joined by newlines).
    pub fn last_user_text(&self) -> String {
        let Some(message) = self.messages.iter().rev().find(|m| role(m) == Some("user")) else {
            return String::new();
        };
        let mut text = String::new();
        for_each_text(message, |part| {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(part);
        });
        text
    }

    /// Whitespace-separated words in the text of all messages: the deterministic prompt size.
    pub fn prompt_words(&self) -> u64 {
        let mut words = 0;
        for message in self.messages {
            for_each_text(message, |part| words += count_words(part));
        }
        words
    }

    /// The JSON after [`DIRECTIVE_PREFIX`] in the last system, developer or user message that
    /// starts with it.
    pub fn directive(&self) -> Option<&'a str> {
        self.messages.iter().rev().find_map(|message| {
            if !matches!(role(message), Some("system" | "developer" | "user")) {
                return None;
            }
            let text = match message.get("content")? {
                Value::String(text) => text.as_str(),
                Value::Array(parts) => parts.first()?.get("text")?.as_str()?,
                _ => return None,
            };
            text.trim_start().strip_prefix(DIRECTIVE_PREFIX)
        })
    }

    /// The unscripted model's tool call: offered tools (and not `tool_choice: none`) with a user
    /// message last, it calls the named tool or else the first one, with arguments made from the
    /// tool's JSON schema (required strings get the user's text). After a tool result it answers
    /// in text, so an agent loop driving it ends.
    pub fn default_tool_call(&self) -> Option<(String, String)> {
        if self.tools.is_empty() || self.messages.last().and_then(role) != Some("user") {
            return None;
        }
        let named = match self.tool_choice {
            Some(Value::String(mode)) if mode == "none" => return None,
            Some(Value::Object(choice)) => {
                choice.get("function").and_then(|f| f.get("name")).and_then(Value::as_str)
            }
            _ => None,
        };
        let function = |tool: &'a Value| tool.get("function");
        let tool = match named {
            Some(name) => self
                .tools
                .iter()
                .filter_map(function)
                .find(|f| f.get("name").and_then(Value::as_str) == Some(name))?,
            None => self.tools.iter().find_map(function)?,
        };
        let name = tool.get("name")?.as_str()?.to_owned();
        let parameters = tool.get("parameters");
        let properties = parameters.and_then(|p| p.get("properties")).and_then(Value::as_object);
        let required: Vec<&str> = parameters
            .and_then(|p| p.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut arguments = serde_json::Map::new();
        for field in required {
            let kind = properties
                .and_then(|p| p.get(field))
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str);
            let value = match kind {
                Some("integer" | "number") => Value::from(1),
                Some("boolean") => Value::Bool(true),
                Some("array") => Value::Array(Vec::new()),
                Some("object") => Value::Object(serde_json::Map::new()),
                _ => Value::String(self.last_user_text()),
            };
            arguments.insert(field.to_owned(), value);
        }
        Some((name, Value::Object(arguments).to_string()))
    }

    /// How many assistant messages the conversation already has: picks the turn of a
    /// directive script, so a multi-turn directive needs no state in the backend.
    pub fn assistant_turns(&self) -> usize {
        self.messages.iter().filter(|m| role(m) == Some("assistant")).count()
    }
}

fn role(message: &Value) -> Option<&str> {
    message.get("role")?.as_str()
}

fn for_each_text(message: &Value, mut f: impl FnMut(&str)) {
    match message.get("content") {
        Some(Value::String(text)) => f(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    f(text);
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn bad(message: &str) -> Error {
    Error::BadRequest(message.to_owned())
}
