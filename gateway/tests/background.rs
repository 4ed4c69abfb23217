//! Background mode: `background: true`, the worker pool, cancel, and resuming a response's
//! stream (`GET /v1/responses/{id}?stream=true&starting_after=N`), on every store engine. The
//! multi-replica tests run real `antwort-gateway` processes on a real PostgreSQL server (the
//! test harness in support/postgres.rs) and kill them with SIGKILL / SIGTERM.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/process.rs"]
mod process;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use antwort_gateway::config::RawConfig;
use antwort_scripted_backend::{Script, ScriptedBackend};
use process::GatewayProcess;
use serde_json::{Value, json};
use support::{assert_response, assert_stream_conformant, assert_valid, client, parse_sse};

/// Background settings with short timers, so crash and cancel tests take seconds.
fn quick_background(raw: &mut RawConfig) {
    raw.background.workers = 2;
    raw.background.lease_secs = 2.0;
    raw.background.heartbeat_secs = 0.3;
    raw.background.poll_interval_ms = 50;
}

fn config(backend: &ScriptedBackend, store_url: &str) -> RawConfig {
    let mut raw = support::quick_config(backend);
    raw.store.url = store_url.to_string();
    quick_background(&mut raw);
    raw
}

/// A long streamed answer: `chunks` deltas, `delay` apart.
fn slow_text(chunks: usize, delay: Duration) -> Script {
    Script::chunks((0..chunks).map(|i| format!("w{i} "))).chunk_delay(delay)
}

