//! The containers API (`/v1/containers`, its files and their content) against a real
//! `antwort-sandbox-agent` (real Python, mTLS with dev-CA SVIDs) on every storage engine
//! (in-memory, SQLite, a real PostgreSQL). Two gateway replicas share one store: a container one
//! of them made is served by the other, which rebuilds its agent client from the stored record.
//! Routes, owner isolation, uploads read by code, files written by code listed and downloaded
//! byte for byte, delete, expiry, limits, bad input, and the OpenAI SDK's types.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::sync::Arc;
use std::time::Duration;

use antwort_gateway::config::RawConfig;
use antwort_gateway::store::{
    Access, ContainerStatus, Owner, Page, SandboxRef, Store, StoreSettings, StoredContainer,
    StoredContainerFile,
};
use antwort_scripted_backend::{Script, ScriptedBackend};
use serde_json::{Value, json};
use support::agent::{AGENT_ID, Agent, GATEWAY_ID, TRUST_DOMAIN};
use support::{assert_error_envelope, client};

#[derive(Clone, Copy, Debug)]
enum Engine {
    Memory,
    Sqlite,
    Postgres,
}

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
    store_records_of_containers_and_files,
    containers_crud_pages_and_owners,
    files_between_the_api_and_code,
    idle_containers_expire
);

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";

/// Two gateway replicas (`a`, `b`) over one store, a scripted model and a real agent.
struct Env {
    a: String,
    b: String,
    backend: ScriptedBackend,
    /// The real agent, when the gateway runs the code interpreter.
    agent: Option<Agent>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Env {
    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("this gateway runs the code interpreter")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
    }
}

async fn store_url(engine: Engine, dir: &std::path::Path) -> String {
    match engine {
        Engine::Memory => "memory".to_string(),
        Engine::Sqlite => format!("sqlite://{}", dir.join("db/antwort.db").display()),
        Engine::Postgres => postgres::fresh_database().await,
    }
}

/// `code_interpreter` is extra YAML for that section (indented by 4), `None` for a gateway
/// without the code interpreter.
async fn start(engine: Engine, code_interpreter: Option<&str>) -> Env {
    let agent = match code_interpreter {
        Some(_) => Some(Agent::start().await),
        None => None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let svid = dir.path().join("gateway-svid");
    let tools = match (code_interpreter, &agent) {
        (Some(extra), Some(agent)) => {
            agent.write_svid(GATEWAY_ID, &svid);
            format!(
                "tools:\n  code_interpreter:\n    identity: {{ source: files, dir: \"{}\" }}\n    \
             agent: {{ url: \"{}\", spiffe_id: \"{AGENT_ID}\" }}\n    \
             agent_spiffe_ids: [{{ trust_domain: \"{TRUST_DOMAIN}\", path_prefix: /ns/sandboxes/ }}]\n{extra}",
                svid.display(),
                agent.api,
            )
        }
        _ => String::new(),
    };
    start_with(engine, agent, dir, &tools).await
}

/// Two replicas with `tools` (YAML) over one store of `engine` (made in `dir`).
async fn start_with(
    engine: Engine,
    agent: Option<Agent>,
    dir: tempfile::TempDir,
    tools: &str,
) -> Env {
    let backend = ScriptedBackend::start().await;
    let url = store_url(engine, dir.path()).await;
    let yaml = format!(
        r#"
backend_url: "{backend}"
store: {{ url: "{url}", max_connections: 8 }}
auth:
  api_keys:
    - {{ key: "{ALICE}", tenant: t1, user: alice }}
    - {{ key: "{BOB}", tenant: t1, user: bob }}
{tools}
"#,
        backend = backend.base_url()
    );
    let raw: RawConfig = serde_yaml_ng::from_str(&yaml).expect("test config parses");
    let config = raw.validate().expect("test config is valid");
    let store = antwort_gateway::open_store(&config).await.expect("store opens");
    let mut urls = Vec::new();
    let mut shutdown = Vec::new();
    for _ in 0..2 {
        let app = antwort_gateway::build_app(&config, store.clone()).expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        urls.push(format!("http://{}", listener.local_addr().expect("addr")));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = antwort_gateway::serve_app(
                listener,
                app,
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(5),
            )
            .await;
        });
        shutdown.push(tx);
    }
    let b = urls.pop().expect("b");
    let a = urls.pop().expect("a");
    Env { a, b, backend, agent, store, _dir: dir, shutdown }
}

async fn call(
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{base}{path}");
    let request = match method {
        "GET" => client().get(url),
        "POST" => client().post(url),
        "DELETE" => client().delete(url),
        other => panic!("method {other}"),
    }
    .bearer_auth(key);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn create(base: &str, key: &str, body: Value) -> Value {
    let (status, container) = call(base, key, "POST", "/v1/containers", Some(body)).await;
    assert_eq!(status, 200, "{container}");
    container
}

const BOUNDARY: &str = "antwort-test-boundary-7d1e";

/// The multipart framing around one `file` part named `name`.
fn multipart_frame(name: &str) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    (head.into_bytes(), format!("\r\n--{BOUNDARY}--\r\n").into_bytes())
}

async fn upload_body(base: &str, key: &str, container: &str, body: reqwest::Body) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/v1/containers/{container}/files"))
        .bearer_auth(key)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await
        .expect("upload sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn upload(
    base: &str,
    key: &str,
    container: &str,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let (mut body, tail) = multipart_frame(name);
    body.extend_from_slice(&bytes);
    body.extend_from_slice(&tail);
    upload_body(base, key, container, reqwest::Body::from(body)).await
}

async fn content(base: &str, key: &str, container: &str, file: &str) -> (u16, Vec<u8>) {
    let response = client()
        .get(format!("{base}/v1/containers/{container}/files/{file}/content"))
        .bearer_auth(key)
        .send()
        .await
        .expect("download sent");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("bytes").to_vec())
}

/// A `/v1/responses` request with code_interpreter in `container` (what the model does is
/// scripted by the caller; refused requests never reach it).
async fn respond(base: &str, key: &str, container: &str) -> (u16, Value) {
    call(
        base,
        key,
        "POST",
        "/v1/responses",
        Some(json!({
            "model": "m",
            "input": "run it",
            "tools": [{"type": "code_interpreter", "container": container}],
            "include": ["code_interpreter_call.outputs"],
        })),
    )
    .await
}

/// Runs `code` through `/v1/responses` in `container` (the scripted model calls `python`, then
/// answers); returns the response.
async fn run_code(env: &Env, base: &str, key: &str, container: &str, code: &str) -> Value {
    env.backend.enqueue(Script::tool_call("python", json!({ "code": code }).to_string()));
    env.backend.enqueue(Script::text("done"));
    let (status, response) = respond(base, key, container).await;
    assert_eq!(status, 200, "{response}");
    response
}

