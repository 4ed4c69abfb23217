//! Hostile code: each case is contained by the kernel, comes back with a typed status, and is
//! followed by an agent that still serves another session.

mod common;

use antwort_common::agent_api::{ExecStatus, SessionState};
use common::TestAgent;

/// Another session still runs code after `what`.
async fn still_healthy(agent: &TestAgent, bystander: &str, what: &str) {
    let r = agent.execute(bystander, "sum(range(10))").await;
    assert_eq!((r.status, r.value.as_deref()), (ExecStatus::Ok, Some("45")), "after {what}: {r:?}");
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", agent.admin))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200, "after {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_and_the_session_survives() {
    let agent = TestAgent::start().await;
    let bystander = agent.create_session().await;
    let s = agent.create_session().await;
    agent.execute(&s.id, "kept = 1").await;
    let r = agent.execute_with(&s.id, "while True: pass", Some(1_000)).await;
    assert_eq!(r.status, ExecStatus::Timeout, "{r:?}");
    assert_eq!(r.error.as_ref().expect("error").name, "TimeoutError");
    assert!(r.duration_ms >= 1_000, "{r:?}");
    // SIGINT stopped it, so the interpreter and its state live on.
    assert_eq!(agent.execute(&s.id, "kept").await.value.as_deref(), Some("1"));

    // Code that swallows the interrupt is killed after the grace period; restart brings it back.
    let stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass";
    let r = agent.execute_with(&s.id, stubborn, Some(3_000)).await;
    assert_eq!(r.status, ExecStatus::Timeout, "{r:?}");
    let info: serde_json::Value = agent
        .client
        .get(agent.url(&format!("/v1/sessions/{}", s.id)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(info["state"], serde_json::to_value(SessionState::Dead).expect("json"));
    let r = agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/execute", s.id)))
        .json(&serde_json::json!({"code": "1"}))
        .send()
        .await
        .expect("execute");
    assert_eq!(r.status(), 409);
    agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/restart", s.id)))
        .send()
        .await
        .expect("restart");
    assert_eq!(agent.execute(&s.id, "2 + 2").await.value.as_deref(), Some("4"));
    still_healthy(&agent, &bystander.id, "timeouts").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bombs_are_out_of_memory() {
    let agent = TestAgent::start_with(|c| {
        c.limits.memory_bytes = 256 << 20;
        c.limits.address_space_bytes = 1 << 30;
    })
    .await;
    let bystander = agent.create_session().await;
    let s = agent.create_session().await;
    // One huge allocation: refused by RLIMIT_AS, MemoryError, the session lives on.
    let r = agent.execute(&s.id, "x = bytearray(8 * 1024**3)").await;
    assert_eq!(r.status, ExecStatus::OutOfMemory, "{r:?}");
    assert_eq!(r.error.as_ref().expect("error").name, "MemoryError");
    assert_eq!(agent.execute(&s.id, "'alive'").await.value.as_deref(), Some("'alive'"));
    // Growing touched memory: the cgroup's OOM killer (or RLIMIT_AS without cgroups) stops it.
    let r = agent
        .execute(&s.id, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024**2))")
        .await;
    assert_eq!(r.status, ExecStatus::OutOfMemory, "{r:?}");
    still_healthy(&agent, &bystander.id, "memory bombs").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained() {
    let agent = TestAgent::start_with(|c| c.limits.processes = 32).await;
    let bystander = agent.create_session().await;
    let s = agent.create_session().await;
    let r = agent.execute_with(&s.id, "import os\nwhile True:\n    os.fork()", Some(30_000)).await;
    // The driver's own fork fails once the session's process limit is reached.
    assert_eq!(r.status, ExecStatus::Error, "{r:?}");
    assert_eq!(r.error.as_ref().expect("error").name, "BlockingIOError", "{r:?}");
    still_healthy(&agent, &bystander.id, "a fork bomb").await;
    // Restart kills whatever the bomb left behind and gives a clean interpreter.
    agent
        .client
        .post(agent.url(&format!("/v1/sessions/{}/restart", s.id)))
        .send()
        .await
        .expect("restart");
    let r = agent.execute(&s.id, "import subprocess\nsubprocess.run(['true']).returncode").await;
    assert_eq!(r.value.as_deref(), Some("0"), "{r:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_workspace_are_not_readable() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    // A root-owned 0600 file: the sandbox user may not read it.
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), "root only").expect("write");
    let code = format!("open({:?}).read()", secret.path().display().to_string());
    let r = agent.execute(&s.id, &code).await;
    assert_eq!(r.status, ExecStatus::Error, "{r:?}");
    assert_eq!(r.error.as_ref().expect("error").name, "PermissionError", "{r:?}");
    let r = agent.execute(&s.id, "import os\nos.listdir('/root')").await;
    assert_eq!(r.error.as_ref().map(|e| e.name.as_str()), Some("PermissionError"), "{r:?}");
    // It runs as the configured unprivileged user with no extra groups and a scrubbed env.
    let r = agent
        .execute(&s.id, "import os\n(os.getuid(), os.getgid(), os.getgroups(), sorted(os.environ))")
        .await;
    let uid = agent.config.sandbox.uid;
    assert_eq!(
        r.value.as_deref(),
        Some(format!("({uid}, {uid}, [{uid}], ['HOME', 'LANG', 'LC_ALL', 'MPLBACKEND', 'MPLCONFIGDIR', 'PATH', 'TMPDIR', 'XDG_CACHE_HOME'])").as_str()),
        "{r:?}"
    );
    // Denied by seccomp: ptrace-style and mount-style calls.
    let r = agent.execute(&s.id, "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n(libc.ptrace(0, 0, 0, 0), ctypes.get_errno(), libc.unshare(0x10000000), ctypes.get_errno())").await;
    assert_eq!(r.value.as_deref(), Some("(-1, 1, -1, 1)"), "{r:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_refused_when_the_pool_forbids_it() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let code = format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)");
    let r = agent.execute(&s.id, &code).await;
    assert_eq!(r.status, ExecStatus::Error, "{r:?}");
    assert_eq!(r.error.as_ref().expect("error").name, "PermissionError", "{r:?}");
    assert!(listener.accept().is_err(), "a connection got through");
    // Local IPC still works (multiprocessing, pipes).
    let r = agent
        .execute(&s.id, "import socket\na, b = socket.socketpair()\na.send(b'x')\nb.recv(1)")
        .await;
    assert_eq!(r.value.as_deref(), Some("b'x'"), "{r:?}");
    agent.stop().await;
}
