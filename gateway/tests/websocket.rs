//! WebSocket mode on `/v1/responses`: real sockets (tokio-tungstenite) against the gateway in
//! front of the scripted backend. Every frame is checked against the spec's schemas: events as
//! in an SSE stream (`assert_stream_conformant`), errors as `WebSocketErrorEvent`.

mod support;

use std::time::Duration;

use antwort_scripted_backend::{Script, ScriptedBackend};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Gateway, assert_stream_conformant, assert_valid, output_text, quick_config};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gateway: &Gateway) -> Socket {
    let url = gateway.responses_url().replacen("http://", "ws://", 1);
    let (socket, response) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("send");
}

/// The next JSON text frame.
async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame within 20 s")
            .expect("socket open")
            .expect("frame reads");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("frame is JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads one response's events up to its terminal event and checks them like an SSE stream.
/// Returns the final Response and the events.
async fn read_response(socket: &mut Socket) -> (Value, Vec<Value>) {
    let mut events = Vec::new();
    loop {
        let frame = next_frame(socket).await;
        let kind = frame["type"].as_str().expect("type").to_string();
        events.push(frame);
        if matches!(
            kind.as_str(),
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        ) {
            break;
        }
    }
    let stream = support::Stream {
        status: 200,
        content_type: "text/event-stream".into(),
        chunks: Vec::new(),
        events: events.clone(),
    };
    let response = assert_stream_conformant(&stream).expect("a response, not an error");
    (response, events)
}

/// Reads an error frame and checks it against `WebSocketErrorEvent`.
async fn read_error(socket: &mut Socket, status: u16, code: &str) -> Value {
    let frame = next_frame(socket).await;
    assert_valid("WebSocketErrorEvent", &frame);
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["status"], status, "{frame}");
    assert_eq!(frame["error"]["code"], code, "{frame}");
    frame
}

fn create(body: Value) -> Value {
    let mut message = json!({"type": "response.create"});
    message.as_object_mut().expect("object").extend(body.as_object().expect("object").clone());
    assert_valid("WebSocketResponseCreateEvent", &message);
    message
}

#[tokio::test]
async fn two_sequential_responses_on_one_socket() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("first answer"));
    backend.enqueue(Script::text("second answer"));
    let gateway = Gateway::start(&backend).await;
    let mut socket = connect(&gateway).await;
    // Both are sent at once: the second waits for the first to finish.
    send(&mut socket, create(json!({"model": "m", "input": "one", "store": false}))).await;
    send(&mut socket, create(json!({"model": "m", "input": "two", "store": false}))).await;
    let (first, _) = read_response(&mut socket).await;
    let (second, _) = read_response(&mut socket).await;
    assert_eq!(output_text(&first), "first answer");
    assert_eq!(output_text(&second), "second answer");
    assert_ne!(first["id"], second["id"]);
    assert_eq!(backend.requests().len(), 2);
    socket.close(None).await.expect("close");
}

#[tokio::test]
async fn store_false_continuation_is_served_from_the_connection_cache() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("The capital is Paris."));
    backend.enqueue(Script::text("About two million people."));
    let gateway = Gateway::start(&backend).await;
    let mut socket = connect(&gateway).await;
    send(
        &mut socket,
        create(json!({"model": "m", "input": "Capital of France?", "store": false, "instructions": "Be brief."})),
    )
    .await;
    let (first, _) = read_response(&mut socket).await;
    send(
        &mut socket,
        create(json!({"model": "m", "input": "How many live there?", "store": false, "previous_response_id": first["id"]})),
    )
    .await;
    let (second, events) = read_response(&mut socket).await;
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(events[0]["response"]["previous_response_id"], first["id"]);
    assert_eq!(output_text(&second), "About two million people.");
    // The backend saw the whole chain: first input and answer, then the new input; the first
    // turn's instructions are not carried over.
    let requests = backend.requests();
    let messages = requests[1].body["messages"].as_array().expect("messages").clone();
    let contents: Vec<(&str, String)> = messages
        .iter()
        .map(|m| (m["role"].as_str().expect("role"), m["content"].to_string()))
        .collect();
    assert_eq!(contents.len(), 3, "{contents:?}");
    assert_eq!(contents[0].0, "user");
    assert!(contents[0].1.contains("Capital of France?"));
    assert_eq!(contents[1].0, "assistant");
    assert!(contents[1].1.contains("The capital is Paris."));
    assert!(contents[2].1.contains("How many live there?"));
}

