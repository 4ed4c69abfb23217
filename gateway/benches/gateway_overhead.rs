//! What the gateway adds on top of the model backend, measured against the scripted backend
//! called directly in the same run:
//! - non-streaming latency p50/p99 at concurrency 1,
//! - throughput (req/s) at concurrency 64,
//! - streaming time to first token.
//!
//! Run: `cargo bench -p antwort-gateway --bench gateway_overhead`. `ANTWORT_BENCH_SECS` sets the
//! length of each throughput run (default 5). Targets (2 cores): at most +0.3 ms p50 added, and at
//! concurrency 64 at least half of the direct backend's req/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use antwort_gateway::config::RawConfig;
use antwort_scripted_backend::{Options, Script, ScriptedBackend};
use serde_json::json;

const SEQUENTIAL_REQUESTS: usize = 2000;
const STREAM_REQUESTS: usize = 500;
const CONCURRENCY: usize = 64;

struct Target {
    url: String,
    body: bytes::Bytes,
    stream_body: bytes::Bytes,
    /// A substring marking the first token in the stream.
    first_token_marker: &'static str,
}

fn main() {
    let secs: u64 =
        std::env::var("ANTWORT_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The backend and the gateway each get their own runtime thread, as separate servers would.
    let backend_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let backend = backend_rt.block_on(async {
        let backend = ScriptedBackend::start_with(
            "127.0.0.1:0".parse().expect("addr"),
            Options { record_limit: 0, ..Options::default() },
        )
        .await
        .expect("backend starts");
        backend.set_default(
            Script::text("The quick brown fox jumps over the lazy dog.").chunk_chars(8),
        );
        backend
    });
    let backend_url = backend.base_url();

    let gateway_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let gateway_url = gateway_rt.block_on(async {
        let config = RawConfig {
            backend_url: Some(backend_url.clone()),
            auth: antwort_gateway::config::RawAuth::development(),
            ..RawConfig::default()
        }
        .validate()
        .expect("config");
        let app = antwort_gateway::build(&config).expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(antwort_gateway::serve(
            listener,
            app,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        url
    });

    let direct = Target {
        url: format!("{backend_url}/chat/completions"),
        body: json!({"model": "bench", "messages": [{"role": "user", "content": "hello"}]}).to_string().into(),
        stream_body: json!({"model": "bench", "stream": true, "messages": [{"role": "user", "content": "hello"}]}).to_string().into(),
        first_token_marker: "\"content\":\"The",
    };
    let via_gateway = Target {
        url: format!("{gateway_url}/v1/responses"),
        body: json!({"model": "bench", "input": "hello"}).to_string().into(),
        stream_body: json!({"model": "bench", "input": "hello", "stream": true}).to_string().into(),
        first_token_marker: "response.output_text.delta",
    };

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    client_rt.block_on(async {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()
            .expect("client");
        // Warm up connections and code paths.
        for target in [&direct, &via_gateway] {
            for _ in 0..200 {
                one(&client, target, false).await;
            }
        }
        let d_lat = latencies(&client, &direct).await;
        let g_lat = latencies(&client, &via_gateway).await;
        let d_ttft = ttfts(&client, &direct).await;
        let g_ttft = ttfts(&client, &via_gateway).await;
        let d_rps = throughput(&client, &direct, Duration::from_secs(secs)).await;
        let g_rps = throughput(&client, &via_gateway, Duration::from_secs(secs)).await;

        let (d50, d99) = (pct(&d_lat, 0.50), pct(&d_lat, 0.99));
        let (g50, g99) = (pct(&g_lat, 0.50), pct(&g_lat, 0.99));
        let (dt50, gt50) = (pct(&d_ttft, 0.50), pct(&g_ttft, 0.50));
        println!();
        println!(
            "gateway overhead vs the scripted backend called directly (same run, same machine)"
        );
        println!(
            "{:<34} {:>12} {:>14} {:>16}",
            "metric", "direct", "via gateway", "gateway/direct"
        );
        println!(
            "{:<34} {:>9.3} ms {:>11.3} ms {:>15.2}x  (+{:.3} ms)",
            "non-streaming p50, concurrency 1",
            d50,
            g50,
            g50 / d50,
            g50 - d50
        );
        println!(
            "{:<34} {:>9.3} ms {:>11.3} ms {:>15.2}x  (+{:.3} ms)",
            "non-streaming p99, concurrency 1",
            d99,
            g99,
            g99 / d99,
            g99 - d99
        );
        println!(
            "{:<34} {:>9.3} ms {:>11.3} ms {:>15.2}x  (+{:.3} ms)",
            "streaming time to first token p50",
            dt50,
            gt50,
            gt50 / dt50,
            gt50 - dt50
        );
        println!(
            "{:<34} {:>12.0} {:>14.0} {:>15.2}x",
            "req/s, concurrency 64",
            d_rps,
            g_rps,
            g_rps / d_rps
        );
        println!();
        let added_ok = g50 - d50 <= 0.3;
        let rps_ok = g_rps >= d_rps / 2.0;
        println!(
            "target: p50 added <= 0.300 ms: {} (+{:.3} ms)",
            if added_ok { "met" } else { "MISSED" },
            g50 - d50
        );
        println!(
            "target: req/s at c=64 >= 0.50x direct: {} ({:.2}x)",
            if rps_ok { "met" } else { "MISSED" },
            g_rps / d_rps
        );
    });
    drop(gateway_rt);
    backend_rt.block_on(backend.shutdown());
}

async fn one(client: &reqwest::Client, target: &Target, stream: bool) {
    let body = if stream { target.stream_body.clone() } else { target.body.clone() };
    let response = client
        .post(&target.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "status {}", response.status());
    let _ = response.bytes().await.expect("body");
}

async fn latencies(client: &reqwest::Client, target: &Target) -> Vec<f64> {
    let mut out = Vec::with_capacity(SEQUENTIAL_REQUESTS);
    for _ in 0..SEQUENTIAL_REQUESTS {
        let start = Instant::now();
        one(client, target, false).await;
        out.push(start.elapsed().as_secs_f64() * 1e3);
    }
    out
}

async fn ttfts(client: &reqwest::Client, target: &Target) -> Vec<f64> {
    let mut out = Vec::with_capacity(STREAM_REQUESTS);
    for _ in 0..STREAM_REQUESTS {
        let start = Instant::now();
        let mut response = client
            .post(&target.url)
            .header("content-type", "application/json")
            .body(target.stream_body.clone())
            .send()
            .await
            .expect("request");
        let mut seen = Vec::new();
        let mut first = None;
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            seen.extend_from_slice(&chunk);
            if first.is_none() && memchr(&seen, target.first_token_marker.as_bytes()) {
                first = Some(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        out.push(first.expect("a first token"));
    }
    out
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn throughput(client: &reqwest::Client, target: &Target, length: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let (url, body) = (target.url.clone(), target.body.clone());
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    let _ = response.bytes().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
