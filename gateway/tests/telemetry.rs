//! Traces: with an OTLP endpoint configured, spans are exported over OTLP/HTTP and the W3C trace
//! context reaches the backend. Its own test binary, because it installs the global subscriber.

mod support;

use std::sync::{Arc, Mutex};

use antwort_common::telemetry::{LogFormat, TelemetryConfig};
use antwort_scripted_backend::ScriptedBackend;
use axum::body::Bytes;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_trace_context_reaches_the_backend() {
    // A stand-in OTLP collector that keeps every export it receives.
    let exports: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let seen = exports.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().expect("lock").push((content_type, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector_url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, collector).await.expect("collector") });

    let guard = antwort_common::telemetry::init(
        "antwort-gateway",
        &TelemetryConfig {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            otlp_endpoint: Some(collector_url),
        },
    )
    .expect("telemetry starts");

    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start(&backend).await;
    let (status, _) = post(&gateway, json!({"model": "m", "input": "trace me"})).await;
    assert_eq!(status, 200);

    let traceparent = backend.requests()[0]
        .header("traceparent")
        .map(str::to_string)
        .expect("traceparent sent to the backend");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32), "a real trace id");

    // Dropping the guard flushes the batch; it blocks, so off the async threads.
    tokio::task::spawn_blocking(move || drop(guard)).await.expect("flush");
    let exports = exports.lock().expect("lock");
    assert!(!exports.is_empty(), "the collector received spans");
    let all: Vec<u8> = exports.iter().flat_map(|(_, body)| body.to_vec()).collect();
    assert!(exports.iter().all(|(ct, _)| ct == "application/x-protobuf"), "OTLP/HTTP protobuf");
    let contains = |needle: &str| all.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("antwort-gateway"), "service name exported");
    assert!(contains("backend_call"), "backend call span exported");
    assert!(contains("request"), "request span exported");
    assert!(
        contains(parts[1]) || all.windows(16).any(|w| hex(w) == parts[1]),
        "exported spans carry the propagated trace id"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
