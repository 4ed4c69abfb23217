//! Test harness: a real agent serving over real mTLS on 127.0.0.1:0 with dev-CA-minted SVIDs, a
//! real /usr/bin/python3 behind it, and a client holding the gateway's SVID.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use antwort_common::agent_api::{ExecuteResult, SessionInfo};
use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{PeerPolicy, SharedSource, StaticSource, mtls_client_builder};
use antwort_sandbox_agent::Config;
use antwort_sandbox_agent::server::{Agent, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TRUST_DOMAIN: &str = "antwort.test";
pub const AGENT_ID: &str = "spiffe://antwort.test/ns/sandboxes/sa/sandbox-agent";
pub const GATEWAY_ID: &str = "spiffe://antwort.test/ns/antwort/sa/gateway";
pub const POOL_MANAGER_ID: &str = "spiffe://antwort.test/ns/antwort/sa/pool-manager";

/// Generous: CI has 2 cores and several test binaries run at once.
pub const PATIENCE: Duration = Duration::from_secs(120);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A uid/gid no one else uses, so RLIMIT_NPROC (counted per uid) of one test's fork bomb cannot
/// starve another test's sessions.
pub fn unique_uid() -> u32 {
    40_000 + (std::process::id() % 10_000) * 4 + NEXT.fetch_add(1, Ordering::Relaxed) % 4
}

/// A config for tests: a temp workspace, loopback ports, modest limits.
pub fn test_config(workspace: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.server.allowed_callers = vec![GATEWAY_ID.into(), POOL_MANAGER_ID.into()];
    config.server.shutdown_grace_ms = 5_000;
    config.workspace.root = workspace.to_path_buf();
    let uid = unique_uid();
    config.sandbox.uid = uid;
    config.sandbox.gid = uid;
    config.limits.memory_bytes = 512 << 20;
    config.limits.address_space_bytes = 2 << 30;
    config.limits.default_timeout_ms = 60_000;
    config.python.start_timeout_ms = 60_000;
    config
}

pub struct TestAgent {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub ca: DevCa,
    pub workspace: tempfile::TempDir,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<antwort_sandbox_agent::Result<()>>>,
}

impl TestAgent {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let workspace = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(workspace.path());
        tweak(&mut config);
        let ca = DevCa::new(TRUST_DOMAIN).expect("dev CA");
        let source: SharedSource =
            StaticSource::new(ca.mint(AGENT_ID).expect("mint").identity().expect("identity"));
        let policy = PeerPolicy::exact(config.server.allowed_callers.iter().map(String::as_str))
            .expect("policy");
        let agent = Agent::build(config.clone(), Some(source.clone())).expect("agent builds");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let api_addr: SocketAddr = api.local_addr().expect("addr");
        let admin_addr: SocketAddr = admin.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let served_config = config.clone();
        let task = tokio::spawn(async move {
            serve(agent, source, policy, api, Some(admin), &served_config, async {
                let _ = rx.await;
            })
            .await
        });
        let client = client_for(&ca, GATEWAY_ID);
        let this = TestAgent {
            base: format!("https://{api_addr}"),
            admin: format!("http://{admin_addr}"),
            client,
            ca,
            workspace,
            config,
            shutdown: Some(tx),
            task: Some(task),
        };
        this.wait_ready().await;
        this
    }

    /// Polls `/readyz` on the admin listener until the warm-up execution has succeeded.
    pub async fn wait_ready(&self) {
        let plain = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = plain.get(format!("{}/readyz", self.admin)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "agent not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create_session(&self) -> SessionInfo {
        let r = self.client.post(self.url("/v1/sessions")).send().await.expect("create session");
        assert_eq!(r.status(), 201, "create session: {}", r.text().await.unwrap_or_default());
        r.json().await.expect("session json")
    }

    pub async fn execute(&self, id: &str, code: &str) -> ExecuteResult {
        self.execute_with(id, code, None).await
    }

    pub async fn execute_with(
        &self,
        id: &str,
        code: &str,
        timeout_ms: Option<u64>,
    ) -> ExecuteResult {
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

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task").expect("agent stopped cleanly");
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An mTLS client presenting an SVID for `spiffe_id` minted by `ca`, accepting only the agent.
pub fn client_for(ca: &DevCa, spiffe_id: &str) -> reqwest::Client {
    let source: SharedSource =
        StaticSource::new(ca.mint(spiffe_id).expect("mint").identity().expect("identity"));
    mtls_client_builder(source, PeerPolicy::exact([AGENT_ID]).expect("policy"))
        .expect("client builder")
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

/// Width and height from a PNG's IHDR, asserting the signature.
pub fn png_dimensions(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR", "no IHDR");
    (
        u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")),
        u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes")),
    )
}
