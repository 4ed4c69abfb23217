//! `stream: true, store: true` responses while they stream, on every store engine (in-memory,
//! SQLite, a real PostgreSQL): `GET /v1/responses/{id}` answers `in_progress`, another connection
//! resumes the stream mid-way (replay, then live) with the first client's sequence numbers, a
//! client disconnect ends the record, `store: false` leaves nothing; and a background response in
//! a conversation joins it (input, then output) when it finishes.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::time::{Duration, Instant};

use antwort_gateway::config::RawConfig;
use antwort_scripted_backend::{Script, ScriptedBackend};
use serde_json::{Value, json};
use support::{assert_response, assert_stream_conformant, assert_valid, client, parse_sse};

#[derive(Clone, Copy, Debug)]
enum Engine {
    Memory,
    Sqlite,
    Postgres,
}

/// Runs `$test(engine)` once per engine, as three tests.
macro_rules! per_engine {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() { super::$test(super::Engine::Memory).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$test(super::Engine::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$test(super::Engine::Postgres).await }
        }
    )*};
}

per_engine!(
    a_stored_stream_is_resumed_from_another_connection_while_it_runs,
    a_client_disconnect_ends_the_stored_response,
    a_store_false_stream_leaves_no_trace,
    a_background_response_joins_its_conversation_when_it_finishes,
    following_a_response_nobody_runs_gives_up_after_the_idle_limit,
);

/// A gateway in this process on a fresh store of `engine`, with its background workers.
struct Env {
    url: String,
    store: std::sync::Arc<dyn antwort_gateway::store::Store>,
    backend: ScriptedBackend,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Env {
    async fn start(engine: Engine) -> Self {
        let backend = ScriptedBackend::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw: RawConfig = support::quick_config(&backend);
        raw.auth.mode = antwort_gateway::config::AuthMode::None;
        raw.store.url = match engine {
            Engine::Memory => "memory".to_string(),
            Engine::Sqlite => format!("sqlite://{}", dir.path().join("antwort.db").display()),
            Engine::Postgres => postgres::fresh_database().await,
        };
        raw.background.poll_interval_ms = 50;
        // Small batches, so both the size and the time trigger write during these streams.
        raw.background.event_batch = 4;
        raw.background.event_flush_ms = 30;
        raw.background.resume_idle_secs = 2.0;
        let config = raw.validate().expect("test config is valid");
        let store = antwort_gateway::open_store(&config).await.expect("store opens");
        let app = antwort_gateway::build_app(&config, store.clone()).expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            let _ =
                antwort_gateway::serve_app(listener, app, shutdown, Duration::from_secs(5)).await;
        });
        Self { url, store, backend, _dir: dir, shutdown: Some(tx) }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = client().get(format!("{}{path}", self.url)).send().await.expect("sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            client().post(format!("{}{path}", self.url)).json(&body).send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// `GET /v1/responses/{id}?stream=true[&starting_after=N]`, read to the end.
    async fn resume(&self, id: &str, starting_after: Option<u64>) -> support::Stream {
        let mut url = format!("{}/v1/responses/{id}?stream=true", self.url);
        if let Some(n) = starting_after {
            url.push_str(&format!("&starting_after={n}"));
        }
        let response = client().get(url).send().await.expect("sent");
        support::read_stream(response, Duration::from_secs(30)).await
    }

    /// Polls until the response's status is one of `statuses`.
    async fn wait_for_status(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, response) = self.get(&format!("/v1/responses/{id}")).await;
            assert_eq!(status, 200, "{response}");
            if statuses.contains(&response["status"].as_str().expect("status")) {
                return response;
            }
            assert!(Instant::now() < deadline, "still {} after {within:?}", response["status"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The texts of a conversation's items, oldest first.
    async fn conversation_texts(&self, id: &str) -> Vec<String> {
        let (status, items) =
            self.get(&format!("/v1/conversations/{id}/items?order=asc&limit=100")).await;
        assert_eq!(status, 200, "{items}");
        items["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|item| {
                assert_valid("ItemField", item);
                item["content"][0]["text"].as_str().expect("text").to_string()
            })
            .collect()
    }
}

/// A long streamed answer: `chunks` deltas, `delay` apart.
fn slow_text(chunks: usize, delay: Duration) -> Script {
    Script::chunks((0..chunks).map(|i| format!("w{i} "))).chunk_delay(delay)
}

/// A streamed `POST /v1/responses` read a bit at a time, so a test can act mid-stream.
struct Live {
    response: reqwest::Response,
    chunks: Vec<Vec<u8>>,
}

impl Live {
    async fn post(env: &Env, body: Value) -> Self {
        let response = client()
            .post(format!("{}/v1/responses", env.url))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200);
        Self { response, chunks: Vec::new() }
    }

    /// The complete events received so far.
    fn events(&self) -> Vec<Value> {
        let text = String::from_utf8(self.chunks.concat()).expect("UTF-8");
        let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
        complete
            .split("\n\n")
            .filter_map(|frame| frame.lines().find_map(|line| line.strip_prefix("data: ")))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).expect("event JSON"))
            .collect()
    }

    /// Reads until at least `count` events have arrived.
    async fn read_until(&mut self, count: usize) -> Vec<Value> {
        loop {
            let events = self.events();
            if events.len() >= count {
                return events;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("stream makes progress")
                .expect("stream reads")
                .expect("stream did not end yet");
            self.chunks.push(chunk.to_vec());
        }
    }

    /// Reads to the end.
    async fn finish(mut self) -> support::Stream {
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
            .await
            .expect("stream makes progress")
            .expect("stream reads")
        {
            self.chunks.push(chunk.to_vec());
        }
        let events = parse_sse(&self.chunks);
        support::Stream {
            status: 200,
            content_type: "text/event-stream".into(),
            chunks: self.chunks,
            events,
        }
    }
}

