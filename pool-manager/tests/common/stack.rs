//! Runtime-independent pieces of the claim tests: the agent binary, a manager served in-process
//! on port 0, mTLS clients for the gateway (and for an intruder), and the claim scenarios shared
//! by the local and the Kubernetes runtime. They talk to the manager only through its API.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use antwort_common::agent_api::{ExecStatus, ExecuteResult, SessionInfo, SessionList};
use antwort_common::error::ErrorEnvelope;
use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{PeerPolicy, PeerRule, StaticSource, mtls_client_builder};
use antwort_common::pool_api::{Claim, ClaimRequest, PoolList, PoolStatus};
use antwort_pool_manager::Config;
use antwort_pool_manager::server::{self, Listeners};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TRUST_DOMAIN: &str = "antwort.test";
pub const GATEWAY_ID: &str = "spiffe://antwort.test/ns/antwort/sa/gateway";
pub const INTRUDER_ID: &str = "spiffe://antwort.test/ns/antwort/sa/intruder";
pub const MANAGER_ID: &str = "spiffe://antwort.test/ns/antwort/sa/pool-manager";

/// The workspace-built `antwort-sandbox-agent`: `ANTWORT_SANDBOX_AGENT_BIN` if set, else built once
/// per test process with the cargo that runs the tests, into the tests' own target folder.
///
/// After `cargo nextest run --workspace` (or any earlier build) this is a no-op of well under a
/// second. On a cold target folder, `cargo nextest run -p antwort-pool-manager` does not build the
/// agent, so the first test to get here builds it and its whole dependency tree (several minutes
/// on two cores; cargo's progress reaches stderr). See `antwort_common::test_support`.
pub fn agent_binary() -> PathBuf {
    antwort_common::test_support::workspace_binary_in(
        "antwort-sandbox-agent",
        "antwort-sandbox-agent",
        &[],
        AGENT_PROFILE.get().copied(),
    )
}

/// Set by [`prefer_dev_agent`]: the cargo profile folder the agent is built into.
static AGENT_PROFILE: OnceLock<&'static str> = OnceLock::new();

/// Builds (or reuses) the agent in the dev profile even when the caller runs in release (the
/// benchmark: a release build of the agent's dependency tree would take longer than the run).
pub fn prefer_dev_agent() {
    let _ = AGENT_PROFILE.set("debug");
}

/// A uid base for sandboxes no other test process uses at the same time.
pub fn uid_base() -> u32 {
    50_000 + (std::process::id() % 500) * 20
}

/// A manager served in this process on loopback ports chosen by the OS.
pub struct ManagerProcess {
    pub api: String,
    pub admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<antwort_pool_manager::Result<()>>>,
}

