//! The one-machine stack (issue 6): `antwort up` as a user runs it — the real `antwort` binary
//! starting the development CA's SVIDs, `antwort-pool-manager` (local runtime, warm `python`
//! pool of real `antwort-sandbox-agent`s), `antwort-gateway` (embedded SQLite store,
//! code_interpreter over mTLS) and a model backend. Python runs end to end through gateway ->
//! pool manager claim -> agent; a stop (SIGTERM), a dead component, a SIGKILLed `antwort` all
//! leave no process of the stack behind (checked by a /proc scan for the recorded pids and for
//! anything running from the test's data folder); `ANTWORT_BACKEND_URL` replaces the scripted
//! backend.

use std::process::Command;
use std::time::Duration;

use antwort_e2e::antwort_up::{self, AntwortUp, Ready};
use antwort_e2e::http;
use antwort_e2e::service::Service;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long `antwort` may take to stop everything (the components' own grace periods are
/// shorter: the gateway drains nothing here, each agent gets 5 s).
const STOP_BOUND: Duration = Duration::from_secs(30);
/// The Python the scripted model asks for: a result that must be computed, and where it ran.
const CODE: &str = "import os\nprint(sum(i * i for i in range(1000)), os.getcwd())";
const RESULT: &str = "332833500";
const ANSWER: &str = "The sum is 332833500.";

/// A uid range of its own per test process, so sandboxes of parallel tests never share a uid.
fn uid_base() -> String {
    (41_000 + (std::process::id() % 400) * 20).to_string()
}

/// `antwort up --listen 127.0.0.1:0` on a fresh data folder, waited for until ready.
fn start(extra_args: &[&str], env: &[(&str, &str)]) -> (tempfile::TempDir, AntwortUp, Ready) {
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = uid_base();
    let mut args = vec!["--listen", "127.0.0.1:0", "--sandbox-uid-base", uid.as_str()];
    args.extend_from_slice(extra_args);
    let mut up = AntwortUp::spawn(&dir.path().join("data"), &args, env);
    let ready = up.wait_ready();
    (dir, up, ready)
}

/// A code_interpreter request whose scripted model calls `python` with [`CODE`], then answers.
fn python_request() -> Value {
    let script = json!({"turns": [
        {"tool_calls": [{"name": "python", "arguments": {"code": CODE}}]},
        {"content": ANSWER},
    ]});
    json!({
        "model": "scripted",
        "instructions": format!("SCRIPT: {script}"),
        "input": "What is the sum of the squares below 1000? Use Python.",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "include": ["code_interpreter_call.outputs"],
    })
}

/// Checks a completed code_interpreter response: the call ran [`CODE`] in a sandbox of this
/// stack (its working folder lies in `data_dir`) and printed [`RESULT`]; the answer follows.
fn assert_python_ran(response: &Value, data_dir: &std::path::Path, context: &dyn Fn() -> String) {
    assert_eq!(response["status"], "completed", "{response:#}\n{}", context());
    let output = response["output"].as_array().expect("output items");
    let call = &output[0];
    assert_eq!(call["type"], "code_interpreter_call", "{response:#}");
    assert_eq!(call["status"], "completed", "{response:#}");
    assert_eq!(call["code"], CODE, "{response:#}");
    assert!(call["container_id"].as_str().is_some_and(|c| c.starts_with("cntr_")), "{call:#}");
    let logs = call["outputs"][0]["logs"].as_str().expect("logs output");
    let (printed, cwd) = logs.trim().split_once(' ').expect("two words printed");
    assert_eq!(printed, RESULT, "{logs}");
    let sandboxes = data_dir.join("pool").join("sandboxes");
    assert!(
        cwd.starts_with(&*sandboxes.to_string_lossy()),
        "ran in {cwd}, not under {sandboxes:?}"
    );
    let message = output.last().expect("a message");
    assert_eq!(message["type"], "message", "{response:#}");
    assert_eq!(message["content"][0]["text"], ANSWER, "{response:#}");
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid")), Signal::SIGKILL).expect("SIGKILL");
}

#[test]
fn up_runs_python_through_the_pool_manager_and_stops_everything_on_sigterm() {
    let (_dir, mut up, ready) = start(&[], &[]);
    let data = up.data_dir.clone();
    let log = || up.log();
    assert!(
        ready.text.contains("SCRIPTED stand-in") && ready.text.contains("not a language model"),
        "the scripted backend must be announced as such:\n{}",
        ready.text
    );
    assert!(ready.text.contains("pool python: 2 warm, at most 8"), "{}", ready.text);
    assert!(ready.text.contains("authentication off"), "{}", ready.text);
    let backend_pid = ready.scripted_backend_pid.expect("antwort started the scripted backend");

    // No API key: user auth is off unless configured.
    let created = http::call(&ready.addr, "POST", "/v1/responses", Some(&python_request()));
    assert_eq!(created.status, 200, "{}\n{}", created.body, log());
    let response = created.json();
    assert_python_ran(&response, &data, &log);

    // Stored in the embedded store and readable back.
    let id = response["id"].as_str().expect("response id");
    let path = format!("/v1/responses/{id}?include[]=code_interpreter_call.outputs");
    let fetched = http::call(&ready.addr, "GET", &path, None);
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert_python_ran(&fetched.json(), &data, &log);
    let models = http::call(&ready.addr, "GET", "/v1/models", None);
    assert_eq!(models.status, 200, "{}", models.body);
    assert_eq!(models.json()["object"], "list", "{}", models.body);
    assert!(data.join("antwort.db").is_file(), "the SQLite store lives in the data folder");

    // The stack is really there before the stop (so the emptiness below means something).
    let pids = [up.pid(), ready.gateway_pid, ready.pool_manager_pid, backend_pid];
    let before = antwort_up::leftovers(&data, &pids);
    assert!(before.len() >= 6, "antwort, 3 components and 2+ agents: {before:#?}");

    // One `antwort up` per data folder: a second one is refused before it starts anything.
    let mut second = AntwortUp::spawn(&data, &["--listen", "127.0.0.1:0"], &[]);
    let status = second.wait_exit(STOP_BOUND);
    assert_eq!(status.code(), Some(64), "{}", second.log());
    assert!(second.log().contains("is in use by another `antwort up`"), "{}", second.log());

    up.signal(Signal::SIGTERM);
    let status = up.wait_exit(STOP_BOUND);
    assert!(status.success(), "antwort up exited {status} after SIGTERM:\n{}", up.log());
    let left = antwort_up::wait_no_leftovers(&data, &pids, Duration::from_secs(2));
    assert!(left.is_empty(), "left running after SIGTERM: {left:#?}\n{}", up.log());
    assert!(up.log().contains("nothing left running"), "{}", up.log());
}

#[test]
fn a_killed_component_stops_the_rest_and_antwort_exits_non_zero() {
    let (_dir, mut up, ready) = start(&[], &[]);
    let data = up.data_dir.clone();
    let pids = [
        up.pid(),
        ready.gateway_pid,
        ready.pool_manager_pid,
        ready.scripted_backend_pid.expect("scripted backend"),
    ];
    // The pool manager's agents lose their parent too: they must be swept all the same.
    sigkill(ready.pool_manager_pid);
    let status = up.wait_exit(STOP_BOUND);
    assert_eq!(status.code(), Some(1), "antwort up exited {status}:\n{}", up.log());
    let expected = format!(
        "the pool manager (pid {}) exited unexpectedly: killed by signal 9 (SIGKILL)",
        ready.pool_manager_pid
    );
    assert!(up.log().contains(&expected), "no `{expected}` in:\n{}", up.log());
    let left = antwort_up::wait_no_leftovers(&data, &pids, Duration::from_secs(2));
    assert!(left.is_empty(), "left running after a component died: {left:#?}\n{}", up.log());
}

#[test]
fn a_sigkilled_antwort_leaves_no_process_behind() {
    let (_dir, mut up, ready) = start(&["--pool-min-ready", "1", "--pool-max-pods", "2"], &[]);
    let data = up.data_dir.clone();
    let pids = [
        up.pid(),
        ready.gateway_pid,
        ready.pool_manager_pid,
        ready.scripted_backend_pid.expect("scripted backend"),
    ];
    up.signal(Signal::SIGKILL);
    up.wait_exit(STOP_BOUND);
    // Nobody orchestrates the stop now: the kernel's parent-death signal starts each
    // component's own shutdown, and the pool manager stops its agents.
    let left = antwort_up::wait_no_leftovers(&data, &pids, STOP_BOUND);
    assert!(left.is_empty(), "left running after SIGKILL of antwort: {left:#?}\n{}", up.log());
}

#[test]
fn antwort_backend_url_replaces_the_scripted_backend() {
    let (_, bin_dir) = antwort_up::binaries();
    let mut backend = Service::spawn(
        "antwort-scripted-backend",
        Command::new(bin_dir.join("antwort-scripted-backend")).args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
        ]),
    );
    let line = backend.wait_for("listening on ");
    let url = line.split("listening on ").nth(1).expect("a URL").trim().to_owned();
    let backend_addr = url.trim_start_matches("http://").trim_end_matches("/v1").to_owned();

    let (_dir, mut up, ready) = start(
        &["--pool-min-ready", "1", "--pool-max-pods", "2"],
        &[("ANTWORT_BACKEND_URL", url.as_str())],
    );
    let data = up.data_dir.clone();
    assert_eq!(ready.scripted_backend_pid, None, "no backend of its own:\n{}", ready.text);
    assert!(
        ready.text.contains(&format!("model backend  {url} (from ANTWORT_BACKEND_URL)")),
        "{}",
        ready.text
    );
    assert!(!ready.text.contains("SCRIPTED"), "{}", ready.text);
    assert!(ready.text.contains("pool python: 1 warm, at most 2"), "{}", ready.text);

    let created = http::call(&ready.addr, "POST", "/v1/responses", Some(&python_request()));
    assert_eq!(created.status, 200, "{}\n{}", created.body, up.log());
    assert_python_ran(&created.json(), &data, &|| up.log());

    // Both model turns reached the external backend; the second carried Python's output.
    let recorded = http::call(&backend_addr, "GET", "/_scripted/requests", None).json();
    let turns: Vec<&Value> = recorded
        .as_array()
        .expect("recorded requests")
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(turns.len(), 2, "{recorded:#}");
    let tool_message = turns[1]["body"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool message: {:#}", turns[1]));
    assert!(tool_message.to_string().contains(RESULT), "{tool_message:#}");

    up.signal(Signal::SIGTERM);
    let status = up.wait_exit(STOP_BOUND);
    assert!(status.success(), "antwort up exited {status}:\n{}", up.log());
    let left = antwort_up::wait_no_leftovers(&data, &[ready.gateway_pid], Duration::from_secs(2));
    assert!(left.is_empty(), "{left:#?}");
    // The backend was not antwort's to stop.
    let health = http::call(&backend_addr, "GET", "/health", None);
    assert_eq!(health.status, 200, "{}\n{}", health.body, backend.log());
}

#[test]
fn bad_settings_exit_64_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for (args, env, expected) in [
        (
            vec!["--pool-min-ready", "9", "--pool-max-pods", "8"],
            vec![],
            "--pool-min-ready (9) exceeds --pool-max-pods (8)",
        ),
        (vec![], vec![("ANTWORT_BACKEND_URL", "localhost:8000")], "is not an http(s):// URL"),
        (vec!["--bin-dir", "/nonexistent"], vec![], "antwort-gateway is not in /nonexistent"),
    ] {
        let mut up = AntwortUp::spawn(&data, &args, &env);
        let status = up.wait_exit(STOP_BOUND);
        assert_eq!(status.code(), Some(64), "{args:?} {env:?}: {}", up.log());
        assert!(up.log().contains(expected), "{args:?} {env:?}: no `{expected}` in {}", up.log());
        assert!(!data.exists(), "nothing is created for bad settings");
    }
}

