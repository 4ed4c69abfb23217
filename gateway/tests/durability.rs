//! Durability of stored responses under crashes, on real parts: real `antwort-gateway`
//! processes (killed with SIGKILL in the middle of a load of concurrent `store: true`
//! requests) on a real SQLite file and a real PostgreSQL server, and a PostgreSQL server
//! stopped (`pg_ctl stop -m fast`, and `-m immediate`: a crash) and started again under load
//! while the same gateway process keeps serving.
//!
//! The promise checked: a response whose HTTP reply (200 with an id) reached the client is in
//! the database; while the database is down, requests get 503 `store_unavailable` in the error
//! envelope, never a hang or a 500; and the gateway serves again once the database is back.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/process.rs"]
mod process;
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antwort_scripted_backend::{Script, ScriptedBackend};
use process::GatewayProcess;
use serde_json::{Value, json};

/// Every request is bounded: a hang is a failure, not a stuck test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Concurrent clients of the load.
const CLIENTS: usize = 8;

/// A gateway process with a short store acquire timeout: while the database is down a request
/// waits at most 1 s for a connection before its 503.
async fn start_process(
    dir: &Path,
    name: &str,
    backend: &ScriptedBackend,
    store_url: &str,
) -> GatewayProcess {
    let yaml = format!(
        "listen: 127.0.0.1:0\nbackend_url: {}\nshutdown_grace_period_secs: 2\nauth: {{ mode: none }}\nstore: {{ url: \"{store_url}\", acquire_timeout_secs: 1.0 }}\n",
        backend.base_url()
    );
    GatewayProcess::start(dir, name, &yaml).await
}

/// What the load saw.
#[derive(Default)]
struct Outcomes {
    /// (id, input) of every 200 received.
    acknowledged: Vec<(String, String)>,
    /// How many 503 `store_unavailable` answers.
    unavailable: usize,
    /// Transport errors (connection refused or reset: the gateway died).
    transport_errors: usize,
    /// Anything else: (status, body). Must stay empty.
    unexpected: Vec<(u16, String)>,
}

/// One `store: true` request; records its outcome.
async fn create_one(url: &str, input: String, outcomes: &Mutex<Outcomes>) -> bool {
    let started = Instant::now();
    let sent = support::client()
        .post(format!("{url}/v1/responses"))
        .timeout(REQUEST_TIMEOUT)
        .json(&json!({"model": "m", "input": input, "store": true}))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            assert!(!err.is_timeout(), "a request hung for {:?}: {err}", started.elapsed());
            outcomes.lock().expect("outcomes").transport_errors += 1;
            return false;
        }
    };
    let status = response.status().as_u16();
    let body = match response.text().await {
        Ok(body) => body,
        Err(err) => {
            assert!(!err.is_timeout(), "a reply hung for {:?}: {err}", started.elapsed());
            outcomes.lock().expect("outcomes").transport_errors += 1;
            return false;
        }
    };
    let mut outcomes = outcomes.lock().expect("outcomes");
    match status {
        200 => {
            let value: Value = serde_json::from_str(&body).expect("a 200 is JSON");
            let id = value["id"].as_str().expect("a 200 has an id").to_string();
            outcomes.acknowledged.push((id, input));
        }
        503 => {
            let value: Value = serde_json::from_str(&body).expect("a 503 is JSON");
            support::assert_error_envelope(&value, 503, "store_unavailable");
            outcomes.unavailable += 1;
        }
        other => outcomes.unexpected.push((other, body)),
    }
    status == 200
}

/// `CLIENTS` clients sending `store: true` requests back to back until `stop` is set.
fn load(
    url: &str,
    outcomes: &Arc<Mutex<Outcomes>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|client| {
            let url = url.to_string();
            let outcomes = outcomes.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    create_one(&url, format!("client {client} request {i}"), &outcomes).await;
                    i += 1;
                }
            })
        })
        .collect()
}

