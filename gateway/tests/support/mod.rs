//! Test support: a gateway in-process on port 0 in front of the scripted backend, and the
//! OpenResponses conformance checks (JSON Schema from the spec, plus the streaming order rules).

#![allow(dead_code)]

pub mod agent;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use antwort_gateway::config::{RawBackend, RawConfig, RawModel, RawTimeouts};
use antwort_scripted_backend::ScriptedBackend;
use serde_json::{Value, json};

pub struct Gateway {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// A gateway whose default backend is `backend`, with short timeouts so failure tests are
    /// quick.
    pub async fn start(backend: &ScriptedBackend) -> Self {
        Self::start_with(quick_config(backend)).await
    }

    /// Starts a gateway from `raw`. A config without any authenticator runs in the explicit
    /// development mode (`auth.mode: none`), so tests that are not about users need no keys;
    /// tests that configure keys or issuers get them enforced.
    pub async fn start_with(mut raw: RawConfig) -> Self {
        if raw.auth.is_unconfigured() {
            raw.auth.mode = antwort_gateway::config::AuthMode::None;
        }
        let config = raw.validate().expect("test config is valid");
        let app = antwort_gateway::build(&config).expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            antwort_gateway::serve(
                listener,
                app,
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(5),
            )
            .await
            .expect("serve");
        });
        Self { url, shutdown: Some(tx), task: Some(task) }
    }

    pub fn responses_url(&self) -> String {
        format!("{}/v1/responses", self.url)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn quick_config(backend: &ScriptedBackend) -> RawConfig {
    RawConfig { backend_url: Some(backend.base_url()), ..RawConfig::default() }
}

/// A config with one named backend (short timeouts, `retries` retries) and an explicit model
/// list, so unknown models are 404.
pub fn routed_config(
    backend: &ScriptedBackend,
    models: &[(&str, &str)],
    retries: u32,
) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.backends.insert(
        "scripted".to_string(),
        RawBackend {
            url: backend.base_url(),
            kind: "vllm".into(),
            api_key: Some("backend-secret".into()),
            api_key_env: None,
            timeouts: RawTimeouts {
                connect_secs: 2.0,
                first_byte_secs: 1.0,
                request_secs: 1.0,
                idle_secs: 1.0,
                retry_backoff_secs: 0.01,
            },
            max_retries: retries,
        },
    );
    raw.models = models
        .iter()
        .map(|(name, upstream)| RawModel {
            name: name.to_string(),
            backend: "scripted".into(),
            upstream_model: Some(upstream.to_string()),
        })
        .collect();
    raw
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().tcp_nodelay(true).build().expect("client")
}

pub async fn post(gateway: &Gateway, body: Value) -> (u16, Value) {
    let response =
        client().post(gateway.responses_url()).json(&body).send().await.expect("request sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON body");
    (status, body)
}

// === conformance ===

fn spec_path() -> PathBuf {
    // The spec is vendored into the workspace (testdata/openresponses, see its SOURCE.md), so
    // tests run in any clone.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/openresponses/openapi.json")
}

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(spec_path()).expect("openapi.json is vendored");
        let mut spec: Value = serde_json::from_str(&text).expect("openapi.json parses");
        // Known defect of the published schema: `JsonSchemaResponseFormat.schema` is generated as
        // `anyOf: [null]` (the generator lost the object type), which would forbid echoing the
        // client's schema as OpenAI does. We echo it, and relax that one property here.
        spec["components"]["schemas"]["JsonSchemaResponseFormat"]["properties"]["schema"] =
            json!({"anyOf": [{"type": "object"}, {"type": "null"}]});
        spec
    })
}

fn validator(component: &str) -> &'static jsonschema::Validator {
    static VALIDATORS: OnceLock<std::sync::Mutex<HashMap<String, &'static jsonschema::Validator>>> =
        OnceLock::new();
    let map = VALIDATORS.get_or_init(Default::default);
    let mut map = map.lock().expect("validator cache");
    if let Some(v) = map.get(component) {
        return v;
    }
    let mut root = spec().clone();
    root["$ref"] = json!(format!("#/components/schemas/{component}"));
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("schema for {component} compiles: {e}"));
    let leaked: &'static jsonschema::Validator = Box::leak(Box::new(validator));
    map.insert(component.to_string(), leaked);
    leaked
}

/// Asserts `value` is a valid instance of the spec's component schema `component`.
pub fn assert_valid(component: &str, value: &Value) {
    let validator = validator(component);
    let errors: Vec<String> =
        validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(
        errors.is_empty(),
        "{component} schema violations:\n{}\nin: {value:#}",
        errors.join("\n")
    );
}

/// The 31 keys the spec requires on every Response object.
pub const RESPONSE_KEYS: [&str; 31] = [
    "id",
    "object",
    "created_at",
    "completed_at",
    "status",
    "incomplete_details",
    "model",
    "previous_response_id",
    "instructions",
    "output",
    "error",
    "tools",
    "tool_choice",
    "truncation",
    "parallel_tool_calls",
    "text",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "temperature",
    "reasoning",
    "usage",
    "max_output_tokens",
    "max_tool_calls",
    "store",
    "background",
    "service_tier",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
];

