//! Tool calls (parallel, both stream layouts), multi-turn scripts and `SCRIPT:` directives.

use antwort_scripted_backend::{Script, ScriptedBackend, ToolCallLayout};
use serde_json::{Value, json};

use crate::support::{assemble, chat, events, post, streaming};

const ARGS_A: &str = r#"{"code": "print(1 + 1)"}"#;
const ARGS_B: &str = r#"{"city": "Zürich", "unit": "celsius"}"#;

fn parallel_calls() -> Script {
    Script::tool_call("python", ARGS_A).and_tool_call_with_id("call_weather", "weather", ARGS_B)
}

#[tokio::test]
async fn parallel_tool_calls_without_streaming() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", parallel_calls());
    let body: Value = post(&backend, &chat("m", "x")).await.json().await.expect("JSON");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["id"].as_str().expect("id").starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"], json!({"name": "python", "arguments": ARGS_A}));
    assert_eq!(calls[1]["id"], "call_weather");
    assert_eq!(calls[1]["function"]["arguments"], ARGS_B);
}

#[tokio::test]
async fn tool_call_deltas_reassemble_in_both_layouts() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("seq", parallel_calls().chunk_chars(5));
    backend.on_model(
        "inter",
        parallel_calls().chunk_chars(5).tool_call_layout(ToolCallLayout::Interleaved),
    );
    for model in ["seq", "inter"] {
        let events = events(post(&backend, &streaming(model, "x")).await).await;
        let assembled = assemble(&events);
        assert_eq!(assembled.tool_calls.len(), 2, "{model}");
        assert_eq!(assembled.tool_calls[0].1, "python");
        assert_eq!(assembled.tool_calls[0].2, ARGS_A, "{model}");
        assert_eq!(
            assembled.tool_calls[1],
            ("call_weather".into(), "weather".into(), ARGS_B.into())
        );
        assert_eq!(assembled.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(assembled.content, "");

        // Which call each tool-call delta belongs to, in stream order.
        let order: Vec<u64> = events
            .iter()
            .filter_map(|event| serde_json::from_str::<Value>(event).ok())
            .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
            .collect();
        let switches = order.windows(2).filter(|pair| pair[0] != pair[1]).count();
        if model == "seq" {
            assert_eq!(switches, 1, "sequential: all of call 0, then call 1: {order:?}");
        } else {
            assert!(switches > 2, "interleaved: calls alternate: {order:?}");
        }
    }
}

#[tokio::test]
async fn a_first_call_delta_has_empty_arguments_and_later_ones_only_fragments() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::tool_call("f", "{}").chunk_chars(1));
    let events = events(post(&backend, &streaming("m", "x")).await).await;
    let deltas: Vec<Value> = events
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(event).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"index": 0, "id": deltas[0]["id"], "type": "function", "function": {"name": "f", "arguments": ""}}),
            json!({"index": 0, "function": {"arguments": "{"}}),
            json!({"index": 0, "function": {"arguments": "}"}}),
        ]
    );
}

#[tokio::test]
async fn turns_script_a_conversation() {
    let backend = ScriptedBackend::start().await;
    backend.on_model(
        "agent",
        Script::turns([Script::tool_call("python", ARGS_A), Script::text("The answer is 2.")]),
    );
    let first = assemble(&events(post(&backend, &streaming("agent", "1+1?")).await).await);
    assert_eq!(first.tool_calls[0].1, "python");
    let second: Value =
        post(&backend, &chat("agent", "tool said 2")).await.json().await.expect("JSON");
    assert_eq!(second["choices"][0]["message"]["content"], "The answer is 2.");
    // The last turn repeats for a per-model script.
    let third: Value = post(&backend, &chat("agent", "again")).await.json().await.expect("JSON");
    assert_eq!(third["choices"][0]["message"]["content"], "The answer is 2.");
}

#[tokio::test]
async fn the_queue_goes_first_in_order_then_falls_back() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::text("model script"));
    backend.enqueue(Script::turns([Script::text("q1"), Script::text("q2")]));
    backend.enqueue(Script::text("q3"));
    let mut replies = Vec::new();
    for _ in 0..5 {
        let body: Value = post(&backend, &chat("m", "x")).await.json().await.expect("JSON");
        replies.push(body["choices"][0]["message"]["content"].as_str().expect("text").to_owned());
    }
    assert_eq!(replies, ["q1", "q2", "q3", "model script", "model script"]);
}

#[tokio::test]
async fn script_directives_pick_the_turn_from_the_conversation() {
    let backend = ScriptedBackend::start().await;
    let directive = format!(
        "SCRIPT: {}",
        json!({"turns": [
            {"tool_calls": [{"name": "python", "arguments": {"code": "1+1"}, "id": "call_x"}]},
            {"content": "two", "reasoning": "add them"},
        ]})
    );
    let first = json!({"model": "any", "messages": [
        {"role": "system", "content": directive},
        {"role": "user", "content": "1+1?"},
    ]});
    let body: Value = post(&backend, &first).await.json().await.expect("JSON");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_x");
    assert_eq!(call["function"]["arguments"], r#"{"code":"1+1"}"#);

    let second = json!({"model": "any", "stream": true, "messages": [
        {"role": "system", "content": directive},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_x", "content": "2"},
    ]});
    let assembled = assemble(&events(post(&backend, &second).await).await);
    assert_eq!(assembled.content, "two");
    assert_eq!(assembled.reasoning_content, "add them");
}

/// Unscripted, a request offering tools gets a call of the first (or named) tool, arguments from
/// its schema; after the tool's result it answers in text; `tool_choice: none` keeps it talking.
#[tokio::test]
async fn unscripted_requests_with_tools_call_a_tool() {
    let backend = ScriptedBackend::start().await;
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}, "required": ["location", "days"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    ]);
    let mut body = chat("m", "Weather in Paris?");
    body["tools"] = tools.clone();
    let reply: Value = post(&backend, &body).await.json().await.expect("JSON");
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("args"))
            .expect("JSON args");
    assert_eq!(arguments, json!({"location": "Weather in Paris?", "days": 1}));
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");

    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let reply: Value = post(&backend, &body).await.json().await.expect("JSON");
    assert_eq!(
        reply["choices"][0]["message"]["tool_calls"][0]["function"],
        json!({"name": "get_time", "arguments": "{}"})
    );

    body["tool_choice"] = json!("none");
    let reply: Value = post(&backend, &body).await.json().await.expect("JSON");
    assert_eq!(reply["choices"][0]["message"]["content"], "You said: Weather in Paris?");

    let mut after_tool = chat("m", "Weather in Paris?");
    after_tool["tools"] = tools;
    after_tool["messages"].as_array_mut().expect("messages").extend([
        json!({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}),
        json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}),
    ]);
    let reply: Value = post(&backend, &after_tool).await.json().await.expect("JSON");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert!(
        reply["choices"][0]["message"]["content"].as_str().expect("text").starts_with("You said:")
    );
}
