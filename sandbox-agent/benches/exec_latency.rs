//! `print(1)` round trip on a warm session over mTLS, beside a fresh `python3 -c 'print(1)'`
//! process for scale; then (as root) the same with interpreters from the spawner
//! (`antwort-sandbox-agent spawner` as another uid, the pod layout), and the cost of creating a
//! session both ways. Run: `cargo bench -p antwort-sandbox-agent --bench exec_latency`.
//! Target: warm p50 <= 5 ms, on either path.

use std::time::{Duration, Instant};

use antwort_common::agent_api::{ExecStatus, ExecuteResult, SessionInfo};
use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{PeerPolicy, SharedSource, StaticSource, mtls_client_builder};
use antwort_sandbox_agent::Config;
use antwort_sandbox_agent::server::{Agent, serve};

const AGENT_ID: &str = "spiffe://bench.test/ns/sandboxes/sa/sandbox-agent";
const GATEWAY_ID: &str = "spiffe://bench.test/ns/antwort/sa/gateway";
const WARM_RUNS: usize = 500;
const FRESH_RUNS: usize = 40;
const CREATE_RUNS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A served agent and an mTLS client for it.
struct Bench {
    client: reqwest::Client,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<antwort_sandbox_agent::Result<()>>,
}

async fn serve_agent(config: Config) -> Bench {
    let ca = DevCa::new("bench.test").expect("ca");
    let source: SharedSource =
        StaticSource::new(ca.mint(AGENT_ID).expect("mint").identity().expect("identity"));
    let policy = PeerPolicy::exact([GATEWAY_ID]).expect("policy");
    let agent = Agent::build(config.clone(), Some(source.clone())).expect("agent");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(agent, source, policy, listener, None, &config, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let client_source: SharedSource =
        StaticSource::new(ca.mint(GATEWAY_ID).expect("mint").identity().expect("identity"));
    let client = mtls_client_builder(client_source, PeerPolicy::exact([AGENT_ID]).expect("policy"))
        .expect("client")
        .build()
        .expect("client");
    Bench { client, base: format!("https://{addr}"), stop, server }
}

impl Bench {
    async fn create_session(&self) -> (SessionInfo, Duration) {
        loop {
            let started = Instant::now();
            match self.client.post(format!("{}/v1/sessions", self.base)).send().await {
                Ok(r) if r.status() == 201 => {
                    let elapsed = started.elapsed();
                    return (r.json().await.expect("json"), elapsed);
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn delete_session(&self, id: &str) {
        let url = format!("{}/v1/sessions/{id}", self.base);
        self.client.delete(url).send().await.expect("delete");
    }

    /// Sorted round trips of `print(1)` on one warm session.
    async fn warm_runs(&self) -> Vec<Duration> {
        let (session, _) = self.create_session().await;
        let execute = format!("{}/v1/sessions/{}/execute", self.base, session.id);
        let body = serde_json::json!({ "code": "print(1)" });
        // Warm the connection and the interpreter.
        for _ in 0..20 {
            let r = self.client.post(&execute).json(&body).send().await.expect("warm");
            r.bytes().await.expect("body");
        }
        let mut warm = Vec::with_capacity(WARM_RUNS);
        for _ in 0..WARM_RUNS {
            let started = Instant::now();
            let result: ExecuteResult = self
                .client
                .post(&execute)
                .json(&body)
                .send()
                .await
                .expect("execute")
                .json()
                .await
                .expect("json");
            warm.push(started.elapsed());
            assert_eq!((result.status, result.stdout.as_str()), (ExecStatus::Ok, "1\n"));
        }
        self.delete_session(&session.id).await;
        warm.sort();
        warm
    }

    /// Sorted times to create a session (a new interpreter, ready to run).
    async fn creations(&self) -> Vec<Duration> {
        let mut times = Vec::with_capacity(CREATE_RUNS);
        for _ in 0..CREATE_RUNS {
            let (session, elapsed) = self.create_session().await;
            times.push(elapsed);
            self.delete_session(&session.id).await;
        }
        times.sort();
        times
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// The spawner as its own process under its own uid (root only), for the agent `config`.
fn start_spawner(config: &mut Config, dir: &std::path::Path) -> std::process::Child {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (code_uid, gid) = (61_001, 61_002);
    let run = dir.join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::os::unix::fs::chown(&run, Some(code_uid), Some(gid)).expect("chown");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    config.sandbox.uid = code_uid;
    config.sandbox.gid = gid;
    config.sandbox.agent_uid = Some(0);
    config.sandbox.spawner = Some(run.join("spawner.sock"));
    let yaml = format!(
        "workspace:\n  root: {}\nsandbox:\n  uid: {code_uid}\n  gid: {gid}\n  agent_uid: 0\n  spawner: {}\n",
        config.workspace.root.display(),
        run.join("spawner.sock").display()
    );
    let file = dir.join("spawner.yaml");
    std::fs::write(&file, yaml).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_antwort-sandbox-agent"))
        .arg("spawner")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .uid(code_uid)
        .gid(gid)
        .spawn()
        .expect("spawner");
    while !run.join("spawner.sock").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn row(what: &str, sorted: &[Duration]) -> (f64, f64) {
    let (p50, p99) = (ms(percentile(sorted, 0.5)), ms(percentile(sorted, 0.99)));
    println!("{what:<52} {p50:>10.2} {p99:>10.2}");
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workspace = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.workspace.root = workspace.path().to_path_buf();
    config.server.allowed_callers = vec![GATEWAY_ID.into()];
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    if uid != 0 {
        config.sandbox.uid = uid;
        config.sandbox.gid = gid;
    }
    let forked = serve_agent(config.clone()).await;
    let warm = forked.warm_runs().await;
    let create_fork = forked.creations().await;
    forked.stop().await;
    // The pod layout: interpreters from the spawner, another uid (needs root to set up here).
    let spawned = if uid == 0 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut split = config.clone();
        split.workspace.root = dir.path().join("workspace");
        let mut spawner = start_spawner(&mut split, dir.path());
        let agent = serve_agent(split).await;
        let numbers = (agent.warm_runs().await, agent.creations().await);
        agent.stop().await;
        let _ = spawner.kill();
        let _ = spawner.wait();
        Some(numbers)
    } else {
        None
    };
    let mut fresh = Vec::with_capacity(FRESH_RUNS);
    for _ in 0..FRESH_RUNS {
        let started = Instant::now();
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "print(1)"])
            .output()
            .expect("python3");
        fresh.push(started.elapsed());
        assert_eq!(out.stdout, b"1\n");
    }
    fresh.sort();
    println!("print(1) round trip ({WARM_RUNS} warm runs over mTLS, {FRESH_RUNS} fresh processes)");
    println!("{:<52} {:>10} {:>10}", "", "p50 (ms)", "p99 (ms)");
    let (w50, w99) = row("agent: warm session, HTTPS+mTLS, execute (fork)", &warm);
    let (f50, f99) = row("baseline: fresh `python3 -c 'print(1)'`", &fresh);
    println!("{:<52} {:>10.2} {:>10.2}", "ratio agent (fork) / baseline", w50 / f50, w99 / f99);
    let mut target_met = w50 <= 5.0;
    if let Some((warm_spawned, _)) = &spawned {
        let (s50, s99) = row("agent: warm session, execute (spawner, other uid)", warm_spawned);
        println!(
            "{:<52} {:>10.2} {:>10.2}",
            "ratio spawner / fork (warm execute)",
            s50 / w50,
            s99 / w99
        );
        target_met &= s50 <= 5.0;
    }
    println!("session create ({CREATE_RUNS} runs: a new interpreter, ready)");
    let (c50, c99) = row("create, fork path (root: uid switch, cgroup)", &create_fork);
    match &spawned {
        Some((_, create_spawned)) => {
            let (d50, d99) = row("create, through the spawner (no cgroup here)", create_spawned);
            println!(
                "{:<52} {:>10.2} {:>10.2}",
                "ratio spawner / fork (create)",
                d50 / c50,
                d99 / c99
            );
        }
        None => println!("(spawner rows skipped: setting up a second uid needs root)"),
    }
    println!("target warm p50 <= 5 ms: {}", if target_met { "met" } else { "NOT met" });
}
