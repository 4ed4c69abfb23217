//! How much the scripted backend costs over a bare hyper server on the same machine.
//!
//! Baseline (measured in the same run): a hyper http1 server that answers every request with a
//! fixed JSON body, no parsing. Then the scripted backend: echo without and with streaming,
//! streaming with recording on, and a parallel tool-call stream. Each case sends `REQUESTS`
//! requests from `CONCURRENCY` keep-alive clients over loopback, and prints throughput and
//! latency percentiles, with throughput as a ratio of the baseline's.
//!
//! Run: `cargo bench -p antwort-scripted-backend` (env `BENCH_REQUESTS`, `BENCH_CONCURRENCY`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use antwort_scripted_backend::{Options, Script, ScriptedBackend};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// A bare server: the floor any HTTP server on this machine and client can reach.
async fn baseline_server() -> SocketAddr {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the baseline server");
    let addr = listener.local_addr().expect("local address");
    let body = Bytes::from_static(br#"{"id":"x","object":"chat.completion","choices":[]}"#);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn run(url: &str, body: &Value, requests: usize, concurrency: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("building the client");
    let body = serde_json::to_vec(body).expect("serializing the request");
    // Warm up the connections.
    for _ in 0..concurrency {
        client.post(url).body(body.clone()).send().await.expect("warm-up").bytes().await.ok();
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        let body = body.clone();
        let count = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("sending");
                assert!(response.status().is_success());
                response.bytes().await.expect("reading the body");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let requests = env_number("BENCH_REQUESTS", 20_000);
    let concurrency = env_number("BENCH_CONCURRENCY", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the runtime");
    runtime.block_on(async {
        let baseline = baseline_server().await;
        let quiet = Options { record_limit: 0, ..Options::default() };
        let backend = ScriptedBackend::start_with(([127, 0, 0, 1], 0).into(), quiet)
            .await
            .expect("starting the backend");
        backend.on_model("tools", tool_calls());
        let recording = ScriptedBackend::start().await;
        let chat_url = |base: String| format!("{base}/chat/completions");
        let prompt = "Write one short sentence about the weather in Zurich today, please.";
        let plain = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
        let mut stream = plain.clone();
        stream["stream"] = json!(true);
        stream["stream_options"] = json!({"include_usage": true});
        let mut tools = stream.clone();
        tools["model"] = json!("tools");

        let cases: [(&str, String, &Value); 5] = [
            (
                "baseline: bare hyper, fixed body",
                format!("http://{baseline}/v1/chat/completions"),
                &plain,
            ),
            ("scripted: echo, non-streaming", chat_url(backend.base_url()), &plain),
            ("scripted: echo, streaming (~20 events)", chat_url(backend.base_url()), &stream),
            ("scripted: echo, streaming, recording", chat_url(recording.base_url()), &stream),
            ("scripted: 2 parallel tool calls, streaming", chat_url(backend.base_url()), &tools),
        ];
        println!("{requests} requests per case, {concurrency} concurrent keep-alive clients");
        let mut baseline_rate = None;
        for (name, url, body) in cases {
            let figures = run(&url, body, requests, concurrency).await;
            let base = *baseline_rate.get_or_insert(figures.per_second);
            println!(
                "{name:<44} {:>9.0} req/s  {:>5.2}x baseline  p50 {:>7.3} ms  p99 {:>7.3} ms",
                figures.per_second,
                figures.per_second / base,
                figures.p50.as_secs_f64() * 1000.0,
                figures.p99.as_secs_f64() * 1000.0,
            );
        }
        backend.shutdown().await;
        recording.shutdown().await;
    });
}

fn tool_calls() -> Script {
    Script::tool_call("python", r#"{"code": "import math\nprint(math.sqrt(2))"}"#)
        .and_tool_call("get_weather", r#"{"city": "Zurich", "unit": "celsius"}"#)
        .chunk_chars(8)
}
