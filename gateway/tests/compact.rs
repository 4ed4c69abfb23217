//! `POST /v1/responses/compact`: the answer's shape per the spec (`CompactResource`), the
//! summary coming from the model, and the `compaction` item working as input afterwards.

mod support;

use antwort_scripted_backend::{Script, ScriptedBackend};
use serde_json::{Value, json};
use support::{Gateway, assert_error_envelope, assert_valid, client, output_text, post};

async fn compact(gateway: &Gateway, body: Value) -> (u16, Value) {
    let response = client()
        .post(format!("{}/compact", gateway.responses_url()))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn compaction_keeps_user_messages_and_summarizes_the_rest() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("User wants a landing page for a dog cafe; draft 1 done."));
    backend.enqueue(Script::text("Added a booking form."));
    let gateway = Gateway::start(&backend).await;
    let input = json!([
        {"role": "user", "content": "Create a landing page for a dog petting cafe."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Here is draft 1: <html>...</html>"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Make it friendlier."}]},
    ]);
    let (status, body) = compact(
        &gateway,
        json!({"model": "m", "input": input, "instructions": "You build websites."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_valid("CompactResource", &body);
    assert_eq!(body["object"], "response.compaction");
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 3, "two user messages and one compaction item: {body}");
    for (item, text) in output[..2]
        .iter()
        .zip(["Create a landing page for a dog petting cafe.", "Make it friendlier."])
    {
        assert_eq!(item["type"], "message");
        assert_eq!(item["role"], "user");
        assert_eq!(item["content"][0], json!({"type": "input_text", "text": text}));
        assert_valid("ItemField", item);
    }
    let compaction = &output[2];
    assert_eq!(compaction["type"], "compaction");
    assert!(compaction["id"].as_str().expect("id").starts_with("cmp_"));
    assert_valid("CompactionBody", compaction);
    assert!(body["usage"]["total_tokens"].as_u64().expect("usage") > 0);

    // The model was asked for a summary of everything, instructions first.
    let requests = backend.requests();
    let messages = requests[0].body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], "You build websites.");
    assert!(messages[2]["content"].to_string().contains("draft 1"));
    let last = messages.last().expect("a prompt");
    assert_eq!(last["role"], "user");
    assert!(last["content"].to_string().contains("summary"), "{last}");

    // The compacted context works as input: the summary reaches the model as a system message.
    let mut next_input = output.clone();
    next_input.push(json!({"role": "user", "content": "Now add a booking form."}));
    let (status, response) = post(&gateway, json!({"model": "m", "input": next_input})).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(output_text(&response), "Added a booking form.");
    let requests = backend.requests();
    let messages = requests[1].body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["user", "user", "system", "user"], "{messages:?}");
    let summary = messages[2]["content"].as_str().expect("text content");
    assert!(
        summary.contains("User wants a landing page for a dog cafe; draft 1 done."),
        "{summary}"
    );
}

#[tokio::test]
async fn compact_validates_its_body() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start(&backend).await;
    let (status, body) = compact(&gateway, json!({"input": "hello"})).await;
    assert_eq!(status, 400);
    assert_error_envelope(&body, 400, "missing_required_parameter");
    assert_eq!(body["error"]["param"], "model");

    let (status, body) =
        compact(&gateway, json!({"model": "m", "input": [{"type": "bogus"}]})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "input[0].type");

    // A compaction item this gateway did not make is refused, not passed on.
    let (status, body) = post(
        &gateway,
        json!({"model": "m", "input": [{"type": "compaction", "encrypted_content": "gAAAAABpM0Yj"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_error_envelope(&body, 400, "invalid_value");
    assert_eq!(body["error"]["param"], "input[0].encrypted_content");
    assert!(backend.requests().is_empty(), "nothing reached the model");
}
