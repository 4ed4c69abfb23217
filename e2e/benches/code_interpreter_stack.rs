//! The code_interpreter tool's overhead through the whole one-machine stack (`antwort up`):
//! gateway -> pool manager claim -> sandbox agent over mTLS, every component a real process,
//! the model excluded (the scripted backend answers in well under a millisecond). Each row is
//! compared with a response answered without a tool, measured in the same run:
//!
//! - `warm container`: the request names a container (as a chain does): gateway loop + agent
//!   round trip + the execution of `print(1)`.
//! - `new container, warm pool`: `container: {"type": "auto"}` without a chain: additionally a
//!   claim from the pool manager and a new agent session. Before each sample the bench waits
//!   until the pool is back at `minReady`, so every claim meets a warm pool.
//!
//! Target (issue 6, 2 cores): tool overhead at most 20 ms p50 for `print(1)` on a warm pool.
//! The binaries are release builds (`cargo bench` runs from the release folder, and the
//! binaries are built beside it on first use).
//!
//! Run: `cargo bench -p antwort-e2e --bench code_interpreter_stack`.

use std::time::{Duration, Instant};

use antwort_e2e::antwort_up::{self, AntwortUp};
use serde_json::{Value, json};

const WARM_SAMPLES: usize = 200;
const NEW_CONTAINER_SAMPLES: usize = 40;
const MIN_READY: u32 = 4;
const TARGET_MS: f64 = 20.0;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A request whose scripted model calls `python` with `print(1)` in `container` (or, without
/// one, answers directly).
fn request(container: Option<Value>) -> Value {
    let mut turns = Vec::new();
    if container.is_some() {
        turns.push(json!({"tool_calls": [{"name": "python", "arguments": {"code": "print(1)"}}]}));
    }
    turns.push(json!({"content": "1"}));
    let mut body = json!({
        "model": "scripted",
        "instructions": format!("SCRIPT: {}", json!({ "turns": turns })),
        "input": "print 1",
        "store": false,
    });
    if let Some(container) = container {
        body["tools"] = json!([{"type": "code_interpreter", "container": container}]);
    }
    body
}

async fn timed(client: &reqwest::Client, url: &str, body: &Value) -> (Duration, Value) {
    let started = Instant::now();
    let response = client.post(url).json(body).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let elapsed = started.elapsed();
    assert_eq!(answer["status"], "completed", "{answer}");
    if body.get("tools").is_some() {
        assert_eq!(answer["output"][0]["status"], "completed", "{answer}");
    }
    (elapsed, answer)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let min_ready = MIN_READY.to_string();
    let mut up = AntwortUp::spawn(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--pool-min-ready", &min_ready, "--pool-max-pods", "16"],
        // Containers end a second after their response, so their claims go back quickly.
        &[("ANTWORT_TOOLS__CODE_INTERPRETER__IDLE_TIMEOUT_SECS", "1")],
    );
    let ready = up.wait_ready();
    let admin = ready.pool_manager_admin.clone();
    let url = format!("{}/responses", ready.base_url);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::new();
        // The warm container, kept alive by the warm rows' own use (idle timeout 1 s).
        let (_, first) = timed(&client, &url, &request(Some(json!({"type": "auto"})))).await;
        let container = first["output"][0]["container_id"].clone();

        let mut results = Vec::new();
        for (name, body) in [
            ("no tool (baseline)", request(None)),
            ("python print(1), warm container", request(Some(container.clone()))),
        ] {
            for _ in 0..20 {
                timed(&client, &url, &body).await;
            }
            let mut samples = Vec::with_capacity(WARM_SAMPLES);
            for _ in 0..WARM_SAMPLES {
                samples.push(timed(&client, &url, &body).await.0);
            }
            samples.sort();
            results.push((name, percentile(&samples, 0.5), percentile(&samples, 0.99)));
        }

        let body = request(Some(json!({"type": "auto"})));
        let mut samples = Vec::with_capacity(NEW_CONTAINER_SAMPLES);
        for _ in 0..NEW_CONTAINER_SAMPLES {
            let deadline = Instant::now() + Duration::from_secs(60);
            while antwort_up::ready_sandboxes(&client, &admin, "python").await.unwrap_or(0)
                < MIN_READY
            {
                assert!(Instant::now() < deadline, "the pool did not refill:\n{}", up.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples.push(timed(&client, &url, &body).await.0);
        }
        samples.sort();
        results.push((
            "python print(1), new container, warm pool",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
        ));

        let base = results[0].1;
        println!(
            "code_interpreter through antwort up (release builds; {WARM_SAMPLES} sequential \
             responses per warm row, {NEW_CONTAINER_SAMPLES} for the new-container row), ms:"
        );
        for (name, p50, p99) in &results {
            println!(
                "  {name:<42} p50 {p50:8.3}  p99 {p99:8.3}  ({:.2}x baseline p50)",
                p50 / base
            );
        }
        for (label, row) in [("warm container", 1), ("new container, warm pool", 2)] {
            let overhead = results[row].1 - base;
            println!(
                "tool overhead p50 ({label}): {overhead:.3} ms (target <= {TARGET_MS} ms): {}",
                if overhead <= TARGET_MS { "met" } else { "NOT met" }
            );
        }
    });
    up.signal(nix::sys::signal::Signal::SIGTERM);
    up.wait_exit(Duration::from_secs(30));
}
