//! Helpers: post a chat request, read an SSE stream back, reassemble deltas.

use std::time::Duration;

use antwort_scripted_backend::ScriptedBackend;
use futures::StreamExt;
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    // Only http is used, but reqwest builds its TLS config up front; ring is the project's provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("building the reqwest client")
}

pub async fn post(backend: &ScriptedBackend, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .json(body)
        .send()
        .await
        .expect("sending the request")
}

pub fn chat(model: &str, user: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": user}]})
}

pub fn streaming(model: &str, user: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": user}]})
}

/// The `data:` payloads of a finished SSE body, in order (including `[DONE]`).
pub async fn events(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = response.text().await.expect("reading the SSE body");
    parse_events(&text)
}

pub fn parse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("every event is a data line").to_owned())
        .collect()
}

/// Reads the stream until `timeout` passes or it ends; returns what arrived and whether it ended.
pub async fn read_for(
    response: reqwest::Response,
    timeout: Duration,
) -> (String, Result<(), String>) {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return (text, Err("timed out".to_owned())),
            Ok(None) => return (text, Ok(())),
            Ok(Some(Ok(bytes))) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Ok(Some(Err(error))) => return (text, Err(format!("body error: {error}"))),
        }
    }
}

/// What a client reassembles from the chunk stream.
#[derive(Debug, Default)]
pub struct Assembled {
    pub role: Option<String>,
    pub content: String,
    pub reasoning_content: String,
    pub reasoning: String,
    /// (id, name, arguments) per tool-call index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
    pub content_deltas: usize,
    pub logprob_tokens: Vec<Value>,
    pub done: bool,
}

pub fn assemble(events: &[String]) -> Assembled {
    let mut out = Assembled::default();
    for event in events {
        assert!(!out.done, "nothing may follow [DONE]");
        if event == "[DONE]" {
            out.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(event).expect("each event is JSON");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(usage) = chunk.get("usage") {
            assert_eq!(chunk["choices"], json!([]), "the usage chunk has no choices");
            out.usage = Some(usage.clone());
            continue;
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(role) = delta["role"].as_str() {
            out.role = Some(role.to_owned());
        }
        if let Some(text) = delta["content"].as_str() {
            if !text.is_empty() {
                out.content_deltas += 1;
            }
            out.content.push_str(text);
        }
        if let Some(text) = delta["reasoning_content"].as_str() {
            out.reasoning_content.push_str(text);
        }
        if let Some(text) = delta["reasoning"].as_str() {
            out.reasoning.push_str(text);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for call in calls {
                let index = call["index"].as_u64().expect("tool call delta has an index") as usize;
                if let Some(id) = call["id"].as_str() {
                    assert_eq!(index, out.tool_calls.len(), "a new call takes the next index");
                    assert_eq!(call["type"], "function");
                    let name = call["function"]["name"].as_str().expect("first delta has name");
                    out.tool_calls.push((id.to_owned(), name.to_owned(), String::new()));
                }
                let arguments = call["function"]["arguments"].as_str().unwrap_or("");
                out.tool_calls[index].2.push_str(arguments);
            }
        }
        if let Some(logprobs) = choice["logprobs"]["content"].as_array() {
            out.logprob_tokens.extend(logprobs.iter().cloned());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_owned());
        }
    }
    out
}
