//! The real binary: `--help`, config errors that name the field and exit 64, and a full start
//! from a YAML file + `ANTWORT_*` overrides with a dev-CA SVID on disk, serving over mTLS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use antwort_common::agent_api::{ExecStatus, ExecuteResult, SessionInfo};
use antwort_common::identity::dev_ca::DevCa;
use common::{AGENT_ID, GATEWAY_ID, PATIENCE, TRUST_DOMAIN, client_for, unique_uid};

const BIN: &str = env!("CARGO_BIN_EXE_antwort-sandbox-agent");

#[test]
fn help_names_the_options() {
    let out = Command::new(BIN).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--config") && text.contains("ANTWORT_"), "{text}");
}

#[test]
fn config_errors_name_the_field_and_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.yaml");
    let cases = [
        ("limits:\n  max_sessions: many\n", vec![], "limits.max_sessions"),
        ("limits:\n  max_sesions: 1\n", vec![], "max_sesions"),
        ("limits:\n  max_sessions: 0\n", vec![], "limits.max_sessions"),
        ("{}\n", vec![("ANTWORT_LIMITS__MEMORY_BYTES", "12")], "limits.memory_bytes"),
        ("server:\n  allowed_callers: [\"not-spiffe\"]\n", vec![], "server.allowed_callers[0]"),
        ("python:\n  executable: python3\n", vec![], "python.executable"),
    ];
    for (yaml, env, field) in cases {
        std::fs::write(&file, yaml).expect("write");
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("--check")
            .envs(env)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{yaml}: {stderr}");
        assert!(stderr.contains(field), "{yaml}: {field} not named in {stderr}");
    }
    std::fs::write(&file, "limits:\n  max_sessions: 2\n").expect("write");
    let out = Command::new(BIN).arg("--config").arg(&file).arg("--check").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Kills the child on drop, so a failed assertion does not leak the agent.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_over_mtls_from_files() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::new(TRUST_DOMAIN).expect("ca");
    ca.write_svid(AGENT_ID, &dir.path().join("svid")).expect("write svid");
    let workspace = dir.path().join("workspace");
    let uid = unique_uid();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  allowed_callers: [\"{GATEWAY_ID}\"]\n\
         identity:\n  source: files\n  dir: {}\n\
         workspace:\n  root: {}\n\
         sandbox:\n  uid: {uid}\n  gid: {uid}\n",
        dir.path().join("svid").display(),
        workspace.display()
    );
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, yaml).expect("write config");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env("ANTWORT_LIMITS__MAX_SESSIONS", "3")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let stdout = child.stdout.take().expect("stdout");
    let child = Child(child);
    // Addresses come from the log lines (ports are chosen by the OS).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut api, mut admin) = (None, None);
    let deadline = Instant::now() + PATIENCE;
    while api.is_none() || admin.is_none() {
        let line = rx.recv_timeout(deadline - Instant::now()).expect("listening log lines");
        let addr = line
            .split("addr=")
            .nth(1)
            .map(|a| a.split_whitespace().next().unwrap_or("").to_string());
        if line.contains("API (mTLS) listening") {
            api = addr;
        } else if line.contains("admin (HTTP) listening") {
            admin = addr;
        }
    }
    let (api, admin) = (api.expect("api addr"), admin.expect("admin addr"));
    let plain = reqwest::Client::new();
    loop {
        if let Ok(r) = plain.get(format!("http://{admin}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client_for(&ca, GATEWAY_ID);
    let session: SessionInfo = client
        .post(format!("https://{api}/v1/sessions"))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert!(session.workspace.starts_with(&workspace.display().to_string()));
    let result: ExecuteResult = client
        .post(format!("https://{api}/v1/sessions/{}/execute", session.id))
        .json(&serde_json::json!({"code": "import os\nprint(os.getuid())"}))
        .send()
        .await
        .expect("execute")
        .json()
        .await
        .expect("json");
    assert_eq!((result.status, result.stdout), (ExecStatus::Ok, format!("{uid}\n")));
    // The env override took effect: a fourth session is refused.
    for _ in 0..2 {
        client.post(format!("https://{api}/v1/sessions")).send().await.expect("create");
    }
    let r = client.post(format!("https://{api}/v1/sessions")).send().await.expect("create");
    assert_eq!(r.status(), 429);

    // SIGTERM: drains, deletes the sessions' workspaces, exits 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("sigterm");
    let mut child = child;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!std::path::Path::new(&session.workspace).exists());
}
