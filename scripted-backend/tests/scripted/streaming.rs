//! `stream: true`: deltas, reasoning deltas, include_usage, logprobs, timing.

use std::time::{Duration, Instant};

use antwort_scripted_backend::{ReasoningField, Script, ScriptedBackend};
use serde_json::{Value, json};

use crate::support::{assemble, events, post, streaming};

#[tokio::test]
async fn text_deltas_reassemble_to_the_text() {
    let backend = ScriptedBackend::start().await;
    let text = "Streaming works, déjà vu — ünïcödé too.";
    backend.on_model("m", Script::text(text).chunk_chars(3));
    let events = events(post(&backend, &streaming("m", "go")).await).await;
    let assembled = assemble(&events);
    assert_eq!(assembled.role.as_deref(), Some("assistant"));
    assert_eq!(assembled.content, text);
    assert_eq!(assembled.content_deltas, text.chars().count().div_ceil(3));
    assert_eq!(assembled.finish_reason.as_deref(), Some("stop"));
    assert!(assembled.usage.is_none(), "no usage chunk unless asked");
    assert!(assembled.done);

    let first: Value = serde_json::from_str(&events[0]).expect("JSON");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let ids: Vec<_> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str::<Value>(event).expect("JSON")["id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one id for the whole stream");
}

#[tokio::test]
async fn explicit_chunks_are_sent_as_given() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::chunks(["A", "BC", "", "DEF"]));
    let events = events(post(&backend, &streaming("m", "go")).await).await;
    let contents: Vec<String> = events
        .iter()
        .filter(|event| *event != "[DONE]")
        .filter_map(|event| {
            let chunk: Value = serde_json::from_str(event).expect("JSON");
            chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(contents, ["", "A", "BC", "", "DEF"], "the role chunk carries empty content");
}

#[tokio::test]
async fn the_echo_streams_in_small_deltas() {
    let backend = ScriptedBackend::start().await;
    let assembled = assemble(&events(post(&backend, &streaming("x", "hello stream")).await).await);
    assert_eq!(assembled.content, "You said: hello stream");
    assert!(assembled.content_deltas > 3);

    let mut request = streaming("x", "one two three four");
    request["max_tokens"] = json!(3);
    let assembled = assemble(&events(post(&backend, &request).await).await);
    assert_eq!(assembled.content, "You said: one");
    assert_eq!(assembled.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn reasoning_deltas_come_before_content_in_either_field() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("a", Script::text("answer").reasoning_chunks(["step ", "one"]));
    backend.on_model(
        "b",
        Script::text("answer").reasoning("step two").reasoning_field(ReasoningField::Reasoning),
    );
    let events_a = events(post(&backend, &streaming("a", "q")).await).await;
    let assembled = assemble(&events_a);
    assert_eq!(assembled.reasoning_content, "step one");
    assert_eq!(assembled.reasoning, "");
    assert_eq!(assembled.content, "answer");
    let position = |needle: &str| events_a.iter().position(|e| e.contains(needle)).expect(needle);
    assert!(position("reasoning_content") < position("\"content\":\"ans"));

    let assembled = assemble(&events(post(&backend, &streaming("b", "q")).await).await);
    assert_eq!(assembled.reasoning, "step two");
    assert_eq!(assembled.reasoning_content, "");
}

#[tokio::test]
async fn include_usage_adds_a_final_chunk_without_choices() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::text("three words here").reasoning("why not"));
    let mut request = streaming("m", "a b");
    request["stream_options"] = json!({"include_usage": true});
    let events = events(post(&backend, &request).await).await;
    let assembled = assemble(&events);
    let usage = assembled.usage.expect("usage chunk");
    assert_eq!(usage["prompt_tokens"], 2);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["total_tokens"], 7);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 2);
    // Order: ..., finish chunk, usage chunk, [DONE].
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    assert!(events[n - 2].contains("\"choices\":[]"));
    assert!(events[n - 3].contains("\"finish_reason\":\"stop\""));
}

#[tokio::test]
async fn streamed_logprobs_have_one_entry_per_delta() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("m", Script::chunks(["a", "b"]));
    let mut request = streaming("m", "x");
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(2);
    let assembled = assemble(&events(post(&backend, &request).await).await);
    let tokens: Vec<_> = assembled.logprob_tokens.iter().map(|e| e["token"].clone()).collect();
    assert_eq!(tokens, [json!("a"), json!("b")]);
    assert!(
        assembled
            .logprob_tokens
            .iter()
            .all(|e| e["top_logprobs"].as_array().map(Vec::len) == Some(2))
    );
}

#[tokio::test]
async fn time_to_first_token_and_chunk_delays_are_waited() {
    let backend = ScriptedBackend::start().await;
    backend.on_model(
        "slow",
        Script::chunks(["a", "b", "c"])
            .ttft(Duration::from_millis(150))
            .chunk_delay(Duration::from_millis(40)),
    );
    let started = Instant::now();
    let response = post(&backend, &streaming("slow", "x")).await;
    let first_byte = started.elapsed();
    let assembled = assemble(&events(response).await);
    assert_eq!(assembled.content, "abc");
    // Lower bounds only: the role, 3 content, finish and [DONE] events are 5 delays apart.
    assert!(first_byte >= Duration::from_millis(150), "{first_byte:?}");
    assert!(started.elapsed() >= Duration::from_millis(150 + 5 * 40), "{:?}", started.elapsed());
}
