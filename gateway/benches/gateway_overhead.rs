//! What the gateway adds on top of the model backend, measured against the scripted backend
//! called directly in the same run:
//! - non-streaming latency p50/p99 at concurrency 1,
//! - throughput (req/s) at concurrency 64,
//! - streaming time to first token;
//!
//! and what storing costs (`store: true`), as stored responses/s at concurrency 64 against the
//! gateway answering `store: false` in the same run:
//! - the embedded SQLite store (a temp file),
//! - PostgreSQL: a real cluster started in a temp dir for this run (the test harness,
//!   tests/support/postgres.rs: initdb + pg_ctl, as the `postgres` user via runuser when root,
//!   `fsync=off`) and stopped at the end. Without initdb (or if it cannot start) the row is
//!   skipped with the reason printed;
//! - the same for `stream: true` (read to the end), where storing also writes the
//!   `in_progress` record and the batched events.
//!
//! Run: `cargo bench -p antwort-gateway --bench gateway_overhead`. `ANTWORT_BENCH_SECS` sets the
//! length of each throughput run (default 5); `ANTWORT_BENCH_ONLY=store` runs only the store
//! rows. Targets (2 cores): at most +0.3 ms p50 added, at concurrency 64 at least half of the
//! direct backend's req/s, and at least 1,500 stored responses/s with PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use antwort_gateway::config::{RawConfig, RawStore};
use antwort_scripted_backend::{Options, Script, ScriptedBackend};
use serde_json::json;

const SEQUENTIAL_REQUESTS: usize = 2000;
const STREAM_REQUESTS: usize = 500;
const CONCURRENCY: usize = 64;
/// Stored responses/s the PostgreSQL store must sustain at concurrency 64.
const PG_TARGET_RPS: f64 = 1500.0;

#[path = "../tests/support/postgres.rs"]
mod postgres;

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
    let only_store = std::env::var("ANTWORT_BENCH_ONLY").is_ok_and(|v| v == "store");
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
    let gateway_url = gateway_rt.block_on(start_gateway(&backend_url, None));
    let sqlite_dir = tempfile::tempdir().expect("temp dir");
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("bench.db").display());
    let sqlite_gateway_url = gateway_rt.block_on(start_gateway(&backend_url, Some(sqlite_url)));
    let pg = start_postgres(&gateway_rt);
    let pg_gateway_url = match &pg {
        Ok(url) => Ok(gateway_rt.block_on(start_gateway(&backend_url, Some(url.clone())))),
        Err(reason) => Err(reason.clone()),
    };

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
    let responses = |url: &str, store: bool| Target {
        url: format!("{url}/v1/responses"),
        body: json!({"model": "bench", "input": "hello", "store": store}).to_string().into(),
        stream_body: json!({"model": "bench", "input": "hello", "stream": true, "store": store})
            .to_string()
            .into(),
        first_token_marker: "response.output_text.delta",
    };
    let unstored = responses(&gateway_url, false);
    let sqlite = responses(&sqlite_gateway_url, true);
    let pg_target = pg_gateway_url.map(|url| responses(&url, true));

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
        if !only_store {
            overhead_rows(&client, &direct, &via_gateway, secs).await;
        }
        store_rows(&client, &unstored, &sqlite, pg_target.as_ref(), secs).await;
    });
    drop(gateway_rt);
    if pg.is_ok() {
        postgres::cluster().stop_with("fast");
    }
    backend_rt.block_on(backend.shutdown());
}

/// Starts a gateway on the current runtime: the in-memory store when `store_url` is `None`.
async fn start_gateway(backend_url: &str, store_url: Option<String>) -> String {
    let mut raw = RawConfig {
        backend_url: Some(backend_url.to_string()),
        auth: antwort_gateway::config::RawAuth::development(),
        ..RawConfig::default()
    };
    if let Some(url) = &store_url {
        raw.store = RawStore { url: url.clone(), ..RawStore::default() };
    }
    let config = raw.validate().expect("config");
    let app = match store_url {
        None => antwort_gateway::build(&config).expect("gateway"),
        Some(_) => {
            let store = antwort_gateway::open_store(&config).await.expect("store opens");
            antwort_gateway::build_with_store(&config, store).expect("gateway")
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(antwort_gateway::serve(
        listener,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    url
}

/// A fresh database on a PostgreSQL cluster started for this run, or why there is none.
fn start_postgres(rt: &tokio::runtime::Runtime) -> Result<String, String> {
    let bin = std::env::var_os("PG_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/lib/postgresql/15/bin"));
    if !bin.join("initdb").exists() {
        return Err(format!(
            "no initdb at {} (apt-get install postgresql-15, or set PG_BIN)",
            bin.display()
        ));
    }
    // The harness asserts (it is written for tests); here a failed start skips the row.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(postgres::fresh_database())
    }))
    .map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".to_string());
        format!("PostgreSQL did not start: {message}")
    })
}