pub fn assert_response(value: &Value) {
    for key in RESPONSE_KEYS {
        assert!(value.get(key).is_some(), "Response lacks required key `{key}`: {value:#}");
    }
    assert_valid("ResponseResource", value);
}

pub fn assert_error_envelope(value: &Value, status: u16, code: &str) {
    let error = &value["error"];
    for key in ["type", "code", "message", "param"] {
        assert!(error.get(key).is_some(), "error envelope lacks `{key}`: {value}");
    }
    assert_eq!(error["code"], code, "status {status}: {value}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    assert_valid("Error", error);
}

pub fn event_component(kind: &str) -> &'static str {
    match kind {
        "response.created" => "ResponseCreatedStreamingEvent",
        "response.queued" => "ResponseQueuedStreamingEvent",
        "response.in_progress" => "ResponseInProgressStreamingEvent",
        "response.completed" => "ResponseCompletedStreamingEvent",
        "response.failed" => "ResponseFailedStreamingEvent",
        "response.incomplete" => "ResponseIncompleteStreamingEvent",
        "response.output_item.added" => "ResponseOutputItemAddedStreamingEvent",
        "response.output_item.done" => "ResponseOutputItemDoneStreamingEvent",
        "response.content_part.added" => "ResponseContentPartAddedStreamingEvent",
        "response.content_part.done" => "ResponseContentPartDoneStreamingEvent",
        "response.output_text.delta" => "ResponseOutputTextDeltaStreamingEvent",
        "response.output_text.done" => "ResponseOutputTextDoneStreamingEvent",
        "response.refusal.delta" => "ResponseRefusalDeltaStreamingEvent",
        "response.refusal.done" => "ResponseRefusalDoneStreamingEvent",
        "response.reasoning.delta" => "ResponseReasoningDeltaStreamingEvent",
        "response.reasoning.done" => "ResponseReasoningDoneStreamingEvent",
        "response.function_call_arguments.delta" => {
            "ResponseFunctionCallArgumentsDeltaStreamingEvent"
        }
        "response.function_call_arguments.done" => {
            "ResponseFunctionCallArgumentsDoneStreamingEvent"
        }
        "error" => "ErrorStreamingEvent",
        other => panic!("event type `{other}` is not defined by the spec"),
    }
}

/// A streamed reply, read whole.
pub struct Stream {
    pub status: u16,
    pub content_type: String,
    /// The bytes of each chunk as it arrived from the socket.
    pub chunks: Vec<Vec<u8>>,
    pub events: Vec<Value>,
}

impl Stream {
    pub fn types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e["type"].as_str().expect("type")).collect()
    }

    pub fn last(&self) -> &Value {
        self.events.last().expect("at least one event")
    }

    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }
}

pub async fn post_stream(gateway: &Gateway, mut body: Value) -> Stream {
    body["stream"] = json!(true);
    let response = client().post(gateway.responses_url()).json(&body).send().await.expect("sent");
    read_stream(response, Duration::from_secs(20)).await
}

/// Reads an answer to the end (each chunk within `progress`), parsing SSE when it is an event
/// stream.
pub async fn read_stream(mut response: reqwest::Response, progress: Duration) -> Stream {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut chunks = Vec::new();
    while let Some(chunk) = tokio::time::timeout(progress, response.chunk())
        .await
        .expect("stream makes progress")
        .expect("stream reads")
    {
        chunks.push(chunk.to_vec());
    }
    let events =
        if content_type.starts_with("text/event-stream") { parse_sse(&chunks) } else { Vec::new() };
    Stream { status, content_type, chunks, events }
}

/// Parses and checks the SSE framing: LF only, `event:` equal to `type`, `data: [DONE]` last.
/// Returns the JSON events.
pub fn parse_sse(chunks: &[Vec<u8>]) -> Vec<Value> {
    let all: Vec<u8> = chunks.concat();
    let text = String::from_utf8(all).expect("UTF-8 stream");
    assert!(!text.contains('\r'), "SSE must use LF line endings only");
    let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.last().copied(), Some("data: [DONE]"), "stream must end with data: [DONE]");
    let mut events = Vec::new();
    for frame in &frames[..frames.len() - 1] {
        if frame.lines().all(|line| line.starts_with(':')) {
            continue; // a keep-alive comment
        }
        let mut name = None;
        let mut data = None;
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v);
            } else if let Some(v) = line.strip_prefix("data: ") {
                assert!(data.is_none(), "one data line per event: {frame}");
                data = Some(v);
            } else if !line.starts_with(':') {
                panic!("unexpected SSE line: {line:?}");
            }
        }
        let data = data.expect("every event has data");
        let event: Value = serde_json::from_str(data).expect("event data is JSON");
        assert_eq!(Some(event["type"].as_str().expect("type")), name, "event: must equal type");
        events.push(event);
    }
    events
}