async fn a_stored_stream_is_resumed_from_another_connection_while_it_runs(engine: Engine) {
    let env = Env::start(engine).await;
    env.backend.enqueue(slow_text(30, Duration::from_millis(40)));
    let mut first = Live::post(&env, json!({"model": "m", "input": "write", "stream": true})).await;
    let head = first.read_until(8).await;
    let id = head[0]["response"]["id"].as_str().expect("id").to_string();

    // While it streams, the stored response is in progress.
    let (status, during) = env.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{during}");
    assert_response(&during);
    assert_eq!(during["id"], id.as_str());
    assert_eq!(during["status"], "in_progress");
    assert_eq!(during["store"], true);
    assert_eq!(during["background"], false);

    // Two followers from other connections: from the start, and after event 5.
    let from_start = {
        let (url, id) = (env.url.clone(), id.clone());
        tokio::spawn(async move {
            let response = client()
                .get(format!("{url}/v1/responses/{id}?stream=true"))
                .send()
                .await
                .expect("sent");
            support::read_stream(response, Duration::from_secs(30)).await
        })
    };
    let tail = {
        let (url, id) = (env.url.clone(), id.clone());
        tokio::spawn(async move {
            let response = client()
                .get(format!("{url}/v1/responses/{id}?stream=true&starting_after=5"))
                .send()
                .await
                .expect("sent");
            support::read_stream(response, Duration::from_secs(30)).await
        })
    };
    let first = first.finish().await;
    let from_start = from_start.await.expect("follower");
    let tail = tail.await.expect("follower");

    let last = assert_stream_conformant(&first).expect("a response");
    assert_eq!(last["status"], "completed");
    assert_eq!(support::output_text(&last), (0..30).map(|i| format!("w{i} ")).collect::<String>());
    // The followers saw exactly what the first client saw, with the same numbers.
    assert_stream_conformant(&from_start).expect("a response");
    assert_eq!(from_start.events, first.events);
    assert_eq!(tail.status, 200);
    assert_eq!(tail.events, first.events[6..].to_vec());
    // They followed it live: still streaming when the response was half done.
    assert!(from_start.chunks.len() > 1, "the follower got the stream in pieces");

    // Afterwards: completed, the same Response, and the same replay.
    let (_, done) = env.get(&format!("/v1/responses/{id}")).await;
    assert_response(&done);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"], last["output"]);
    assert_eq!(done["usage"], last["usage"]);
    assert_eq!(env.resume(&id, None).await.events, first.events);
    assert_eq!(env.resume(&id, Some(10_000)).await.events, Vec::<Value>::new());
    assert_eq!(env.backend.requests().len(), 1);
}

async fn a_client_disconnect_ends_the_stored_response(engine: Engine) {
    let env = Env::start(engine).await;
    env.backend.enqueue(slow_text(400, Duration::from_millis(25)));
    let mut first = Live::post(&env, json!({"model": "m", "input": "write", "stream": true})).await;
    let seen = first.read_until(10).await;
    let id = seen[0]["response"]["id"].as_str().expect("id").to_string();
    drop(first);

    // The model call stops, and the record ends as cancelled (not in_progress forever).
    env.backend
        .wait_for_cancellations(1, Duration::from_secs(5))
        .await
        .expect("the backend saw the cancel");
    let ended = env.wait_for_status(&id, &["cancelled"], Duration::from_secs(10)).await;
    assert_response(&ended);
    assert_eq!(ended["id"], id.as_str());

    // Its stored stream holds what the client got (and what was on its way), numbered the same,
    // and a replay ends although there is no final event.
    let replay = env.resume(&id, None).await;
    assert_eq!(replay.status, 200);
    assert!(replay.events.len() >= seen.len(), "{} < {}", replay.events.len(), seen.len());
    assert_eq!(replay.events[..seen.len()], seen[..]);
    for (i, event) in replay.events.iter().enumerate() {
        assert_eq!(event["sequence_number"], json!(i), "contiguous");
        assert_valid(support::event_component(event["type"].as_str().expect("type")), event);
        assert!(
            !["response.completed", "response.failed", "response.incomplete"]
                .contains(&event["type"].as_str().expect("type")),
            "no final event: {event}"
        );
    }
}

