//! A real `antwort-sandbox-agent` process (real Python, real mTLS with dev-CA SVIDs) for tests
//! of the code interpreter.

#![allow(dead_code)] // shared by test binaries and the code_interpreter bench, each using part of it

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{SharedSource, StaticSource};
use antwort_common::pool_api::Claim;

pub const TRUST_DOMAIN: &str = "antwort.test";
pub const AGENT_ID: &str = "spiffe://antwort.test/ns/sandboxes/sa/sandbox-agent";
pub const GATEWAY_ID: &str = "spiffe://antwort.test/ns/antwort/sa/gateway";
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The agent binary (`ANTWORT_SANDBOX_AGENT_BIN`, else built into this test's target folder).
pub fn agent_binary() -> PathBuf {
    antwort_common::test_support::workspace_binary(
        "antwort-sandbox-agent",
        "antwort-sandbox-agent",
        &[],
    )
}

/// A real agent process; killed on drop.
pub struct Agent {
    child: std::process::Child,
    pub api: String,
    pub ca: DevCa,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub async fn start() -> Agent {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new(TRUST_DOMAIN).expect("ca");
        ca.write_svid(AGENT_ID, &dir.path().join("svid")).expect("svid");
        let uid = 45_000 + std::process::id() % 5_000;
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  allowed_callers: [\"{GATEWAY_ID}\"]\n\
             identity:\n  source: files\n  dir: {}\n\
             workspace:\n  root: {}\n\
             sandbox:\n  uid: {uid}\n  gid: {uid}\n\
             limits:\n  memory_bytes: 536870912\n  address_space_bytes: 2147483648\n  max_output_bytes: 1048576\n",
            dir.path().join("svid").display(),
            dir.path().join("workspace").display()
        );
        let file = dir.path().join("agent.yaml");
        std::fs::write(&file, yaml).expect("config");
        let mut child = Command::new(agent_binary())
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut api, mut admin) = (None, None);
        let deadline = Instant::now() + PATIENCE;
        while api.is_none() || admin.is_none() {
            let line = rx.recv_timeout(deadline - Instant::now()).expect("listening lines");
            let addr = line
                .split("addr=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or("").trim_matches('"').to_string());
            if line.contains("API (mTLS) listening") {
                api = addr;
            } else if line.contains("admin (HTTP) listening") {
                admin = addr;
            }
        }
        let admin = admin.expect("admin");
        let plain = reqwest::Client::new();
        loop {
            if let Ok(r) = plain.get(format!("http://{admin}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "agent not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Agent { child, api: format!("https://{}", api.expect("api")), ca, _dir: dir }
    }

    pub fn claim(&self, agent_id: &str) -> Claim {
        Claim {
            claim_id: "static".into(),
            pool: "python".into(),
            agent_endpoint: self.api.clone(),
            agent_spiffe_id: agent_id.into(),
            expires_at: u64::MAX,
            reused: false,
        }
    }

    pub fn source(&self, id: &str) -> SharedSource {
        StaticSource::new(self.ca.mint(id).expect("mint").identity().expect("identity"))
    }

    /// Writes an SVID for `id` (files identity source layout) into `dir`.
    pub fn write_svid(&self, id: &str, dir: &std::path::Path) {
        self.ca.write_svid(id, dir).expect("svid");
    }
}