#[tokio::test]
async fn store_true_continuation_chains_through_the_store() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("Noted: x is 7."));
    backend.enqueue(Script::text("x plus one is 8."));
    backend.enqueue(Script::text("Still 7."));
    let gateway = Gateway::start(&backend).await;
    let mut socket = connect(&gateway).await;
    send(&mut socket, create(json!({"model": "m", "input": "Remember x = 7."}))).await;
    let (first, _) = read_response(&mut socket).await;
    assert_eq!(first["store"], true);
    send(
        &mut socket,
        create(
            json!({"model": "m", "input": "What is x + 1?", "previous_response_id": first["id"]}),
        ),
    )
    .await;
    let (second, _) = read_response(&mut socket).await;
    assert_eq!(second["previous_response_id"], first["id"]);
    let requests = backend.requests();
    let messages = requests[1].body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{messages:?}");
    assert!(messages[1]["content"].to_string().contains("Noted: x is 7."));

    // Both turns were stored: readable over HTTP, and chainable from a new connection.
    let stored = support::client()
        .get(format!("{}/{}", gateway.responses_url(), second["id"].as_str().expect("id")))
        .send()
        .await
        .expect("sent");
    assert_eq!(stored.status().as_u16(), 200);
    let stored: Value = stored.json().await.expect("JSON");
    assert_eq!(output_text(&stored), "x plus one is 8.");
    let mut other = connect(&gateway).await;
    send(
        &mut other,
        create(json!({"model": "m", "input": "And x?", "previous_response_id": first["id"]})),
    )
    .await;
    let (third, _) = read_response(&mut other).await;
    assert_eq!(output_text(&third), "Still 7.");
    let requests = backend.requests();
    assert_eq!(requests[2].body["messages"].as_array().expect("messages").len(), 3);
}

#[tokio::test]
async fn errors_keep_the_socket_open_and_a_failed_continuation_is_evicted() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::tool_call("lookup", r#"{"q":"x"}"#));
    let gateway = Gateway::start(&backend).await;
    let mut socket = connect(&gateway).await;

    // Malformed messages: each answered with an error frame, the socket stays usable.
    socket.send(Message::text("not json")).await.expect("send");
    read_error(&mut socket, 400, "invalid_json").await;
    send(&mut socket, json!({"type": "response.cancel"})).await;
    read_error(&mut socket, 400, "invalid_value").await;
    send(
        &mut socket,
        json!({"type": "response.create", "model": "m", "input": "x", "stream": true}),
    )
    .await;
    let frame = read_error(&mut socket, 400, "unsupported_parameter").await;
    assert_eq!(frame["error"]["param"], "stream");
    send(&mut socket, create(json!({"input": "no model"}))).await;
    read_error(&mut socket, 400, "missing_required_parameter").await;
    send(
        &mut socket,
        create(json!({"model": "m", "input": "x", "store": false, "previous_response_id": "resp_unknown"})),
    )
    .await;
    read_error(&mut socket, 404, "previous_response_not_found").await;

    // A response that calls a tool; answering a call it did not make is an error frame...
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    send(
        &mut socket,
        create(json!({"model": "m", "input": "look it up", "store": false, "tools": tools})),
    )
    .await;
    let (first, _) = read_response(&mut socket).await;
    let call = first["output"]
        .as_array()
        .expect("output")
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a function call")
        .clone();
    send(
        &mut socket,
        create(json!({
            "model": "m", "store": false, "previous_response_id": first["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": "call_nobody_made", "output": "42"}],
        })),
    )
    .await;
    let frame = read_error(&mut socket, 400, "invalid_function_call_output").await;
    assert_eq!(frame["error"]["param"], "input[0].call_id");

    // ...and the failed continuation evicted the previous response: even a correct answer to
    // its call cannot build on it any more.
    send(
        &mut socket,
        create(json!({
            "model": "m", "store": false, "previous_response_id": first["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}],
        })),
    )
    .await;
    read_error(&mut socket, 404, "previous_response_not_found").await;

    // The socket still serves new responses.
    send(&mut socket, create(json!({"model": "m", "input": "still there?", "store": false}))).await;
    let (last, _) = read_response(&mut socket).await;
    assert_eq!(last["status"], "completed");
    assert_eq!(backend.requests().len(), 2, "rejected messages never reach the backend");
}

