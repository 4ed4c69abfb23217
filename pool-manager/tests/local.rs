//! The claim API on the local runtime: real `antwort-sandbox-agent` processes on loopback, each
//! with its own SVID from the development CA, warmed up and reset over mTLS.

#[path = "common/stack.rs"]
mod stack;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_pool_manager::Config;
use antwort_pool_manager::config::RuntimeConfig;
use antwort_pool_manager::runtime::local::LocalConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use stack::{Api, Clients, GATEWAY_ID, ManagerProcess, TRUST_DOMAIN};

/// The ID the local manager mints for itself when the config names no identity.
const LOCAL_MANAGER_ID: &str = "spiffe://antwort.test/ns/local/sa/pool-manager";

struct LocalStack {
    _dir: tempfile::TempDir,
    manager: ManagerProcess,
    api: Api,
    clients: Clients,
}

/// A local manager with `pools_yaml` (the `pools:` list), its CA in a temp folder the test shares.
async fn start(pools_yaml: &str) -> LocalStack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
                |_| tracing_subscriber::EnvFilter::new("antwort_pool_manager=info"),
            ))
            .with_test_writer()
            .try_init();
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca_dir = dir.path().join("ca");
    let ca = DevCa::load_or_create(&ca_dir, TRUST_DOMAIN).expect("a dev CA");
    let pools: Vec<antwort_pool_manager::runtime::local::LocalPool> =
        serde_yaml_ng::from_str(pools_yaml).expect("pools YAML");
    let mut config = Config::default();
    config.server.allowed_callers = vec![GATEWAY_ID.to_owned()];
    config.claims.wait_ms = 20_000;
    config.reconcile.interval_ms = 200;
    config.runtime = RuntimeConfig::Local(LocalConfig {
        agent_binary: Some(stack::agent_binary()),
        work_dir: Some(dir.path().join("work")),
        trust_domain: TRUST_DOMAIN.to_owned(),
        ca_dir: Some(ca_dir),
        sandbox_uid_base: stack::uid_base(),
        agent_env: [("ANTWORT_LIMITS__MAX_SESSIONS".to_owned(), "4".to_owned())].into(),
        pools,
        ..LocalConfig::default()
    });
    let manager = ManagerProcess::start(config, None).await;
    let clients = Clients { ca };
    let api = Api { base: manager.api.clone(), client: clients.gateway(LOCAL_MANAGER_ID) };
    LocalStack { _dir: dir, manager, api, clients }
}