async fn store_rows(
    client: &reqwest::Client,
    unstored: &Target,
    sqlite: &Target,
    pg: Result<&Target, &String>,
    secs: u64,
) {
    for target in [Some(unstored), Some(sqlite), pg.ok()].into_iter().flatten() {
        for _ in 0..200 {
            one(client, target, false).await;
        }
        assert_stored(client, target).await;
    }
    let length = Duration::from_secs(secs);
    let base = throughput(client, unstored, length).await;
    let sqlite_rps = throughput(client, sqlite, length).await;
    let pg_rps = match pg {
        Ok(target) => Ok(throughput(client, target, length).await),
        Err(reason) => Err(reason),
    };
    // Streamed: a stored stream also writes its `in_progress` record and its events (batched).
    let streamed = |target: &Target| Target {
        url: target.url.clone(),
        body: target.stream_body.clone(),
        stream_body: target.stream_body.clone(),
        first_token_marker: target.first_token_marker,
    };
    let stream_base = throughput(client, &streamed(unstored), length).await;
    let stream_sqlite = throughput(client, &streamed(sqlite), length).await;
    let stream_pg = match pg {
        Ok(target) => Some(throughput(client, &streamed(target), length).await),
        Err(_) => None,
    };
    println!();
    println!(
        "store: true vs store: false through the gateway (same run, concurrency {CONCURRENCY})"
    );
    println!("{:<34} {:>12} {:>16}", "engine", "req/s", "vs store:false");
    println!("{:<34} {:>12.0} {:>15.2}x", "store: false (baseline)", base, 1.0);
    println!(
        "{:<34} {:>12.0} {:>15.2}x",
        "store: true, SQLite (temp file)",
        sqlite_rps,
        sqlite_rps / base
    );
    match &pg_rps {
        Ok(rps) => println!(
            "{:<34} {:>12.0} {:>15.2}x",
            "store: true, PostgreSQL (fsync=off)",
            rps,
            rps / base
        ),
        Err(reason) => println!("{:<34} skipped: {reason}", "store: true, PostgreSQL"),
    }
    println!("{:<34} {:>12.0} {:>15.2}x", "stream, store: false (baseline)", stream_base, 1.0);
    println!(
        "{:<34} {:>12.0} {:>15.2}x",
        "stream, store: true, SQLite",
        stream_sqlite,
        stream_sqlite / stream_base
    );
    if let Some(rps) = stream_pg {
        println!(
            "{:<34} {:>12.0} {:>15.2}x",
            "stream, store: true, PostgreSQL",
            rps,
            rps / stream_base
        );
    }
    println!();
    match pg_rps {
        Ok(rps) => println!(
            "target: stored responses/s with PostgreSQL at c={CONCURRENCY} >= {PG_TARGET_RPS:.0}: {} ({rps:.0})",
            if rps >= PG_TARGET_RPS { "met" } else { "MISSED" }
        ),
        Err(_) => println!(
            "target: stored responses/s with PostgreSQL >= {PG_TARGET_RPS:.0}: not measured (row skipped)"
        ),
    }
}

/// A response created with `store: true` can be read back: the row measures real writes.
async fn assert_stored(client: &reqwest::Client, target: &Target) {
    let created: serde_json::Value = client
        .post(&target.url)
        .header("content-type", "application/json")
        .body(target.body.clone())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let id = created["id"].as_str().expect("a response id");
    let status = client.get(format!("{}/{id}", target.url)).send().await.expect("get").status();
    let stored = created["store"].as_bool().unwrap_or(true);
    assert_eq!(status.is_success(), stored, "GET {id} after store: {stored} answered {status}");
}

async fn overhead_rows(client: &reqwest::Client, direct: &Target, via_gateway: &Target, secs: u64) {
    {
        // Warm up connections and code paths.
        for target in [direct, via_gateway] {
            for _ in 0..200 {
                one(client, target, false).await;
            }
        }
        let d_lat = latencies(client, direct).await;
        let g_lat = latencies(client, via_gateway).await;
        let d_ttft = ttfts(client, direct).await;
        let g_ttft = ttfts(client, via_gateway).await;
        let d_rps = throughput(client, direct, Duration::from_secs(secs)).await;
        let g_rps = throughput(client, via_gateway, Duration::from_secs(secs)).await;

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
    }
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
                    let status = response.status();
                    let _ = response.bytes().await.expect("body");
                    assert!(status.is_success(), "status {status}");
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
