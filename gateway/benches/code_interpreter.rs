//! The code_interpreter tool's overhead on a response, model excluded: a response whose model
//! calls `python` with `print(1)` and then answers, against the same response answered without
//! a tool (both against the scripted backend, which answers in well under a millisecond), in
//! the same run. The difference is what running the tool costs: the gateway's loop, the agent
//! round trip over mTLS and the execution itself. Target (2 cores): at most 20 ms p50 for a warm
//! container.
//!
//! Rows: `warm` runs in one container (the request names it, as a chain does); `new container`
//! opens a fresh agent session per response (`container: {"type": "auto"}` without a chain).
//! The agent is a real `antwort-sandbox-agent` process reached directly (`tools.code_interpreter.agent`);
//! claiming from a warm pool adds the pool manager's claim (see its `claims` bench, ~0.2 ms p50).
//!
//! Run: `cargo bench -p antwort-gateway --bench code_interpreter` (`ANTWORT_SANDBOX_AGENT_BIN`
//! picks the agent binary; default: built into this target folder).

use std::time::{Duration, Instant};

use antwort_scripted_backend::{Options, Script, ScriptedBackend};
use serde_json::{Value, json};

#[path = "../tests/support/agent.rs"]
mod agent;

const REQUESTS: usize = 200;
const TARGET_MS: f64 = 20.0;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn timed(
    client: &reqwest::Client,
    url: &str,
    backend: &ScriptedBackend,
    scripts: &[Script],
    body: &Value,
) -> Duration {
    for script in scripts {
        backend.enqueue(script.clone());
    }
    let started = Instant::now();
    let response = client.post(url).json(body).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let elapsed = started.elapsed();
    assert_eq!(answer["status"], "completed", "{answer}");
    elapsed
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let backend = ScriptedBackend::start_with(
            "127.0.0.1:0".parse().expect("addr"),
            Options { record_limit: 0, ..Options::default() },
        )
            .await
            .expect("backend");
        let agent = agent::Agent::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let svid = dir.path().join("gateway-svid");
        agent.write_svid(agent::GATEWAY_ID, &svid);
        let mut raw = antwort_gateway::config::RawConfig {
            backend_url: Some(backend.base_url()),
            ..Default::default()
        };
        raw.auth.mode = antwort_gateway::config::AuthMode::None;
        raw.store.url = "memory".into();
        raw.tools = serde_json::from_value(json!({
            "code_interpreter": {
                "identity": {"source": "files", "dir": svid},
                "agent": {"url": agent.api, "spiffe_id": agent::AGENT_ID},
                "agent_spiffe_ids": [{"trust_domain": agent::TRUST_DOMAIN, "path_prefix": "/ns/sandboxes/"}],
            }
        }))
        .expect("tools");
        let config = raw.validate().expect("config");
        let app = antwort_gateway::build(&config).expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1/responses", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        let client = reqwest::Client::new();

        let python = Script::tool_call("python", r#"{"code": "print(1)"}"#);
        let answer = Script::text("1");
        let ci = |container: Value| {
            json!({"model": "m", "input": "print 1", "store": false,
                   "tools": [{"type": "code_interpreter", "container": container}]})
        };
        // A container to reuse, as a chain would.
        let first: Value = {
            backend.enqueue(python.clone());
            backend.enqueue(answer.clone());
            let r = client.post(&url).json(&ci(json!({"type": "auto"}))).send().await.expect("first");
            r.json().await.expect("json")
        };
        let container = first["output"][0]["container_id"].clone();
        assert!(container.as_str().is_some_and(|c| c.starts_with("cntr_")), "{first}");

        let plain = json!({"model": "m", "input": "print 1", "store": false});
        let rows: [(&str, Vec<Script>, Value); 3] = [
            ("no tool (baseline)", vec![answer.clone()], plain),
            ("python print(1), warm container", vec![python.clone(), answer.clone()], ci(container)),
            ("python print(1), new container", vec![python.clone(), answer.clone()], ci(json!({"type": "auto"}))),
        ];
        let mut results = Vec::new();
        for (name, scripts, body) in &rows {
            for _ in 0..20 {
                timed(&client, &url, &backend, scripts, body).await;
            }
            let mut samples = Vec::with_capacity(REQUESTS);
            for _ in 0..REQUESTS {
                samples.push(timed(&client, &url, &backend, scripts, body).await);
            }
            samples.sort();
            results.push((name, percentile(&samples, 0.5), percentile(&samples, 0.99)));
        }
        let base = results[0].1;
        println!("code_interpreter overhead, {REQUESTS} sequential responses each (ms):");
        for (name, p50, p99) in &results {
            println!("  {name:<34} p50 {p50:8.3}  p99 {p99:8.3}  ({:.2}x baseline p50)", p50 / base);
        }
        let warm = results[1].1 - base;
        println!(
            "tool overhead p50 (warm container): {warm:.3} ms (target <= {TARGET_MS} ms): {}",
            if warm <= TARGET_MS { "met" } else { "NOT met" }
        );
        println!("tool overhead p50 (new container):  {:.3} ms", results[2].1 - base);
    });
}