/// A gateway in this process on the store its config names (opened and migrated here), with its
/// background workers.
struct Gateway {
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start_with(raw: RawConfig) -> Self {
        let mut raw = raw;
        raw.auth.mode = antwort_gateway::config::AuthMode::None;
        let config = raw.validate().expect("test config is valid");
        let store = antwort_gateway::open_store(&config).await.expect("store opens");
        let app = antwort_gateway::build_app(&config, store).expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            antwort_gateway::serve_app(listener, app, shutdown, Duration::from_secs(5))
                .await
                .expect("serve");
        });
        Self { url, shutdown: Some(tx), task }
    }

    fn responses_url(&self) -> String {
        format!("{}/v1/responses", self.url)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn create(gateway_url: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(format!("{gateway_url}/v1/responses"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn get(gateway_url: &str, id: &str) -> Value {
    let response =
        client().get(format!("{gateway_url}/v1/responses/{id}")).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("JSON")
}

/// Polls until the response's status is one of `statuses`.
async fn wait_for_status(
    gateway_url: &str,
    id: &str,
    statuses: &[&str],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let response = get(gateway_url, id).await;
        if statuses.contains(&response["status"].as_str().expect("status")) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {within:?}: {response}",
            response["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/responses/{id}?stream=true[&starting_after=N]`, read to the end.
async fn resume(gateway_url: &str, id: &str, starting_after: Option<u64>) -> support::Stream {
    let mut url = format!("{gateway_url}/v1/responses/{id}?stream=true");
    if let Some(n) = starting_after {
        url.push_str(&format!("&starting_after={n}"));
    }
    let response = client().get(url).send().await.expect("sent");
    support::read_stream(response, Duration::from_secs(30)).await
}

async fn lifecycle(store_url: &str) {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(slow_text(12, Duration::from_millis(20)));
    let gateway = Gateway::start_with(config(&backend, store_url)).await;
    let (status, queued) =
        create(&gateway.url, json!({"model": "m", "input": "write", "background": true})).await;
    assert_eq!(status, 200, "{queued}");
    assert_response(&queued);
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["background"], true);
    let id = queued["id"].as_str().expect("id").to_string();

    let done = wait_for_status(&gateway.url, &id, &["completed"], Duration::from_secs(20)).await;
    assert_response(&done);
    assert_eq!(done["id"], id);
    assert_eq!(done["background"], true);
    assert_eq!(support::output_text(&done), (0..12).map(|i| format!("w{i} ")).collect::<String>());

    // The whole stream, replayed: a conformant stream of this response.
    let full = resume(&gateway.url, &id, None).await;
    let last = assert_stream_conformant(&full).expect("a response");
    assert_eq!(last["id"], id);
    assert_eq!(last["output"], done["output"]);

    // From the middle: exactly the events after N, numbered on from N + 1.
    let tail = resume(&gateway.url, &id, Some(4)).await;
    assert_eq!(tail.status, 200);
    assert_eq!(tail.events, full.events[5..].to_vec());
    for (i, event) in tail.events.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(i + 5));
    }
    // Past the end: nothing but the end marker.
    let beyond = resume(&gateway.url, &id, Some(10_000)).await;
    assert_eq!(beyond.status, 200);
    assert!(beyond.events.is_empty());
    assert_eq!(backend.requests().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn lifecycle_in_memory() {
    lifecycle("memory").await;
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    lifecycle(&format!("sqlite://{}", dir.path().join("antwort.db").display())).await;
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    let pg_url = postgres::fresh_database().await;
    lifecycle(&pg_url).await;
}

#[tokio::test]
async fn a_resumed_stream_follows_a_running_response_live() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(slow_text(15, Duration::from_millis(60)));
    let gateway = Gateway::start_with(config(&backend, "memory")).await;
    let (_, queued) =
        create(&gateway.url, json!({"model": "m", "input": "write", "background": true})).await;
    let id = queued["id"].as_str().expect("id").to_string();
    let started = Instant::now();
    let live = resume(&gateway.url, &id, None).await;
    // It waited for the model (15 x 60 ms), then ended with the final event.
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    let last = assert_stream_conformant(&live).expect("a response");
    assert_eq!(last["status"], "completed");

    // `stream: true` on the create request itself answers with that stream.
    backend.enqueue(Script::text("streamed background"));
    let response = client()
        .post(gateway.responses_url())
        .json(&json!({"model": "m", "input": "x", "background": true, "stream": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.expect("body");
    let events = parse_sse(&[bytes.to_vec()]);
    let stream = support::Stream {
        status: 200,
        content_type: "text/event-stream".into(),
        chunks: Vec::new(),
        events,
    };
    let last = assert_stream_conformant(&stream).expect("a response");
    assert_eq!(support::output_text(&last), "streamed background");
    assert_eq!(last["background"], true);
}

#[tokio::test]
async fn background_validation_and_cancel_rules() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start_with(config(&backend, "memory")).await;
    let (status, body) = create(
        &gateway.url,
        json!({"model": "m", "input": "x", "background": true, "store": false}),
    )
    .await;
    assert_eq!(status, 400);
    support::assert_error_envelope(&body, 400, "invalid_value");
    assert_eq!(body["error"]["param"], "store");

    // Only background responses can be cancelled.
    let (status, plain) = create(&gateway.url, json!({"model": "m", "input": "x"})).await;
    assert_eq!(status, 200);
    let cancel = client()
        .post(format!("{}/{}/cancel", gateway.responses_url(), plain["id"].as_str().expect("id")))
        .send()
        .await
        .expect("sent");
    assert_eq!(cancel.status().as_u16(), 400);
    let cancel = client()
        .post(format!("{}/resp_does_not_exist/cancel", gateway.responses_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(cancel.status().as_u16(), 404);
    // A stored response that never streamed has nothing to replay.
    let replay = client()
        .get(format!(
            "{}/{}?stream=true",
            gateway.responses_url(),
            plain["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(replay.status().as_u16(), 400);
}

#[tokio::test]
async fn cancel_stops_a_running_response_and_its_backend_call() {
    let backend = ScriptedBackend::start().await;
    backend.enqueue(slow_text(200, Duration::from_millis(50)));
    let gateway = Gateway::start_with(config(&backend, "memory")).await;
    let (_, queued) =
        create(&gateway.url, json!({"model": "m", "input": "write", "background": true})).await;
    let id = queued["id"].as_str().expect("id").to_string();
    // Wait until it streams.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let partial = resume_head(&gateway.url, &id).await;
        if partial >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "no events streamed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = client()
        .post(format!("{}/{id}/cancel", gateway.responses_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(cancelled.status().as_u16(), 200);
    let cancelled: Value = cancelled.json().await.expect("JSON");
    assert_response(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    // The model call was dropped, not left to run on.
    backend
        .wait_for_cancellations(1, Duration::from_secs(5))
        .await
        .expect("backend saw the cancel");
    assert_eq!(get(&gateway.url, &id).await["status"], "cancelled");
    // Cancelling again answers the same; a queued response is cancelled before it runs.
    let again = client()
        .post(format!("{}/{id}/cancel", gateway.responses_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status().as_u16(), 200);
    // The replay of a cancelled response ends (no final event of its own).
    let replay = resume(&gateway.url, &id, None).await;
    for (i, event) in replay.events.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(i));
        assert_valid(event_schema(event), event);
    }
}

/// How many events a response has stored so far (reads the replay up to the first few).
async fn resume_head(gateway_url: &str, id: &str) -> usize {
    let response =
        client().get(format!("{gateway_url}/v1/responses/{id}")).send().await.expect("sent");
    let body: Value = response.json().await.expect("JSON");
    if body["status"] != "in_progress" {
        return 0;
    }
    // Read a little of the live stream, then hang up.
    let mut stream = client()
        .get(format!("{gateway_url}/v1/responses/{id}?stream=true"))
        .send()
        .await
        .expect("sent");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    text.matches("\ndata: ").count()
}

fn event_schema(event: &Value) -> &'static str {
    match event["type"].as_str().expect("type") {
        "response.created" => "ResponseCreatedStreamingEvent",
        "response.in_progress" => "ResponseInProgressStreamingEvent",
        "response.output_item.added" => "ResponseOutputItemAddedStreamingEvent",
        "response.content_part.added" => "ResponseContentPartAddedStreamingEvent",
        "response.output_text.delta" => "ResponseOutputTextDeltaStreamingEvent",
        "response.failed" => "ResponseFailedStreamingEvent",
        other => panic!("unexpected event {other}"),
    }
}

// === several replicas on one PostgreSQL ===

#[tokio::test]
async fn two_gateways_share_the_queue_and_run_each_response_once() {
    let pg_url = postgres::fresh_database().await;
    let backend = ScriptedBackend::start().await;
    backend.set_default(Script::echo().chunk_delay(Duration::from_millis(5)));
    let a = Gateway::start_with(config(&backend, &pg_url)).await;
    let b = Gateway::start_with(config(&backend, &pg_url)).await;
    let mut ids = Vec::new();
    for i in 0..16 {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let (status, queued) =
            create(url, json!({"model": "m", "input": format!("job {i}"), "background": true}))
                .await;
        assert_eq!(status, 200, "{queued}");
        ids.push(queued["id"].as_str().expect("id").to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        // Either replica answers for any response.
        let url = if i % 2 == 0 { &b.url } else { &a.url };
        let done = wait_for_status(url, id, &["completed"], Duration::from_secs(30)).await;
        assert_eq!(support::output_text(&done), format!("You said: job {i}"));
        let replay = resume(url, id, None).await;
        assert_stream_conformant(&replay).expect("a response");
    }
    // Each response went to the model exactly once.
    let requests = backend.requests();
    assert_eq!(requests.len(), 16);
    let mut seen: Vec<String> = requests
        .iter()
        .map(|r| {
            r.body["messages"].as_array().expect("messages").last().expect("one")["content"]
                .to_string()
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 16, "a job ran twice: {seen:?}");
    a.stop().await;
    b.stop().await;
}

/// A gateway process with 2 background workers and short leases.
async fn start_process(
    dir: &Path,
    name: &str,
    backend: &ScriptedBackend,
    store_url: &str,
    grace_secs: f64,
) -> GatewayProcess {
    let yaml = format!(
        "listen: 127.0.0.1:0\nbackend_url: {}\nshutdown_grace_period_secs: {grace_secs}\nauth: {{ mode: none }}\nstore: {{ url: \"{store_url}\" }}\nbackground: {{ workers: 2, lease_secs: 2.0, heartbeat_secs: 0.3, poll_interval_ms: 50 }}\n",
        backend.base_url()
    );
    GatewayProcess::start(dir, name, &yaml).await
}

#[tokio::test]
async fn a_killed_workers_response_is_failed_or_rerun_by_another_replica() {
    let pg_url = postgres::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = ScriptedBackend::start().await;
    // Response 1 streams slowly (the worker dies mid-stream); response 2 waits long for its
    // first token (the worker dies before anything streamed).
    backend.on_model("streams", slow_text(400, Duration::from_millis(50)));
    backend.on_model("thinks", Script::text("finally").ttft(Duration::from_secs(3)));
    let mut a = start_process(dir.path(), "a", &backend, &pg_url, 5.0).await;
    let (_, streaming) =
        create(&a.url, json!({"model": "streams", "input": "x", "background": true})).await;
    let (_, thinking) =
        create(&a.url, json!({"model": "thinks", "input": "y", "background": true})).await;
    let streaming = streaming["id"].as_str().expect("id").to_string();
    let thinking = thinking["id"].as_str().expect("id").to_string();
    wait_for_status(&a.url, &streaming, &["in_progress"], Duration::from_secs(10)).await;
    wait_for_status(&a.url, &thinking, &["in_progress"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    backend.on_model("thinks", Script::text("finally"));

    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait(Duration::from_secs(5)).await;
    let b = start_process(dir.path(), "b", &backend, &pg_url, 5.0).await;

    // Streamed before the crash: failed, and its replay ends with that failure.
    let failed = wait_for_status(&b.url, &streaming, &["failed"], Duration::from_secs(20)).await;
    assert_response(&failed);
    assert_eq!(failed["error"]["code"], "worker_lost");
    let replay = resume(&b.url, &streaming, None).await;
    let last = replay.last();
    assert_eq!(last["type"], "response.failed");
    for (i, event) in replay.events.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(i), "contiguous");
        assert_valid(event_schema(event), event);
    }
    // Nothing streamed before the crash: run again by the other replica, to completion.
    let done = wait_for_status(&b.url, &thinking, &["completed"], Duration::from_secs(20)).await;
    assert_eq!(support::output_text(&done), "finally");
    assert_stream_conformant(&resume(&b.url, &thinking, None).await).expect("a response");
}

#[tokio::test]
async fn sigterm_drains_running_responses_and_requeues_what_cannot_finish() {
    let pg_url = postgres::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = ScriptedBackend::start().await;
    backend.on_model("short", slow_text(20, Duration::from_millis(50)));
    backend.on_model("late", Script::text("eventually").ttft(Duration::from_secs(30)));
    let mut a = start_process(dir.path(), "a", &backend, &pg_url, 2.0).await;
    let (_, short) =
        create(&a.url, json!({"model": "short", "input": "x", "background": true})).await;
    let (_, late) =
        create(&a.url, json!({"model": "late", "input": "y", "background": true})).await;
    let short = short["id"].as_str().expect("id").to_string();
    let late = late["id"].as_str().expect("id").to_string();
    wait_for_status(&a.url, &short, &["in_progress"], Duration::from_secs(10)).await;
    wait_for_status(&a.url, &late, &["in_progress"], Duration::from_secs(10)).await;

    a.signal(nix::sys::signal::Signal::SIGTERM);
    let status = a.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    // The short one finished within the grace period; the late one went back to the queue and
    // another replica runs it.
    backend.on_model("late", Script::text("eventually"));
    let b = start_process(dir.path(), "b", &backend, &pg_url, 2.0).await;
    let done = get(&b.url, &short).await;
    assert_eq!(done["status"], "completed", "{done}");
    let rerun = wait_for_status(&b.url, &late, &["completed"], Duration::from_secs(20)).await;
    assert_eq!(support::output_text(&rerun), "eventually");
    assert_stream_conformant(&resume(&b.url, &late, None).await).expect("a response");
}