/// Checks every event against its schema and the lifecycle rules; returns the final Response
/// (from the terminal event), if the stream had one.
pub fn assert_stream_conformant(stream: &Stream) -> Option<Value> {
    assert_eq!(stream.status, 200);
    assert!(stream.content_type.starts_with("text/event-stream"), "{}", stream.content_type);
    let events = &stream.events;
    assert!(!events.is_empty(), "no events");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event["sequence_number"],
            json!(i),
            "sequence_number must count from 0: {event}"
        );
        assert_valid(event_component(event["type"].as_str().expect("type")), event);
    }
    if events[0]["type"] == "error" {
        assert_eq!(events.len(), 1, "an error event ends the stream");
        return None;
    }
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[1]["type"], "response.in_progress");
    let terminal = ["response.completed", "response.incomplete", "response.failed"];
    let last = events.last().expect("events");
    assert!(terminal.contains(&last["type"].as_str().expect("type")), "last event {last}");
    for e in &events[..events.len() - 1] {
        assert!(
            !terminal.contains(&e["type"].as_str().expect("type")),
            "terminal event before the end"
        );
    }
    let id = &events[0]["response"]["id"];
    for e in events.iter().filter(|e| e.get("response").is_some()) {
        assert_eq!(&e["response"]["id"], id, "one response id across the stream");
        assert_response(&e["response"]);
    }
    let failed = last["type"] == "response.failed";

    // Per item: added before its deltas, deltas before done; accumulated text equals done text.
    let mut added: HashMap<u64, Value> = HashMap::new();
    let mut done: HashMap<u64, Value> = HashMap::new();
    let mut text: HashMap<(u64, u64), String> = HashMap::new();
    let mut parts_open: HashMap<(u64, u64), bool> = HashMap::new();
    let mut args: HashMap<u64, String> = HashMap::new();
    for e in events {
        let kind = e["type"].as_str().expect("type");
        let index = e["output_index"].as_u64();
        match kind {
            "response.output_item.added" => {
                let i = index.expect("output_index");
                assert!(!added.contains_key(&i), "item {i} added twice");
                assert_eq!(i as usize, added.len(), "output_index counts up");
                added.insert(i, e["item"].clone());
            }
            "response.output_item.done" => {
                let i = index.expect("output_index");
                assert!(added.contains_key(&i), "item {i} done before added");
                assert!(done.insert(i, e["item"].clone()).is_none(), "item {i} done twice");
            }
            "response.content_part.added" => {
                let i = index.expect("output_index");
                assert!(added.contains_key(&i) && !done.contains_key(&i), "part outside its item");
                assert_eq!(e["item_id"], added[&i]["id"]);
                parts_open.insert((i, e["content_index"].as_u64().expect("ci")), true);
            }
            "response.content_part.done" => {
                let key = (index.expect("oi"), e["content_index"].as_u64().expect("ci"));
                assert_eq!(parts_open.insert(key, false), Some(true), "part done without added");
                let part_text =
                    e["part"]["text"].as_str().or(e["part"]["refusal"].as_str()).unwrap_or("");
                assert_eq!(
                    text.get(&key).map(String::as_str).unwrap_or(""),
                    part_text,
                    "deltas add up to the part"
                );
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning.delta" => {
                let key = (index.expect("oi"), e["content_index"].as_u64().expect("ci"));
                assert_eq!(parts_open.get(&key), Some(&true), "delta outside an open part: {e}");
                assert_eq!(e["item_id"], added[&key.0]["id"]);
                text.entry(key).or_default().push_str(e["delta"].as_str().expect("delta"));
            }
            "response.output_text.done" | "response.reasoning.done" => {
                let key = (index.expect("oi"), e["content_index"].as_u64().expect("ci"));
                assert_eq!(
                    text.get(&key).map(String::as_str).unwrap_or(""),
                    e["text"].as_str().expect("text")
                );
            }
            "response.refusal.done" => {
                let key = (index.expect("oi"), e["content_index"].as_u64().expect("ci"));
                assert_eq!(
                    text.get(&key).map(String::as_str).unwrap_or(""),
                    e["refusal"].as_str().expect("refusal")
                );
            }
            "response.function_call_arguments.delta" => {
                let i = index.expect("oi");
                assert!(
                    added.contains_key(&i) && !done.contains_key(&i),
                    "arguments outside their item"
                );
                args.entry(i).or_default().push_str(e["delta"].as_str().expect("delta"));
            }
            "response.function_call_arguments.done" => {
                let i = index.expect("oi");
                assert_eq!(
                    args.get(&i).map(String::as_str).unwrap_or(""),
                    e["arguments"].as_str().expect("arguments")
                );
            }
            _ => {}
        }
    }
    let response = last["response"].clone();
    if !failed {
        assert_eq!(added.len(), done.len(), "every added item is done");
        let output = response["output"].as_array().expect("output");
        assert_eq!(output.len(), done.len(), "final output has every item");
        for (i, item) in output.iter().enumerate() {
            assert_eq!(item, &done[&(i as u64)], "final output item {i} equals its done event");
        }
    }
    Some(response)
}

/// The concatenated `output_text` of a Response.
pub fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().expect("content").iter())
        .filter(|part| part["type"] == "output_text")
        .map(|part| part["text"].as_str().expect("text"))
        .collect()
}
