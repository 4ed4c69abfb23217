//! Non-streaming replies: scripted text, echo, truncation, reasoning, logprobs, models, errors.

use antwort_scripted_backend::{ReasoningField, Script, ScriptedBackend, UsageOverride};
use serde_json::{Value, json};

use crate::support::{chat, client, post};

async fn completion(backend: &ScriptedBackend, body: &Value) -> Value {
    let response = post(backend, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON completion")
}

#[tokio::test]
async fn scripted_text_is_a_chat_completion() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::text("Hello there, world"));
    let body = completion(&backend, &chat("m", "one two three")).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello there, world");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 3);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["total_tokens"], 6);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    backend.shutdown().await;
}

#[tokio::test]
async fn unscripted_requests_are_echoed() {
    let backend = ScriptedBackend::start().await;
    let request = json!({"model": "any", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "tell me"}, {"type": "text", "text": "more"}]},
    ]});
    let body = completion(&backend, &request).await;
    assert_eq!(body["choices"][0]["message"]["content"], "You said: tell me\nmore");
    assert_eq!(body["usage"]["prompt_tokens"], 7, "be brief / first / ok / tell me / more");
    assert_eq!(body["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn echo_honours_max_tokens_with_finish_reason_length() {
    let backend = ScriptedBackend::start().await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut request = chat("m", "a b c d e f");
        request[field] = json!(4);
        let body = completion(&backend, &request).await;
        assert_eq!(body["choices"][0]["message"]["content"], "You said: a b", "{field}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 4);
    }
    let mut request = chat("m", "a b");
    request["max_tokens"] = json!(100);
    let body = completion(&backend, &request).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn reasoning_uses_the_scripted_field_and_counts() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("vllm", Script::text("42").reasoning("think it through"));
    backend.on_model(
        "new-vllm",
        Script::text("42").reasoning("hmm").reasoning_field(ReasoningField::Reasoning),
    );
    let body = completion(&backend, &chat("vllm", "q")).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "think it through");
    assert!(message.get("reasoning").is_none());
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 4);

    let body = completion(&backend, &chat("new-vllm", "q")).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning"], "hmm");
    assert!(message.get("reasoning_content").is_none());
}

#[tokio::test]
async fn usage_and_finish_reason_overrides() {
    let backend = ScriptedBackend::start().await;
    let usage =
        UsageOverride { prompt_tokens: Some(1000), cached_tokens: Some(900), ..Default::default() };
    backend.on_model("m", Script::text("cut").finish_reason("length").usage(usage));
    let body = completion(&backend, &chat("m", "x")).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 1000);
    assert_eq!(body["usage"]["total_tokens"], 1001);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 900);
}

#[tokio::test]
async fn logprobs_are_deterministic_per_token() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::chunks(["Hel", "lo", "!"]));
    let mut request = chat("m", "x");
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(3);
    let first = completion(&backend, &request).await;
    let second = completion(&backend, &request).await;
    let content = first["choices"][0]["logprobs"]["content"].as_array().expect("logprobs");
    let tokens: Vec<_> = content.iter().map(|entry| entry["token"].clone()).collect();
    assert_eq!(tokens, [json!("Hel"), json!("lo"), json!("!")]);
    for entry in content {
        let logprob = entry["logprob"].as_f64().expect("logprob");
        assert!((-2.0..0.0).contains(&logprob), "{logprob}");
        let top = entry["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], entry["token"]);
        assert!(top[1]["logprob"].as_f64() < top[0]["logprob"].as_f64());
        let bytes: Vec<u8> = serde_json::from_value(entry["bytes"].clone()).expect("bytes");
        assert_eq!(bytes, entry["token"].as_str().expect("token").as_bytes());
    }
    assert_eq!(first["choices"][0]["logprobs"], second["choices"][0]["logprobs"]);

    let plain = completion(&backend, &chat("m", "x")).await;
    assert_eq!(plain["choices"][0]["logprobs"], Value::Null);
}

#[tokio::test]
async fn models_and_health() {
    let backend = ScriptedBackend::start().await;
    let models: Value = client()
        .get(format!("{}/models", backend.base_url()))
        .send()
        .await
        .expect("GET /v1/models")
        .json()
        .await
        .expect("JSON");
    assert_eq!(models["data"][0]["id"], antwort_scripted_backend::DEFAULT_MODEL);

    backend.on_model("b-model", Script::text("x"));
    backend.add_model_name("a-model");
    let models: Value = client()
        .get(format!("{}/models", backend.base_url()))
        .send()
        .await
        .expect("GET /v1/models")
        .json()
        .await
        .expect("JSON");
    assert_eq!(models["object"], "list");
    let ids: Vec<_> =
        models["data"].as_array().expect("data").iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, [json!("a-model"), json!("b-model")]);

    let health = client()
        .get(format!("http://{}/health", backend.addr()))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let backend = ScriptedBackend::start().await;
    let url = format!("{}/chat/completions", backend.base_url());
    let cases: [(&str, u16, &str); 5] = [
        ("{not json", 400, "not valid JSON"),
        (r#"{"messages": []}"#, 400, "`model` is required"),
        (r#"{"model": "m", "messages": {}}"#, 400, "`messages` must be an array"),
        (r#"{"model": "m", "messages": [], "stream": "yes"}"#, 400, "`stream` must be a boolean"),
        (
            r#"{"model": "m", "messages": [{"role": "system", "content": "SCRIPT: {\"bogus\": 1}"}]}"#,
            400,
            "unknown field `bogus`",
        ),
    ];
    for (body, status, message) in cases {
        let response = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sending");
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.expect("JSON error");
        let text = error["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{text:?} should contain {message:?}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(error["error"].get("code").is_some() && error["error"].get("param").is_some());
    }

    let response =
        client().get(format!("{}/nope", backend.base_url())).send().await.expect("sending");
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let options = antwort_scripted_backend::Options { max_body_bytes: 1024, ..Default::default() };
    let backend = ScriptedBackend::start_with(([127, 0, 0, 1], 0).into(), options)
        .await
        .expect("starting the backend");
    let mut request = chat("m", &"word ".repeat(1000));
    let response = post(&backend, &request).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert!(error["error"]["message"].as_str().expect("message").contains("1024 bytes"));

    request = chat("m", "short");
    assert_eq!(post(&backend, &request).await.status(), 200);
}