fn logs(response: &Value) -> String {
    response["output"][0]["outputs"]
        .as_array()
        .map(|outputs| {
            outputs.iter().filter_map(|o| o["logs"].as_str()).collect::<Vec<_>>().join("")
        })
        .unwrap_or_default()
}

/// The agent's live sessions (each container holds one).
async fn agent_sessions(agent: &Agent) -> usize {
    let gw = antwort_common::identity::mtls_client(
        agent.source(GATEWAY_ID),
        antwort_common::identity::PeerPolicy::exact([AGENT_ID]).expect("policy"),
    )
    .expect("client");
    let sessions: Value = gw
        .get(format!("{}/v1/sessions", agent.api))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    sessions["sessions"].as_array().map(Vec::len).expect("sessions")
}

fn assert_container(container: &Value) {
    let id = container["id"].as_str().expect("id");
    assert!(id.starts_with("cntr_"), "{container}");
    assert_eq!(container["object"], "container");
    assert!(container["created_at"].as_i64().is_some_and(|t| t > 1_700_000_000), "{container}");
    assert!(container["last_active_at"].as_i64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(container["expires_after"]["anchor"], "last_active_at");
    assert!(container["expires_after"]["minutes"].as_u64().is_some_and(|m| m >= 1));
}

fn assert_file(file: &Value, container: &str, path: &str, bytes: usize, source: &str) {
    assert!(file["id"].as_str().is_some_and(|id| id.starts_with("cfile_")), "{file}");
    assert_eq!(file["object"], "container.file", "{file}");
    assert_eq!(file["container_id"], container, "{file}");
    assert_eq!(file["path"], path, "{file}");
    assert_eq!(file["bytes"], bytes, "{file}");
    assert_eq!(file["source"], source, "{file}");
    assert!(file["created_at"].as_i64().is_some_and(|t| t > 1_700_000_000), "{file}");
}

/// A Python with the official OpenAI SDK, installed by scripts/install-test-tools.sh (which
/// scripts/test.sh runs), or `ANTWORT_OPENAI_PYTHON`.
fn openai_python() -> String {
    let python = std::env::var("ANTWORT_OPENAI_PYTHON").unwrap_or_else(|_| {
        let cache = std::env::var("ANTWORT_TOOLS_CACHE")
            .unwrap_or_else(|_| "/var/cache/antwort/tools-2".to_string());
        format!("{cache}/bin/openai-python")
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run scripts/install-test-tools.sh (scripts/test.sh does), or set ANTWORT_OPENAI_PYTHON"
    );
    python
}

/// Checks objects against the official OpenAI Python SDK's types: strict pydantic validation,
/// and no field the type does not declare. `objects` is a list of `[type name, object]`.
fn assert_sdk_types(objects: &[(&str, &Value)]) {
    let python = openai_python();
    let script = r#"
import json, sys
import openai.types as t
import openai.types.containers as f
kinds = {
    "ContainerCreateResponse": t.ContainerCreateResponse,
    "ContainerRetrieveResponse": t.ContainerRetrieveResponse,
    "ContainerListResponse": t.ContainerListResponse,
    "FileCreateResponse": f.FileCreateResponse,
    "FileRetrieveResponse": f.FileRetrieveResponse,
    "FileListResponse": f.FileListResponse,
}
problems = []
for kind, obj in json.load(sys.stdin):
    model = kinds[kind]
    try:
        model.model_validate(obj, strict=True)
    except Exception as e:
        problems.append(f"{kind}: {e}")
    extra = set(obj) - set(model.model_fields)
    if extra:
        problems.append(f"{kind}: fields the SDK does not know: {sorted(extra)}")
print(json.dumps(problems))
"#;
    let input = serde_json::to_vec(
        &objects.iter().map(|(kind, object)| json!([kind, object])).collect::<Vec<_>>(),
    )
    .expect("json");
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(&input).expect("write");
    }
    let out = child.wait_with_output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let problems: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(problems, json!([]), "the OpenAI SDK's types reject our objects");
}

/// The store's container primitives, below the API: what replicas rely on to share containers.
async fn store_records_of_containers_and_files(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = StoreSettings {
        url: store_url(engine, dir.path()).await,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = antwort_gateway::store::open(&settings).await.expect("store opens");
    let alice = Owner { tenant: "t1".into(), user: "alice".into() };
    let bob = Owner { tenant: "t1".into(), user: "bob".into() };
    let record = |id: &str, owner: &Owner, last_active_at: i64| StoredContainer {
        id: id.into(),
        owner: owner.clone(),
        name: format!("name of {id}"),
        created_at: 1_700_000_000,
        status: ContainerStatus::Running,
        last_active_at,
        idle_ms: 60_000,
        memory_limit: Some("4g".into()),
        sandbox: SandboxRef {
            claim_id: format!("claim-{id}"),
            pool: "python".into(),
            agent_endpoint: "https://10.0.0.7:8443".into(),
            agent_spiffe_id: "spiffe://antwort.test/ns/sandboxes/sa/sandbox-agent".into(),
            claim_expires_at: i64::MAX,
            session_id: format!("sess-{id}"),
        },
    };
    let now = 1_800_000_000_000i64;
    let a1 = record("cntr_01", &alice, now - 120_000);
    let a2 = record("cntr_02", &alice, now);
    let b1 = record("cntr_03", &bob, now - 120_000);
    for r in [&a1, &a2, &b1] {
        store.create_container(r).await.expect("create");
    }
    let mine = Access::owner(&alice);
    assert_eq!(store.get_container(&mine, "cntr_01").await.expect("get"), Some(a1.clone()));
    assert_eq!(store.get_container(&mine, "cntr_03").await.expect("get"), None, "bob's");
    let page = Page { limit: 1, ..Page::default() };
    let listed = store.list_containers(&mine, &page, None).await.expect("list");
    assert_eq!((listed.data, listed.has_more), (vec![a2.clone()], true));
    let tenant = Access { tenant: "t1".into(), user: None };
    let all = store.list_containers(&tenant, &Page::default(), None).await.expect("list");
    assert_eq!(all.data.len(), 3);
    let named = store
        .list_containers(&tenant, &Page::default(), Some("name of cntr_03"))
        .await
        .expect("list");
    assert_eq!(named.data, vec![b1.clone()]);

    // Activity never moves back; the claim's expiry is what the last user saw.
    assert!(store.touch_container("cntr_02", now - 5, 42).await.expect("touch"));
    let got = store.get_container(&mine, "cntr_02").await.expect("get").expect("there");
    assert_eq!((got.last_active_at, got.sandbox.claim_expires_at), (now, 42));

    // Idle past expiry: both old ones, least recently active first; the CAS has one winner.
    let idle = store.idle_containers(now, 10).await.expect("idle");
    let ids: Vec<&str> = idle.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"cntr_01") && ids.contains(&"cntr_03"));
    assert!(!store.expire_container("cntr_02", now).await.expect("cas"), "not idle");
    assert!(store.expire_container("cntr_01", now).await.expect("cas"));
    assert!(!store.expire_container("cntr_01", now).await.expect("cas"), "already expired");
    let expired = store.get_container(&mine, "cntr_01").await.expect("get").expect("there");
    assert_eq!(expired.status, ContainerStatus::Expired);
    assert!(!store.touch_container("cntr_01", now + 1, 0).await.expect("touch"), "expired");
    assert_eq!(store.idle_containers(now, 10).await.expect("idle").len(), 1);

    // Files: an upsert keeps the first record's time, takes the new size and source.
    let file = |id: &str, path: &str, bytes: i64, source: &str| StoredContainerFile {
        id: id.into(),
        container_id: "cntr_02".into(),
        owner: alice.clone(),
        path: path.into(),
        bytes,
        created_at: 1_700_000_100,
        source: source.into(),
    };
    store.put_container_file(&file("cfile_a", "a.txt", 1, "user")).await.expect("put");
    store.put_container_file(&file("cfile_b", "b.txt", 2, "assistant")).await.expect("put");
    let mut again = file("cfile_a", "a.txt", 10, "assistant");
    again.created_at = 1_900_000_000;
    let stored = store.put_container_file(&again).await.expect("upsert");
    assert_eq!(
        (stored.bytes, stored.created_at, stored.source.as_str()),
        (10, 1_700_000_100, "assistant")
    );
    let asc = Page { order: antwort_gateway::store::Order::Asc, ..Page::default() };
    let files = store.list_container_files(&mine, "cntr_02", &asc).await.expect("files");
    let ids: Vec<&str> = files.data.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["cfile_a", "cfile_b"], "first-recorded order");
    let after = Page { after: Some("cfile_a".into()), ..asc.clone() };
    let rest = store.list_container_files(&mine, "cntr_02", &after).await.expect("files");
    assert_eq!(rest.data.len(), 1);
    let theirs = Access::owner(&bob);
    assert!(store.get_container_file(&theirs, "cntr_02", "cfile_a").await.expect("get").is_none());
    assert!(!store.delete_container_file(&theirs, "cntr_02", "cfile_a").await.expect("del"));
    assert!(store.delete_container_file(&mine, "cntr_02", "cfile_b").await.expect("del"));
    // Deleting the container takes its files along.
    assert!(!store.delete_container(&theirs, "cntr_02").await.expect("del"), "bob's miss");
    assert!(store.delete_container(&mine, "cntr_02").await.expect("del"));
    assert!(store.get_container_file(&mine, "cntr_02", "cfile_a").await.expect("get").is_none());
    assert!(
        store.list_container_files(&mine, "cntr_02", &asc).await.expect("files").data.is_empty()
    );
    drop(dir);
}

