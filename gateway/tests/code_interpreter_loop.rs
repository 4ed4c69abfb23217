//! The agentic loop end to end through the gateway's HTTP API: the scripted model calls
//! `python`, the gateway runs the code in a real `antwort-sandbox-agent` (real Python, mTLS with
//! dev-CA SVIDs; `tools.code_interpreter.agent`, no pool manager) and calls the model again
//! with the output. Items, events, chaining, the turn limit, failures and request validation.

mod support;

use std::time::Duration;

use antwort_scripted_backend::{Script, ScriptedBackend};
use serde_json::{Value, json};
use support::agent::{AGENT_ID, Agent, GATEWAY_ID, TRUST_DOMAIN};
use support::{Gateway, post, post_stream, quick_config};

/// A gateway in front of `backend` whose code_interpreter runs on `agent`.
async fn gateway(
    backend: &ScriptedBackend,
    agent: &Agent,
    svid_dir: &std::path::Path,
    extra: Value,
) -> Gateway {
    agent.write_svid(GATEWAY_ID, svid_dir);
    let mut tools = json!({
        "max_turns": 10,
        "code_interpreter": {
            "identity": {"source": "files", "dir": svid_dir},
            "agent": {"url": agent.api, "spiffe_id": AGENT_ID},
            "agent_spiffe_ids": [{"trust_domain": TRUST_DOMAIN, "path_prefix": "/ns/sandboxes/"}],
        }
    });
    merge(&mut tools, extra);
    let mut raw = quick_config(backend);
    raw.sse_keep_alive_secs = 0.25;
    raw.tools = serde_json::from_value(tools).expect("tools config");
    Gateway::start_with(raw).await
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// `event` without what OpenResponses defines no types for: code_interpreter tools and items.
fn spec_view(event: &Value) -> Value {
    let mut event = event.clone();
    let foreign = |v: &Value| v["type"].as_str().is_some_and(|t| t.contains("code_interpreter"));
    if let Some(response) = event.get_mut("response") {
        for key in ["tools", "output"] {
            if let Some(list) = response[key].as_array_mut() {
                list.retain(|v| !foreign(v));
            }
        }
    }
    if event.get("item").is_some_and(foreign) {
        event["item"] = json!({"type": "message", "id": "msg_x", "status": "completed", "role": "assistant", "content": []});
    }
    event
}

fn python(code: &str) -> Script {
    Script::tool_call("python", json!({ "code": code }).to_string())
}

fn ci_tool() -> Value {
    json!([{"type": "code_interpreter", "container": {"type": "auto"}}])
}

/// The `tool` messages the backend received in its `n`-th request.
fn tool_messages(backend: &ScriptedBackend, n: usize) -> Vec<String> {
    let requests = backend.requests();
    requests[n].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

struct Setup {
    backend: ScriptedBackend,
    _agent: Agent,
    gateway: Gateway,
    _dir: tempfile::TempDir,
}

async fn setup(extra: Value) -> Setup {
    let backend = ScriptedBackend::start().await;
    let agent = Agent::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = gateway(&backend, &agent, &dir.path().join("gateway-svid"), extra).await;
    Setup { backend, _agent: agent, gateway, _dir: dir }
}

#[tokio::test]
async fn the_model_calls_python_and_answers_with_its_output() {
    let s = setup(json!({})).await;
    // Usage of the answer turn alone, for comparison with the loop's sum.
    s.backend.enqueue(Script::text("The answer is 42."));
    let (status, single) = post(&s.gateway, json!({"model": "m", "input": "6 times 7?"})).await;
    assert_eq!(status, 200, "{single}");

    s.backend.enqueue(python("print(6 * 7)"));
    s.backend.enqueue(Script::text("The answer is 42."));
    let (status, body) = post(
        &s.gateway,
        json!({
            "model": "m",
            "input": "6 times 7?",
            "tools": ci_tool(),
            "include": ["code_interpreter_call.outputs"],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 2, "{body}");
    let call = &output[0];
    assert_eq!(call["type"], "code_interpreter_call");
    assert!(call["id"].as_str().expect("id").starts_with("ci_"));
    assert_eq!(call["status"], "completed");
    assert_eq!(call["code"], "print(6 * 7)");
    assert!(call["container_id"].as_str().expect("container").starts_with("cntr_"));
    assert_eq!(call["outputs"], json!([{"type": "logs", "logs": "42\n"}]));
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["content"][0]["text"], "The answer is 42.");
    assert_eq!(body["tools"], ci_tool());

    // Two model calls: the first offered `python`, the second read what the code printed.
    let requests = s.backend.requests();
    assert_eq!(requests.len(), 3);
    let offered: Vec<&str> = requests[1].body["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(offered, ["python"]);
    assert_eq!(tool_messages(&s.backend, 2), ["42\n"]);
    // Usage is summed over both turns.
    let turn = |v: &Value, k: &str| v["usage"][k].as_u64().expect("usage");
    assert!(turn(&body, "input_tokens") > turn(&single, "input_tokens"), "{body}");
    assert_eq!(
        turn(&body, "total_tokens"),
        turn(&body, "input_tokens") + turn(&body, "output_tokens")
    );

    // Without `include`, outputs are null, as OpenAI answers.
    s.backend.enqueue(python("print('hi')"));
    s.backend.enqueue(Script::text("done"));
    let (_, plain) =
        post(&s.gateway, json!({"model": "m", "input": "hi", "tools": ci_tool()})).await;
    assert_eq!(plain["output"][0]["outputs"], Value::Null, "{plain}");

    // Retrieval shows outputs only when asked for, whatever the create asked.
    let get = |query: &'static str| {
        let url =
            format!("{}/{}{query}", s.gateway.responses_url(), body["id"].as_str().expect("id"));
        async move {
            let got: Value =
                support::client().get(url).send().await.expect("get").json().await.expect("json");
            got
        }
    };
    assert_eq!(get("").await["output"][0]["outputs"], Value::Null);
    assert_eq!(
        get("?include[]=code_interpreter_call.outputs").await["output"][0]["outputs"],
        json!([{"type": "logs", "logs": "42\n"}])
    );
}

#[tokio::test]
async fn one_stream_spans_every_turn() {
    let s = setup(json!({})).await;
    s.backend.enqueue(python("import time\ntime.sleep(1)\nx = 20 + 1\nprint(x * 2)"));
    s.backend.enqueue(Script::text("It is 42."));
    let stream = post_stream(
        &s.gateway,
        json!({"model": "m", "input": "compute", "tools": ci_tool(), "stream": true}),
    )
    .await;
    let types = stream.types();
    let expected_prefix = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.output_item.added",
    ];
    assert_eq!(&types[..expected_prefix.len()], expected_prefix, "{types:?}");
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(types.iter().filter(|t| **t == "response.created").count(), 1);
    for (i, event) in stream.events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i, "{event}");
        // Types OpenResponses defines are checked against its schema, without the parts it
        // has no types for (the code_interpreter tool and its items).
        let kind = event["type"].as_str().expect("type");
        if !kind.contains("code_interpreter") {
            support::assert_valid(support::event_component(kind), &spec_view(event));
        }
    }
    let code_done = stream.of_type("response.code_interpreter_call_code.done");
    assert_eq!(code_done[0]["code"], "import time\ntime.sleep(1)\nx = 20 + 1\nprint(x * 2)");
    // While the code ran (1 s), the silent stream got keep-alive comments (every 0.25 s).
    let text = String::from_utf8(stream.chunks.concat()).expect("utf-8");
    let interpreting = text.find("code_interpreter_call.interpreting").expect("interpreting");
    let completed = text.find("code_interpreter_call.completed").expect("completed");
    assert!(text[interpreting..completed].contains(": keep-alive\n\n"), "{text}");
    let done = stream.last();
    assert_eq!(done["response"]["output"][0]["status"], "completed");
    assert_eq!(done["response"]["output"][1]["content"][0]["text"], "It is 42.");
    assert_eq!(tool_messages(&s.backend, 1), ["42\n"]);
}

