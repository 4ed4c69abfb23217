//! OpenResponses request -> Chat Completions request.
//!
//! Items become messages in order: `instructions` first as a system message; consecutive
//! `function_call` items fold into one assistant message with `tool_calls`; each
//! `function_call_output` becomes a `tool` message. Reasoning items are dropped: Chat Completions
//! backends do not take reasoning back as input.

use serde_json::{Value, json};

use super::chat_wire::{
    ChatContent, ChatFunction, ChatFunctionCall, ChatMessage, ChatPart, ChatRequest, ChatTool,
    ChatToolCall, FilePart, ImageUrl, StreamOptions, VideoUrl,
};
use crate::openresponses::code_interpreter::{PYTHON_TOOL_NAME, python_tool};
use crate::openresponses::request::{
    ContentPart, CreateResponse, InputItem, Role, TextFormat, ToolChoice, ToolChoiceMode,
};

pub fn chat_request(request: &CreateResponse, upstream_model: &str, stream: bool) -> ChatRequest {
    let mut messages = Vec::with_capacity(request.input.len() + 1);
    if let Some(instructions) = &request.instructions {
        messages.push(ChatMessage::text("system", instructions.clone()));
    }
    for item in &request.input {
        match item {
            InputItem::Message { role, content } => messages.push(message(*role, content)),
            InputItem::FunctionCall { call_id, name, arguments } => {
                push_tool_call(&mut messages, call_id, name, arguments.clone())
            }
            InputItem::CodeInterpreterCall { id, code, output, .. } => {
                // The model wrote this call as the function `python`; it reads it back so.
                let arguments = json!({ "code": code }).to_string();
                push_tool_call(&mut messages, id, PYTHON_TOOL_NAME, arguments);
                messages.push(ChatMessage {
                    role: "tool",
                    content: Some(ChatContent::Text(output.clone())),
                    refusal: None,
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id.clone()),
                });
            }
            InputItem::FunctionCallOutput { call_id, output } => messages.push(ChatMessage {
                role: "tool",
                content: Some(tool_output(output)),
                refusal: None,
                tool_calls: Vec::new(),
                tool_call_id: Some(call_id.clone()),
            }),
            InputItem::Reasoning { .. } => {}
        }
    }

    let (tools, tool_choice) = tools_and_choice(request);
    ChatRequest {
        model: upstream_model.to_string(),
        messages,
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        temperature: request.temperature,
        top_p: request.top_p,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        max_tokens: request.max_output_tokens,
        parallel_tool_calls: if tools.is_empty() { None } else { request.parallel_tool_calls },
        tools,
        tool_choice,
        response_format: match &request.text.format {
            TextFormat::Text => None,
            TextFormat::JsonObject => Some(json!({"type": "json_object"})),
            TextFormat::JsonSchema { name, description, schema, strict } => {
                let mut spec = json!({"name": name, "schema": schema});
                if let Some(d) = description {
                    spec["description"] = json!(d);
                }
                if let Some(s) = strict {
                    spec["strict"] = json!(s);
                }
                Some(json!({"type": "json_schema", "json_schema": spec}))
            }
        },
        reasoning_effort: request.reasoning.as_ref().and_then(|r| r.effort).map(|e| e.as_str()),
        logprobs: request.wants_logprobs().then_some(true),
        top_logprobs: if request.wants_logprobs() { request.top_logprobs } else { None },
    }
}

/// Consecutive calls fold into one assistant message with `tool_calls`.
fn push_tool_call(messages: &mut Vec<ChatMessage>, call_id: &str, name: &str, arguments: String) {
    let call = ChatToolCall {
        id: call_id.to_string(),
        kind: "function",
        function: ChatFunctionCall { name: name.to_string(), arguments },
    };
    match messages.last_mut() {
        Some(last)
            if last.role == "assistant"
                && last.tool_call_id.is_none()
                && !last.tool_calls.is_empty() =>
        {
            last.tool_calls.push(call)
        }
        _ => messages.push(ChatMessage {
            role: "assistant",
            content: None,
            refusal: None,
            tool_calls: vec![call],
            tool_call_id: None,
        }),
    }
}

/// The tools the backend sees and how it must choose. `allowed_tools` narrows the list itself:
/// Chat Completions has no such constraint, and a tool the model cannot see is one it cannot call.
fn tools_and_choice(request: &CreateResponse) -> (Vec<ChatTool>, Option<Value>) {
    let visible = |name: &str| match &request.tool_choice {
        ToolChoice::AllowedTools { names, .. } => names.iter().any(|n| n == name),
        _ => true,
    };
    let tools: Vec<ChatTool> = request
        .tools
        .iter()
        .filter(|t| visible(&t.name))
        .map(|t| ChatTool {
            kind: "function",
            function: ChatFunction {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
                strict: t.strict,
            },
        })
        .chain(
            request
                .code_interpreter
                .as_ref()
                .filter(|_| !matches!(request.tool_choice, ToolChoice::AllowedTools { .. }))
                .map(|_| {
                    let (name, description, parameters) = python_tool();
                    ChatTool {
                        kind: "function",
                        function: ChatFunction {
                            name: name.to_string(),
                            description: Some(description.to_string()),
                            parameters: match parameters {
                                serde_json::Value::Object(map) => Some(map),
                                _ => None,
                            },
                            strict: None,
                        },
                    }
                }),
        )
        .collect();
    if tools.is_empty() {
        return (tools, None);
    }
    let choice = match &request.tool_choice {
        ToolChoice::Mode(mode) | ToolChoice::AllowedTools { mode, .. } => json!(mode.as_str()),
        ToolChoice::Function { name } => json!({"type": "function", "function": {"name": name}}),
    };
    // `auto` is every backend's default; leaving it out keeps requests to backends that reject
    // `tool_choice` (older Ollama) working.
    let choice = if matches!(request.tool_choice, ToolChoice::Mode(ToolChoiceMode::Auto)) {
        None
    } else {
        Some(choice)
    };
    (tools, choice)
}

