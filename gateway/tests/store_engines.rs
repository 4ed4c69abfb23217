//! The stateful API on every storage engine (in-memory, SQLite, a real PostgreSQL): stored
//! responses (get, delete, list pages, input items), `store: false`, `previous_response_id`
//! chains, `item_reference`, conversations, owner isolation on every route, and the store's
//! background-mode primitives (queue claim, leases, events, cancel).

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::sync::Arc;
use std::time::Duration;

use antwort_gateway::config::RawConfig;
use antwort_gateway::store::{Access, NewResponse, Owner, Store, StoredEvent};
use antwort_scripted_backend::ScriptedBackend;
use serde_json::{Value, json};
use support::{assert_error_envelope, assert_response, assert_valid, client};

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
    stored_responses_crud_and_pages,
    store_false_leaves_no_trace,
    chaining_sends_the_chain_without_old_instructions,
    item_reference_resolves_owned_items,
    conversations_end_to_end,
    users_see_only_their_own_objects,
    background_queue_primitives,
);

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";
const OTHER_TENANT_ADMIN: &str = "eve-key-0123456789";

struct Env {
    url: String,
    store: Arc<dyn Store>,
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

async fn store_url(engine: Engine, dir: &std::path::Path) -> String {
    match engine {
        Engine::Memory => "memory".to_string(),
        Engine::Sqlite => format!("sqlite://{}", dir.join("db/antwort.db").display()),
        Engine::Postgres => postgres::fresh_database().await,
    }
}

async fn start(engine: Engine) -> Env {
    let backend = ScriptedBackend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = store_url(engine, dir.path()).await;
    let yaml = format!(
        r#"
backend_url: "{backend}"
store: {{ url: "{url}", max_connections: 8 }}
auth:
  api_keys:
    - {{ key: "{ALICE}", tenant: t1, user: alice }}
    - {{ key: "{BOB}", tenant: t1, user: bob }}
    - {{ key: "{ADMIN}", tenant: t1, user: root, scopes: [read, write, admin] }}
    - {{ key: "{OTHER_TENANT_ADMIN}", tenant: t2, user: eve, scopes: [read, write, admin] }}
"#,
        backend = backend.base_url()
    );
    let raw: RawConfig = serde_yaml_ng::from_str(&yaml).expect("test config parses");
    let config = raw.validate().expect("test config is valid");
    let store = antwort_gateway::open_store(&config).await.expect("store opens");
    let app = antwort_gateway::build_with_store(&config, store.clone()).expect("gateway builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = antwort_gateway::serve(
            listener,
            app,
            async {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        )
        .await;
    });
    Env { url, store, backend, _dir: dir, shutdown: Some(tx) }
}

impl Env {
    async fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
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