#[tokio::test]
async fn live_output_streams_while_the_code_runs() {
    let s = setup(json!({"code_interpreter": {"stream_output": true}})).await;
    let code = "import sys, time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\nprint('oops', file=sys.stderr)";
    let delta_type = "response.antwort:code_interpreter_call_output.delta";
    s.backend.enqueue(python(code));
    s.backend.enqueue(Script::text("done"));
    let request = json!({
        "model": "m",
        "input": "run it",
        "tools": ci_tool(),
        "include": ["code_interpreter_call.outputs"],
    });
    let stream = post_stream(&s.gateway, request.clone()).await;
    let deltas = stream.of_type(delta_type);
    let joined = |name: &str| -> String {
        deltas
            .iter()
            .filter(|d| d["stream"] == name)
            .map(|d| d["delta"].as_str().expect("delta"))
            .collect()
    };
    assert_eq!(joined("stdout"), "first\nsecond\n", "{deltas:?}");
    assert_eq!(joined("stderr"), "oops\n", "{deltas:?}");
    let call_id = stream.of_type("response.output_item.added")[0]["item"]["id"].clone();
    for delta in &deltas {
        assert_eq!(delta["item_id"], call_id, "{delta}");
        assert_eq!(delta["output_index"], 0, "{delta}");
    }
    // Every delta sits between `interpreting` and `completed`, in one sequence.
    let types = stream.types();
    let at = |kind: &str| types.iter().position(|t| *t == kind).expect(kind);
    let (interpreting, completed) = (
        at("response.code_interpreter_call.interpreting"),
        at("response.code_interpreter_call.completed"),
    );
    for (i, kind) in types.iter().enumerate() {
        if *kind == delta_type {
            assert!(interpreting < i && i < completed, "{types:?}");
        }
    }
    // `first` reached the client while the code still slept: keep-alive comments (every
    // 0.25 s) came between it and `second`. (`print` may write the text and its newline
    // separately, so a delta can be `first` without the newline.)
    let text = String::from_utf8(stream.chunks.concat()).expect("utf-8");
    let first = text.find("\"delta\":\"first").expect("first in the raw stream");
    let second = text.find("\"delta\":\"second").expect("second in the raw stream");
    assert!(text[first..second].contains(": keep-alive\n\n"), "{text}");
    // The item still carries the whole output.
    assert_eq!(
        stream.last()["response"]["output"][0]["outputs"],
        json!([{"type": "logs", "logs": "first\nsecond\noops\n"}])
    );

    // A client that did not ask for outputs gets no live output either.
    s.backend.enqueue(python("print('hidden')"));
    s.backend.enqueue(Script::text("done"));
    let mut without = request;
    without.as_object_mut().expect("object").remove("include");
    let stream = post_stream(&s.gateway, without).await;
    assert!(stream.of_type(delta_type).is_empty(), "{:?}", stream.types());
    assert_eq!(stream.last()["response"]["status"], "completed");
}

