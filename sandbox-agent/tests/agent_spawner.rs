//! The two-container layout of a sandbox pod, as real processes: the spawner
//! (`antwort-sandbox-agent spawner`) under one uid, the agent under another, sharing only a group,
//! the workspace and the socket directory. User code runs as the spawner's uid: it cannot read the
//! agent's key or signal the agent, cannot use the spawner itself, and every limit and file
//! operation behaves as with the fork path. The spawner going away is a typed error and an
//! unready agent. Needs root (to start the two processes under their uids), like the fork path's
//! uid switch.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use antwort_common::agent_api::{ExecStatus, ExecuteResult, FileChangeKind, FileList, SessionInfo};
use antwort_common::error::ErrorEnvelope;
use antwort_common::identity::dev_ca::DevCa;
use antwort_sandbox_agent::spawner::wire::{Reply, read_frame};
use common::{AGENT_ID, GATEWAY_ID, PATIENCE, TRUST_DOMAIN, client_for};

const BIN: &str = env!("CARGO_BIN_EXE_antwort-sandbox-agent");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Three ids of this test alone: the agent's uid, the spawner's (and user code's) uid, the
/// shared gid.
fn ids() -> (u32, u32, u32) {
    let base =
        20_000 + (std::process::id() % 3_000) * 6 + NEXT.fetch_add(1, Ordering::Relaxed) % 2 * 3;
    (base, base + 1, base + 2)
}

/// Kills the process on drop, so a failed assertion leaks nothing.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sandbox pod's two processes (dropped, i.e. killed, before their folder goes).
struct Pod {
    spawner: Option<Proc>,
    agent: Proc,
    _dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    key: PathBuf,
    agent_uid: u32,
    spawner_uid: u32,
    gid: u32,
    api: String,
    admin: String,
    client: reqwest::Client,
}

impl Pod {
    async fn start(limits: &str) -> Pod {
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests start the agent and the spawner under their own uids, which needs root"
        );
        let (agent_uid, spawner_uid, gid) = ids();
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        // The binary where both uids may run it, whatever the checkout's permissions.
        let bin = dir.path().join("antwort-sandbox-agent");
        if std::fs::hard_link(BIN, &bin).is_err() {
            std::fs::copy(BIN, &bin).expect("copy the binary");
        }
        // The pod's volumes: the workspace (the agent's, in the shared group), the socket
        // directory (an emptyDir both containers mount), the SVID (the agent's container only).
        let workspace = dir.path().join("workspace");
        let run = dir.path().join("run");
        for (path, owner, mode) in [(&workspace, agent_uid, 0o770), (&run, spawner_uid, 0o770)] {
            std::fs::create_dir(path).expect("mkdir");
            chown(path, Some(owner), Some(gid)).expect("chown");
            set_mode(path, mode);
        }
        let ca = DevCa::new(TRUST_DOMAIN).expect("ca");
        let svid = dir.path().join("svid");
        ca.write_svid(AGENT_ID, &svid).expect("write svid");
        for entry in std::fs::read_dir(&svid).expect("svid dir") {
            let path = entry.expect("entry").path();
            chown(&path, Some(agent_uid), Some(agent_uid)).expect("chown svid");
        }
        chown(&svid, Some(agent_uid), Some(agent_uid)).expect("chown svid");
        set_mode(&svid, 0o700);
        let key = svid.join("tls.key");
        let socket = run.join("spawner.sock");
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  allowed_callers: [\"{GATEWAY_ID}\"]\n  shutdown_grace_ms: 5000\n\
             identity:\n  source: files\n  dir: {svid}\n\
             workspace:\n  root: {workspace}\n\
             python:\n  start_timeout_ms: 60000\n\
             sandbox:\n  uid: {spawner_uid}\n  gid: {gid}\n  agent_uid: {agent_uid}\n  spawner: {socket}\n\
             limits:\n  default_timeout_ms: 60000\n  memory_bytes: 536870912\n  address_space_bytes: 2147483648\n{limits}",
            svid = svid.display(),
            workspace = workspace.display(),
            socket = socket.display(),
        );
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, yaml).expect("write config");
        set_mode(&config, 0o644);
        let mut pod = Pod {
            spawner: None,
            agent: Proc(Command::new("true").spawn().expect("placeholder")),
            api: String::new(),
            admin: String::new(),
            client: client_for(&ca, GATEWAY_ID),
            _dir: dir,
            bin,
            config,
            socket,
            key,
            agent_uid,
            spawner_uid,
            gid,
        };
        pod.start_spawner();
        pod.start_agent().await;
        pod
    }

    fn start_spawner(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(&self.bin)
            .arg("spawner")
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("RUST_LOG", "warn")
            .uid(self.spawner_uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the spawner");
        self.spawner = Some(Proc(child));
        let deadline = Instant::now() + PATIENCE;
        while !self.socket.exists() {
            assert!(Instant::now() < deadline, "the spawner never bound its socket");
            let exited = self.spawner.as_mut().and_then(|p| p.0.try_wait().ok().flatten());
            assert!(exited.is_none(), "the spawner exited: {exited:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn start_agent(&mut self) {
        self.spawn_agent();
        assert!(self.wait_ready(true).await, "the agent never became ready");
    }

    /// Starts the agent and reads its addresses, without waiting for it to be ready.
    fn spawn_agent(&mut self) {
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("RUST_LOG", "info")
            .uid(self.agent_uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the agent");
        let stdout = child.stdout.take().expect("stdout");
        self.agent = Proc(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("agent: {line}");
                }
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
        self.api = format!("https://{}", api.expect("api"));
        self.admin = format!("http://{}", admin.expect("admin"));
    }

    fn agent_pid(&self) -> u32 {
        self.agent.0.id()
    }

    /// Waits until `/readyz` says `ready` (or gives up after a while and says what it saw).
    async fn wait_ready(&self, ready: bool) -> bool {
        let plain = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = plain
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if (status == 200) == ready && status != 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    async fn create_session(&self) -> SessionInfo {
        let r = self.client.post(self.url("/v1/sessions")).send().await.expect("create session");
        assert_eq!(r.status(), 201, "create session: {}", r.text().await.unwrap_or_default());
        r.json().await.expect("session json")
    }

    async fn execute(&self, id: &str, code: &str) -> ExecuteResult {
        self.execute_with(id, code, None).await
    }

    async fn execute_with(&self, id: &str, code: &str, timeout_ms: Option<u64>) -> ExecuteResult {
        let mut body = serde_json::json!({ "code": code });
        if let Some(ms) = timeout_ms {
            body["timeout_ms"] = ms.into();
        }
        let r = self
            .client
            .post(self.url(&format!("/v1/sessions/{id}/execute")))
            .json(&body)
            .timeout(PATIENCE)
            .send()
            .await
            .expect("execute request");
        assert_eq!(r.status(), 200, "execute: {}", r.text().await.unwrap_or_default());
        r.json().await.expect("execute json")
    }

    async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.expect("post")
    }

    async fn state(&self, id: &str) -> String {
        let info: serde_json::Value = self
            .client
            .get(self.url(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        info["state"].as_str().unwrap_or("").to_owned()
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_code_runs_as_its_own_uid_and_cannot_reach_the_agent() {
    let pod = Pod::start("").await;
    let s = pod.create_session().await;
    let r = pod.execute(&s.id, "import os\n(os.getuid(), os.geteuid(), os.getgid())").await;
    let (u, g) = (pod.spawner_uid, pod.gid);
    assert_eq!(r.value.as_deref(), Some(format!("({u}, {u}, {g})").as_str()), "{r:?}");
    assert_ne!(pod.spawner_uid, pod.agent_uid);

    // The agent's SVID key: 0600, the agent's.
    let code = format!("open({:?}).read()", pod.key.display().to_string());
    let r = pod.execute(&s.id, &code).await;
    assert_eq!(r.error.as_ref().map(|e| e.name.as_str()), Some("PermissionError"), "{r:?}");
    // Signals to the agent are refused; the agent's memory and environment are not readable.
    let pid = pod.agent_pid();
    let r = pod.execute(&s.id, &format!("import os, signal\nos.kill({pid}, signal.SIGKILL)")).await;
    assert_eq!(r.error.as_ref().map(|e| e.name.as_str()), Some("PermissionError"), "{r:?}");
    let r = pod.execute(&s.id, &format!("open('/proc/{pid}/environ', 'rb').read()")).await;
    assert_eq!(r.error.as_ref().map(|e| e.name.as_str()), Some("PermissionError"), "{r:?}");
    // The spawner's socket is reachable (same uid as the spawner), but the spawner serves only
    // the agent's uid: it answers with a refusal before reading anything.
    let code = format!(
        "import socket, struct, json\n\
         c = socket.socket(socket.AF_UNIX)\n\
         c.connect({:?})\n\
         n = struct.unpack('>I', c.recv(4))[0]\n\
         json.loads(c.recv(n))",
        pod.socket.display().to_string()
    );
    let r = pod.execute(&s.id, &code).await;
    let value = r.value.clone().unwrap_or_default();
    assert!(value.contains("'refused'") && value.contains("may not use"), "{r:?}");
    // Still the same agent, still serving.
    assert_eq!(pod.execute(&s.id, "1 + 1").await.value.as_deref(), Some("2"));
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok());

    // Anyone else (here root, not the agent's uid) is refused too.
    let mut stream = tokio::net::UnixStream::connect(&pod.socket).await.expect("connect");
    let reply: Option<Reply> = read_frame(&mut stream).await.expect("read");
    assert!(
        matches!(&reply, Some(Reply::Refused { message }) if message.contains("uid 0")),
        "{reply:?}"
    );
    drop(pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_shared_between_the_agent_and_user_code() {
    let pod = Pod::start("").await;
    let s = pod.create_session().await;
    let url = |p: &str| pod.url(&format!("/v1/sessions/{}/files/{p}", s.id));

    // An upload (the agent's file) is readable and writable by the code.
    let r = pod.client.put(url("data/in.csv")).body("a,b\n1,2\n").send().await.expect("upload");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = pod
        .execute(
            &s.id,
            "rows = open('data/in.csv').read().splitlines()\n\
             open('data/in.csv', 'a').write('3,4\\n')\n\
             import os\nos.makedirs('out/deep')\n\
             open('out/deep/result.txt', 'w').write(str(len(rows)))\n\
             rows",
        )
        .await;
    assert_eq!((r.status, r.value.as_deref()), (ExecStatus::Ok, Some("['a,b', '1,2']")), "{r:?}");
    let mut changes: Vec<_> = r.files.iter().map(|f| (f.path.clone(), f.change)).collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changes,
        vec![
            ("data/in.csv".to_owned(), FileChangeKind::Modified),
            ("out/deep/result.txt".to_owned(), FileChangeKind::Created)
        ]
    );
    // What the code wrote (as another uid) is listed, downloadable and deletable by the agent.
    let list: FileList = pod
        .client
        .get(pod.url(&format!("/v1/sessions/{}/files", s.id)))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut paths: Vec<_> = list.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, vec!["data/in.csv", "out/deep/result.txt"]);
    let r = pod.client.get(url("out/deep/result.txt")).send().await.expect("download");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("bytes").as_ref(), b"2");
    let r = pod.client.get(url("data/in.csv")).send().await.expect("download");
    assert_eq!(r.bytes().await.expect("bytes").as_ref(), b"a,b\n1,2\n3,4\n");
    let r = pod.client.delete(url("out/deep/result.txt")).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let r = pod.execute(&s.id, "import os\nos.path.exists('out/deep/result.txt')").await;
    assert_eq!(r.value.as_deref(), Some("False"));

    // Deleting the session removes everything, including directories the code made and locked
    // the agent out of (the spawner, as the code's uid, empties them first).
    let r = pod
        .execute(
            &s.id,
            "import os\nos.makedirs('x/y')\nopen('x/y/z', 'w').write('z')\n\
             os.makedirs('locked/in')\nopen('locked/in/f', 'w').write('f')\n\
             os.chmod('locked/in', 0o500)\nos.chmod('locked', 0o500)\n\
             os.makedirs(os.environ['HOME'] + '/.cache/deep')",
        )
        .await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    let scratch = Path::new(&s.workspace).parent().expect("root").join(".scratch").join(&s.id);
    assert!(scratch.join(".cache/deep").is_dir(), "HOME is the session's scratch");
    let r =
        pod.client.delete(pod.url(&format!("/v1/sessions/{}", s.id))).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert!(!Path::new(&s.workspace).exists(), "the workspace is gone");
    assert!(!scratch.exists(), "the scratch folder is gone");
    drop(pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_interrupts_and_restarts_behave_as_with_the_fork_path() {
    let pod = Pod::start("  max_output_bytes: 4096\n  interrupt_grace_ms: 1000\n").await;
    let s = pod.create_session().await;
    pod.execute(&s.id, "kept = 1").await;

    // Interrupt reaches the running code through the spawner.
    let url = pod.url(&format!("/v1/sessions/{}/execute", s.id));
    let client = pod.client.clone();
    let running = tokio::spawn(async move {
        client
            .post(url)
            .json(&serde_json::json!({ "code": "import time\nopen('started', 'w').close()\nfor _ in range(600): time.sleep(0.1)" }))
            .send()
            .await
            .expect("execute")
            .json::<ExecuteResult>()
            .await
            .expect("json")
    });
    let deadline = Instant::now() + PATIENCE;
    let started = Path::new(&s.workspace).join("started");
    while !started.exists() {
        assert!(Instant::now() < deadline, "code never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r: serde_json::Value =
        pod.post(&format!("/v1/sessions/{}/interrupt", s.id)).await.json().await.expect("json");
    assert_eq!(r["interrupted"], true);
    let result = running.await.expect("task");
    assert_eq!(
        result.error.as_ref().map(|e| e.name.as_str()),
        Some("KeyboardInterrupt"),
        "{result:?}"
    );
    assert_eq!(pod.execute(&s.id, "kept").await.value.as_deref(), Some("1"));

    // Timeout: SIGINT first (the session lives on), then a kill for code that ignores it.
    let r = pod.execute_with(&s.id, "while True: pass", Some(1_000)).await;
    assert_eq!(r.status, ExecStatus::Timeout, "{r:?}");
    assert_eq!(pod.execute(&s.id, "kept").await.value.as_deref(), Some("1"));
    let stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass";
    let r = pod.execute_with(&s.id, stubborn, Some(1_000)).await;
    assert_eq!(r.status, ExecStatus::Timeout, "{r:?}");
    assert_eq!(pod.state(&s.id).await, "dead");
    let r = pod.post(&format!("/v1/sessions/{}/restart", s.id)).await;
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.expect("json");
    assert_eq!(info["generation"], 2);
    let r = pod.execute(&s.id, "import os\n(os.path.exists('started'), 'kept' in globals())").await;
    assert_eq!(r.value.as_deref(), Some("(True, False)"), "{r:?}");

    // Memory: RLIMIT_AS applies to the spawner's children.
    let r = pod.execute(&s.id, "x = bytearray(8 * 1024**3)").await;
    assert_eq!(r.status, ExecStatus::OutOfMemory, "{r:?}");
    assert_eq!(pod.execute(&s.id, "'alive'").await.value.as_deref(), Some("'alive'"));

    // Output beyond the cap is dropped and said so.
    let r = pod.execute(&s.id, "print('x' * 10000)\n'done'").await;
    assert_eq!(r.status, ExecStatus::OutputTruncated, "{r:?}");
    assert!(r.output_truncated && r.stdout.len() < 4200, "{}", r.stdout.len());
    assert_eq!(r.value.as_deref(), Some("'done'"));

    // A process the code leaves behind dies with a restart (the spawner kills the group).
    let r = pod
        .execute(&s.id, "import subprocess\np = subprocess.Popen(['sleep', '300'])\np.pid")
        .await;
    let orphan: i32 = r.value.as_deref().and_then(|v| v.parse().ok()).expect("a pid");
    let r = pod.post(&format!("/v1/sessions/{}/restart", s.id)).await;
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + PATIENCE;
    while Path::new(&format!("/proc/{orphan}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{orphan}/status"))
            .unwrap_or_default()
            .contains("zombie")
    {
        assert!(Instant::now() < deadline, "the code's child survived the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_spawner_is_a_typed_error_and_an_unready_agent() {
    let mut pod = Pod::start("").await;
    let s = pod.create_session().await;
    assert_eq!(pod.execute(&s.id, "40 + 2").await.value.as_deref(), Some("42"));

    // The sandbox container dies (its interpreters with it).
    drop(pod.spawner.take());
    let r = pod.execute(&s.id, "1").await;
    assert_eq!(r.status, ExecStatus::Killed, "{r:?}");
    let error = r.error.expect("an error");
    assert_eq!(error.name, "SandboxUnavailable", "{error:?}");
    assert!(error.value.contains("spawner is gone"), "{error:?}");
    for r in
        [pod.post(&format!("/v1/sessions/{}/restart", s.id)).await, pod.post("/v1/sessions").await]
    {
        assert_eq!(r.status(), 503);
        let envelope: ErrorEnvelope = r.json().await.expect("envelope");
        assert_eq!(envelope.error.code, "spawner_unavailable", "{envelope:?}");
    }
    assert!(pod.wait_ready(false).await, "readyz still says ready without a spawner");

    // It comes back: ready again, sessions work again.
    pod.start_spawner();
    assert!(pod.wait_ready(true).await, "never ready again");
    let r = pod.post(&format!("/v1/sessions/{}/restart", s.id)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(pod.execute(&s.id, "'back'").await.value.as_deref(), Some("'back'"));
    drop(pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_its_spawner_waits_for_it() {
    let mut pod = Pod::start("").await;
    // Both again, the agent first (a pod's containers start in any order).
    drop(pod.spawner.take());
    let _ = std::fs::remove_file(&pod.socket);
    pod.agent = Proc(Command::new("true").spawn().expect("placeholder"));
    pod.spawn_agent();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pod.wait_ready(false).await, "ready without a spawner");
    let r = pod.post("/v1/sessions").await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    pod.start_spawner();
    assert!(pod.wait_ready(true).await, "the warm-up never got through to the late spawner");
    let s = pod.create_session().await;
    assert_eq!(pod.execute(&s.id, "6 * 7").await.value.as_deref(), Some("42"));
    drop(pod);
}

#[test]
fn the_spawner_refuses_to_start_without_its_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    for (yaml, named) in [
        ("{}\n", vec!["sandbox.spawner", "sandbox.agent_uid"]),
        ("sandbox:\n  spawner: relative.sock\n  agent_uid: 1\n", vec!["sandbox.spawner"]),
        ("sandbox:\n  spawner: /run/s.sock\n  uid: 7\n  agent_uid: 7\n", vec!["sandbox.agent_uid"]),
    ] {
        std::fs::write(&config, yaml).expect("write");
        let out = Command::new(BIN)
            .arg("spawner")
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{yaml}: {stderr}");
        for field in named {
            assert!(stderr.contains(field), "{yaml}: {field} not named in {stderr}");
        }
    }
    std::fs::write(&config, "sandbox:\n  spawner: /run/s.sock\n  uid: 7\n  agent_uid: 8\n")
        .expect("write");
    let out = Command::new(BIN)
        .arg("spawner")
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