fn message(role: Role, content: &[ContentPart]) -> ChatMessage {
    let role = match role {
        Role::User => "user",
        // Most open-model chat templates know only `system`.
        Role::System | Role::Developer => "system",
        Role::Assistant => "assistant",
    };
    if role == "assistant" {
        let mut text = String::new();
        let mut refusal = None;
        for part in content {
            match part {
                ContentPart::Text(t) => text.push_str(t),
                ContentPart::Refusal(r) => refusal = Some(r.clone()),
                _ => {}
            }
        }
        return ChatMessage {
            role,
            content: (!text.is_empty() || refusal.is_none()).then_some(ChatContent::Text(text)),
            refusal,
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
    }
    ChatMessage {
        role,
        content: Some(parts(content)),
        refusal: None,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

/// A single text part goes as a plain string, which every backend accepts; anything richer goes
/// as typed parts.
fn parts(content: &[ContentPart]) -> ChatContent {
    if let [ContentPart::Text(text)] = content {
        return ChatContent::Text(text.clone());
    }
    ChatContent::Parts(
        content
            .iter()
            .map(|part| match part {
                ContentPart::Text(text) | ContentPart::Refusal(text) => {
                    ChatPart::Text { text: text.clone() }
                }
                ContentPart::Image { url, detail } => {
                    ChatPart::ImageUrl { image_url: ImageUrl { url: url.clone(), detail: *detail } }
                }
                ContentPart::File { filename, file_data: Some(data), .. } => ChatPart::File {
                    file: FilePart { filename: filename.clone(), file_data: Some(data.clone()) },
                },
                ContentPart::File { filename, file_url, .. } => ChatPart::Text {
                    text: format!(
                        "[file {}: {}]",
                        filename.as_deref().unwrap_or("attachment"),
                        file_url.as_deref().unwrap_or("")
                    ),
                },
                ContentPart::Video { url } => {
                    ChatPart::VideoUrl { video_url: VideoUrl { url: url.clone() } }
                }
            })
            .collect(),
    )
}

fn tool_output(output: &[ContentPart]) -> ChatContent {
    // Tool messages take text; many backends reject typed parts there, so text parts are joined.
    if output.iter().all(|p| matches!(p, ContentPart::Text(_))) {
        let text: String = output
            .iter()
            .map(|p| match p {
                ContentPart::Text(t) => t.as_str(),
                _ => "",
            })
            .collect();
        return ChatContent::Text(text);
    }
    parts(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> CreateResponse {
        CreateResponse::from_json(body.to_string().as_bytes()).expect("valid request")
    }

    #[test]
    fn items_become_messages_in_order() {
        let req = request(json!({
            "model": "m",
            "instructions": "be terse",
            "input": [
                {"role": "developer", "content": "dev"},
                {"role": "user", "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
                {"type": "reasoning", "summary": []},
                {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]}
            ]
        }));
        let chat = serde_json::to_value(chat_request(&req, "up", true)).expect("serializes");
        let roles: Vec<&str> = chat["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["role"].as_str().expect("role"))
            .collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "tool", "tool", "assistant"]);
        assert_eq!(chat["model"], "up");
        assert_eq!(chat["messages"][0]["content"], "be terse");
        assert_eq!(
            chat["messages"][2]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(chat["messages"][3]["tool_calls"].as_array().expect("calls").len(), 2);
        assert_eq!(chat["messages"][5]["content"], "two");
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn allowed_tools_narrow_the_tool_list() {
        let req = request(json!({
            "model": "m", "input": "x",
            "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}},
            "max_output_tokens": 64, "reasoning": {"effort": "low"}, "top_logprobs": 2
        }));
        let chat = serde_json::to_value(chat_request(&req, "m", false)).expect("serializes");
        assert_eq!(chat["tools"].as_array().expect("tools").len(), 1);
        assert_eq!(chat["tools"][0]["function"]["name"], "b");
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["response_format"]["json_schema"]["name"], "s");
        assert_eq!(chat["max_tokens"], 64);
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["logprobs"], true);
        assert_eq!(chat["top_logprobs"], 2);
        assert!(chat.get("stream_options").is_none());
    }
}