#[tokio::test]
async fn a_valid_function_call_output_continues_the_chain() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::tool_call("lookup", r#"{"q":"x"}"#));
    backend.enqueue(Script::text("It is 42."));
    let gateway = Gateway::start(&backend).await;
    let mut socket = connect(&gateway).await;
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    send(
        &mut socket,
        create(json!({"model": "m", "input": "look it up", "store": false, "tools": tools})),
    )
    .await;
    let (first, _) = read_response(&mut socket).await;
    let call_id = first["output"]
        .as_array()
        .expect("output")
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a function call")["call_id"]
        .clone();
    send(
        &mut socket,
        create(json!({
            "model": "m", "store": false, "previous_response_id": first["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": call_id, "output": "42"}],
        })),
    )
    .await;
    let (second, _) = read_response(&mut socket).await;
    assert_eq!(output_text(&second), "It is 42.");
    let requests = backend.requests();
    let messages = requests[1].body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{messages:?}");
    assert_eq!(messages[1]["tool_calls"][0]["id"], call_id);
    assert_eq!(messages[2]["tool_call_id"], call_id);
}

#[tokio::test]
async fn idle_sockets_are_closed_and_oversized_messages_refused() {
    let backend = ScriptedBackend::start().await;
    let mut raw = quick_config(&backend);
    raw.websocket.idle_timeout_secs = 0.3;
    raw.websocket.max_message_bytes = 4096;
    let gateway = Gateway::start_with(raw).await;

    let mut socket = connect(&gateway).await;
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("closed within 5 s")
        .expect("a close frame")
        .expect("reads");
    match message {
        Message::Close(Some(frame)) => assert_eq!(frame.reason.as_str(), "idle timeout"),
        other => panic!("expected a close frame, got {other:?}"),
    }

    let mut socket = connect(&gateway).await;
    let big = "x".repeat(8192);
    send(&mut socket, create(json!({"model": "m", "input": big, "store": false}))).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the gateway closes the socket");
    if let Some(code) = closed {
        assert_eq!(code, 1009, "message too big");
    }
    assert!(backend.requests().is_empty());
}

#[tokio::test]
async fn the_upgrade_is_authenticated() {
    let backend = ScriptedBackend::start().await;
    let mut raw = quick_config(&backend);
    raw.auth =
        serde_yaml_ng::from_str("api_keys: [{key: sk-test-websocket-key-1, tenant: t, user: u}]")
            .expect("auth config");
    let gateway = Gateway::start_with(raw).await;
    let url = gateway.responses_url().replacen("http://", "ws://", 1);
    let error = tokio_tungstenite::connect_async(url.clone()).await.expect_err("no key");
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!("expected HTTP 401, got {other}"),
    }
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("authorization", "Bearer sk-test-websocket-key-1".parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("authorized");
    send(&mut socket, create(json!({"model": "m", "input": "hi", "store": false}))).await;
    let (response, _) = read_response(&mut socket).await;
    assert_eq!(output_text(&response), "You said: hi");
}
