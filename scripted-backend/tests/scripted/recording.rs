//! Request recording and disconnect detection.

use std::time::{Duration, Instant};

use antwort_scripted_backend::{Script, ScriptedBackend};
use futures::StreamExt;
use serde_json::json;

use crate::support::{chat, client, post, streaming};

#[tokio::test]
async fn every_request_is_recorded_in_order() {
    let backend = ScriptedBackend::start().await;
    let first = chat("m", "first");
    client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .header("authorization", "Bearer sk-test")
        .header("x-trace", "abc")
        .json(&first)
        .send()
        .await
        .expect("sending");
    post(&backend, &streaming("m", "second")).await.text().await.expect("body");
    client().get(format!("{}/models?x=1", backend.base_url())).send().await.expect("sending");

    let requests = backend.wait_for_requests(3, Duration::from_secs(2)).await.expect("3 requests");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[0].header("x-trace"), Some("abc"));
    assert_eq!(requests[0].body, first);
    assert_eq!(requests[1].body["messages"][0]["content"], "second");
    assert_eq!(requests[1].body["stream"], true);
    assert_eq!(requests[2].method, "GET");
    assert_eq!(requests[2].path, "/v1/models?x=1");
    assert_eq!(requests[2].body, serde_json::Value::Null);
    assert!(requests[0].received_at <= requests[1].received_at);

    backend.clear_recorded();
    backend.set_recording(false);
    post(&backend, &chat("m", "unrecorded")).await;
    assert!(backend.requests().is_empty());
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_reported_promptly() {
    let backend = ScriptedBackend::start().await;
    backend.on_model(
        "slow",
        Script::text("a long answer").chunk_chars(1).chunk_delay(Duration::from_millis(100)),
    );
    post(&backend, &chat("other", "recorded first")).await;
    let response = post(&backend, &streaming("slow", "x")).await;
    let mut stream = response.bytes_stream();
    stream.next().await.expect("a first chunk").expect("bytes");
    let dropped_at = Instant::now();
    drop(stream);

    let cancellations =
        backend.wait_for_cancellations(1, Duration::from_secs(2)).await.expect("a cancellation");
    let cancellation = &cancellations[0];
    let noticed = cancellation.at.duration_since(dropped_at);
    assert!(noticed < Duration::from_secs(1), "noticed after {noticed:?}");
    assert_eq!(cancellation.model, "slow");
    assert_eq!(cancellation.request_index, Some(1));
    assert!(cancellation.events_sent >= 1 && cancellation.events_sent < 10);
    assert_eq!(backend.requests()[1].body["model"], "slow");
}

#[tokio::test]
async fn a_client_leaving_before_the_first_token_is_reported() {
    let backend = ScriptedBackend::start().await;
    backend.on_model("slow", Script::text("x").ttft(Duration::from_secs(30)));
    let request = client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .json(&json!({"model": "slow", "stream": true, "messages": []}))
        .send();
    let waiting = tokio::spawn(request);
    // Give up only once the backend has the request, however slow the machine is.
    backend.wait_for_requests(1, Duration::from_secs(10)).await.expect("the request arrives");
    waiting.abort();
    let gave_up_at = Instant::now();
    let cancellations =
        backend.wait_for_cancellations(1, Duration::from_secs(2)).await.expect("a cancellation");
    assert!(cancellations[0].at.saturating_duration_since(gave_up_at) < Duration::from_secs(1));
    assert_eq!(cancellations[0].events_sent, 0);
}

#[tokio::test]
async fn finished_replies_are_not_cancellations() {
    let backend = ScriptedBackend::start().await;
    for _ in 0..3 {
        post(&backend, &streaming("m", "x")).await.text().await.expect("body");
        post(&backend, &chat("m", "x")).await.text().await.expect("body");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(backend.cancellations().is_empty(), "{:?}", backend.cancellations());
    assert_eq!(backend.requests().len(), 6);
    backend.shutdown().await;
}
