//! What operators rely on: cancellation when clients go away, probes, metrics, request ids, the
//! command line and configuration errors of the real binary.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use antwort_scripted_backend::{Script, ScriptedBackend};
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_backend_request_within_a_second() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start(&backend).await;
    backend.enqueue(
        Script::text("tick ".repeat(200)).chunk_chars(5).chunk_delay(Duration::from_millis(50)),
    );
    let mut response = client()
        .post(gateway.responses_url())
        .json(&json!({"model": "m", "input": "x", "stream": true}))
        .send()
        .await
        .expect("sent");
    let mut seen = String::new();
    while !seen.contains("response.output_text.delta") {
        let chunk = response.chunk().await.expect("reads").expect("more");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let dropped_at = Instant::now();
    drop(response);
    let cancellations = backend
        .wait_for_cancellations(1, Duration::from_secs(5))
        .await
        .expect("backend saw the cancellation");
    let after = cancellations[0].at.duration_since(dropped_at);
    assert!(
        after < Duration::from_secs(1),
        "backend request cancelled {after:?} after the client left"
    );
}

#[tokio::test]
async fn client_disconnect_while_waiting_for_the_first_token_cancels_too() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start(&backend).await;
    // Streaming: the backend accepted the request but its first token is far away.
    backend.enqueue(Script::text("late").ttft(Duration::from_secs(30)));
    let request = client()
        .post(gateway.responses_url())
        .timeout(Duration::from_millis(300))
        .json(&json!({"model": "m", "input": "x", "stream": true}))
        .send();
    let outcome = request.await;
    let dropped_at = Instant::now();
    assert!(outcome.is_err(), "the client gave up first");
    let cancellations =
        backend.wait_for_cancellations(1, Duration::from_secs(5)).await.expect("cancellation seen");
    let after = cancellations[0].at.saturating_duration_since(dropped_at);
    assert!(after < Duration::from_secs(1), "cancelled {after:?} after the client left");

    // Non-streaming requests are cancelled the same way.
    backend.enqueue(Script::text("late").ttft(Duration::from_secs(30)));
    let outcome = client()
        .post(gateway.responses_url())
        .timeout(Duration::from_millis(300))
        .json(&json!({"model": "m", "input": "x"}))
        .send()
        .await;
    let dropped_at = Instant::now();
    assert!(outcome.is_err());
    let cancellations = backend
        .wait_for_cancellations(2, Duration::from_secs(5))
        .await
        .expect("second cancellation seen");
    let after = cancellations[1].at.saturating_duration_since(dropped_at);
    assert!(after < Duration::from_secs(1), "cancelled {after:?} after the client left");
}

#[tokio::test]
async fn probes_metrics_and_request_ids() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start(&backend).await;
    let health = client().get(format!("{}/healthz", gateway.url)).send().await.expect("sent");
    assert_eq!(health.status(), 200);
    let ready = client().get(format!("{}/readyz", gateway.url)).send().await.expect("sent");
    assert_eq!(ready.status(), 200);

    let response = client()
        .post(gateway.responses_url())
        .header("x-request-id", "trace-me-123")
        .json(&json!({"model": "m", "input": "count these words please"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("trace-me-123")
    );
    let body: Value = response.json().await.expect("json");
    let output_tokens = body["usage"]["output_tokens"].as_u64().expect("usage");
    let response = client()
        .post(gateway.responses_url())
        .json(&json!({"model": "m", "input": "x"}))
        .send()
        .await
        .expect("sent");
    let generated = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("generated id")
        .to_string();
    assert!(generated.starts_with("req_"), "{generated}");
    let _ = client()
        .post(gateway.responses_url())
        .json(&json!({"input": "x"}))
        .send()
        .await
        .expect("sent");

    let metrics = client()
        .get(format!("{}/metrics", gateway.url))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"antwort_gateway_requests_total{route="/v1/responses",status="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"antwort_gateway_requests_total{route="/v1/responses",status="400"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"antwort_gateway_request_duration_seconds_bucket{route="/v1/responses""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"antwort_gateway_tokens_total{{kind="output",model="m"}} {}"#,
            output_tokens + 3
        )),
        "{metrics}"
    );

    backend.enqueue(Script::error(500, "boom"));
    let gateway2 = Gateway::start_with(routed_config(&backend, &[("m", "m")], 0)).await;
    let _ = client()
        .post(gateway2.responses_url())
        .json(&json!({"model": "m", "input": "x"}))
        .send()
        .await
        .expect("sent");
    let metrics = client()
        .get(format!("{}/metrics", gateway2.url))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"antwort_gateway_backend_errors_total{backend="scripted",kind="failed"} 1"#
        ),
        "{metrics}"
    );
}

// === the real binary ===

fn gateway_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_antwort-gateway"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ANTWORT_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    // These tests are not about users: the explicit development mode (no authentication).
    command.env("ANTWORT_AUTH__MODE", "none");
    // The default store is a SQLite file in the working directory; these tests keep nothing.
    command.env("ANTWORT_STORE__URL", "memory");
    command
}

/// Kills the child on drop so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn quick_start_flags_serve_every_model_from_one_backend() {
    let backend = ScriptedBackend::start().await;
    let mut child = Child(
        gateway_binary()
            .args(["--listen", "127.0.0.1:0", "--backend-url", &backend.base_url()])
            .env("ANTWORT_TELEMETRY__LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("log line");
            let entry: Value = serde_json::from_str(&line).expect("JSON log line");
            if let Some(addr) = entry["addr"].as_str() {
                return addr.to_string();
            }
        }
        panic!("the gateway never said where it listens");
    })
    .await
    .expect("reader");
    let response = client()
        .post(format!("http://{addr}/v1/responses"))
        .bearer_auth("ignored-without-users")
        .json(&json!({"model": "any-model-name", "input": "hello binary"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_response(&body);
    assert_eq!(output_text(&body), "You said: hello binary");
    assert_eq!(backend.requests()[0].body["model"], "any-model-name");

    // SIGTERM drains and exits cleanly.
    let pid = child.0.id();
    let status =
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success());
    let exit =
        tokio::task::spawn_blocking(move || child.0.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn environment_overrides_and_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nbackends:\n  vllm:\n    url: http://127.0.0.1:8000/v1\nmodels:\n  - name: llama\n    backend: vlm\n",
    )
    .expect("write");
    let out = gateway_binary()
        .args(["--config", path.to_str().expect("utf8"), "--check-config"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64), "config errors exit 64");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("models[0].backend"), "{stderr}");

    std::fs::write(&path, "listen: 127.0.0.1:0\nlimits:\n  max_body_bytes: lots\n").expect("write");
    let out = gateway_binary()
        .args(["--config", path.to_str().expect("utf8"), "--check-config"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_body_bytes"));

    let out = gateway_binary()
        .arg("--check-config")
        .env("ANTWORT_BACKEND_URL", "http://127.0.0.1:8000/v1")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = gateway_binary().arg("--check-config").output().expect("runs");
    assert_eq!(out.status.code(), Some(64), "no backend at all is a config error");

    let out = gateway_binary().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--backend-url"] {
        assert!(help.contains(flag), "{help}");
    }
}