#[tokio::test]
async fn a_chain_keeps_its_container_and_variables() {
    let s = setup(json!({})).await;
    s.backend.enqueue(python("secret = 1234"));
    s.backend.enqueue(Script::text("Stored."));
    let (_, first) =
        post(&s.gateway, json!({"model": "m", "input": "remember", "tools": ci_tool()})).await;
    assert_eq!(first["status"], "completed", "{first}");
    let container = first["output"][0]["container_id"].clone();

    s.backend.enqueue(python("print(secret + 1)"));
    s.backend.enqueue(Script::text("1235"));
    let (_, second) = post(
        &s.gateway,
        json!({
            "model": "m",
            "input": "recall",
            "tools": ci_tool(),
            "previous_response_id": first["id"],
            "include": ["code_interpreter_call.outputs"],
        }),
    )
    .await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["output"][0]["container_id"], container);
    assert_eq!(second["output"][0]["outputs"][0]["logs"], "1235\n");
    // The second response's first model call saw the first call and its (empty) output.
    let requests = s.backend.requests();
    let messages = requests[2].body["messages"].as_array().expect("messages");
    let call = messages
        .iter()
        .find(|m| m["tool_calls"].is_array())
        .expect("the earlier python call is in the context");
    assert_eq!(call["tool_calls"][0]["function"]["name"], "python");

    // The container named explicitly works too.
    s.backend.enqueue(python("print(secret * 2)"));
    s.backend.enqueue(Script::text("2468"));
    let (_, third) = post(
        &s.gateway,
        json!({
            "model": "m",
            "input": "again",
            "tools": [{"type": "code_interpreter", "container": container}],
            "include": ["code_interpreter_call.outputs"],
        }),
    )
    .await;
    assert_eq!(third["output"][0]["outputs"][0]["logs"], "2468\n", "{third}");
}

