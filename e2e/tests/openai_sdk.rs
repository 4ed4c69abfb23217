//! The official OpenAI Python SDK (`openai`, installed by `scripts/install-test-tools.sh`) drives
//! the whole one-machine stack unchanged but for `base_url` and its API key (issue 6, end-to-end
//! tests): `antwort up` runs the gateway, the pool manager with warm sandbox agents and the
//! scripted backend as processes talking mTLS, and `e2e/python/openai_sdk_code_interpreter.py`
//! calls `responses.create` (plain, `stream=True` and the `responses.stream` helper) and
//! `responses.retrieve` with the code_interpreter tool, then the containers API (create, upload,
//! code in that container, list, content, deletes). The scripted model asks for `print(6*7)`;
//! a claimed sandbox really runs it. The script prints a JSON report of what the SDK parsed;
//! this test checks it field by field.

use std::process::Command;

use antwort_e2e::antwort_up::AntwortUp;
use antwort_e2e::{tools, workspace};
use serde_json::{Value, json};

const CODE: &str = "print(6*7)";
const ANSWER: &str = "6 times 7 is 42.";

/// Fields the SDK's types require but the gateway does not send yet, as `a.b.c` paths inside a
/// response. The SDK's own (lenient) parsing accepts the answers anyway; strict validation
/// finds these, and any other gap fails the test. None today.
const KNOWN_GAPS: &[&str] = &[];

/// Panics unless every strict-validation error in `errors` (`[{loc, msg, type}]`) is a known gap.
fn assert_only_known_gaps(what: &str, errors: &Value, prefix: &[&str]) {
    for error in errors.as_array().expect("strict errors") {
        let loc: Vec<&str> = error["loc"]
            .as_array()
            .expect("loc")
            .iter()
            .map(|part| part.as_str().expect("loc part"))
            .collect();
        let path = loc.strip_prefix(prefix).unwrap_or(&loc).join(".");
        assert!(
            KNOWN_GAPS.contains(&path.as_str()),
            "{what}: the SDK's strict types reject `{}`: {error}",
            loc.join(".")
        );
    }
}

/// Checks one `describe_response` entry of the report: the response as the SDK typed it.
/// `with_outputs`: whether the call's outputs are the logs (`Some(true)`), null (`Some(false)`),
/// or not checked (`None`).
fn assert_answered(what: &str, response: &Value, with_outputs: Option<bool>) {
    let ctx = || format!("{what}: {response:#}");
    assert_eq!(response["status"], "completed", "{}", ctx());
    assert_eq!(response["output_types"], json!(["code_interpreter_call", "message"]), "{}", ctx());
    // The SDK's types (or their Parsed* subclasses from `responses.stream`).
    let typed = json!({
        "Response": true,
        "ResponseCodeInterpreterToolCall": true,
        "ResponseOutputMessage": true,
    });
    assert_eq!(response["is_typed"], typed, "{}", ctx());
    assert_eq!(response["output_text"], ANSWER, "{}", ctx());
    assert_eq!(response["tool_types"], json!(["code_interpreter"]), "{}", ctx());
    assert_only_known_gaps(what, &response["strict_errors"], &[]);
    let call = &response["call"];
    assert_eq!(call["code"], CODE, "{}", ctx());
    assert_eq!(call["status"], "completed", "{}", ctx());
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("ci_")), "{}", ctx());
    assert!(call["container_id"].as_str().is_some_and(|c| c.starts_with("cntr_")), "{}", ctx());
    if let Some(with_outputs) = with_outputs {
        let outputs = if with_outputs {
            json!([{"class": "OutputLogs", "type": "logs", "logs": "42\n"}])
        } else {
            Value::Null
        };
        assert_eq!(call["outputs"], outputs, "{}", ctx());
    }
}

/// The position of each of `wanted` in `types`, in order; panics when one is missing.
fn in_order(types: &[&str], wanted: &[&str]) {
    let mut from = 0;
    for want in wanted {
        let at = types[from..]
            .iter()
            .position(|t| t == want)
            .unwrap_or_else(|| panic!("no {want} after position {from} in {types:?}"));
        from += at + 1;
    }
}

/// The API key the stack accepts (user `sdk`).
const API_KEY: &str = "sk-antwort-e2e-sdk-0123456789abcdef";

