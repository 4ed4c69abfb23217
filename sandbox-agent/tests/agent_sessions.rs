//! Sessions over real mTLS with a real interpreter: state, isolation, typed errors, rich output,
//! streaming, interrupt/restart, health, metrics, and who may call at all.

mod common;

use std::time::Duration;

use antwort_common::agent_api::{ExecStatus, ExecuteResult, SessionState};
use antwort_common::error::ErrorEnvelope;
use base64::Engine;
use common::{GATEWAY_ID, PATIENCE, POOL_MANAGER_ID, TestAgent, client_for, png_dimensions};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_persists_and_sessions_are_isolated() {
    let agent = TestAgent::start().await;
    let a = agent.create_session().await;
    let b = agent.create_session().await;
    assert_eq!(a.state, SessionState::Idle);

    let r = agent.execute(&a.id, "import math\nx = 41\nopen('mine.txt', 'w').write('a')").await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    let r = agent.execute(&a.id, "print(x + 1)\nmath.floor(2.5)").await;
    assert_eq!(
        (r.status, r.stdout.as_str(), r.value.as_deref()),
        (ExecStatus::Ok, "42\n", Some("2"))
    );

    let r = agent.execute(&b.id, "x").await;
    assert_eq!(r.status, ExecStatus::Error);
    assert_eq!(r.error.as_ref().expect("error").name, "NameError");
    let r = agent.execute(&b.id, "import os\nos.path.exists('mine.txt')").await;
    assert_eq!(r.value.as_deref(), Some("False"), "{r:?}");

    // The pool manager may call too; the session list shows both sessions.
    let pm = client_for(&agent.ca, POOL_MANAGER_ID);
    let list: serde_json::Value =
        pm.get(agent.url("/v1/sessions")).send().await.expect("list").json().await.expect("json");
    assert_eq!(list["sessions"].as_array().expect("array").len(), 2);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_typed_with_traceback() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;

    let r = agent.execute(&s.id, "def f(:\n  pass").await;
    assert_eq!(r.status, ExecStatus::Error);
    let e = r.error.expect("syntax error");
    assert_eq!(e.name, "SyntaxError");
    assert!(e.traceback.iter().any(|l| l.contains("SyntaxError")), "{:?}", e.traceback);

    let r = agent.execute(&s.id, "def g():\n    return 1 / 0\nprint('before')\ng()").await;
    assert_eq!(r.status, ExecStatus::Error);
    assert_eq!(r.stdout, "before\n");
    let e = r.error.expect("exception");
    assert_eq!((e.name.as_str(), e.value.as_str()), ("ZeroDivisionError", "division by zero"));
    let tb = e.traceback.join("\n");
    assert!(tb.contains("Traceback") && tb.contains("in g") && tb.contains("return 1 / 0"), "{tb}");
    assert!(!tb.contains("<string>"), "driver frames leak: {tb}");

    // stderr is separate, and the session still works after errors.
    let r = agent.execute(&s.id, "import sys\nsys.stderr.write('warn\\n')\n7 * 6").await;
    assert_eq!(
        (r.status, r.stderr.as_str(), r.value.as_deref()),
        (ExecStatus::Ok, "warn\n", Some("42"))
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plots_and_images_come_back_as_png() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    let code = "import matplotlib.pyplot as plt\n\
                fig = plt.figure(figsize=(4, 3), dpi=100)\n\
                plt.plot([1, 2, 3], [1, 4, 9])\n\
                plt.show()";
    let r = agent.execute(&s.id, code).await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    assert_eq!(r.stderr, "", "no backend warnings");
    assert_eq!(r.rich_outputs.len(), 1, "{r:?}");
    let png =
        base64::engine::general_purpose::STANDARD.decode(&r.rich_outputs[0].data).expect("base64");
    assert_eq!(png_dimensions(&png), (400, 300));
    assert_eq!(r.rich_outputs[0].mime_type, "image/png");
    assert_eq!((r.rich_outputs[0].width, r.rich_outputs[0].height), (Some(400), Some(300)));

    // Figures are closed after capture: the next call has none.
    let r = agent.execute(&s.id, "1").await;
    assert!(r.rich_outputs.is_empty());

    let r = agent.execute(&s.id, "from PIL import Image\nImage.new('RGB', (64, 32), 'red')").await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    assert_eq!(r.rich_outputs.len(), 1);
    let png =
        base64::engine::general_purpose::STANDARD.decode(&r.rich_outputs[0].data).expect("base64");
    assert_eq!(png_dimensions(&png), (64, 32));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_chunks_before_the_result() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    let code = "import time, sys\nprint('first', flush=True)\ntime.sleep(0.5)\n\
                sys.stderr.write('oops\\n')\nprint('second')\n'done'";
    let response = agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/execute/stream", s.id)))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("stream request");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
    let mut seen = Vec::new();
    let mut result = None;
    while let Some(event) =
        tokio::time::timeout(PATIENCE, events.next()).await.expect("event in time")
    {
        let event = event.expect("valid SSE");
        if event.event == "result" {
            result = Some(serde_json::from_str::<ExecuteResult>(&event.data).expect("result json"));
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(&event.data).expect("chunk json");
        seen.push((event.event.clone(), chunk["text"].as_str().expect("text").to_string()));
    }
    let result = result.expect("a result event");
    assert_eq!(result.status, ExecStatus::Ok);
    assert_eq!(result.value.as_deref(), Some("'done'"));
    assert_eq!(result.stdout, "first\nsecond\n");
    // The first event is (the start of) what was printed before the sleep. `print` may write
    // text and newline separately, and stdout and stderr are separate pipes, so their relative
    // order after the sleep is not fixed.
    let first = seen.first().expect("chunks before the result");
    assert!(
        first.0 == "stdout" && !first.1.is_empty() && "first\n".starts_with(&first.1),
        "{seen:?}"
    );
    let stdout: String =
        seen.iter().filter(|(e, _)| e == "stdout").map(|(_, t)| t.as_str()).collect();
    let stderr: String =
        seen.iter().filter(|(e, _)| e == "stderr").map(|(_, t)| t.as_str()).collect();
    assert_eq!((stdout.as_str(), stderr.as_str()), ("first\nsecond\n", "oops\n"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_and_restart() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    agent.execute(&s.id, "kept = 'yes'\nopen('f.txt', 'w').write('x')").await;

    let url = agent.url(&format!("/v1/sessions/{}/execute", s.id));
    let client = agent.client.clone();
    let running = tokio::spawn(async move {
        client
            .post(url)
            .json(
                &serde_json::json!({ "code": "import time\nopen('started', 'w').close()\nfor _ in range(600): time.sleep(0.1)" }),
            )
            .send()
            .await
            .expect("execute")
            .json::<ExecuteResult>()
            .await
            .expect("json")
    });
    // Busy: a second execution is refused with 409, and interrupt reaches the running one.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let info: serde_json::Value = agent
            .client
            .get(agent.url(&format!("/v1/sessions/{}", s.id)))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if info["state"] == "busy" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/execute", s.id)))
        .json(&serde_json::json!({ "code": "1" }))
        .send()
        .await
        .expect("second execute");
    assert_eq!(r.status(), 409);
    let envelope: ErrorEnvelope = r.json().await.expect("envelope");
    assert_eq!(envelope.error.code, "session_busy");
    // The code itself says it runs (an interrupt before that would hit the driver, not the code).
    let started = std::path::Path::new(&s.workspace).join("started");
    while !started.exists() {
        assert!(tokio::time::Instant::now() < deadline, "code never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r: serde_json::Value = agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/interrupt", s.id)))
        .send()
        .await
        .expect("interrupt")
        .json()
        .await
        .expect("json");
    assert_eq!(r["interrupted"], true);
    let result = running.await.expect("task");
    assert_eq!(result.status, ExecStatus::Error);
    assert_eq!(result.error.expect("error").name, "KeyboardInterrupt");
    assert_eq!(agent.execute(&s.id, "kept").await.value.as_deref(), Some("'yes'"));

    // Restart: fresh interpreter, same files.
    let r = agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/restart", s.id)))
        .send()
        .await
        .expect("restart");
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.expect("json");
    assert_eq!(info["generation"], 2);
    let r = agent.execute(&s.id, "import os\n(os.path.exists('f.txt'), 'kept' in globals())").await;
    assert_eq!(r.value.as_deref(), Some("(True, False)"));

    // Delete: gone, and its workspace with it.
    let r = agent
        .client
        .delete(agent.url(&format!("/v1/sessions/{}", s.id)))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert!(!std::path::Path::new(&s.workspace).exists());
    let r =
        agent.client.get(agent.url(&format!("/v1/sessions/{}", s.id))).send().await.expect("get");
    assert_eq!(r.status(), 404);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_enveloped_4xx() {
    let agent = TestAgent::start_with(|c| c.limits.max_sessions = 2).await;
    let check = |status: u16, code: &'static str| {
        move |r: (u16, ErrorEnvelope)| {
            assert_eq!((r.0, r.1.error.code.as_str()), (status, code), "{:?}", r.1);
        }
    };
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json::<ErrorEnvelope>().await.expect("error envelope"))
    };
    let c = &agent.client;
    check(404, "session_not_found")(
        send(
            c.post(agent.url("/v1/sessions/nope/execute")).json(&serde_json::json!({"code": "1"})),
        )
        .await,
    );
    let s = agent.create_session().await;
    let exec = agent.url(&format!("/v1/sessions/{}/execute", s.id));
    check(400, "invalid_request")(
        send(c.post(&exec).header("content-type", "application/json").body("{not json")).await,
    );
    check(400, "invalid_request")(send(c.post(&exec).json(&serde_json::json!({"cod": "1"}))).await);
    check(400, "invalid_request")(send(c.post(agent.url("/v1/sessions")).body("[1]")).await);
    check(404, "route_not_found")(send(c.get(agent.url("/v2/nothing"))).await);
    check(405, "method_not_allowed")(send(c.put(agent.url("/v1/sessions"))).await);
    agent.create_session().await;
    check(429, "too_many_sessions")(send(c.post(agent.url("/v1/sessions"))).await);
    // Nothing changed: still two sessions, the first still works.
    let list: serde_json::Value =
        c.get(agent.url("/v1/sessions")).send().await.expect("list").json().await.expect("json");
    assert_eq!(list["sessions"].as_array().expect("array").len(), 2);
    assert_eq!(agent.execute(&s.id, "1 + 1").await.value.as_deref(), Some("2"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_callers_get_in_and_health_metrics_work() {
    let agent = TestAgent::start().await;
    // A valid SVID of the trust domain, but not an allowed caller: the handshake fails.
    let intruder = client_for(&agent.ca, "spiffe://antwort.test/ns/tenant/sa/intruder");
    assert!(intruder.get(agent.url("/v1/sessions")).send().await.is_err());
    // The gateway's SPIFFE ID minted by another CA: refused too.
    let other_ca = antwort_common::identity::dev_ca::DevCa::new(common::TRUST_DOMAIN).expect("ca");
    let forged = client_for(&other_ca, GATEWAY_ID);
    assert!(forged.get(agent.url("/v1/sessions")).send().await.is_err());
    // No client certificate at all: refused.
    let anonymous =
        reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");
    assert!(anonymous.get(agent.url("/healthz")).send().await.is_err());

    let plain = reqwest::Client::new();
    let r = plain.get(format!("{}/healthz", agent.admin)).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    let r = plain.get(format!("{}/readyz", agent.admin)).send().await.expect("readyz");
    assert_eq!(r.status(), 200);
    let s = agent.create_session().await;
    agent.execute(&s.id, "1").await;
    agent.execute(&s.id, "1/0").await;
    let text = plain
        .get(format!("{}/metrics", agent.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // The warm-up counts as one ok execution.
    assert!(text.contains("antwort_agent_executions_total{status=\"ok\"} 2"), "{text}");
    assert!(text.contains("antwort_agent_executions_total{status=\"error\"} 1"), "{text}");
    assert!(text.contains("antwort_agent_live_sessions 1"), "{text}");
    assert!(text.contains("antwort_agent_execution_duration_seconds_bucket"), "{text}");
    // The admin listener serves nothing else.
    let r = plain.get(format!("{}/v1/sessions", agent.admin)).send().await.expect("admin");
    assert_eq!(r.status(), 404);
    agent.stop().await;
}

/// The session folders in the workspace root (the spare's included, which no list shows).
fn session_dirs(agent: &TestAgent) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(agent.workspace.path())
        .expect("workspace root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

/// Waits until a spare session is ready (the agent's `antwort_agent_spare_sessions` gauge),
/// then returns the session folders.
async fn wait_spare(agent: &TestAgent) -> std::collections::BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let plain = reqwest::Client::new();
    loop {
        let metrics = plain
            .get(format!("{}/metrics", agent.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.lines().any(|l| l == "antwort_agent_spare_sessions 1") {
            return session_dirs(agent);
        }
        assert!(tokio::time::Instant::now() < deadline, "no spare session:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `python.spare_session`: a session started ahead is what the next create hands out (no wait
/// for Python), then the next spare starts; the spare is in no list, takes no `max_sessions`
/// slot, is isolated like any session, and goes at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_session_is_handed_out_and_replaced() {
    let mut agent = TestAgent::start_with(|c| c.limits.max_sessions = 2).await;
    let spare = wait_spare(&agent).await;
    assert_eq!(spare.len(), 1, "{spare:?}");
    let list = |agent: &TestAgent| {
        let url = agent.url("/v1/sessions");
        let client = agent.client.clone();
        async move {
            let v: serde_json::Value =
                client.get(url).send().await.expect("list").json().await.expect("json");
            v["sessions"].as_array().expect("sessions").len()
        }
    };
    assert_eq!(list(&agent).await, 0, "the spare is not listed");

    let a = agent.create_session().await;
    assert!(spare.iter().any(|dir| a.workspace.ends_with(dir.as_str())), "{a:?} from {spare:?}");
    let next = wait_spare(&agent).await;
    assert_eq!(next.len(), 2, "{next:?}");
    let b = agent.create_session().await;
    let b_dir = next.iter().find(|dir| !a.workspace.ends_with(dir.as_str())).expect("new spare");
    assert!(b.workspace.ends_with(b_dir.as_str()), "{b:?} from {next:?}");
    assert_eq!(list(&agent).await, 2);

    // Two sessions are the limit: the spare started meanwhile does not count towards it.
    wait_spare(&agent).await;
    let refused = agent.client.post(agent.url("/v1/sessions")).send().await.expect("create");
    assert_eq!(refused.status(), 429);

    let r = agent.execute(&a.id, "secret = 41\nimport os\nos.getcwd()").await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    let r = agent.execute(&b.id, "secret").await;
    assert_eq!(r.error.as_ref().map(|e| e.name.as_str()), Some("NameError"), "{r:?}");

    // Keep the folder past the agent (which owns it) to look at it after shutdown.
    let workspace = std::mem::replace(&mut agent.workspace, tempfile::tempdir().expect("tempdir"));
    agent.stop().await;
    let left: Vec<_> = std::fs::read_dir(workspace.path())
        .expect("root")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "session folders left after shutdown: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spare_no_session_is_started_ahead() {
    let agent = TestAgent::start_with(|c| c.python.spare_session = false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(session_dirs(&agent).is_empty(), "{:?}", session_dirs(&agent));
    let a = agent.create_session().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(session_dirs(&agent).len(), 1, "only the session asked for");
    assert_eq!(agent.execute(&a.id, "print(2)").await.stdout, "2\n");
    agent.stop().await;
}