#[tokio::test]
async fn the_turn_limit_ends_the_response_incomplete() {
    let s = setup(json!({"max_turns": 2})).await;
    for i in 0..3 {
        s.backend.enqueue(python(&format!("print({i})")));
    }
    let (status, body) = post(
        &s.gateway,
        json!({"model": "m", "input": "loop", "tools": ci_tool(), "include": ["code_interpreter_call.outputs"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "incomplete", "{body}");
    assert_eq!(body["incomplete_details"]["reason"], "max_tool_turns");
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 2, "{body}");
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(output[0]["outputs"][0]["logs"], "0\n");
    // The second turn's call was not run: the limit was reached.
    assert_eq!(output[1]["status"], "incomplete");
    assert_eq!(s.backend.requests().len(), 2);
}

#[tokio::test]
async fn tool_failures_go_back_to_the_model() {
    let s = setup(json!({"code_interpreter": {"exec_timeout_ms": 1000}})).await;
    s.backend.enqueue(python("import time\ntime.sleep(30)"));
    s.backend.enqueue(Script::text("That took too long."));
    let started = std::time::Instant::now();
    let (status, body) =
        post(&s.gateway, json!({"model": "m", "input": "sleep", "tools": ci_tool()})).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(25), "the execution was not stopped");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["status"], "incomplete");
    let told = tool_messages(&s.backend, 1);
    assert!(told[0].contains("[timeout]"), "{told:?}");

    // A syntax error is an output like any other: the traceback reaches the model.
    s.backend.enqueue(python("def broken(:"));
    s.backend.enqueue(Script::text("Fixed it."));
    let (_, body) =
        post(&s.gateway, json!({"model": "m", "input": "oops", "tools": ci_tool()})).await;
    assert_eq!(body["status"], "completed", "{body}");
    let told = tool_messages(&s.backend, 3);
    assert!(told[0].contains("SyntaxError"), "{told:?}");
}