impl ManagerProcess {
    pub async fn start(mut config: Config, kube: Option<kube::Client>) -> ManagerProcess {
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.server.listen = "127.0.0.1:0".parse().expect("an address");
        config.server.admin_listen = "127.0.0.1:0".parse().expect("an address");
        config.server.shutdown_grace_ms = 5_000;
        let listeners = Listeners::bind(&config).await.expect("bind the manager's listeners");
        let api = format!("https://{}", listeners.api.local_addr().expect("an address"));
        let admin = format!("http://{}", listeners.admin.local_addr().expect("an address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, kube, listeners, async move {
            let _ = stopped.await;
        }));
        ManagerProcess { api, admin, stop: Some(stop), task: Some(task) }
    }

    /// Stops gracefully (local agents are terminated, a held Lease given up).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the manager stops within 30 s")
                .expect("the manager task does not panic")
                .expect("the manager exits cleanly");
        }
    }

    /// Whether this replica says it leads (from `/metrics`).
    pub async fn is_leader(&self) -> bool {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines().any(|line| line.trim() == "antwort_pool_leader 1")
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Clients minted by the test CA.
pub struct Clients {
    pub ca: DevCa,
}

impl Clients {
    /// A client presenting `id`'s SVID that talks to servers matching `servers`.
    pub fn client(&self, id: &str, servers: PeerPolicy) -> reqwest::Client {
        let identity = self.ca.mint(id).expect("mint an SVID").identity().expect("an identity");
        mtls_client_builder(StaticSource::new(identity), servers)
            .expect("an mTLS client builder")
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an mTLS client")
    }

    /// The gateway, talking to the manager.
    pub fn gateway(&self, manager_id: &str) -> reqwest::Client {
        self.client(GATEWAY_ID, PeerPolicy::exact([manager_id]).expect("a policy"))
    }

    /// The gateway, talking to exactly the agent a claim names.
    pub fn agent(&self, claim: &Claim) -> reqwest::Client {
        self.client(
            GATEWAY_ID,
            PeerPolicy::exact([claim.agent_spiffe_id.as_str()]).expect("a policy"),
        )
    }

    pub fn intruder(&self) -> reqwest::Client {
        let servers = PeerPolicy::new([PeerRule::prefix(TRUST_DOMAIN, "").expect("a rule")]);
        self.client(INTRUDER_ID, servers)
    }
}

/// One claim API, seen by the gateway.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn claim(&self, pool: &str, key: &str) -> reqwest::Response {
        self.claim_with_ttl(pool, key, 300).await
    }

    pub async fn claim_with_ttl(&self, pool: &str, key: &str, ttl_secs: u64) -> reqwest::Response {
        let request = ClaimRequest {
            pool: pool.to_owned(),
            session_key: key.to_owned(),
            ttl_secs: Some(ttl_secs),
        };
        self.client
            .post(format!("{}/v1/claims", self.base))
            .json(&request)
            .send()
            .await
            .expect("POST /v1/claims")
    }

    pub async fn claim_ok(&self, pool: &str, key: &str) -> Claim {
        let response = self.claim(pool, key).await;
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert_eq!(status, 200, "claim {pool}/{key}: {text}");
        serde_json::from_str(&text).expect("a Claim")
    }

    pub async fn release(&self, claim_id: &str) -> reqwest::StatusCode {
        self.client
            .delete(format!("{}/v1/claims/{claim_id}", self.base))
            .send()
            .await
            .expect("DELETE /v1/claims/{id}")
            .status()
    }

    pub async fn renew(&self, claim_id: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/claims/{claim_id}/renew", self.base))
            .json(&serde_json::json!({ "ttl_secs": 900 }))
            .send()
            .await
            .expect("POST renew")
    }

    pub async fn pool(&self, name: &str) -> PoolStatus {
        let list: PoolList = self
            .client
            .get(format!("{}/v1/pools", self.base))
            .send()
            .await
            .expect("GET /v1/pools")
            .json()
            .await
            .expect("a PoolList");
        list.pools.into_iter().find(|pool| pool.name == name).expect("the pool is listed")
    }

    /// Waits until `pool` has `ready` warm sandboxes (and nothing starting), panicking after 60 s.
    pub async fn wait_ready(&self, name: &str, ready: u32) -> PoolStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.pool(name).await;
            if status.ready == ready && status.starting == 0 {
                return status;
            }
            assert!(Instant::now() < deadline, "pool {name} never had {ready} ready: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `code` in a new session of the claimed agent, over mTLS as the gateway.
pub async fn execute(clients: &Clients, claim: &Claim, code: &str) -> (SessionInfo, ExecuteResult) {
    let agent = clients.agent(claim);
    let session: SessionInfo = agent
        .post(format!("{}/v1/sessions", claim.agent_endpoint))
        .send()
        .await
        .expect("create a session on the claimed agent")
        .json()
        .await
        .expect("a SessionInfo");
    let result: ExecuteResult = agent
        .post(format!("{}/v1/sessions/{}/execute", claim.agent_endpoint, session.id))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("execute on the claimed agent")
        .json()
        .await
        .expect("an ExecuteResult");
    (session, result)
}

/// Waits until the agent of `claim` no longer answers (its sandbox was destroyed).
pub async fn wait_agent_gone(clients: &Clients, claim: &Claim) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent = clients.agent(claim);
    loop {
        let answer = agent.get(format!("{}/v1/sessions", claim.agent_endpoint)).send().await;
        if answer.is_err() {
            return;
        }
        assert!(Instant::now() < deadline, "the destroyed agent still answers: {claim:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn envelope(response: reqwest::Response) -> ErrorEnvelope {
    response.json().await.expect("an error envelope")
}

// === scenarios ===

/// Pool `pool` (destroy policy, `min_ready` warm): filled; a claim hands out a warmed agent that
/// runs code for the gateway; the same session key gets the same claim; renew extends it;
/// release destroys the sandbox and the pool refills with a new one.
pub async fn claim_execute_release_destroy(
    api: &Api,
    clients: &Clients,
    pool: &str,
    min_ready: u32,
) {
    api.wait_ready(pool, min_ready).await;
    let claim = api.claim_ok(pool, "chain-1").await;
    assert_eq!(claim.pool, pool);
    assert!(!claim.reused);
    assert!(claim.agent_endpoint.starts_with("https://"), "{claim:?}");
    let status = api.pool(pool).await;
    assert_eq!(status.claimed, 1, "{status:?}");

    let (_, result) = execute(clients, &claim, "x = 6 * 7\nprint(x)").await;
    assert_eq!((result.status, result.stdout.as_str()), (ExecStatus::Ok, "42\n"));

    let again = api.claim_ok(pool, "chain-1").await;
    assert_eq!((again.claim_id.as_str(), again.reused), (claim.claim_id.as_str(), true));
    assert_eq!(again.agent_endpoint, claim.agent_endpoint);

    let renewed = api.renew(&claim.claim_id).await;
    assert_eq!(renewed.status(), 200);
    let renewed: Claim = renewed.json().await.expect("a Claim");
    assert!(renewed.expires_at > claim.expires_at, "{renewed:?} vs {claim:?}");

    assert_eq!(api.release(&claim.claim_id).await, 204);
    let gone = api.renew(&claim.claim_id).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(envelope(gone).await.error.code, "claim_not_found");
    assert_eq!(api.release(&claim.claim_id).await, 404);

    // Destroyed: the pool refills, and a new claim gets a different sandbox... eventually the
    // old agent stops answering.
    api.wait_ready(pool, min_ready).await;
    wait_agent_gone(clients, &claim).await;
    let next = api.claim_ok(pool, "chain-2").await;
    assert_ne!(next.claim_id, claim.claim_id);
    assert_eq!(api.release(&next.claim_id).await, 204);
}

/// Pool `pool` with `recyclePolicy: reset`, one sandbox: a released sandbox is reset (its
/// sessions and files gone) and handed out again.
pub async fn release_resets_and_returns(api: &Api, clients: &Clients, pool: &str) {
    api.wait_ready(pool, 1).await;
    let first = api.claim_ok(pool, "reset-1").await;
    let (_, result) =
        execute(clients, &first, "open('secret.txt', 'w').write('mine')\nprint('ok')").await;
    assert_eq!(result.stdout, "ok\n", "{result:?}");
    assert_eq!(api.release(&first.claim_id).await, 204);
    api.wait_ready(pool, 1).await;
    let second = api.claim_ok(pool, "reset-2").await;
    assert_eq!(second.agent_endpoint, first.agent_endpoint, "the same sandbox came back");
    assert_ne!(second.claim_id, first.claim_id);
    let agent = clients.agent(&second);
    let sessions: SessionList = agent
        .get(format!("{}/v1/sessions", second.agent_endpoint))
        .send()
        .await
        .expect("list sessions")
        .json()
        .await
        .expect("a SessionList");
    assert!(sessions.sessions.is_empty(), "nothing of the last caller is left: {sessions:?}");
    let (_, result) = execute(
        clients,
        &second,
        "import os\nprint(os.path.exists('secret.txt'), os.listdir('.'))",
    )
    .await;
    assert_eq!(result.stdout, "False []\n", "{result:?}");
    assert_eq!(api.release(&second.claim_id).await, 204);
}

/// Pool `pool` with `maxPods` = `max`: `max` concurrent claims get distinct sandboxes; one
/// more is refused with 429 and `Retry-After`.
pub async fn drained_pool_answers_429(api: &Api, pool: &str, max: u32) {
    api.wait_ready(pool, max).await;
    let claims = futures::future::join_all(
        (0..max).map(|n| async move { api.claim_ok(pool, &format!("burst-{n}")).await }),
    )
    .await;
    let endpoints: std::collections::BTreeSet<_> =
        claims.iter().map(|c| c.agent_endpoint.clone()).collect();
    assert_eq!(endpoints.len(), max as usize, "no sandbox handed out twice: {claims:?}");
    let refused = api.claim(pool, "one-too-many").await;
    assert_eq!(refused.status(), 429);
    let retry = refused.headers().get("retry-after").expect("Retry-After").to_str().expect("ascii");
    assert!(retry.parse::<u64>().expect("seconds") >= 1);
    assert_eq!(envelope(refused).await.error.code, "pool_exhausted");
    for claim in &claims {
        assert_eq!(api.release(&claim.claim_id).await, 204);
    }
}

/// Pool `pool` (destroy policy, `min_ready` warm): a claim nobody renews or releases is reclaimed
/// by the manager once its ttl runs out: the claim is gone, its sandbox destroyed, the pool full.
pub async fn expired_claim_is_reclaimed(api: &Api, clients: &Clients, pool: &str, min_ready: u32) {
    api.wait_ready(pool, min_ready).await;
    // Short, but long enough for the execution below on a loaded machine (a 1 s claim could
    // expire before its first use).
    let response = api.claim_with_ttl(pool, "short-lived", 3).await;
    assert_eq!(response.status(), 200);
    let claim: Claim = response.json().await.expect("a Claim");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(claim.expires_at <= now + 3, "a 3 s claim: {claim:?}");
    let (_, result) = execute(clients, &claim, "print('still mine')").await;
    assert_eq!(result.stdout, "still mine\n", "{result:?}");
    // Nobody renews or releases it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = api.pool(pool).await;
        if status.claimed == 0 && status.ready == min_ready && status.starting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the expired claim was never reclaimed: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = api.renew(&claim.claim_id).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(envelope(gone).await.error.code, "claim_not_found");
    wait_agent_gone(clients, &claim).await;
}

/// Whether the agent of `claim` still answers (a short timeout: a destroyed one refuses at once).
pub async fn agent_answers(clients: &Clients, claim: &Claim) -> bool {
    clients
        .agent(claim)
        .get(format!("{}/v1/sessions", claim.agent_endpoint))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Runs `code` in the existing `session` of the claimed agent.
pub async fn execute_in(
    clients: &Clients,
    claim: &Claim,
    session: &str,
    code: &str,
) -> ExecuteResult {
    clients
        .agent(claim)
        .post(format!("{}/v1/sessions/{session}/execute", claim.agent_endpoint))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("execute on the claimed agent")
        .json()
        .await
        .expect("an ExecuteResult")
}

/// Pool `pool` (destroy policy, `idleTimeoutSeconds` = `idle_secs`, at least two warm): of two
/// long-lived claims, the one nobody renews is reclaimed once idle past the timeout (sandbox
/// destroyed and replaced, the claim id then unknown), while the one renewed all along keeps its
/// sandbox, session state included, well past the idle timeout.
pub async fn idle_claim_is_reclaimed_renewed_one_is_not(
    api: &Api,
    clients: &Clients,
    pool: &str,
    min_ready: u32,
    idle_secs: u64,
) {
    api.wait_ready(pool, min_ready).await;
    let idle = api.claim_ok(pool, "idle").await;
    let busy = api.claim_ok(pool, "busy").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(idle.expires_at >= now + 60, "a claim for minutes, far beyond the idle timeout");
    let (_, result) = execute(clients, &idle, "print('idle')").await;
    assert_eq!(result.stdout, "idle\n", "{result:?}");
    let (session, result) = execute(clients, &busy, "kept = 41\nprint('busy')").await;
    assert_eq!(result.stdout, "busy\n", "{result:?}");
    // Both start their idle clock now; only `busy` is renewed from here on.
    assert_eq!(api.renew(&idle.claim_id).await.status(), 200);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(idle_secs + 30);
    let mut reclaimed_after = None;
    loop {
        let renewed = api.renew(&busy.claim_id).await;
        assert_eq!(renewed.status(), 200, "the renewed claim lives on");
        if reclaimed_after.is_none() && !agent_answers(clients, &idle).await {
            reclaimed_after = Some(started.elapsed());
        }
        let status = api.pool(pool).await;
        // Done once the idle claim's sandbox is gone and replaced, and the renewed claim has
        // outlived the idle timeout twice over.
        if reclaimed_after.is_some()
            && status.claimed == 1
            && status.ready == min_ready
            && started.elapsed() > Duration::from_secs(2 * idle_secs)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle claim was never reclaimed ({reclaimed_after:?}): {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reclaimed_after = reclaimed_after.expect("reclaimed");
    assert!(
        reclaimed_after >= Duration::from_secs(idle_secs - 1),
        "reclaimed after {reclaimed_after:?}, before the idle timeout of {idle_secs} s"
    );
    let gone = api.renew(&idle.claim_id).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(envelope(gone).await.error.code, "claim_not_found");
    assert_eq!(api.release(&idle.claim_id).await, 404);
    // The renewed claim's sandbox is the same one, its session state intact.
    let result = execute_in(clients, &busy, &session.id, "print(kept + 1)").await;
    assert_eq!(result.stdout, "42\n", "{result:?}");
    assert_eq!(api.release(&busy.claim_id).await, 204);
    wait_agent_gone(clients, &busy).await;
    api.wait_ready(pool, min_ready).await;
}

/// Bad requests get the envelope; unknown pools 404.
pub async fn bad_requests_get_the_envelope(api: &Api) {
    let response = api.claim("no-such-pool", "k").await;
    assert_eq!(response.status(), 404);
    assert_eq!(envelope(response).await.error.code, "pool_not_found");
    let response = api
        .client
        .post(format!("{}/v1/claims", api.base))
        .body("{\"pool\": 1}")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 400);
    assert_eq!(envelope(response).await.error.code, "invalid_request");
}

/// Only the gateway's SVID gets in; plain HTTP does not.
pub async fn only_the_gateway_gets_in(api: &Api, clients: &Clients) {
    let refused = clients.intruder().get(format!("{}/v1/pools", api.base)).send().await;
    assert!(refused.is_err(), "an intruder's SVID is refused: {refused:?}");
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain client")
        .get(format!("{}/v1/pools", api.base.replacen("https://", "http://", 1)))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |response| !response.status().is_success()),
        "plain HTTP is refused: {plain:?}"
    );
}
