//! Failure modes: HTTP errors, fail-N-then-succeed, garbled, stall, disconnect, hangup.

use std::time::Duration;

use antwort_scripted_backend::{Failure, HttpError, Script, ScriptedBackend};
use serde_json::{Value, json};

use crate::support::{assemble, chat, parse_events, post, read_for, streaming};

#[tokio::test]
async fn http_errors_have_the_status_body_and_retry_after() {
    let backend = ScriptedBackend::start().await;
    let cases = [
        (429, "rate_limit_error", Some("2")),
        (400, "invalid_request_error", None),
        (500, "server_error", None),
        (503, "server_error", Some("1")),
    ];
    for (status, error_type, retry_after) in cases {
        let mut script = Script::error(status, format!("scripted {status}"));
        if let Some(value) = retry_after {
            script = script.retry_after(value);
        }
        backend.enqueue(script);
        let response = post(&backend, &streaming("m", "x")).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            retry_after
        );
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(
            body,
            json!({"error": {"message": format!("scripted {status}"), "type": error_type, "code": null, "param": null}})
        );
    }
}

#[tokio::test]
async fn http_errors_can_carry_code_param_type_or_a_raw_body() {
    let backend = ScriptedBackend::start().await;
    let error = HttpError {
        status: 400,
        message: "context too long".into(),
        error_type: Some("BadRequestError".into()),
        code: json!(400),
        param: json!("messages"),
        ..HttpError::default()
    };
    backend.enqueue(Script::echo().fail(Failure::Http(error)));
    let raw = HttpError {
        status: 502,
        body: Some("<html>bad gateway</html>".into()),
        ..HttpError::default()
    };
    backend.enqueue(Script::echo().fail(Failure::Http(raw)));

    let body: Value = post(&backend, &chat("m", "x")).await.json().await.expect("JSON");
    assert_eq!(body["error"]["type"], "BadRequestError");
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["param"], "messages");
    let response = post(&backend, &chat("m", "x")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.text().await.expect("text"), "<html>bad gateway</html>");
}

#[tokio::test]
async fn fail_first_n_then_succeed() {
    let backend = ScriptedBackend::start().await;
    let unavailable = Failure::Http(HttpError {
        status: 503,
        retry_after: Some("0".into()),
        ..HttpError::default()
    });
    backend.on_model("flaky", Script::text("finally").fail_first(2, unavailable.clone()));
    let statuses = [
        post(&backend, &chat("flaky", "x")).await.status().as_u16(),
        post(&backend, &chat("flaky", "x")).await.status().as_u16(),
    ];
    assert_eq!(statuses, [503, 503]);
    for _ in 0..2 {
        let body: Value = post(&backend, &chat("flaky", "x")).await.json().await.expect("JSON");
        assert_eq!(body["choices"][0]["message"]["content"], "finally");
    }

    // Queued: the entry stays at the head until it succeeds, then the next one plays.
    backend.enqueue(Script::text("queued ok").fail_first(1, unavailable));
    backend.enqueue(Script::text("next"));
    assert_eq!(post(&backend, &chat("m", "x")).await.status(), 503);
    let replies = [
        post(&backend, &chat("m", "x")).await.json::<Value>().await.expect("JSON"),
        post(&backend, &chat("m", "x")).await.json::<Value>().await.expect("JSON"),
    ];
    assert_eq!(replies[0]["choices"][0]["message"]["content"], "queued ok");
    assert_eq!(replies[1]["choices"][0]["message"]["content"], "next");
}

#[tokio::test]
async fn garbled_streams_carry_one_invalid_json_event() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::chunks(["a", "b", "c"]).garbled_after(2));
    let response = post(&backend, &streaming("m", "x")).await;
    let (text, end) = read_for(response, Duration::from_secs(5)).await;
    assert_eq!(end, Ok(()));
    let events = parse_events(&text);
    let invalid: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| *event != "[DONE]" && serde_json::from_str::<Value>(event).is_err())
        .map(|(index, _)| index)
        .collect();
    assert_eq!(invalid, [2]);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    backend.enqueue(Script::text("plain").garbled_after(0));
    let response = post(&backend, &chat("m", "x")).await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn a_stalled_stream_never_finishes_and_its_abandonment_is_seen() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::chunks(["a", "b", "c", "d"]).stall_after(3));
    let response = post(&backend, &streaming("m", "x")).await;
    let (text, end) = read_for(response, Duration::from_secs(1)).await;
    assert_eq!(end, Err("timed out".to_owned()));
    let events = parse_events(&text);
    assert_eq!(events.len(), 3, "role, a, b: {events:?}");
    assert_eq!(assemble(&events).content, "ab");
    // `read_for` dropped the response: the backend sees the client leave.
    let cancellations =
        backend.wait_for_cancellations(1, Duration::from_secs(2)).await.expect("a cancellation");
    assert_eq!(cancellations[0].events_sent, 3);
    assert_eq!(cancellations[0].model, "m");
}

#[tokio::test]
async fn a_stalled_non_streaming_reply_never_answers() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("x").stall_after(0));
    let sent = crate::support::client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .json(&chat("m", "x"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(sent.expect_err("no answer").is_timeout());
}

#[tokio::test]
async fn a_disconnect_cuts_the_stream_without_done() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::chunks(["a", "b", "c"]).disconnect_after(2));
    let response = post(&backend, &streaming("m", "x")).await;
    let (text, end) = read_for(response, Duration::from_secs(5)).await;
    let error = end.expect_err("the body ends in an error");
    assert!(error.starts_with("body error"), "{error}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(assemble(&parse_events(&text)).content, "a");
    assert!(backend.cancellations().is_empty(), "the backend's own disconnect is no cancellation");

    backend.enqueue(Script::text("x").disconnect_after(0));
    let error = crate::support::client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .json(&chat("m", "x"))
        .send()
        .await
        .expect_err("no response");
    assert!(!error.is_timeout(), "{error}");
}

#[tokio::test]
async fn an_early_hangup_sends_no_byte() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::text("x").hangup());
    let error = crate::support::client()
        .post(format!("{}/chat/completions", backend.base_url()))
        .json(&streaming("m", "x"))
        .send()
        .await
        .expect_err("the connection closes before any response");
    assert!(error.is_request() && !error.is_timeout(), "{error:?}");
    // The next request is served normally (on a new connection).
    assert_eq!(post(&backend, &chat("m", "x")).await.status(), 200);
}

#[tokio::test]
async fn a_stream_error_event_ends_the_stream_like_vllm() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(Script::chunks(["a", "b", "c"]).stream_error_after(2, "engine died"));
    let response = post(&backend, &streaming("m", "x")).await;
    let (text, end) = read_for(response, Duration::from_secs(5)).await;
    assert_eq!(end, Ok(()));
    let events = parse_events(&text);
    assert_eq!(events.len(), 4, "role, a, error, [DONE]: {events:?}");
    let error: Value = serde_json::from_str(&events[2]).expect("the error event is JSON");
    assert_eq!(error["error"]["message"], "engine died");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(events[3], "[DONE]");

    backend.enqueue(Script::text("x").stream_error_after(0, "engine died"));
    let response = post(&backend, &chat("m", "x")).await;
    assert_eq!(response.status(), 500);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["message"], "engine died");
    assert_eq!(backend.queued(), 0);
}
