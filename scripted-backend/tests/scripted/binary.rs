//! The `antwort-scripted-backend` binary: script file, listen line, directives, exit codes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::client;

const BIN: &str = env!("CARGO_BIN_EXE_antwort-scripted-backend");

/// Starts the binary on a free port; returns it and its base URL from the listen line.
async fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a listen line within 10 s")
        .expect("reading stdout")
        .expect("a line");
    let base_url = line.strip_prefix("listening on ").expect("the listen line").to_owned();
    (child, base_url)
}

#[tokio::test]
async fn serves_a_yaml_script_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("script.yaml");
    std::fs::write(
        &path,
        r#"
model_names: [listed-only]
models:
  agent:
    turns:
      - tool_calls: [{name: python, arguments: {code: "print(2)"}}]
      - content: done
queue:
  - failure: {kind: http, status: 429, message: slow down, retry_after: "1"}
default:
  content: default reply
"#,
    )
    .expect("writing the script");
    let (mut child, base_url) = spawn(&["--script", path.to_str().expect("utf-8 path")]).await;
    let url = format!("{base_url}/chat/completions");
    let ask =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    let response = client().post(&url).json(&ask("agent")).send().await.expect("sending");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    let body: Value = client()
        .post(&url)
        .json(&ask("agent"))
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"code":"print(2)"}"#
    );
    let body: Value = client()
        .post(&url)
        .json(&ask("agent"))
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["choices"][0]["message"]["content"], "done");
    let body: Value = client()
        .post(&url)
        .json(&ask("other"))
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["choices"][0]["message"]["content"], "default reply");

    let models: Value = client()
        .get(format!("{base_url}/models"))
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<_> =
        models["data"].as_array().expect("data").iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, [json!("agent"), json!("listed-only")]);

    child.start_kill().expect("stopping the binary");
    child.wait().await.expect("reaping the binary");
}

#[tokio::test]
async fn echoes_and_obeys_directives_without_a_script() {
    let (mut child, base_url) = spawn(&[]).await;
    let url = format!("{base_url}/chat/completions");
    let body: Value = client()
        .post(&url)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["choices"][0]["message"]["content"], "You said: ping");

    let directive =
        r#"SCRIPT: {"failure": {"kind": "http", "status": 503}, "fail_times": 1, "content": "up"}"#;
    let request = json!({"model": "m", "messages": [{"role": "system", "content": directive}]});
    let first = client().post(&url).json(&request).send().await.expect("sending");
    assert_eq!(first.status(), 503);
    let second: Value = client()
        .post(&url)
        .json(&request)
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(second["choices"][0]["message"]["content"], "up");

    child.start_kill().expect("stopping the binary");
    child.wait().await.expect("reaping the binary");
}

#[tokio::test]
async fn a_bad_script_file_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"models": {"m": {"content": "x", "ttft": 5}}}"#).expect("writing");
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(&path)
        .output()
        .await
        .expect("running the binary");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.json") && stderr.contains("ttft"), "{stderr}");

    let output = Command::new(BIN).arg("--help").output().await.expect("running --help");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--script"));
}

#[tokio::test]
async fn the_admin_api_scripts_and_reports() {
    let (mut child, base_url) = spawn(&["--admin"]).await;
    let root = base_url.strip_suffix("/v1").expect("base URL ends in /v1");
    let url = format!("{base_url}/chat/completions");
    let admin = |path: &str| format!("{root}/_scripted/{path}");

    let put = client()
        .put(admin("models/slow"))
        .body(r#"{"content": "abcdef", "chunk_chars": 1, "chunk_delay_ms": 100}"#)
        .send()
        .await
        .expect("PUT model script");
    assert_eq!(put.status(), 204);
    let queued =
        client().post(admin("queue")).body(r#"{"content": "queued"}"#).send().await.expect("POST");
    assert_eq!(queued.status(), 204);
    let bad = client().post(admin("queue")).body(r#"{"contents": 1}"#).send().await.expect("POST");
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.expect("JSON error");
    assert!(error["error"]["message"].as_str().expect("message").contains("contents"));

    let ask = json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]});
    let body: Value = client()
        .post(&url)
        .header("x-test", "1")
        .json(&ask)
        .send()
        .await
        .expect("sending")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["choices"][0]["message"]["content"], "queued");

    let mut streaming = ask.clone();
    streaming["stream"] = json!(true);
    let response = client().post(&url).json(&streaming).send().await.expect("sending");
    let mut stream = futures::StreamExt::boxed(response.bytes_stream());
    futures::StreamExt::next(&mut stream).await.expect("a chunk").expect("bytes");
    drop(stream);

    let mut cancellations = Value::Null;
    for _ in 0..50 {
        cancellations = client()
            .get(admin("cancellations"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        if cancellations.as_array().is_some_and(|list| !list.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cancellations[0]["model"], "slow");
    assert_eq!(cancellations[0]["request_index"], 1);

    let requests: Value =
        client().get(admin("requests")).send().await.expect("GET").json().await.expect("JSON");
    assert_eq!(requests.as_array().map(Vec::len), Some(2), "admin calls are not recorded");
    assert_eq!(requests[0]["headers"]["x-test"], "1");
    assert_eq!(requests[0]["body"], ask);
    assert_eq!(requests[1]["body"]["stream"], true);

    let cleared = client().delete(admin("requests")).send().await.expect("DELETE");
    assert_eq!(cleared.status(), 204);
    let requests: Value =
        client().get(admin("requests")).send().await.expect("GET").json().await.expect("JSON");
    assert_eq!(requests, json!([]));

    child.start_kill().expect("stopping the binary");
    child.wait().await.expect("reaping the binary");
}

#[tokio::test]
async fn without_admin_the_control_api_is_absent() {
    let (mut child, base_url) = spawn(&[]).await;
    let root = base_url.strip_suffix("/v1").expect("base URL ends in /v1");
    let response = client().get(format!("{root}/_scripted/requests")).send().await.expect("GET");
    assert_eq!(response.status(), 404);
    child.start_kill().expect("stopping the binary");
    child.wait().await.expect("reaping the binary");
}

#[tokio::test]
async fn sigterm_stops_it_promptly_even_with_a_stalled_stream_open() {
    let (mut child, base_url) = spawn(&[]).await;
    let directive =
        r#"SCRIPT: {"content": "abc", "failure": {"kind": "stall", "after_chunks": 1}}"#;
    let request = json!({"model": "m", "stream": true, "messages": [{"role": "system", "content": directive}]});
    let response = client()
        .post(format!("{base_url}/chat/completions"))
        .json(&request)
        .send()
        .await
        .expect("sending");
    assert_eq!(response.status(), 200);

    let pid = child.id().expect("a running child");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sending SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s")
        .expect("reaping the binary");
    assert!(status.success(), "{status:?}");
    drop(response);
}