/// Waits until the load has `n` acknowledged responses.
async fn wait_acknowledged(outcomes: &Mutex<Outcomes>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcomes.lock().expect("outcomes").acknowledged.len() < n {
        assert!(Instant::now() < deadline, "the load got fewer than {n} replies in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every acknowledged response reads back, completed, with the answer to its own input.
async fn assert_all_readable(url: &str, acknowledged: &[(String, String)]) {
    for (id, input) in acknowledged {
        let response = support::client()
            .get(format!("{url}/v1/responses/{id}"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .expect("GET sent");
        assert_eq!(response.status().as_u16(), 200, "acknowledged response {id} is lost");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["id"], json!(id));
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(support::output_text(&body), format!("You said: {input}"));
    }
}

fn echo_backend_script() -> Script {
    // A few milliseconds per chunk, so that at any moment several requests are in flight.
    Script::echo().chunk_delay(Duration::from_millis(3))
}

async fn kill_9_under_load(store_url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = ScriptedBackend::start().await;
    backend.set_default(echo_backend_script());
    let mut first = start_process(dir.path(), "first", &backend, store_url).await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(&first.url, &outcomes, &stop);
    wait_acknowledged(&outcomes, 40).await;
    let acknowledged_at_kill = outcomes.lock().expect("outcomes").acknowledged.len();
    first.kill_9().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    assert!(outcomes.unexpected.is_empty(), "unexpected answers: {:?}", outcomes.unexpected);
    // The kill cut requests in flight: every client's last request failed on the wire.
    assert!(outcomes.transport_errors >= 1, "the kill did not interrupt any request");

    let second = start_process(dir.path(), "second", &backend, store_url).await;
    assert_all_readable(&second.url, &outcomes.acknowledged).await;
    eprintln!(
        "kill -9 on {}: {} acknowledged ({} when the kill was sent), all read back; {} requests cut",
        store_url.split(':').next().unwrap_or(""),
        outcomes.acknowledged.len(),
        acknowledged_at_kill,
        outcomes.transport_errors
    );
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_response_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    kill_9_under_load(&format!("sqlite://{}", dir.path().join("antwort.db").display())).await;
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_response_on_postgres() {
    let url = postgres::fresh_database().await;
    kill_9_under_load(&url).await;
}

#[tokio::test]
async fn a_postgres_restart_under_load_is_503_then_recovers_without_a_gateway_restart() {
    postgres_outage_under_load("fast").await;
}

#[tokio::test]
async fn a_postgres_crash_under_load_is_503_then_recovers_without_a_gateway_restart() {
    postgres_outage_under_load("immediate").await;
}

/// PostgreSQL stopped with `pg_ctl stop -m {mode}` under load, then started again.
async fn postgres_outage_under_load(mode: &'static str) {
    let url = postgres::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = ScriptedBackend::start().await;
    backend.set_default(echo_backend_script());
    let gateway = start_process(dir.path(), "gateway", &backend, &url).await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(&gateway.url, &outcomes, &stop);
    wait_acknowledged(&outcomes, 20).await;

    tokio::task::spawn_blocking(move || postgres::cluster().stop_with(mode))
        .await
        .expect("postgres stops");
    let acknowledged_before_outage = outcomes.lock().expect("outcomes").acknowledged.len();
    // The outage: long enough for every client to hit it several times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reads during the outage are 503 too, not 404 (the response exists) and not 500.
    let stored = outcomes.lock().expect("outcomes").acknowledged[0].0.clone();
    let read = support::client()
        .get(format!("{}/v1/responses/{stored}", gateway.url))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("GET answered during the outage");
    assert_eq!(read.status().as_u16(), 503);
    support::assert_error_envelope(&read.json().await.expect("JSON"), 503, "store_unavailable");
    let during = {
        let outcomes = outcomes.lock().expect("outcomes");
        (outcomes.acknowledged.len(), outcomes.unavailable)
    };
    tokio::task::spawn_blocking(|| postgres::cluster().start()).await.expect("postgres starts");

    // The same process serves `store: true` requests again: the load gets replies again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while outcomes.lock().expect("outcomes").acknowledged.len() < during.0 + 20 {
        assert!(Instant::now() < deadline, "the gateway did not recover within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    assert!(outcomes.unexpected.is_empty(), "unexpected answers: {:?}", outcomes.unexpected);
    assert_eq!(outcomes.transport_errors, 0, "the gateway dropped connections");
    assert!(during.1 > 0, "no request saw the outage");
    // And once recovered, sequential requests all succeed.
    let after = Mutex::new(Outcomes::default());
    for i in 0..5 {
        assert!(create_one(&gateway.url, format!("after {i}"), &after).await, "after {i}");
    }
    assert_all_readable(&gateway.url, &outcomes.acknowledged).await;
    let after = after.into_inner().expect("after").acknowledged;
    assert_all_readable(&gateway.url, &after).await;
    eprintln!(
        "postgres stop -m {mode}: {} acknowledged in all ({} before the stop, {} by the end of the \
         outage), all read back; {} answered 503 store_unavailable",
        outcomes.acknowledged.len(),
        acknowledged_before_outage,
        during.0,
        outcomes.unavailable
    );
}
