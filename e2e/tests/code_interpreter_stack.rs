//! code_interpreter through the whole one-machine stack (issue 6): the real `antwort up` with
//! every component a real process talking real mTLS — gateway -> pool manager (claim) -> sandbox
//! agent (real Python) — and the scripted model backend asking for `python`.
//!
//! - a request, plain and streamed: items, events, the numeric result and a PNG plot;
//! - a chain keeps its container; another user can use neither the container nor the response;
//! - hostile code (endless loop, memory hog, fork storm, stealing keys, network) ends in typed
//!   failures or Python errors, and the stack stays healthy;
//! - a drained pool is a typed `pool_exhausted` failure with a retry hint, and the pool refills
//!   when the claim ends;
//! - the pool manager and the agents refuse plain HTTP and foreign SPIFFE IDs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{IdentityConfig, PeerPolicy, SharedSource, mtls_client, wait_ready};
use antwort_e2e::antwort_up::{self, AntwortUp, Ready};
use base64::Engine as _;
use serde_json::{Value, json};

const ALICE_KEY: &str = "sk-antwort-e2e-alice-0123456789";
const BOB_KEY: &str = "sk-antwort-e2e-bob-0123456789abc";

/// A uid range per test process (sandboxes of parallel tests never share a uid), apart from
/// the ranges other e2e test binaries use.
fn uid_base() -> String {
    (50_000 + (std::process::id() % 400) * 20).to_string()
}

struct Stack {
    dir: tempfile::TempDir,
    up: AntwortUp,
    ready: Ready,
    http: reqwest::Client,
}

impl Stack {
    /// `antwort up` on a fresh data folder with `args` and `env`, waited for until ready.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Stack {
        // reqwest is built without a default TLS provider (ring only, chosen here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = uid_base();
        let mut all = vec!["--listen", "127.0.0.1:0", "--sandbox-uid-base", uid.as_str()];
        all.extend_from_slice(args);
        let mut up = AntwortUp::spawn(&dir.path().join("data"), &all, env);
        let ready = up.wait_ready();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("an HTTP client");
        Stack { dir, up, ready, http }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn post(&self, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/responses", self.ready.base_url)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    async fn get(&self, key: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.ready.base_url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A streamed create: the events in order.
    async fn stream(&self, body: &Value) -> Vec<Value> {
        let mut body = body.clone();
        body["stream"] = json!(true);
        let response = self
            .http
            .post(format!("{}/responses", self.ready.base_url))
            .json(&body)
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("the stream");
        text.split("\n\n")
            .filter_map(|frame| frame.lines().find_map(|line| line.strip_prefix("data: ")))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
            .collect()
    }

    async fn ready_sandboxes(&self) -> Option<u32> {
        antwort_up::ready_sandboxes(&self.http, &self.ready.pool_manager_admin, "python").await
    }
}

/// A request whose scripted model runs each of `codes` (one turn each), then says `answer`.
fn scripted(codes: &[&str], answer: &str) -> Value {
    scripted_after(0, codes, answer)
}

/// [`scripted`] for a request that continues a chain holding `earlier` assistant turns (the
/// scripted model picks its turn by counting the conversation's assistant turns).
fn scripted_after(earlier: usize, codes: &[&str], answer: &str) -> Value {
    let mut turns: Vec<Value> = vec![json!({"content": "(an earlier turn)"}); earlier];
    turns.extend(
        codes
            .iter()
            .map(|code| json!({"tool_calls": [{"name": "python", "arguments": {"code": code}}]})),
    );
    turns.push(json!({"content": answer}));
    json!({
        "model": "scripted",
        "instructions": format!("SCRIPT: {}", json!({ "turns": turns })),
        "input": "Use Python.",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "include": ["code_interpreter_call.outputs"],
    })
}

fn calls(response: &Value) -> Vec<Value> {
    response["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|item| item["type"] == "code_interpreter_call")
        .cloned()
        .collect()
}

fn logs(call: &Value) -> String {
    call["outputs"].as_array().expect("outputs").iter().filter_map(|o| o["logs"].as_str()).collect()
}

const PLOT: &str = "import numpy as np\nimport matplotlib.pyplot as plt\nx = np.arange(1, 11)\n\
    print(int((x ** 2).sum()))\nplt.plot(x, x ** 2)\nplt.savefig('squares.png')\nplt.show()";

fn assert_png_plot(call: &Value) {
    let url = call["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["type"] == "image")
        .and_then(|o| o["url"].as_str())
        .unwrap_or_else(|| panic!("an image output: {call:#}"));
    let data = url.strip_prefix("data:image/png;base64,").expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} bytes", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_interpreter_request_runs_through_every_component() {
    let stack = Stack::start(&[], &[]);
    let (status, response) = stack.post(None, &scripted(&[PLOT], "The sum is 385.")).await;
    assert_eq!(status, 200, "{response:#}");
    assert_eq!(response["status"], "completed", "{response:#}");
    let call = &calls(&response)[0];
    assert_eq!(call["status"], "completed", "{call:#}");
    assert_eq!(logs(call).trim(), "385", "{call:#}");
    assert_png_plot(call);
    let container = call["container_id"].as_str().expect("container");
    // The answer cites the file the code wrote.
    let answer = response["output"].as_array().expect("output").last().expect("answer").clone();
    assert_eq!(answer["content"][0]["text"], "The sum is 385.");
    let cited = answer["content"][0]["annotations"].as_array().expect("annotations");
    assert!(
        cited.iter().any(|a| a["type"] == "container_file_citation"
            && a["container_id"] == container
            && a["filename"] == "squares.png"),
        "{answer:#}"
    );

    // Streamed: one lifecycle, one sequence, the code_interpreter events in OpenAI's order.
    let events = stack.stream(&scripted(&[PLOT], "The sum is 385.")).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i, "{event}");
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("type")).collect();
    let order = [
        "response.created",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.completed",
    ];
    let mut at = 0;
    for kind in order {
        at += types[at..]
            .iter()
            .position(|t| *t == kind)
            .unwrap_or_else(|| panic!("{kind} after {at} in {types:?}"));
    }
    let done = events.last().expect("events");
    let call = &calls(&done["response"])[0];
    assert_eq!(logs(call).trim(), "385");
    assert_png_plot(call);

