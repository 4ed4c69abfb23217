//! The binaries running together as real processes: `antwort-scripted-backend` (the model),
//! `antwort-sandbox-agent` (real Python behind mTLS, dev-CA SVIDs from `antwort-dev-ca`) and
//! `antwort-gateway` with `tools.code_interpreter` pointing at that agent. Ports are chosen by
//! the OS and read from each process's "listening" log line; every process is killed on drop.
//!
//! Data flows: client -> gateway (HTTP, API key) -> backend (Chat Completions) and, for the
//! model's `python` calls, gateway -> agent (mTLS, SPIFFE IDs checked both ways).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{tools, workspace};

pub const TRUST_DOMAIN: &str = "antwort.e2e";
pub const AGENT_ID: &str = "spiffe://antwort.e2e/ns/sandboxes/sa/sandbox-agent";
pub const GATEWAY_ID: &str = "spiffe://antwort.e2e/ns/antwort/sa/gateway";
/// The API key the gateway accepts (for user `e2e-user`).
pub const API_KEY: &str = "sk-antwort-e2e-0123456789abcdef";
/// How long a process may take to come up (a cold debug build of a binary is done before).
const STARTUP: Duration = Duration::from_secs(60);

/// A child process whose stdout and stderr lines are kept (for failure messages) and offered
/// to [`Service::wait_for`]. Killed on drop.
pub struct Service {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn spawn(name: &'static str, command: &mut Command) -> Service {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for stream in [stdout, stderr] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Service { name, child, lines, log }
    }

    /// Waits for the next line containing `needle` and returns it; panics with the log when
    /// the process exits or stays silent too long.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "{} exited ({status}) before `{needle}`:\n{}",
                            self.name,
                            self.log()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not log `{needle}` within {STARTUP:?}:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a tracing text line (`addr=127.0.0.1:1234`, quotes dropped).
fn field(line: &str, key: &str) -> Option<String> {
    let value = line.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?;
    Some(value.trim_matches('"').to_string())
}

/// The word after `needle` in `line`.
fn after(line: &str, needle: &str) -> String {
    let rest = line.split_once(needle).map(|(_, rest)| rest).unwrap_or_default();
    rest.split_whitespace().next().unwrap_or_default().to_string()
}

/// `GET http://addr/path` status code, over a plain socket (no HTTP client crate needed).
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Backend, agent and gateway, up and wired together. Fields drop in order: gateway first.
pub struct Stack {
    pub gateway: Service,
    pub agent: Service,
    pub backend: Service,
    /// `http://127.0.0.1:PORT/v1`, the base URL an OpenAI SDK takes.
    pub gateway_url: String,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = dir.path().join("identity");
        mint_svids(&identity);

        let mut backend = Service::spawn(
            "antwort-scripted-backend",
            Command::new(workspace::binary("antwort-scripted-backend", "antwort-scripted-backend"))
                .args(["--listen", "127.0.0.1:0"]),
        );
        let backend_url = after(&backend.wait_for("listening on "), "listening on ");

        let (agent, agent_api) = start_agent(dir.path(), &identity.join("agent"));

        let config = dir.path().join("gateway.yaml");
        let gateway_config = serde_json::json!({
            "listen": "127.0.0.1:0",
            "backend_url": backend_url,
            "store": {"url": format!("sqlite://{}", dir.path().join("store/antwort.db").display())},
            "auth": {"api_keys": [{"key": API_KEY, "user": "e2e-user"}]},
            "tools": {
                "max_turns": 4,
                "code_interpreter": {
                    "identity": {"source": "files", "dir": identity.join("gateway")},
                    "agent": {"url": format!("https://{agent_api}"), "spiffe_id": AGENT_ID},
                    "agent_spiffe_ids": [
                        {"trust_domain": TRUST_DOMAIN, "path_prefix": "/ns/sandboxes/"}
                    ],
                },
            },
        });
        std::fs::write(&config, serde_yaml_ng::to_string(&gateway_config).expect("YAML"))
            .expect("write the gateway config");
        let mut gateway = Service::spawn(
            "antwort-gateway",
            Command::new(workspace::binary("antwort-gateway", "antwort-gateway"))
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .current_dir(dir.path()),
        );
        let needle = "antwort-gateway listening on ";
        let addr = after(&gateway.wait_for(needle), needle);
        let gateway_url = format!("http://{addr}/v1");
        Stack { gateway, agent, backend, gateway_url, dir }
    }

    /// The logs of all three processes, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- gateway ---\n{}\n--- sandbox agent ---\n{}\n--- scripted backend ---\n{}",
            self.gateway.log(),
            self.agent.log(),
            self.backend.log()
        )
    }
}

/// A dev CA and the SVIDs of the gateway and the agent, by the `antwort-dev-ca` binary:
/// `dir/{gateway,agent}/{tls.crt,tls.key,ca.crt}`.
fn mint_svids(dir: &Path) {
    let dev_ca = workspace::binary_with_features("antwort-common", "antwort-dev-ca", &["dev-ca"]);
    tools::stdout(
        Command::new(dev_ca)
            .arg("--dir")
            .arg(dir)
            .args(["--trust-domain", TRUST_DOMAIN])
            .arg(format!("--svid=gateway={GATEWAY_ID}"))
            .arg(format!("--svid=agent={AGENT_ID}")),
    );
}

/// A sandbox agent serving the gateway only; returns it and its mTLS API address once ready.
fn start_agent(dir: &Path, svid: &Path) -> (Service, String) {
    // A uid of its own per test process: sandboxes of parallel tests never share one.
    let uid = 45_000 + std::process::id() % 5_000;
    let config: PathBuf = dir.join("agent.yaml");
    let yaml = serde_json::json!({
        "server": {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "allowed_callers": [GATEWAY_ID],
        },
        "identity": {"source": "files", "dir": svid},
        "workspace": {"root": dir.join("workspace")},
        "sandbox": {"uid": uid, "gid": uid},
        "limits": {
            "memory_bytes": 536_870_912u64,
            "address_space_bytes": 2_147_483_648u64,
            "max_output_bytes": 1_048_576,
        },
    });
    std::fs::write(&config, serde_yaml_ng::to_string(&yaml).expect("YAML"))
        .expect("write the agent config");
    let mut agent = Service::spawn(
        "antwort-sandbox-agent",
        Command::new(workspace::binary("antwort-sandbox-agent", "antwort-sandbox-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info"),
    );
    let (mut api, mut admin) = (None, None);
    while api.is_none() || admin.is_none() {
        let line = agent.wait_for(" listening");
        if line.contains("API (mTLS) listening") {
            api = field(&line, "addr");
        } else if line.contains("admin (HTTP) listening") {
            admin = field(&line, "addr");
        }
    }
    let admin = admin.expect("admin address");
    let deadline = Instant::now() + STARTUP;
    while http_status(&admin, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "the agent is not ready:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (agent, api.expect("API address"))
}