    async fn create(&self, key: &str, body: Value) -> Value {
        let (status, response) = self.call(key, "POST", "/v1/responses", Some(body)).await;
        assert_eq!(status, 200, "{response}");
        assert_response(&response);
        response
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

fn assert_list(list: &Value) {
    assert_eq!(list["object"], "list", "{list}");
    let data = list["data"].as_array().expect("data array");
    assert_eq!(list["first_id"], data.first().map_or(Value::Null, |o| o["id"].clone()));
    assert_eq!(list["last_id"], data.last().map_or(Value::Null, |o| o["id"].clone()));
    assert!(list["has_more"].is_boolean());
}

async fn stored_responses_crud_and_pages(engine: Engine) {
    let env = start(engine).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let response =
            env.create(ALICE, json!({"model": "m", "input": format!("hello {i}")})).await;
        created.push(response["id"].as_str().expect("id").to_string());
    }
    // Get: the stored object is the one returned, and valid per the spec.
    let (status, got) =
        env.call(ALICE, "GET", &format!("/v1/responses/{}", created[0]), None).await;
    assert_eq!(status, 200, "{got}");
    assert_response(&got);
    assert_eq!(got["id"], created[0].as_str());
    assert_eq!(got["status"], "completed");
    assert_eq!(support::output_text(&got), "You said: hello 0");

    // List: newest first by default, pages of `limit`, `after` continues.
    let (status, page) = env.call(ALICE, "GET", "/v1/responses?limit=2", None).await;
    assert_eq!(status, 200, "{page}");
    assert_list(&page);
    assert_eq!(ids(&page), vec![created[4].clone(), created[3].clone()]);
    assert_eq!(page["has_more"], true);
    let (_, next) =
        env.call(ALICE, "GET", &format!("/v1/responses?limit=2&after={}", created[3]), None).await;
    assert_eq!(ids(&next), vec![created[2].clone(), created[1].clone()]);
    let (_, last) =
        env.call(ALICE, "GET", &format!("/v1/responses?limit=2&after={}", created[1]), None).await;
    assert_eq!(ids(&last), vec![created[0].clone()]);
    assert_eq!(last["has_more"], false);
    let (_, ascending) = env.call(ALICE, "GET", "/v1/responses?order=asc&limit=100", None).await;
    assert_eq!(ids(&ascending), created);
    let (_, before) = env
        .call(ALICE, "GET", &format!("/v1/responses?order=asc&before={}", created[2]), None)
        .await;
    assert_eq!(ids(&before), created[..2].to_vec());
    for bad in ["limit=0", "limit=101", "order=sideways", "limit=abc"] {
        let (status, error) = env.call(ALICE, "GET", &format!("/v1/responses?{bad}"), None).await;
        assert_error_envelope(&error, status, "invalid_value");
        assert_eq!(status, 400, "{bad}");
    }

    // Input items: the request's own input, as items with ids, valid per the spec.
    let multi = env
        .create(
            ALICE,
            json!({"model": "m", "input": [
                {"role": "user", "content": "first"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
                {"role": "user", "content": "third"}
            ]}),
        )
        .await;
    let id = multi["id"].as_str().expect("id");
    let (status, items) =
        env.call(ALICE, "GET", &format!("/v1/responses/{id}/input_items?order=asc"), None).await;
    assert_eq!(status, 200, "{items}");
    assert_list(&items);
    let data = items["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for item in data {
        assert_valid("ItemField", item);
    }
    assert_eq!(data[1]["content"][0]["text"], "second");
    let (_, desc) =
        env.call(ALICE, "GET", &format!("/v1/responses/{id}/input_items?limit=1"), None).await;
    assert_eq!(desc["data"][0]["content"][0]["text"], "third");
    assert_eq!(desc["has_more"], true);
    let (_, after) = env
        .call(
            ALICE,
            "GET",
            &format!(
                "/v1/responses/{id}/input_items?order=asc&after={}",
                data[0]["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(after["data"].as_array().expect("data").len(), 2);

    // Delete: the deletion object, then 404 everywhere.
    let (status, deleted) = env.call(ALICE, "DELETE", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "object": "response", "deleted": true}));
    let (status, error) = env.call(ALICE, "GET", &format!("/v1/responses/{id}"), None).await;
    assert_error_envelope(&error, status, "not_found");
    assert_eq!(status, 404);
    let (status, _) = env.call(ALICE, "DELETE", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        env.call(ALICE, "GET", &format!("/v1/responses/{id}/input_items"), None).await;
    assert_eq!(status, 404);
}

async fn store_false_leaves_no_trace(engine: Engine) {
    let env = start(engine).await;
    let response =
        env.create(ALICE, json!({"model": "m", "input": "secret", "store": false})).await;
    assert_eq!(response["store"], false);
    let id = response["id"].as_str().expect("id");
    let (status, _) = env.call(ALICE, "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 404);
    // Streaming too.
    let stream =
        post_stream_as(&env.url, ALICE, json!({"model": "m", "input": "secret", "store": false}))
            .await;
    let id = stream.last()["response"]["id"].as_str().expect("id").to_string();
    let (status, _) = env.call(ALICE, "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 404);
    let listed = env
        .store
        .list_responses(&Access { tenant: "t1".into(), user: None }, &Default::default())
        .await
        .expect("list");
    assert!(listed.data.is_empty(), "store:false left {:?}", listed.data.len());
    let (status, error) = env
        .call(
            ALICE,
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": "x", "previous_response_id": id})),
        )
        .await;
    assert_error_envelope(&error, status, "previous_response_not_found");
    assert_eq!(status, 404);
}

/// The messages the backend received in its `n`th request, as (role, text).
fn messages(env: &Env, n: usize) -> Vec<(String, String)> {
    let requests = env.backend.requests();
    requests[n].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap_or("").to_string(), text)
        })
        .collect()
}

async fn chaining_sends_the_chain_without_old_instructions(engine: Engine) {
    let env = start(engine).await;
    let first =
        env.create(ALICE, json!({"model": "m", "input": "one", "instructions": "be brief"})).await;
    let second = env
        .create(ALICE, json!({"model": "m", "input": "two", "previous_response_id": first["id"]}))
        .await;
    assert_eq!(second["previous_response_id"], first["id"]);
    // Streaming continuation of the stream-less chain.
    let third = post_stream_as(
        &env.url,
        ALICE,
        json!({"model": "m", "input": "three", "previous_response_id": second["id"], "instructions": "new rules"}),
    )
    .await;
    let third_id = third.last()["response"]["id"].as_str().expect("id").to_string();
    let expected = vec![
        ("system".to_string(), "new rules".to_string()),
        ("user".to_string(), "one".to_string()),
        ("assistant".to_string(), "You said: one".to_string()),
        ("user".to_string(), "two".to_string()),
        ("assistant".to_string(), "You said: two".to_string()),
        ("user".to_string(), "three".to_string()),
    ];
    assert_eq!(messages(&env, 2), expected);
    assert_eq!(
        messages(&env, 1),
        vec![
            ("user".to_string(), "one".to_string()),
            ("assistant".to_string(), "You said: one".to_string()),
            ("user".to_string(), "two".to_string()),
        ]
    );
    // The streamed response was stored before its last event was sent.
    let (status, got) = env.call(ALICE, "GET", &format!("/v1/responses/{third_id}"), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "completed");
    // Unknown previous id: 404 previous_response_not_found.
    let (status, error) = env
        .call(
            ALICE,
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"})),
        )
        .await;
    assert_error_envelope(&error, status, "previous_response_not_found");
    // conversation + previous_response_id together: 400.
    let (status, error) = env
        .call(ALICE, "POST", "/v1/responses", Some(json!({"model": "m", "input": "x", "previous_response_id": first["id"], "conversation": "conv_x"})))
        .await;
    assert_eq!(status, 400, "{error}");
}

async fn item_reference_resolves_owned_items(engine: Engine) {
    let env = start(engine).await;
    let first = env.create(ALICE, json!({"model": "m", "input": "remember me"})).await;
    let output_id = first["output"][0]["id"].as_str().expect("output id").to_string();
    let (_, items) = env
        .call(
            ALICE,
            "GET",
            &format!("/v1/responses/{}/input_items", first["id"].as_str().expect("id")),
            None,
        )
        .await;
    let input_id = items["data"][0]["id"].as_str().expect("input id").to_string();
    env.create(
        ALICE,
        json!({"model": "m", "input": [
            {"type": "item_reference", "id": input_id},
            {"type": "item_reference", "id": output_id},
            {"role": "user", "content": "and now"}
        ]}),
    )
    .await;
    assert_eq!(
        messages(&env, 1),
        vec![
            ("user".to_string(), "remember me".to_string()),
            ("assistant".to_string(), "You said: remember me".to_string()),
            ("user".to_string(), "and now".to_string()),
        ]
    );
    let (status, error) = env
        .call(
            ALICE,
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_unknown"}]})),
        )
        .await;
    assert_error_envelope(&error, status, "not_found");
    assert_eq!(status, 404);
}

async fn conversations_end_to_end(engine: Engine) {
    let env = start(engine).await;
    let (status, conversation) = env
        .call(
            ALICE,
            "POST",
            "/v1/conversations",
            Some(json!({"metadata": {"topic": "tests"}, "items": [{"type": "message", "role": "user", "content": "hi from the start"}]})),
        )
        .await;
    assert_eq!(status, 200, "{conversation}");
    let id = conversation["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("conv_"));
    assert_eq!(conversation["object"], "conversation");
    assert_eq!(conversation["metadata"], json!({"topic": "tests"}));
    assert!(conversation["created_at"].is_i64());
    let (_, got) = env.call(ALICE, "GET", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(got, conversation);

    // A response in the conversation sees its items, and adds its input and output.
    let response =
        env.create(ALICE, json!({"model": "m", "input": "question", "conversation": id})).await;
    assert_eq!(response["conversation"], json!({"id": id}));
    assert_eq!(
        messages(&env, 0),
        vec![
            ("user".to_string(), "hi from the start".to_string()),
            ("user".to_string(), "question".to_string())
        ]
    );
    let response = env
        .create(ALICE, json!({"model": "m", "input": "again", "conversation": {"id": id}}))
        .await;
    assert_eq!(response["conversation"]["id"], id.as_str());
    assert_eq!(messages(&env, 1).len(), 4);
    let (status, items) =
        env.call(ALICE, "GET", &format!("/v1/conversations/{id}/items?order=asc"), None).await;
    assert_eq!(status, 200, "{items}");
    assert_list(&items);
    let texts: Vec<String> = items["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| {
            assert_valid("ItemField", i);
            i["content"][0]["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(
        texts,
        ["hi from the start", "question", "You said: question", "again", "You said: again"]
    );

    // Append, get, delete an item; update metadata; delete the conversation.
    let (status, added) = env
        .call(
            ALICE,
            "POST",
            &format!("/v1/conversations/{id}/items"),
            Some(json!({"items": [{"role": "user", "content": "appended"}]})),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let item_id = added["data"][0]["id"].as_str().expect("item id").to_string();
    let (status, item) =
        env.call(ALICE, "GET", &format!("/v1/conversations/{id}/items/{item_id}"), None).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["content"][0]["text"], "appended");
    let (_, page) =
        env.call(ALICE, "GET", &format!("/v1/conversations/{id}/items?limit=2"), None).await;
    assert_eq!(page["data"][0]["id"], item_id.as_str());
    assert_eq!(page["has_more"], true);
    let (status, after_delete) =
        env.call(ALICE, "DELETE", &format!("/v1/conversations/{id}/items/{item_id}"), None).await;
    assert_eq!(status, 200, "{after_delete}");
    assert_eq!(after_delete["object"], "conversation");
    let (status, _) =
        env.call(ALICE, "GET", &format!("/v1/conversations/{id}/items/{item_id}"), None).await;
    assert_eq!(status, 404);
    let (status, updated) = env
        .call(
            ALICE,
            "POST",
            &format!("/v1/conversations/{id}"),
            Some(json!({"metadata": {"topic": "changed"}})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["metadata"]["topic"], "changed");
    let (status, deleted) =
        env.call(ALICE, "DELETE", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"id": id, "object": "conversation.deleted", "deleted": true}));
    let (status, error) = env.call(ALICE, "GET", &format!("/v1/conversations/{id}"), None).await;
    assert_error_envelope(&error, status, "not_found");
    let (status, _) = env
        .call(
            ALICE,
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": "x", "conversation": id})),
        )
        .await;
    assert_eq!(status, 404);
}

async fn users_see_only_their_own_objects(engine: Engine) {
    let env = start(engine).await;
    let response = env.create(ALICE, json!({"model": "m", "input": "alice's"})).await;
    let id = response["id"].as_str().expect("id").to_string();
    let output_id = response["output"][0]["id"].as_str().expect("output id").to_string();
    let (_, conversation) = env
        .call(
            ALICE,
            "POST",
            "/v1/conversations",
            Some(json!({"items": [{"role": "user", "content": "alice's item"}]})),
        )
        .await;
    let conv = conversation["id"].as_str().expect("conv id").to_string();
    let (_, items) = env.call(ALICE, "GET", &format!("/v1/conversations/{conv}/items"), None).await;
    let conv_item = items["data"][0]["id"].as_str().expect("item id").to_string();

    // Bob (same tenant) and the other tenant's admin: 404 everywhere, never 403, never data.
    for key in [BOB, OTHER_TENANT_ADMIN] {
        let not_found: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/v1/responses/{id}"), None),
            ("GET", format!("/v1/responses/{id}/input_items"), None),
            ("DELETE", format!("/v1/responses/{id}"), None),
            (
                "POST",
                "/v1/responses".into(),
                Some(json!({"model": "m", "input": "x", "previous_response_id": id})),
            ),
            (
                "POST",
                "/v1/responses".into(),
                Some(json!({"model": "m", "input": [{"type": "item_reference", "id": output_id}]})),
            ),
            (
                "POST",
                "/v1/responses".into(),
                Some(json!({"model": "m", "input": [{"type": "item_reference", "id": conv_item}]})),
            ),
            (
                "POST",
                "/v1/responses".into(),
                Some(json!({"model": "m", "input": "x", "conversation": conv})),
            ),
            ("GET", format!("/v1/conversations/{conv}"), None),
            ("POST", format!("/v1/conversations/{conv}"), Some(json!({"metadata": {}}))),
            ("GET", format!("/v1/conversations/{conv}/items"), None),
            (
                "POST",
                format!("/v1/conversations/{conv}/items"),
                Some(json!({"items": [{"role": "user", "content": "intruder"}]})),
            ),
            ("GET", format!("/v1/conversations/{conv}/items/{conv_item}"), None),
            ("DELETE", format!("/v1/conversations/{conv}/items/{conv_item}"), None),
            ("DELETE", format!("/v1/conversations/{conv}"), None),
        ];
        for (method, path, body) in not_found {
            let (status, error) = env.call(key, method, &path, body).await;
            assert_eq!(status, 404, "{key} {method} {path}: {error}");
            assert!(!error.to_string().contains("alice's"), "{method} {path} leaked: {error}");
        }
        let (status, list) = env.call(key, "GET", "/v1/responses", None).await;
        assert_eq!(status, 200);
        assert!(ids(&list).is_empty(), "{key} lists {list}");
    }
    // Alice's objects are all still there, untouched.
    let (_, items) = env.call(ALICE, "GET", &format!("/v1/conversations/{conv}/items"), None).await;
    assert_eq!(ids(&items), vec![conv_item.clone()]);
    // The admin of the tenant sees, lists and chains from Alice's objects.
    let (status, got) = env.call(ADMIN, "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 200, "{got}");
    let (_, list) = env.call(ADMIN, "GET", "/v1/responses", None).await;
    assert_eq!(ids(&list), vec![id.clone()]);
    let (status, _) =
        env.call(ADMIN, "GET", &format!("/v1/conversations/{conv}/items"), None).await;
    assert_eq!(status, 200);
    let chained =
        env.create(ADMIN, json!({"model": "m", "input": "x", "previous_response_id": id})).await;
    // ...but what the admin creates is the admin's, not Alice's.
    let (status, _) = env
        .call(ALICE, "GET", &format!("/v1/responses/{}", chained["id"].as_str().expect("id")), None)
        .await;
    assert_eq!(status, 404);
}

async fn background_queue_primitives(engine: Engine) {
    // The store alone: a gateway would start background workers claiming from it.
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = antwort_gateway::store::StoreSettings {
        url: store_url(engine, dir.path()).await,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = antwort_gateway::store::open(&settings).await.expect("store opens");
    let store = store.as_ref();
    let owner = Owner { tenant: "t1".into(), user: "alice".into() };
    let access = Access::owner(&owner);
    let mut queued = Vec::new();
    for i in 0..3 {
        let id = antwort_gateway::ids::new_id("resp");
        let record = NewResponse {
            id: id.clone(),
            owner: owner.clone(),
            created_at: 1,
            status: antwort_gateway::openresponses::response::ResponseStatus::Queued,
            previous_response_id: None,
            conversation_id: None,
            response: json!({"id": id, "object": "response", "status": "queued", "output": []}),
            input: vec![
                json!({"type": "message", "id": format!("msg_in{i}"), "role": "user", "status": "completed", "content": [{"type": "input_text", "text": "q"}]}),
            ],
            request: Some(json!({"model": "m", "input": format!("job {i}")})),
        };
        store.save_response(&record).await.expect("enqueue");
        queued.push(id);
    }
    // Claims hand out the oldest first, each once.
    let first = store
        .claim_queued("w1", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("one queued");
    assert_eq!(first.id, queued[0]);
    assert_eq!(first.request["input"], "job 0");
    assert_eq!(first.attempts, 1);
    let got = store.get_response(&access, &first.id).await.expect("get").expect("exists");
    assert_eq!(got.response["status"], "in_progress");
    // Concurrent claims never hand out the same response twice.
    let (a, b) = tokio::join!(
        store.claim_queued("w2", Duration::from_millis(1)),
        store.claim_queued("w3", Duration::from_millis(1))
    );
    let (a, b) = (a.expect("claim").expect("queued"), b.expect("claim").expect("queued"));
    assert_ne!(a.id, b.id);
    assert!(store.claim_queued("w4", Duration::from_secs(1)).await.expect("claim").is_none());
    // Heartbeats: only the holder renews.
    assert!(store.heartbeat(&first.id, "w1", Duration::from_secs(60)).await.expect("heartbeat"));
    assert!(!store.heartbeat(&first.id, "w2", Duration::from_secs(60)).await.expect("heartbeat"));
    // The 1 ms leases expire; requeue puts one back, once.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = store.expired_leases(10).await.expect("expired");
    let mut expired_ids: Vec<_> = expired.iter().map(|e| e.id.clone()).collect();
    expired_ids.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(expired_ids, expected);
    let holder = expired.iter().find(|e| e.id == a.id).expect("a expired").worker.clone();
    assert!(["w2", "w3"].contains(&holder.as_str()));
    assert!(!store.requeue(&a.id, "someone-else").await.expect("requeue"));
    assert!(store.requeue(&a.id, &holder).await.expect("requeue"));
    assert!(!store.requeue(&a.id, &holder).await.expect("requeue"));
    let again =
        store.claim_queued("w5", Duration::from_secs(60)).await.expect("claim").expect("requeued");
    assert_eq!(again.id, a.id);
    assert_eq!(again.attempts, 2);

    // Events: append (idempotent), read after a sequence number.
    let events: Vec<StoredEvent> = (0..5)
        .map(|n| StoredEvent {
            sequence_number: n,
            event: json!({"type": "response.output_text.delta", "sequence_number": n}),
        })
        .collect();
    store.append_events(&owner, &first.id, &events[..3]).await.expect("append");
    store.append_events(&owner, &first.id, &events[2..]).await.expect("append again");
    assert_eq!(store.events_after(&access, &first.id, None, 100).await.expect("events"), events);
    let tail = store.events_after(&access, &first.id, Some(2), 100).await.expect("events");
    assert_eq!(tail, events[3..].to_vec());
    let bob = Access { tenant: "t1".into(), user: Some("bob".into()) };
    assert!(store.events_after(&bob, &first.id, None, 100).await.expect("events").is_empty());

    // Cancel: marked, visible to the worker, invisible to others.
    assert!(!store.cancel_requested(&first.id).await.expect("flag"));
    assert!(store.request_cancel(&bob, &first.id).await.expect("cancel").is_none());
    let cancelled = store.request_cancel(&access, &first.id).await.expect("cancel").expect("found");
    assert!(cancelled.cancel_requested);
    assert!(store.cancel_requested(&first.id).await.expect("flag"));

    // Finishing releases the lease and stores the output items.
    let done = json!({"id": first.id, "object": "response", "status": "cancelled", "output": [
        {"type": "message", "id": "msg_out", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "partial", "annotations": []}]}
    ]});
    assert!(
        store
            .update_response(
                &access,
                &first.id,
                antwort_gateway::openresponses::response::ResponseStatus::Cancelled,
                &done
            )
            .await
            .expect("update")
    );
    assert!(!store.heartbeat(&first.id, "w1", Duration::from_secs(60)).await.expect("heartbeat"));
    let items = store.response_items(&access, &first.id).await.expect("items").expect("found");
    let item_ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().expect("id")).collect();
    assert_eq!(item_ids, ["msg_in0", "msg_out"]);
    assert!(
        !store
            .update_response(
                &bob,
                &first.id,
                antwort_gateway::openresponses::response::ResponseStatus::Failed,
                &done
            )
            .await
            .expect("update")
    );
}

/// Streams a create request as `key`; checks the stream against the spec and returns it.
async fn post_stream_as(url: &str, key: &str, mut body: Value) -> support::Stream {
    body["stream"] = json!(true);
    let mut response = client()
        .post(format!("{url}/v1/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    assert_eq!(status, 200);
    let mut chunks = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .expect("stream makes progress")
        .expect("stream reads")
    {
        chunks.push(chunk.to_vec());
    }
    let events = support::parse_sse(&chunks);
    let stream =
        support::Stream { status, content_type: "text/event-stream".into(), chunks, events };
    support::assert_stream_conformant(&stream);
    assert_eq!(stream.last()["type"], "response.completed", "{:?}", stream.types());
    stream
}