    // The stored response reads back with its outputs on request.
    let id = done["response"]["id"].as_str().expect("id");
    let (status, stored) =
        stack.get(None, &format!("/responses/{id}?include[]=code_interpreter_call.outputs")).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(logs(&calls(&stored)[0]).trim(), "385");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_keeps_its_container_and_other_users_cannot_use_it() {
    let keys = json!([
        {"key": ALICE_KEY, "tenant": "e2e", "user": "alice"},
        {"key": BOB_KEY, "tenant": "e2e", "user": "bob"},
    ])
    .to_string();
    let stack = Stack::start(&[], &[("ANTWORT_AUTH__API_KEYS", keys.as_str())]);
    let (status, refused) = stack.post(None, &scripted(&["1"], "no")).await;
    assert_eq!(status, 401, "{refused}");

    let (status, first) = stack
        .post(
            Some(ALICE_KEY),
            &scripted(&["secret = 41\nopen('note.txt', 'w').write('kept')"], "stored"),
        )
        .await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(calls(&first).len(), 1, "{first:#}");
    let container = calls(&first)[0]["container_id"].as_str().expect("container").to_owned();
    // The chain holds two assistant turns (the call, the answer).
    let mut second = scripted_after(2, &["print(secret + 1, open('note.txt').read())"], "42");
    second["previous_response_id"] = first["id"].clone();
    let (status, second) = stack.post(Some(ALICE_KEY), &second).await;
    assert_eq!(status, 200, "{second:#}");
    let call = &calls(&second)[0];
    assert_eq!(call["container_id"], container.as_str(), "the chain keeps its container");
    assert_eq!(logs(call).trim(), "42 kept", "{call:#}");

    // Bob can name neither alice's container nor her response.
    let mut stolen = scripted(&["print(secret)"], "x");
    stolen["tools"] = json!([{"type": "code_interpreter", "container": container}]);
    let (status, error) = stack.post(Some(BOB_KEY), &stolen).await;
    assert_eq!(status, 404, "{error:#}");
    assert_eq!(error["error"]["code"], "not_found", "{error:#}");
    assert!(error["error"]["message"].as_str().expect("message").contains(&container), "{error:#}");
    let mut chained = scripted(&["print(secret)"], "x");
    chained["previous_response_id"] = second["id"].clone();
    let (status, error) = stack.post(Some(BOB_KEY), &chained).await;
    assert_eq!(status, 404, "{error:#}");
    let (status, _) = stack
        .get(Some(BOB_KEY), &format!("/responses/{}", first["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, 404);
    // Bob's own auto container is a fresh one: alice's variables are not there.
    let (status, own) = stack.post(Some(BOB_KEY), &scripted(&["print(secret)"], "x")).await;
    assert_eq!(status, 200, "{own:#}");
    let call = &calls(&own)[0];
    assert_ne!(call["container_id"], container.as_str());
    assert!(logs(call).contains("NameError"), "{call:#}");
}

/// Every private key file in `dir`, recursively.
fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().contains("key")) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_code_gets_typed_failures_and_the_stack_stays_healthy() {
    let stack = Stack::start(&[], &[("ANTWORT_TOOLS__CODE_INTERPRETER__EXEC_TIMEOUT_MS", "8000")]);
    let gateway_port = stack.ready.addr.rsplit(':').next().expect("port").to_owned();
    // The SVID keys of the CA, the gateway, the pool manager and every agent.
    let keys = key_files(&stack.data_dir());
    assert!(keys.len() >= 3, "{keys:?}");
    let keys_py = serde_json::to_string(&keys).expect("paths");
    let steal = format!(
        "import json\nfor path in json.loads({keys_py:?}):\n    try:\n        open(path).read()\n        print('READ', path)\n    except OSError as e:\n        print('denied', type(e).__name__)"
    );
    let network = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {gateway_port}), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('no network', type(e).__name__)"
    );
    let forks = "import os, time\npids = []\ntry:\n    for _ in range(5000):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        pids.append(pid)\nexcept OSError as e:\n    print('fork refused after', len(pids), type(e).__name__)\nfor pid in pids:\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)";
    let codes = [
        "while True:\n    pass",
        "hog = bytearray(3 * 1024 ** 3)",
        forks,
        steal.as_str(),
        network.as_str(),
        "print('still here')",
    ];
    let (status, response) = stack.post(None, &scripted(&codes, "survived")).await;
    assert_eq!(status, 200, "{response:#}");
    assert_eq!(response["status"], "completed", "{response:#}");
    let ran = calls(&response);
    assert_eq!(ran.len(), codes.len(), "{response:#}");
    assert_eq!(ran[0]["status"], "incomplete");
    assert!(logs(&ran[0]).contains("[timeout] The code was stopped after 8."), "{:#}", ran[0]);
    assert_eq!(ran[1]["status"], "incomplete");
    assert!(logs(&ran[1]).contains("[out_of_memory]"), "{:#}", ran[1]);
    assert!(logs(&ran[2]).starts_with("fork refused after"), "{:#}", ran[2]);
    let forked: usize =
        logs(&ran[2]).split_whitespace().nth(3).and_then(|n| n.parse().ok()).expect("a count");
    assert!(forked < 5000, "{:#}", ran[2]);
    let stolen = logs(&ran[3]);
    assert_eq!(stolen.matches("denied").count(), keys.len(), "{stolen}");
    assert!(!stolen.contains("READ"), "{stolen}");
    assert!(logs(&ran[4]).starts_with("no network"), "{:#}", ran[4]);
    assert_eq!(logs(&ran[5]).trim(), "still here");

    // The stack is healthy: readiness, and a new container for a new response.
    let ready =
        stack.http.get(format!("http://{}/readyz", stack.ready.addr)).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let (status, again) = stack.post(None, &scripted(&["print(6 * 7)"], "42")).await;
    assert_eq!(status, 200, "{again:#}");
    assert_eq!(logs(&calls(&again)[0]).trim(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_pool_is_a_typed_failure_and_refills_when_the_claim_ends() {
    let stack = Stack::start(
        &["--pool-min-ready", "1", "--pool-max-pods", "1"],
        &[("ANTWORT_TOOLS__CODE_INTERPRETER__IDLE_TIMEOUT_SECS", "2")],
    );
    let (status, first) = stack.post(None, &scripted(&["x = 1"], "holding")).await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(calls(&first)[0]["status"], "completed", "{first:#}");

    // The one sandbox is claimed: a second response's new container cannot get one.
    let (status, second) = stack.post(None, &scripted(&["print(1)"], "later")).await;
    assert_eq!(status, 200, "{second:#}");
    let call = &calls(&second)[0];
    assert_eq!(call["status"], "failed", "{call:#}");
    let text = logs(call);
    assert!(
        text.starts_with("[pool_exhausted] No sandbox is free right now; try again in about "),
        "{text}"
    );

    // The first container idles out, its claim ends, the pool manager replaces the sandbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, retried) = stack.post(None, &scripted(&["print(2)"], "now")).await;
        assert_eq!(status, 200, "{retried:#}");
        let call = &calls(&retried)[0];
        if call["status"] == "completed" {
            assert_eq!(logs(call).trim(), "2");
            assert_ne!(call["container_id"], calls(&first)[0]["container_id"]);
            break;
        }
        assert!(logs(call).starts_with("[pool_exhausted]"), "{call:#}");
        assert!(Instant::now() < deadline, "the pool never refilled:\n{}", stack.up.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ... and keeps refilling to minReady after that claim, too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.ready_sandboxes().await != Some(1) {
        assert!(Instant::now() < deadline, "no warm sandbox again:\n{}", stack.up.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An mTLS client presenting the SVID in `dir`, accepting only a server with `server_id`.
async fn client_as(dir: &Path, server_id: &str) -> (SharedSource, reqwest::Client) {
    let config: IdentityConfig =
        serde_json::from_value(json!({"source": "files", "dir": dir})).expect("files config");
    let source = config.start().expect("the SVID source");
    wait_ready(&*source, Duration::from_secs(10)).await.expect("the SVID loads");
    let policy = PeerPolicy::exact([server_id]).expect("a SPIFFE ID");
    let client = mtls_client(source.clone(), policy).expect("an mTLS client");
    (source, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_refuse_plain_http_and_foreign_identities() {
    let stack = Stack::start(&["--pool-min-ready", "1"], &[]);
    let data = stack.data_dir();
    let api_addr = stack.ready.pool_manager_api.clone();
    let trust_domain = "antwort.local";
    let manager_id = format!("spiffe://{trust_domain}/ns/antwort/sa/pool-manager");
    // A workload of the same trust domain, but not the gateway.
    let ca = DevCa::load_or_create(&data.join("identity").join("ca"), trust_domain)
        .expect("the stack's CA");
    let intruder = stack.dir.path().join("intruder");
    ca.write_svid(&format!("spiffe://{trust_domain}/ns/antwort/sa/intruder"), &intruder)
        .expect("an SVID");

    // The gateway's identity may claim (the positive control for the refusals below).
    let (_gw, as_gateway) = client_as(&data.join("identity").join("gateway"), &manager_id).await;
    let claim: Value = as_gateway
        .post(format!("https://{api_addr}/v1/claims"))
        .json(&json!({"pool": "python", "session_key": "e2e", "ttl_secs": 60}))
        .send()
        .await
        .expect("the gateway's identity is served")
        .json()
        .await
        .expect("a claim");
    let endpoint = claim["agent_endpoint"].as_str().unwrap_or_else(|| panic!("{claim}")).to_owned();
    let agent_id = claim["agent_spiffe_id"].as_str().expect("agent id").to_owned();
    let (_gw2, gateway_to_agent) =
        client_as(&data.join("identity").join("gateway"), &agent_id).await;
    let sessions = gateway_to_agent
        .get(format!("{endpoint}/v1/sessions"))
        .send()
        .await
        .expect("the gateway's identity reaches the agent");
    assert_eq!(sessions.status(), 200);

    // Another workload of the trust domain completes no handshake with either.
    let (_i1, intruder_to_manager) = client_as(&intruder, &manager_id).await;
    let refused = intruder_to_manager.get(format!("https://{api_addr}/v1/pools")).send().await;
    assert!(refused.is_err(), "the pool manager served a foreign ID: {refused:?}");
    let (_i2, intruder_to_agent) = client_as(&intruder, &agent_id).await;
    let refused = intruder_to_agent.get(format!("{endpoint}/v1/sessions")).send().await;
    assert!(refused.is_err(), "the agent served a foreign ID: {refused:?}");

    // Plain HTTP gets no answer from either.
    let plain = reqwest::Client::new();
    for url in [
        format!("http://{api_addr}/v1/pools"),
        endpoint.replace("https://", "http://") + "/v1/sessions",
    ] {
        let answer = plain.get(&url).timeout(Duration::from_secs(10)).send().await;
        assert!(
            answer.as_ref().map_or(true, |a| !a.status().is_success()),
            "{url} answered plain HTTP: {answer:?}"
        );
    }

    // A server that is not who the client expects is refused by the client, too: the gateway's
    // identity dialing the agent while expecting the pool manager.
    let (_gw3, confused) = client_as(&data.join("identity").join("gateway"), &manager_id).await;
    assert!(confused.get(format!("{endpoint}/v1/sessions")).send().await.is_err());

    let claim_id = claim["claim_id"].as_str().expect("claim id");
    let released = as_gateway
        .delete(format!("https://{api_addr}/v1/claims/{claim_id}"))
        .send()
        .await
        .expect("release");
    assert!(released.status().is_success(), "{released:?}");
}