fn pool(name: &str, min_ready: u32, max_pods: u32, policy: &str) -> String {
    format!(
        "- name: {name}\n  kind: python\n  minReady: {min_ready}\n  maxPods: {max_pods}\n  \
         recyclePolicy: {policy}\n  allowedCallers: [\"{GATEWAY_ID}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_claim_execute_release_destroy() {
    let stack = start(&pool("py", 2, 4, "destroy")).await;
    stack::claim_execute_release_destroy(&stack.api, &stack.clients, "py", 2).await;
    stack::bad_requests_get_the_envelope(&stack.api).await;
    stack::only_the_gateway_gets_in(&stack.api, &stack.clients).await;
    // Health and metrics on the plain admin listener. The gauges are those of the last reconcile
    // pass, which may still be refilling after the release above.
    let ready = reqwest::get(format!("{}/readyz", stack.manager.admin)).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    stack.api.wait_ready("py", 2).await;
    let expected = [
        "antwort_pool_sandboxes{pool=\"py\",state=\"ready\"} 2",
        "antwort_pool_claim_duration_seconds_count{outcome=\"claimed\"}",
        "antwort_pool_sandbox_start_to_ready_seconds_count",
        "antwort_pool_leader 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = metrics(&stack.manager).await;
        let missing: Vec<&str> =
            expected.iter().copied().filter(|line| !metrics.contains(line)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{missing:?} not in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_expired_claim_is_reclaimed() {
    let stack = start(&pool("expiry", 1, 2, "destroy")).await;
    stack::expired_claim_is_reclaimed(&stack.api, &stack.clients, "expiry", 1).await;
    let line = "antwort_pool_claims_ended_total{pool=\"expiry\",reason=\"expired\"} 1";
    assert!(metrics(&stack.manager).await.contains(line), "{line}");
    stack.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_idle_claim_is_reclaimed_renewed_one_is_not() {
    let pools = format!("{}  idleTimeoutSeconds: 4\n", pool("idle", 2, 3, "destroy"));
    let stack = start(&pools).await;
    stack::idle_claim_is_reclaimed_renewed_one_is_not(&stack.api, &stack.clients, "idle", 2, 4)
        .await;
    // Operators see why claims ended: one reclaimed idle, one released.
    let metrics = metrics(&stack.manager).await;
    for line in [
        "antwort_pool_claims_ended_total{pool=\"idle\",reason=\"idle\"} 1",
        "antwort_pool_claims_ended_total{pool=\"idle\",reason=\"released\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    stack.manager.stop().await;
}

/// Sandboxes past `maxLifetimeSeconds` are replaced, never with more than `maxPods` at once; a
/// claimed one is not killed under its user but serves its claim to the end, and is then
/// destroyed rather than reset for someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sandboxes_past_max_lifetime_are_replaced_within_max_pods() {
    const LIFETIME: u64 = 5;
    const MAX_PODS: usize = 3;
    let pools = format!("{}  maxLifetimeSeconds: {LIFETIME}\n", pool("aging", 2, 3, "reset"));
    let stack = start(&pools).await;
    let work = stack._dir.path().join("work");
    stack.api.wait_ready("aging", 2).await;
    let first: BTreeSet<String> = sandbox_names(&work);
    let claim = stack.api.claim_ok("aging", "long-session").await;
    let (session, result) = stack::execute(&stack.clients, &claim, "kept = 41").await;
    assert_eq!(result.status, antwort_common::agent_api::ExecStatus::Ok, "{result:?}");

    // Renewed all along, the claim outlives its sandbox's lifetime (counted from the sandbox's
    // start, before the claim) by several seconds, while the unclaimed sandboxes are replaced.
    let started = Instant::now();
    let mut seen: BTreeSet<String> = first.clone();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(LIFETIME + 4) {
        let names = sandbox_names(&work);
        most = most.max(names.len());
        assert!(names.len() <= MAX_PODS, "more than maxPods sandboxes: {names:?}");
        let status = stack.api.pool("aging").await;
        let occupied = status.ready + status.claimed + status.starting + status.failed;
        assert!(occupied as usize <= MAX_PODS, "{status:?}");
        assert_eq!(status.claimed, 1, "the claim holds: {status:?}");
        seen.extend(names);
        assert_eq!(stack.api.renew(&claim.claim_id).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = stack::execute_in(&stack.clients, &claim, &session.id, "print(kept + 1)").await;
    assert_eq!(result.stdout, "42\n", "the claimed sandbox was not killed: {result:?}");
    // Every unclaimed sandbox of the start was replaced (the claimed one is among `first`).
    let now = sandbox_names(&work);
    let survivors: Vec<&String> = first.iter().filter(|name| now.contains(*name)).collect();
    assert_eq!(survivors.len(), 1, "only the claimed sandbox outlives its lifetime: {now:?}");
    assert!(seen.len() >= first.len() + 2, "replacements were started: {seen:?}");
    assert!(
        metrics(&stack.manager)
            .await
            .contains("antwort_pool_failures_total{reason=\"max_lifetime\"}"),
        "the replacements are counted"
    );

    // Its claim ended, the old sandbox is destroyed, not reset and handed out again.
    assert_eq!(stack.api.release(&claim.claim_id).await, 204);
    stack::wait_agent_gone(&stack.clients, &claim).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sandbox_names(&work).contains(survivors[0]) {
        assert!(Instant::now() < deadline, "{} was not destroyed after its claim", survivors[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = stack.api.pool("aging").await;
    assert!(status.ready + status.claimed + status.starting + status.failed <= 3, "{status:?}");
    assert!(most <= MAX_PODS);
    stack.manager.stop().await;
}

/// The sandboxes under `work`, by name (an agent's forked children share its command line for a
/// moment, so names, not processes, are counted).
fn sandbox_names(work: &Path) -> BTreeSet<String> {
    agent_processes(work).into_iter().map(|(_, name)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sandbox_killed_behind_the_managers_back_is_replaced() {
    let stack = start(&pool("crashy", 2, 3, "destroy")).await;
    stack.api.wait_ready("crashy", 2).await;
    let work = stack._dir.path().join("work");
    let before = agent_processes(&work);
    assert_eq!(before.len(), 2, "one agent process per sandbox: {before:?}");
    let (victim_pid, victim) = before[0].clone();
    kill(Pid::from_raw(i32::try_from(victim_pid).expect("a pid")), Signal::SIGKILL)
        .expect("kill the agent");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = agent_processes(&work);
        let status = stack.api.pool("crashy").await;
        let replaced = now.len() == 2 && now.iter().all(|(_, name)| *name != victim);
        if replaced && status.ready == 2 && status.starting == 0 && status.failed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never replaced: {now:?} {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!work.join("sandboxes").join(&victim).exists(), "the dead sandbox's folder is gone");
    assert!(
        metrics(&stack.manager).await.contains("antwort_pool_failures_total{reason=\"crashed\"} 1"),
        "the crash is counted"
    );
    // Both sandboxes serve claims and run code.
    for key in ["after-crash-1", "after-crash-2"] {
        let claim = stack.api.claim_ok("crashy", key).await;
        let (_, result) = stack::execute(&stack.clients, &claim, "print(2 ** 10)").await;
        assert_eq!(result.stdout, "1024\n", "{result:?}");
    }
    stack.manager.stop().await;
    assert!(agent_processes(&work).is_empty(), "a stopped manager leaves no agent behind");
}

async fn metrics(manager: &ManagerProcess) -> String {
    reqwest::get(format!("{}/metrics", manager.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The agent processes of sandboxes under `work` (pid, sandbox name), from `/proc`: each runs as
/// `antwort-sandbox-agent --config <work>/sandboxes/<name>/agent.yaml`.
fn agent_processes(work: &Path) -> Vec<(u32, String)> {
    let sandboxes = work.join("sandboxes");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        let config = args
            .windows(2)
            .find(|pair| pair[0] == b"--config")
            .map(|pair| PathBuf::from(String::from_utf8_lossy(pair[1]).into_owned()));
        if let Some(config) = config
            && config.starts_with(&sandboxes)
            && let Some(name) = config.parent().and_then(Path::file_name)
        {
            found.push((pid, name.to_string_lossy().into_owned()));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_release_resets_and_returns_the_sandbox() {
    let stack = start(&pool("reset", 1, 1, "reset")).await;
    stack::release_resets_and_returns(&stack.api, &stack.clients, "reset").await;
    stack.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_drained_pool_answers_429_and_never_exceeds_max_pods() {
    let stack = start(&pool("small", 2, 2, "destroy")).await;
    stack::drained_pool_answers_429(&stack.api, "small", 2).await;
    let status = stack.api.pool("small").await;
    assert!(status.ready + status.claimed + status.starting + status.failed <= 2, "{status:?}");
    stack.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_claim_waits_for_a_starting_sandbox_and_scales_down() {
    // minReady 0: nothing warm; a claim makes the manager start one and waits for its warm-up.
    let stack = start(&pool("lazy", 0, 2, "destroy")).await;
    assert_eq!(stack.api.pool("lazy").await.ready, 0);
    let started = Instant::now();
    let claim = stack.api.claim_ok("lazy", "first").await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let (_, result) = stack::execute(&stack.clients, &claim, "print(1 + 1)").await;
    assert_eq!(result.stdout, "2\n");
    assert_eq!(stack.api.release(&claim.claim_id).await, 204);
    // Released and destroyed; minReady 0 keeps nothing around.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stack.api.pool("lazy").await;
        if status.ready + status.claimed + status.starting + status.failed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never emptied: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.manager.stop().await;
}