#[test]
fn the_openai_python_sdk_runs_code_interpreter_through_the_stack() {
    let python = tools::openai_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = json!([{"key": API_KEY, "tenant": "e2e", "user": "sdk"}]).to_string();
    // A uid range of its own (other e2e binaries run stacks at the same time).
    let uid_base = (60_000 + (std::process::id() % 200) * 20).to_string();
    let mut stack = AntwortUp::spawn(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--sandbox-uid-base", &uid_base],
        &[("ANTWORT_AUTH__API_KEYS", keys.as_str())],
    );
    let ready = stack.wait_ready();
    let script = workspace::path("e2e/python/openai_sdk_code_interpreter.py");
    let out = tools::output(Command::new(python).arg(script).args([
        ready.base_url.as_str(),
        API_KEY,
        "scripted",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("no JSON report ({error}):\n{stdout}\n{stderr}\n{}", stack.log())
    });
    // The whole report, for reading when a check below fails (nextest shows it then).
    eprintln!("{report:#}");
    assert!(
        out.status.success(),
        "the SDK script failed ({}): {report:#}\n{stderr}\n{}",
        out.status,
        stack.log()
    );
    assert_eq!(report["sdk_version"], "3.51.0");
    assert_eq!(report["problems"], json!([]), "{report:#}");

    // responses.create: typed items, the code the model wrote, what Python printed.
    let created = &report["create"];
    assert_answered("create", created, Some(true));
    let id = created["id"].as_str().expect("response id");
    assert!(id.starts_with("resp_"), "{id}");

    // stream=True: every event parsed into its own SDK class, numbered, in the OpenAI order.
    let stream = &report["stream"];
    let events = stream["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("type")).collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i, "{event}");
    }
    in_order(
        &types,
        &[
            "response.created",
            "response.output_item.added",
            "response.code_interpreter_call.in_progress",
            "response.code_interpreter_call_code.delta",
            "response.code_interpreter_call_code.done",
            "response.code_interpreter_call.interpreting",
            "response.code_interpreter_call.completed",
            "response.output_item.done",
            "response.output_text.delta",
            "response.completed",
        ],
    );
    assert_eq!(types.last(), Some(&"response.completed"), "{types:?}");
    let class_of = |kind: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["class"].as_str().expect("class"))
            .collect()
    };
    for (kind, class) in [
        (
            "response.code_interpreter_call.in_progress",
            "ResponseCodeInterpreterCallInProgressEvent",
        ),
        ("response.code_interpreter_call_code.delta", "ResponseCodeInterpreterCallCodeDeltaEvent"),
        ("response.code_interpreter_call_code.done", "ResponseCodeInterpreterCallCodeDoneEvent"),
        (
            "response.code_interpreter_call.interpreting",
            "ResponseCodeInterpreterCallInterpretingEvent",
        ),
        ("response.code_interpreter_call.completed", "ResponseCodeInterpreterCallCompletedEvent"),
        ("response.completed", "ResponseCompletedEvent"),
    ] {
        let classes = class_of(kind);
        assert!(!classes.is_empty(), "no {kind}");
        assert!(classes.iter().all(|c| *c == class), "{kind} parsed as {classes:?}");
    }
    assert_eq!(stream["code_done"], CODE);
    for event in stream["strict_errors"].as_array().expect("strict errors") {
        let what = format!("stream event {}", event["type"]);
        assert_only_known_gaps(&what, &event["errors"], &["response"]);
    }
    assert_answered("stream response.completed", &stream["completed"], Some(true));

    // The SDK's own accumulator (responses.stream) builds the same final response.
    let helper = &report["helper_stream"];
    assert_eq!(helper["event_types"].as_array().map(Vec::len), Some(events.len()), "{helper:#}");
    assert_answered("responses.stream final", &helper["final"], Some(true));

    // responses.retrieve: the stored response. The gateway returns the outputs with or without
    // `include` on retrieve (OpenAI leaves them out without it), so only the include form is
    // pinned.
    assert_eq!(report["retrieve"]["id"], id);
    assert_answered("retrieve", &report["retrieve"], None);
    assert_eq!(report["retrieve_include"]["id"], id);
    assert_answered("retrieve include", &report["retrieve_include"], Some(true));

    // The containers API: the SDK's own objects, code in the container reads the upload and
    // writes a file the listing shows as the assistant's, whose content comes back.
    let containers = &report["containers"];
    let ctx = || format!("{containers:#}");
    assert_eq!(containers["strict"], json!([]), "the SDK's strict types: {}", ctx());
    let id = containers["container"]["id"].as_str().expect("container id");
    assert!(id.starts_with("cntr_"), "{}", ctx());
    assert_eq!(containers["container"]["object"], "container", "{}", ctx());
    assert_eq!(containers["container"]["status"], "running", "{}", ctx());
    assert_eq!(containers["uploaded"]["path"], "/mnt/data/data.csv", "{}", ctx());
    assert_eq!(containers["uploaded"]["bytes"], 26, "{}", ctx());
    assert_eq!(containers["uploaded"]["source"], "user", "{}", ctx());
    assert_eq!(containers["call"]["container_id"], id, "{}", ctx());
    assert_eq!(containers["call"]["status"], "completed", "{}", ctx());
    assert_eq!(containers["call"]["logs"], json!(["3 alpha,1\n"]), "{}", ctx());
    assert_eq!(
        containers["files"],
        json!([["/mnt/data/data.csv", "user"], ["/mnt/data/summary.txt", "assistant"]]),
        "{}",
        ctx()
    );
    assert_eq!(containers["written_content"], "rows=3", "{}", ctx());
    assert_eq!(containers["listed"], true, "{}", ctx());
    assert_eq!(containers["after_delete"], json!(["/mnt/data/summary.txt"]), "{}", ctx());
    assert_eq!(containers["after_container_delete"], "not found", "{}", ctx());
}