async fn containers_crud_pages_and_owners(engine: Engine) {
    let env = start(engine, Some("")).await;
    let first = create(&env.a, ALICE, json!({"name": "one"})).await;
    assert_container(&first);
    assert_eq!(first["status"], "running");
    assert_eq!(first["name"], "one");
    assert_eq!(first["expires_after"]["minutes"], 20, "the configured idle timeout");
    let second = create(
        &env.a,
        ALICE,
        json!({"name": "two", "expires_after": {"anchor": "last_active_at", "minutes": 5}, "memory_limit": "4g", "file_ids": []}),
    )
    .await;
    assert_eq!(second["expires_after"]["minutes"], 5);
    assert_eq!(second["memory_limit"], "4g");
    let third = create(&env.b, ALICE, json!({"name": "three"})).await;
    let bobs = create(&env.b, BOB, json!({"name": "bob's"})).await;
    assert_eq!(agent_sessions(env.agent()).await, 4, "one session per container");

    // Either replica serves any of them.
    let id = |c: &Value| c["id"].as_str().expect("id").to_string();
    for base in [&env.a, &env.b] {
        let (status, got) =
            call(base, ALICE, "GET", &format!("/v1/containers/{}", id(&third)), None).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["name"], "three");
        assert_eq!(got["id"], third["id"]);
    }

    // Pages, newest first by default.
    let (status, page) = call(&env.b, ALICE, "GET", "/v1/containers?limit=2", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [id(&third), id(&second)]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], third["id"]);
    assert_eq!(page["last_id"], second["id"]);
    let (_, rest) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers?limit=2&after={}", id(&second)), None)
            .await;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["data"][0]["id"], first["id"]);
    assert_eq!(rest["has_more"], false);
    let (_, named) = call(&env.a, ALICE, "GET", "/v1/containers?name=two", None).await;
    assert_eq!(named["data"].as_array().map(Vec::len), Some(1), "{named}");
    assert_eq!(named["data"][0]["id"], second["id"]);
    let (_, ascending) = call(&env.a, ALICE, "GET", "/v1/containers?order=asc", None).await;
    assert_eq!(ascending["data"][0]["id"], first["id"], "{ascending}");

    // Bob sees only his own; Alice's are "not found" for him on every route.
    let (_, listed) = call(&env.a, BOB, "GET", "/v1/containers", None).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["data"][0]["id"], bobs["id"]);
    let alices = id(&first);
    for (method, path) in [
        ("GET", format!("/v1/containers/{alices}")),
        ("DELETE", format!("/v1/containers/{alices}")),
        ("GET", format!("/v1/containers/{alices}/files")),
    ] {
        let (status, body) = call(&env.b, BOB, method, &path, None).await;
        assert_error_envelope(&body, status, "not_found");
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, body) = upload(&env.a, BOB, &alices, "x.txt", b"x".to_vec()).await;
    assert_eq!(status, 404, "{body}");
    // Nor can Bob's code run in it.
    let (status, body) = respond(&env.a, BOB, &alices).await;
    assert_error_envelope(&body, status, "not_found");
    assert_eq!(status, 404);

    // Delete on one replica: gone everywhere, its session deleted.
    let (status, deleted) =
        call(&env.b, ALICE, "DELETE", &format!("/v1/containers/{alices}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": alices, "object": "container.deleted", "deleted": true}));
    for base in [&env.a, &env.b] {
        let (status, body) =
            call(base, ALICE, "GET", &format!("/v1/containers/{alices}"), None).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, _) =
        call(&env.a, ALICE, "DELETE", &format!("/v1/containers/{alices}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(agent_sessions(env.agent()).await, 3);
    let (status, body) = respond(&env.b, ALICE, &alices).await;
    assert_eq!(status, 404, "{body}");

    // Bad input.
    for (body, param) in [
        (json!({}), Some("name")),
        (json!({"name": 5}), Some("name")),
        (json!({"name": "x", "memory_limit": "3g"}), Some("memory_limit")),
        (
            json!({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}),
            Some("expires_after.anchor"),
        ),
        (
            json!({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}),
            Some("expires_after.minutes"),
        ),
        (json!({"name": "x", "file_ids": ["file_1"]}), Some("file_ids")),
        (json!({"name": "x", "colour": "red"}), Some("colour")),
    ] {
        let (status, error) =
            call(&env.a, ALICE, "POST", "/v1/containers", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["param"].as_str(), param, "{error}");
    }
    let (status, error) = call(&env.a, ALICE, "GET", "/v1/containers?limit=0", None).await;
    assert_eq!(status, 400, "{error}");

    // The official SDK's types take every object as it is.
    let (_, got) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{}", id(&second)), None).await;
    let (_, all) = call(&env.a, ALICE, "GET", "/v1/containers", None).await;
    let mut objects = vec![
        ("ContainerCreateResponse", &second),
        ("ContainerCreateResponse", &first),
        ("ContainerRetrieveResponse", &got),
    ];
    for listed in all["data"].as_array().expect("data") {
        objects.push(("ContainerListResponse", listed));
    }
    assert_sdk_types(&objects);
    drop(env.store.clone());
}

async fn files_between_the_api_and_code(engine: Engine) {
    let env = start(engine, Some("")).await;
    let container = create(&env.a, ALICE, json!({"name": "files"})).await;
    let cid = container["id"].as_str().expect("id").to_string();

    // An upload through replica b lands in the workspace the code sees (run through a).
    let csv = b"a,b\n1,2\n3,4\n".to_vec();
    let (status, uploaded) = upload(&env.b, ALICE, &cid, "data.csv", csv.clone()).await;
    assert_eq!(status, 200, "{uploaded}");
    assert_file(&uploaded, &cid, "/mnt/data/data.csv", csv.len(), "user");
    let response = run_code(
        &env,
        &env.a,
        ALICE,
        &cid,
        "rows = open('data.csv').read().splitlines()\nprint(len(rows), rows[-1])",
    )
    .await;
    assert_eq!(logs(&response), "3 3,4\n", "{response}");
    assert_eq!(response["output"][0]["container_id"], cid);
    // Variables persist between responses in the same container, on either replica.
    let response = run_code(&env, &env.b, ALICE, &cid, "print(len(rows))").await;
    assert_eq!(logs(&response), "3\n", "{response}");

    // The code writes a binary file: listed with source "assistant" under the id it was cited
    // with, and downloaded byte for byte (from the other replica).
    let response = run_code(
        &env,
        &env.a,
        ALICE,
        &cid,
        "data = bytes(range(256)) * 40 + b'\\x00\\xff\\r\\n'\nopen('out.bin', 'wb').write(data)",
    )
    .await;
    assert_eq!(response["output"][0]["status"], "completed", "{response}");
    let expected: Vec<u8> =
        (0..=255u8).cycle().take(256 * 40).chain([0x00, 0xff, b'\r', b'\n']).collect();
    let (status, files) =
        call(&env.b, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    assert_eq!(status, 200, "{files}");
    let data = files["data"].as_array().expect("data");
    assert_eq!(data.len(), 2, "{files}");
    let written = data.iter().find(|f| f["path"] == "/mnt/data/out.bin").expect("out.bin listed");
    assert_file(written, &cid, "/mnt/data/out.bin", expected.len(), "assistant");
    let listed_csv = data.iter().find(|f| f["path"] == "/mnt/data/data.csv").expect("csv");
    assert_eq!(listed_csv["id"], uploaded["id"]);
    assert_eq!(listed_csv["source"], "user");
    let file_id = written["id"].as_str().expect("id").to_string();
    let (status, got) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files/{file_id}"), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(&got, written);
    let (status, bytes) = content(&env.a, ALICE, &cid, &file_id).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, expected, "the download is byte-exact");
    let (status, bytes) = content(&env.b, ALICE, &cid, uploaded["id"].as_str().expect("id")).await;
    assert_eq!((status, bytes), (200, csv.clone()));

    // A file the code writes is found by the id its citation carries, before any listing.
    env.backend.enqueue(Script::tool_call(
        "python",
        json!({"code": "open('report.txt', 'w').write('hello')"}).to_string(),
    ));
    env.backend.enqueue(Script::text("I saved report.txt for you."));
    let (status, cited) = call(
        &env.a,
        ALICE,
        "POST",
        "/v1/responses",
        Some(json!({"model": "m", "input": "save", "tools": [{"type": "code_interpreter", "container": cid}]})),
    )
    .await;
    assert_eq!(status, 200, "{cited}");
    let citation = &cited["output"][1]["content"][0]["annotations"][0];
    assert_eq!(citation["type"], "container_file_citation", "{cited}");
    let cited_id = citation["file_id"].as_str().expect("file id");
    let (status, report) =
        call(&env.b, ALICE, "GET", &format!("/v1/containers/{cid}/files/{cited_id}"), None).await;
    assert_eq!(status, 200, "{report}");
    assert_file(&report, &cid, "/mnt/data/report.txt", 5, "assistant");
    let (status, bytes) = content(&env.b, ALICE, &cid, cited_id).await;
    assert_eq!((status, bytes.as_slice()), (200, b"hello".as_slice()));

    // Pages of files.
    let (_, first_page) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files?limit=2&order=asc"), None)
            .await;
    assert_eq!(first_page["data"].as_array().map(Vec::len), Some(2), "{first_page}");
    assert_eq!(first_page["has_more"], true);
    let last = first_page["last_id"].as_str().expect("last");
    let (_, second_page) = call(
        &env.a,
        ALICE,
        "GET",
        &format!("/v1/containers/{cid}/files?limit=2&order=asc&after={last}"),
        None,
    )
    .await;
    assert_eq!(second_page["data"].as_array().map(Vec::len), Some(1), "{second_page}");
    assert_eq!(second_page["has_more"], false);

    // Bob reaches none of it.
    let (status, _) =
        call(&env.a, BOB, "GET", &format!("/v1/containers/{cid}/files/{file_id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = content(&env.a, BOB, &cid, &file_id).await;
    assert_eq!(status, 404);

    // Delete a file: gone from the API and from the workspace the code sees.
    let (status, deleted) =
        call(&env.b, ALICE, "DELETE", &format!("/v1/containers/{cid}/files/{file_id}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": file_id, "object": "container.file.deleted", "deleted": true})
    );
    for path in [
        format!("/v1/containers/{cid}/files/{file_id}"),
        format!("/v1/containers/{cid}/files/{file_id}/content"),
    ] {
        let (status, body) = call(&env.a, ALICE, "GET", &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_error_envelope(&body, 404, "not_found");
    }
    let response =
        run_code(&env, &env.a, ALICE, &cid, "import os\nprint(os.path.exists('out.bin'))").await;
    assert_eq!(logs(&response), "False\n", "{response}");
    // A file deleted by code leaves the listing.
    run_code(&env, &env.a, ALICE, &cid, "import os\nos.remove('report.txt')").await;
    let (_, files) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    let paths: Vec<&str> = files["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["/mnt/data/data.csv"], "{files}");
    let (status, body) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files/cfile_unknown"), None)
            .await;
    assert_eq!(status, 404, "{body}");

    // The SDK's types.
    let (_, got) = call(
        &env.a,
        ALICE,
        "GET",
        &format!("/v1/containers/{cid}/files/{}", uploaded["id"].as_str().expect("id")),
        None,
    )
    .await;
    let mut objects = vec![
        ("FileCreateResponse", &uploaded),
        ("FileRetrieveResponse", &got),
        ("FileRetrieveResponse", &report),
    ];
    for listed in files["data"].as_array().expect("data") {
        objects.push(("FileListResponse", listed));
    }
    assert_sdk_types(&objects);

    // Deleting the container ends its session.
    let before = agent_sessions(env.agent()).await;
    let (status, _) = call(&env.a, ALICE, "DELETE", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(agent_sessions(env.agent()).await, before - 1);
}

async fn idle_containers_expire(engine: Engine) {
    // Containers made without `expires_after` expire after the configured idle timeout.
    let env = start(engine, Some("    idle_timeout_secs: 1\n")).await;
    let container = create(&env.a, ALICE, json!({"name": "short"})).await;
    assert_eq!(container["expires_after"]["minutes"], 1, "1 s shows as the smallest whole minute");
    let cid = container["id"].as_str().expect("id").to_string();
    let (status, uploaded) = upload(&env.a, ALICE, &cid, "keep.txt", b"kept".to_vec()).await;
    assert_eq!(status, 200, "{uploaded}");
    let kept = create(
        &env.a,
        ALICE,
        json!({"name": "long", "expires_after": {"anchor": "last_active_at", "minutes": 10}}),
    )
    .await;
    assert_eq!(agent_sessions(env.agent()).await, 2);

    // Idle past its expiry: the reapers end it (session deleted), the record says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, got) =
            call(&env.b, ALICE, "GET", &format!("/v1/containers/{cid}"), None).await;
        assert_eq!(status, 200, "{got}");
        if got["status"] == "expired" && agent_sessions(env.agent()).await == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired: {got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, listed) = call(&env.a, ALICE, "GET", "/v1/containers?order=asc", None).await;
    assert_eq!(listed["data"][0]["status"], "expired", "{listed}");
    assert_eq!(listed["data"][1]["status"], "running", "{listed}");
    assert_eq!(listed["data"][1]["id"], kept["id"]);

    // Using it is a clear error: for code, for uploads, for downloads.
    let (status, body) = respond(&env.a, ALICE, &cid).await;
    assert_error_envelope(&body, status, "container_expired");
    assert_eq!(status, 400);
    let (status, error) = upload(&env.b, ALICE, &cid, "late.txt", b"late".to_vec()).await;
    assert_error_envelope(&error, status, "container_expired");
    assert_eq!(status, 400);
    let (status, files) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    assert_eq!(status, 200, "the records stay: {files}");
    assert_eq!(files["data"][0]["id"], uploaded["id"]);
    let (status, _) = content(&env.a, ALICE, &cid, uploaded["id"].as_str().expect("id")).await;
    assert_eq!(status, 400);
    // Deleting an expired container still works (the record goes).
    let (status, _) = call(&env.a, ALICE, "DELETE", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&env.b, ALICE, "GET", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_have_limits_and_bad_input_is_refused() {
    let env = start(Engine::Memory, Some("    max_upload_bytes: 1000\n")).await;
    let container = create(&env.a, ALICE, json!({"name": "limits"})).await;
    let cid = container["id"].as_str().expect("id").to_string();

    // At the limit: fine. Past it: 413, nothing lands.
    let (status, body) = upload(&env.a, ALICE, &cid, "exact.bin", vec![7; 1000]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = upload(&env.a, ALICE, &cid, "big.bin", vec![7; 1001]).await;
    assert_eq!(status, 413, "{body}");
    assert_error_envelope(&body, 413, "request_too_large");
    // Far past it, announced by Content-Length: refused before reading.
    let (status, body) = upload(&env.a, ALICE, &cid, "huge.bin", vec![7; 200_000]).await;
    assert_eq!(status, 413, "{body}");
    // Chunked (no Content-Length): cut off while streaming.
    let (head, tail) = multipart_frame("chunked.bin");
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(head)
        .chain((0..20).map(|_| vec![1u8; 100]))
        .chain(std::iter::once(tail))
        .map(Ok)
        .collect();
    let (status, body) =
        upload_body(&env.a, ALICE, &cid, reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .await;
    assert_eq!(status, 413, "{body}");
    let (_, files) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    let paths: Vec<&str> = files["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["/mnt/data/exact.bin"], "{files}");

    // Bad uploads.
    let raw = |content_type: &'static str, body: &'static str| {
        let url = format!("{}/v1/containers/{cid}/files", env.a);
        async move {
            let response = client()
                .post(url)
                .bearer_auth(ALICE)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("envelope"))
        }
    };
    let (status, body) = raw("text/plain", "hello").await;
    assert_error_envelope(&body, status, "invalid_multipart");
    assert_eq!(status, 400);
    let (status, body) = raw("multipart/form-data; boundary=XYZ", "garbage without parts").await;
    assert_error_envelope(&body, status, "invalid_multipart");
    let (status, body) = raw(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nvalue\r\n--XYZ--\r\n",
    )
    .await;
    assert_error_envelope(&body, status, "missing_required_parameter");
    let (status, body) = raw(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"..\"\r\n\r\nvalue\r\n--XYZ--\r\n",
    )
    .await;
    assert_error_envelope(&body, status, "invalid_file_name");
    let (status, body) = raw("application/json", r#"{"file_id": "file_123"}"#).await;
    assert_error_envelope(&body, status, "unsupported_parameter");
    // A file name with directories keeps only its last part.
    let (status, body) = raw(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/x.txt\"\r\n\r\nx\r\n--XYZ--\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/mnt/data/x.txt");

    // Unknown ids.
    let (status, body) = upload(&env.a, ALICE, "cntr_nope", "a.txt", b"a".to_vec()).await;
    assert_error_envelope(&body, status, "not_found");
    assert_eq!(status, 404);
    let (status, body) = call(&env.a, ALICE, "GET", "/v1/containers/cntr_nope/files", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = content(&env.a, ALICE, &cid, "cfile_nope").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_code_interpreter_the_api_says_so() {
    let env = start(Engine::Memory, None).await;
    for (method, path) in [
        ("POST", "/v1/containers"),
        ("GET", "/v1/containers"),
        ("GET", "/v1/containers/cntr_x/files"),
    ] {
        let body = (method == "POST").then(|| json!({"name": "x"}));
        let (status, error) = call(&env.a, ALICE, method, path, body).await;
        assert_error_envelope(&error, status, "containers_unavailable");
        assert_eq!(status, 400, "{method} {path}");
    }
}

/// The official OpenAI Python SDK, unchanged but for `base_url`, drives every route: create,
/// retrieve, list (its cursor pagination), file upload (its own multipart), file list,
/// retrieve, content, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_drives_the_containers_api() {
    let env = start(Engine::Sqlite, Some("")).await;
    // More containers than one page, so the SDK follows `after` cursors.
    for n in 0..3 {
        create(&env.b, ALICE, json!({"name": format!("extra {n}")})).await;
    }
    let script = r#"
import json, sys
import openai
from openai import OpenAI
base, key = sys.argv[1], sys.argv[2]
c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
out = {}
ct = c.containers.create(name="sdk", expires_after={"anchor": "last_active_at", "minutes": 30}, memory_limit="1g")
out["container"] = ct.model_dump(mode="json")
out["retrieved"] = c.containers.retrieve(ct.id).model_dump(mode="json")
out["listed"] = [x.id for x in c.containers.list(limit=2)]
payload = bytes(range(256)) * 8
f = c.containers.files.create(ct.id, file=("blob.bin", payload))
out["file"] = f.model_dump(mode="json")
out["file_retrieved"] = c.containers.files.retrieve(f.id, container_id=ct.id).model_dump(mode="json")
out["files"] = [x.id for x in c.containers.files.list(ct.id)]
out["content_ok"] = c.containers.files.content.retrieve(f.id, container_id=ct.id).read() == payload
c.containers.files.delete(f.id, container_id=ct.id)
out["files_after_delete"] = [x.id for x in c.containers.files.list(ct.id)]
c.containers.delete(ct.id)
try:
    c.containers.retrieve(ct.id)
    out["gone"] = False
except openai.NotFoundError:
    out["gone"] = True
print(json.dumps(out))
"#;
    let base = env.a.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(openai_python())
            .args(["-c", script, &base, ALICE])
            .output()
            .expect("python runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let container = &report["container"];
    assert_eq!(container["name"], "sdk", "{report:#}");
    assert_eq!(container["status"], "running");
    assert_eq!(container["expires_after"], json!({"anchor": "last_active_at", "minutes": 30}));
    assert_eq!(container["memory_limit"], "1g");
    assert_eq!(report["retrieved"]["id"], container["id"]);
    assert_eq!(report["listed"].as_array().map(Vec::len), Some(4), "all pages: {report:#}");
    assert_eq!(report["listed"][0], container["id"], "newest first");
    let cid = container["id"].as_str().expect("id");
    assert_file(&report["file"], cid, "/mnt/data/blob.bin", 2048, "user");
    assert_eq!(report["file_retrieved"], report["file"]);
    assert_eq!(report["files"], json!([report["file"]["id"]]));
    assert_eq!(report["content_ok"], true, "byte-exact through the SDK");
    assert_eq!(report["files_after_delete"], json!([]));
    assert_eq!(report["gone"], true);
}

/// A replica that rebuilds a container from its record (one another replica made, or its own
/// before a restart) checks that the sandbox still has the session; when it is gone (the
/// sandbox was reset or replaced), the container is expired rather than failing every use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_sandbox_is_gone_expires() {
    let env = start(Engine::Sqlite, Some("")).await;
    let container = create(&env.a, ALICE, json!({"name": "lost"})).await;
    let cid = container["id"].as_str().expect("id").to_string();
    // The sandbox loses the session behind the gateway's back.
    let gw = antwort_common::identity::mtls_client(
        env.agent().source(GATEWAY_ID),
        antwort_common::identity::PeerPolicy::exact([AGENT_ID]).expect("policy"),
    )
    .expect("client");
    let sessions: Value = gw
        .get(format!("{}/v1/sessions", env.agent().api))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let session = sessions["sessions"][0]["id"].as_str().expect("session").to_string();
    let deleted = gw
        .delete(format!("{}/v1/sessions/{session}", env.agent().api))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    // Replica b has never held it: it rebuilds it, finds the session gone, expires it.
    let (status, error) = upload(&env.b, ALICE, &cid, "x.txt", b"x".to_vec()).await;
    assert_error_envelope(&error, status, "container_expired");
    let (_, got) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(got["status"], "expired", "{got}");
    // An auto chain on it gets a fresh container instead.
    env.backend.enqueue(Script::tool_call("python", json!({"code": "print(7)"}).to_string()));
    env.backend.enqueue(Script::text("done"));
    let (status, first) = call(
        &env.b,
        ALICE,
        "POST",
        "/v1/responses",
        Some(json!({"model": "m", "input": "go", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]})),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let fresh = first["output"][0]["container_id"].as_str().expect("container");
    assert_ne!(fresh, cid);
    assert_eq!(first["output"][0]["status"], "completed", "{first}");
}

/// Several megabytes each way: an upload the code hashes to the same digest, and a file the
/// code writes downloaded byte for byte (both go through in many chunks, never whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_stream_both_ways() {
    use sha2::Digest as _;
    let env = start(Engine::Memory, Some("")).await;
    let container = create(&env.a, ALICE, json!({"name": "large"})).await;
    let cid = container["id"].as_str().expect("id").to_string();
    let size = 8 << 20;
    let payload: Vec<u8> =
        (0..size).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest: String =
        sha2::Sha256::digest(&payload).iter().map(|b| format!("{b:02x}")).collect();
    let (status, uploaded) = upload(&env.b, ALICE, &cid, "big.bin", payload).await;
    assert_eq!(status, 200, "{uploaded}");
    assert_eq!(uploaded["bytes"], size);
    let response = run_code(
        &env,
        &env.a,
        ALICE,
        &cid,
        "import hashlib\nprint(hashlib.sha256(open('big.bin', 'rb').read()).hexdigest())",
    )
    .await;
    assert_eq!(logs(&response), format!("{digest}\n"), "{response}");
    run_code(
        &env,
        &env.a,
        ALICE,
        &cid,
        "open('made.bin', 'wb').write(bytes((i * 7 + (i >> 8)) % 256 for i in range(3 << 20)))",
    )
    .await;
    let expected: Vec<u8> = (0..(3usize << 20)).map(|i| ((i * 7 + (i >> 8)) % 256) as u8).collect();
    let (_, files) = call(&env.b, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    let made = files["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|f| f["path"] == "/mnt/data/made.bin")
        .expect("made.bin listed")
        .clone();
    let (status, bytes) = content(&env.b, ALICE, &cid, made["id"].as_str().expect("id")).await;
    assert_eq!(status, 200);
    assert_eq!(bytes.len(), expected.len());
    assert!(bytes == expected, "the download is byte-exact");
}

/// A real `antwort-pool-manager` on its local runtime (agent processes with SVIDs from a
/// development CA it shares with the gateway); killed on drop.
struct PoolManager {
    child: std::process::Child,
    api: String,
    client: reqwest::Client,
}

const LOCAL_TRUST_DOMAIN: &str = "antwort.local-test";

impl Drop for PoolManager {
    /// SIGTERM first: the pool manager then stops the agent processes it started (a SIGKILL
    /// would leave them running); SIGKILL only if it does not exit in time.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PoolManager {
    /// Starts it with pool `python` (one warm sandbox, at most two) and waits until a sandbox
    /// is ready. Writes the gateway's SVID into `dir/gateway-svid`.
    async fn start(dir: &std::path::Path) -> PoolManager {
        Self::start_with_pools(dir, &["python"]).await
    }

    async fn start_with_pools(dir: &std::path::Path, pools: &[&str]) -> PoolManager {
        Self::start_configured(dir, pools, 600).await
    }

    /// Starts it with python pools named `pools` (each one warm sandbox, at most two, claims
    /// idle `idle_timeout_secs` reclaimed) and waits until each has a ready sandbox.
    async fn start_configured(
        dir: &std::path::Path,
        pools: &[&str],
        idle_timeout_secs: u64,
    ) -> PoolManager {
        use std::io::BufRead;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_dir = dir.join("ca");
        let ca =
            antwort_common::identity::dev_ca::DevCa::load_or_create(&ca_dir, LOCAL_TRUST_DOMAIN)
                .expect("ca");
        let gateway_id = format!("spiffe://{LOCAL_TRUST_DOMAIN}/ns/antwort/sa/gateway");
        let manager_id = format!("spiffe://{LOCAL_TRUST_DOMAIN}/ns/antwort/sa/pool-manager");
        ca.write_svid(&gateway_id, &dir.join("gateway-svid")).expect("gateway svid");
        ca.write_svid(&manager_id, &dir.join("pool-manager-svid")).expect("manager svid");
        let config = json!({
            "server": {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "allowed_callers": [gateway_id],
            },
            "identity": {"source": "files", "dir": dir.join("pool-manager-svid")},
            "runtime": {
                "kind": "local",
                "trust_domain": LOCAL_TRUST_DOMAIN,
                "ca_dir": ca_dir,
                "work_dir": dir.join("sandboxes"),
                "agent_binary": support::agent::agent_binary(),
                "sandbox_uid_base": 30_000 + std::process::id() % 5_000,
                "pools": pools.iter().map(|name| json!({
                    "name": name,
                    "kind": "python",
                    "minReady": 1,
                    "maxPods": 2,
                    "idleTimeoutSeconds": idle_timeout_secs,
                    "allowedCallers": [gateway_id],
                })).collect::<Vec<_>>(),
            },
        });
        let file = dir.join("pool-manager.yaml");
        std::fs::write(&file, serde_yaml_ng::to_string(&config).expect("yaml")).expect("config");
        let binary = antwort_common::test_support::workspace_binary(
            "antwort-pool-manager",
            "antwort-pool-manager",
            &[],
        );
        let mut child = std::process::Command::new(binary)
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pool manager");
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + support::agent::PATIENCE;
        let api = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("the pool manager's listening line");
            if line.contains("claim API (mTLS) listening") {
                let addr = line.split("addr=").nth(1).expect("addr");
                break format!("https://{}", addr.split_whitespace().next().expect("addr"));
            }
        };
        let source = antwort_common::identity::StaticSource::new(
            ca.mint(&gateway_id).expect("mint").identity().expect("identity"),
        );
        let client = antwort_common::identity::mtls_client(
            source,
            antwort_common::identity::PeerPolicy::exact([manager_id.as_str()]).expect("policy"),
        )
        .expect("client");
        let manager = PoolManager { child, api, client };
        for name in pools {
            while manager.pool_named(name).await["ready"] != 1 {
                assert!(std::time::Instant::now() < deadline, "no sandbox of {name} got ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        manager
    }

    async fn pool(&self) -> Value {
        self.pool_named("python").await
    }

    async fn pool_named(&self, name: &str) -> Value {
        let pools: Value = self
            .client
            .get(format!("{}/v1/pools", self.api))
            .send()
            .await
            .expect("pools")
            .json()
            .await
            .expect("json");
        let list = pools["pools"].as_array().expect("pools");
        list.iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// Waits until the pool has `claimed` claims.
    async fn wait_claimed(&self, claimed: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let pool = self.pool().await;
            if pool["claimed"] == claimed {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "claimed stays {pool}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// With a real pool manager: an API container holds a claim; deleting it releases the claim;
/// an expired one releases it too; code runs on the claimed sandbox in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_hold_and_release_pool_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = PoolManager::start(dir.path()).await;
    assert_eq!(manager.pool().await["claimed"], 0);
    let tools = format!(
        "tools:\n  code_interpreter:\n    identity: {{ source: files, dir: \"{}\" }}\n    \
         pool_manager: {{ url: \"{}\", spiffe_id: \"spiffe://{LOCAL_TRUST_DOMAIN}/ns/antwort/sa/pool-manager\" }}\n    \
         agent_spiffe_ids: [{{ trust_domain: \"{LOCAL_TRUST_DOMAIN}\", path_prefix: /ns/local-sandboxes/ }}]\n    \
         idle_timeout_secs: 2\n",
        dir.path().join("gateway-svid").display(),
        manager.api,
    );
    let store_dir = tempfile::tempdir().expect("tempdir");
    let env = start_with(Engine::Sqlite, None, store_dir, &tools).await;

    let first = create(
        &env.a,
        ALICE,
        json!({"name": "held", "expires_after": {"anchor": "last_active_at", "minutes": 30}}),
    )
    .await;
    let first_id = first["id"].as_str().expect("id").to_string();
    manager.wait_claimed(1).await;
    let response = run_code(&env, &env.b, ALICE, &first_id, "print(6 * 7)").await;
    assert_eq!(logs(&response), "42\n", "{response}");
    let (status, _) =
        call(&env.b, ALICE, "DELETE", &format!("/v1/containers/{first_id}"), None).await;
    assert_eq!(status, 200);
    manager.wait_claimed(0).await;

    // Expiry (the configured 2 s idle timeout) releases the claim too.
    let second = create(&env.a, ALICE, json!({"name": "short"})).await;
    let second_id = second["id"].as_str().expect("id").to_string();
    manager.wait_claimed(1).await;
    manager.wait_claimed(0).await;
    let (_, got) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{second_id}"), None).await;
    assert_eq!(got["status"], "expired", "{got}");
}

/// The sandbox going away is a 503 in the envelope on the routes that need it; the records
/// still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sandbox_is_503() {
    let mut env = start(Engine::Memory, Some("    request_timeout_ms: 2000\n")).await;
    let container = create(&env.a, ALICE, json!({"name": "doomed"})).await;
    let cid = container["id"].as_str().expect("id").to_string();
    drop(env.agent.take());
    let (status, got) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!((status, &got["status"]), (200, &json!("running")), "{got}");
    let (status, body) =
        call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}/files"), None).await;
    assert_error_envelope(&body, status, "sandbox_unavailable");
    assert_eq!(status, 503);
    let (status, body) = upload(&env.b, ALICE, &cid, "a.txt", b"a".to_vec()).await;
    assert_error_envelope(&body, status, "sandbox_unavailable");
    // Deleting still works: the record goes, the sandbox is ended as far as it can be.
    let (status, _) = call(&env.a, ALICE, "DELETE", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(status, 200);
}

/// `tools.code_interpreter.pools_by_memory_limit`: a request's or container's `memory_limit`
/// picks the pool its sandbox is claimed from; a size not offered is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_picks_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = PoolManager::start_with_pools(dir.path(), &["python", "python-4g"]).await;
    let tools = format!(
        "tools:\n  code_interpreter:\n    identity: {{ source: files, dir: \"{}\" }}\n    \
         pool_manager: {{ url: \"{}\", spiffe_id: \"spiffe://{LOCAL_TRUST_DOMAIN}/ns/antwort/sa/pool-manager\" }}\n    \
         agent_spiffe_ids: [{{ trust_domain: \"{LOCAL_TRUST_DOMAIN}\", path_prefix: /ns/local-sandboxes/ }}]\n    \
         pool: python\n    pools_by_memory_limit: {{ 1g: python, 4g: python-4g }}\n",
        dir.path().join("gateway-svid").display(),
        manager.api,
    );
    let store_dir = tempfile::tempdir().expect("tempdir");
    let env = start_with(Engine::Memory, None, store_dir, &tools).await;
    let claimed = |pool: Value| pool["claimed"].as_u64().unwrap_or(u64::MAX);

    // A response whose auto container asks for 4g runs on the 4g pool.
    env.backend.enqueue(Script::tool_call("python", json!({"code": "print(4)"}).to_string()));
    env.backend.enqueue(Script::text("done"));
    let request = |limit: &str| {
        json!({"model": "m", "input": "x",
               "tools": [{"type": "code_interpreter", "container": {"type": "auto", "memory_limit": limit}}],
               "include": ["code_interpreter_call.outputs"]})
    };
    let (status, response) =
        call(&env.a, ALICE, "POST", "/v1/responses", Some(request("4g"))).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(logs(&response), "4\n", "{response}");
    assert_eq!(claimed(manager.pool_named("python-4g").await), 1);
    assert_eq!(claimed(manager.pool_named("python").await), 0);
    let cid = response["output"][0]["container_id"].as_str().expect("container");
    let (_, container) = call(&env.a, ALICE, "GET", &format!("/v1/containers/{cid}"), None).await;
    assert_eq!(container["memory_limit"], "4g", "{container}");

    // A size nobody offers is refused before the model runs, naming the field.
    let (status, error) = call(&env.a, ALICE, "POST", "/v1/responses", Some(request("16g"))).await;
    assert_error_envelope(&error, status, "invalid_value");
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "tools[0].container.memory_limit", "{error}");
    assert!(error["error"]["message"].as_str().expect("message").contains("offered: 1g, 4g"));
    let (status, error) = call(
        &env.a,
        ALICE,
        "POST",
        "/v1/containers",
        Some(json!({"name": "big", "memory_limit": "64g"})),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "memory_limit", "{error}");

    // The containers API: 1g from the 1g pool; no memory_limit from the default pool.
    create(&env.a, ALICE, json!({"name": "small", "memory_limit": "1g"})).await;
    manager_claims(&manager, "python", 1).await;
    create(&env.a, ALICE, json!({"name": "plain"})).await;
    manager_claims(&manager, "python", 2).await;
    assert_eq!(claimed(manager.pool_named("python-4g").await), 1);
}

/// Waits until pool `name` has `claimed` claims.
async fn manager_claims(manager: &PoolManager, name: &str, claimed: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pool = manager.pool_named(name).await;
        if pool["claimed"] == claimed {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: claimed stays {pool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway in front of `manager` for the claim keep-alive tests.
async fn pooled_gateway(
    dir: &std::path::Path,
    manager: &PoolManager,
    claim_renew_secs: u64,
) -> Env {
    let tools = format!(
        "tools:\n  code_interpreter:\n    identity: {{ source: files, dir: \"{}\" }}\n    \
         pool_manager: {{ url: \"{}\", spiffe_id: \"spiffe://{LOCAL_TRUST_DOMAIN}/ns/antwort/sa/pool-manager\" }}\n    \
         agent_spiffe_ids: [{{ trust_domain: \"{LOCAL_TRUST_DOMAIN}\", path_prefix: /ns/local-sandboxes/ }}]\n    \
         idle_timeout_secs: 600\n    claim_renew_secs: {claim_renew_secs}\n",
        dir.join("gateway-svid").display(),
        manager.api,
    );
    start_with(Engine::Memory, None, tempfile::tempdir().expect("tempdir"), &tools).await
}

/// One response of a chain: the scripted model runs `code` in the chain's `auto` container.
async fn chained(env: &Env, previous: Option<&Value>, code: &str) -> Value {
    env.backend.enqueue(Script::tool_call("python", json!({ "code": code }).to_string()));
    env.backend.enqueue(Script::text("done"));
    let mut body = json!({"model": "m", "input": "run",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "include": ["code_interpreter_call.outputs"]});
    if let Some(previous) = previous {
        body["previous_response_id"] = previous["id"].clone();
    }
    let (status, response) = call(&env.a, ALICE, "POST", "/v1/responses", Some(body)).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed", "{response}");
    response
}

/// The gateway renews the claims of the containers it keeps, used or not
/// (`claim_renew_secs`): a pool whose idle timeout is far shorter than the container's expiry
/// does not take the sandbox away between the turns of a chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_containers_keep_their_sandbox_past_the_pools_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = PoolManager::start_configured(dir.path(), &["python"], 3).await;
    let env = pooled_gateway(dir.path(), &manager, 1).await;
    let first = chained(&env, None, "kept = 41").await;
    let container = first["output"][0]["container_id"].clone();
    // Three times the pool's idle timeout without a use.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(manager.pool().await["claimed"], 1, "the claim is still held");
    let second = chained(&env, Some(&first), "print(kept + 1)").await;
    assert_eq!(second["output"][0]["container_id"], container, "{second}");
    assert_eq!(logs(&second), "42\n", "{second}");
}

/// When the pool manager took the sandbox back anyway (here: renewals far apart), an `auto`
/// chain goes on in a new container instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_chain_whose_sandbox_was_reclaimed_gets_a_new_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = PoolManager::start_configured(dir.path(), &["python"], 2).await;
    let env = pooled_gateway(dir.path(), &manager, 3600).await;
    let first = chained(&env, None, "kept = 41").await;
    let container = first["output"][0]["container_id"].clone();
    manager.wait_claimed(1).await;
    manager.wait_claimed(0).await;
    let second = chained(&env, Some(&first), "print('fresh', 'kept' in globals())").await;
    assert_ne!(second["output"][0]["container_id"], container, "{second}");
    assert_eq!(second["output"][0]["status"], "completed", "{second}");
    assert_eq!(logs(&second), "fresh False\n", "{second}");
}