async fn a_store_false_stream_leaves_no_trace(engine: Engine) {
    let env = Env::start(engine).await;
    env.backend.enqueue(slow_text(6, Duration::from_millis(20)));
    let stream =
        Live::post(&env, json!({"model": "m", "input": "x", "stream": true, "store": false}))
            .await
            .finish()
            .await;
    let last = assert_stream_conformant(&stream).expect("a response");
    assert_eq!(last["store"], false);
    let id = last["id"].as_str().expect("id");
    let (status, body) = env.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404, "{body}");
    support::assert_error_envelope(&body, 404, "not_found");
    let (status, _) = env.get(&format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(status, 404);
    let (_, list) = env.get("/v1/responses").await;
    assert_eq!(list["data"], json!([]));
}

async fn a_background_response_joins_its_conversation_when_it_finishes(engine: Engine) {
    let env = Env::start(engine).await;
    let (status, conversation) = env
        .post(
            "/v1/conversations",
            json!({"items": [{"type": "message", "role": "user", "content": "earlier"}]}),
        )
        .await;
    assert_eq!(status, 200, "{conversation}");
    let conversation = conversation["id"].as_str().expect("id").to_string();

    env.backend.enqueue(slow_text(20, Duration::from_millis(50)));
    let (status, queued) = env
        .post(
            "/v1/responses",
            json!({"model": "m", "input": "later question", "background": true, "conversation": conversation}),
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    assert_response(&queued);
    assert_eq!(queued["conversation"], json!({"id": conversation}));
    let id = queued["id"].as_str().expect("id").to_string();

    // Running: the conversation does not hold the unfinished turn yet.
    env.wait_for_status(&id, &["in_progress"], Duration::from_secs(10)).await;
    assert_eq!(env.conversation_texts(&conversation).await, ["earlier"]);

    let done = env.wait_for_status(&id, &["completed"], Duration::from_secs(20)).await;
    assert_response(&done);
    assert_eq!(done["conversation"], json!({"id": conversation}));
    let answer = (0..20).map(|i| format!("w{i} ")).collect::<String>();
    assert_eq!(env.conversation_texts(&conversation).await, ["earlier", "later question", &answer]);
    // The model saw the conversation before the turn, then the turn's input, once each.
    let requests = env.backend.requests();
    let sent: Vec<&str> = requests[0].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("text content"))
        .collect();
    assert_eq!(sent, ["earlier", "later question"]);

    // A stored stream in the same conversation joins it the same way, after the background turn.
    let stream = Live::post(
        &env,
        json!({"model": "m", "input": "and now", "stream": true, "conversation": conversation}),
    )
    .await
    .finish()
    .await;
    let last = assert_stream_conformant(&stream).expect("a response");
    assert_eq!(last["conversation"], json!({"id": conversation}));
    assert_eq!(
        env.conversation_texts(&conversation).await,
        ["earlier", "later question", &answer, "and now", "You said: and now"]
    );
    let requests = env.backend.requests();
    assert_eq!(requests[1].body["messages"].as_array().expect("messages").len(), 4);

    // An unknown conversation is refused up front, as for a foreground response.
    let (status, body) = env
        .post(
            "/v1/responses",
            json!({"model": "m", "input": "x", "background": true, "conversation": "conv_missing"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    support::assert_error_envelope(&body, 404, "not_found");
}

async fn following_a_response_nobody_runs_gives_up_after_the_idle_limit(engine: Engine) {
    use antwort_gateway::store::{NewResponse, Owner, StoredEvent};
    let env = Env::start(engine).await;
    // What a gateway killed mid-stream leaves behind: an in_progress record with some events.
    // (`auth.mode: none` acts as this owner.)
    let owner = Owner { tenant: "default".into(), user: "anonymous".into() };
    let id = "resp_abandoned0001";
    let response = json!({
        "id": id, "object": "response", "status": "in_progress",
        "background": false, "store": true, "output": [],
    });
    env.store
        .save_response(&NewResponse {
            id: id.into(),
            owner: owner.clone(),
            created_at: 1,
            status: antwort_gateway::openresponses::response::ResponseStatus::InProgress,
            previous_response_id: None,
            conversation_id: None,
            response: response.clone(),
            input: Vec::new(),
            request: None,
        })
        .await
        .expect("saved");
    let events: Vec<StoredEvent> = ["response.created", "response.in_progress"]
        .iter()
        .enumerate()
        .map(|(i, kind)| StoredEvent {
            sequence_number: i as u64,
            event: json!({"type": kind, "response": response, "sequence_number": i}),
        })
        .collect();
    env.store.append_events(&owner, id, &events).await.expect("appended");

    let started = Instant::now();
    let followed = env.resume(id, None).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    let stored: Vec<Value> = events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(followed.events[..2], stored[..]);
    assert_eq!(followed.events.len(), 3);
    let stalled = followed.last();
    assert_valid("ErrorStreamingEvent", stalled);
    assert_eq!(stalled["error"]["code"], "stream_stalled");
    assert_eq!(stalled["sequence_number"], 2);
}