#[tokio::test]
async fn requests_the_gateway_cannot_run_are_refused() {
    let s = setup(json!({})).await;
    let (status, body) = post(
        &s.gateway,
        json!({
            "model": "m",
            "input": "x",
            "tools": [
                {"type": "code_interpreter", "container": {"type": "auto"}},
                {"type": "function", "name": "python", "parameters": {"type": "object"}},
            ],
        }),
    )
    .await;
    support::assert_error_envelope(&body, status, "invalid_value");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "tools[1].name");

    let (status, body) = post(
        &s.gateway,
        json!({"model": "m", "input": "x", "tools": [{"type": "code_interpreter", "container": "cntr_doesnotexist"}]}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = post(
        &s.gateway,
        json!({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tools[0].container");

    // A gateway without `tools.code_interpreter` says so.
    let plain = Gateway::start(&s.backend).await;
    let (status, body) =
        post(&plain, json!({"model": "m", "input": "x", "tools": ci_tool()})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_tool_type");
}

#[tokio::test]
async fn files_the_code_writes_are_cited_in_the_answer() {
    let s = setup(json!({})).await;
    s.backend.enqueue(python("open('report.csv', 'w').write('a,b\\n1,2\\n')"));
    s.backend.enqueue(Script::text("I saved report.csv for you."));
    let stream = post_stream(
        &s.gateway,
        json!({"model": "m", "input": "save", "tools": ci_tool(), "stream": true}),
    )
    .await;
    let done = stream.last();
    assert_eq!(done["type"], "response.completed", "{done}");
    let container = done["response"]["output"][0]["container_id"].as_str().expect("container");
    let text = &done["response"]["output"][1]["content"][0];
    let annotations = text["annotations"].as_array().expect("annotations");
    assert_eq!(annotations.len(), 1, "{text}");
    let citation = &annotations[0];
    assert_eq!(citation["type"], "container_file_citation");
    assert_eq!(citation["container_id"], container);
    assert_eq!(citation["filename"], "report.csv");
    assert!(citation["file_id"].as_str().is_some_and(|id| !id.is_empty()), "{citation}");
    let body = text["text"].as_str().expect("text");
    let (start, end) = (
        citation["start_index"].as_u64().expect("start") as usize,
        citation["end_index"].as_u64().expect("end") as usize,
    );
    assert_eq!(&body[start..end], "report.csv");
    // The stream announced it before the text was done.
    let added = stream.of_type("response.output_text.annotation.added");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["annotation"], *citation);
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_execution() {
    let s = setup(json!({})).await;
    s.backend.enqueue(python("x = 1"));
    s.backend.enqueue(Script::text("ready"));
    let (_, first) =
        post(&s.gateway, json!({"model": "m", "input": "start", "tools": ci_tool()})).await;
    let container = first["output"][0]["container_id"].as_str().expect("container").to_string();
    let pinned = json!([{"type": "code_interpreter", "container": container}]);

    // A long execution; the client reads until the code runs, then hangs up.
    s.backend.enqueue(python("import time\ntime.sleep(60)"));
    let response = support::client()
        .post(s.gateway.responses_url())
        .json(&json!({"model": "m", "input": "sleep", "tools": pinned, "stream": true}))
        .send()
        .await
        .expect("stream starts");
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    // Until the code runs and the stream was silent for a keep-alive since (the execution
    // request is at the agent by then).
    let running = |seen: &str| {
        seen.find("code_interpreter_call.interpreting")
            .is_some_and(|at| seen[at..].contains(": keep-alive"))
    };
    while !running(&seen) {
        use futures::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(60), body.next())
            .await
            .expect("events in time")
            .expect("more events")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    // The gateway noticed: the stored record of the abandoned response ends `cancelled`.
    let id = seen
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the response id in response.created")
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: Value = support::client()
            .get(format!("{}/{id}", s.gateway.responses_url()))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if got["status"] == "cancelled" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned response stayed {}",
            got["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same container runs the next code at once: the sleeping execution was interrupted
    // (executions in one container take turns, so it would otherwise wait the minute out).
    s.backend.enqueue(python("print(x + 1)"));
    s.backend.enqueue(Script::text("2"));
    let started = std::time::Instant::now();
    let (status, after) = post(
        &s.gateway,
        json!({"model": "m", "input": "after", "tools": pinned, "include": ["code_interpreter_call.outputs"]}),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["output"][0]["outputs"][0]["logs"], "2\n", "{after}");
    assert!(started.elapsed() < Duration::from_secs(30), "waited {:?}", started.elapsed());
}