#[test]
fn a_component_that_cannot_start_is_named_and_the_rest_are_stopped() {
    // The gateway's address is taken: the gateway exits at start-up, after the backend and the
    // pool manager (with its agents) are already running.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let uid = uid_base();
    let mut up = AntwortUp::spawn(&data, &["--listen", &addr, "--sandbox-uid-base", &uid], &[]);
    let status = up.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "antwort up exited {status}:\n{}", up.log());
    let log = up.log();
    assert!(log.contains("antwort: the gateway (pid "), "{log}");
    assert!(log.contains("pool manager ready"), "the pool manager had started: {log}");
    assert!(!log.contains("antwort is ready"), "{log}");
    let left = antwort_up::wait_no_leftovers(&data, &[], Duration::from_secs(2));
    assert!(left.is_empty(), "left running after a failed start: {left:#?}\n{log}");
}

#[test]
fn a_second_signal_kills_a_component_that_does_not_stop() {
    let (_dir, mut up, ready) = start(&["--pool-min-ready", "1", "--pool-max-pods", "2"], &[]);
    let data = up.data_dir.clone();
    // A stopped gateway cannot act on SIGTERM: the orderly stop waits (45 s grace by default).
    let gateway = Pid::from_raw(i32::try_from(ready.gateway_pid).expect("pid"));
    kill(gateway, Signal::SIGSTOP).expect("SIGSTOP the gateway");
    up.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    let running = antwort_up::leftovers(&data, &[]);
    assert!(
        running.iter().any(|line| line.starts_with(&format!("{}: ", up.pid()))),
        "antwort waits for the gateway: {running:#?}"
    );
    up.signal(Signal::SIGTERM);
    let status = up.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "antwort up exited {status}:\n{}", up.log());
    assert!(up.log().contains("SIGTERM again: killing what is left"), "{}", up.log());
    let left = antwort_up::wait_no_leftovers(&data, &[ready.gateway_pid], Duration::from_secs(2));
    assert!(left.is_empty(), "{left:#?}\n{}", up.log());
}
