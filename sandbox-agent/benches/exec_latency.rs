//! `print(1)` round trip on a warm session over mTLS, beside a fresh `python3 -c 'print(1)'`
//! process for scale. Run: `cargo bench -p antwort-sandbox-agent --bench exec_latency`.
//! Target: warm p50 <= 5 ms.

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
    let ca = DevCa::new("bench.test").expect("ca");
    let source: SharedSource =
        StaticSource::new(ca.mint(AGENT_ID).expect("mint").identity().expect("identity"));
    let policy = PeerPolicy::exact([GATEWAY_ID]).expect("policy");
    let agent = Agent::build(config.clone(), Some(source.clone())).expect("agent");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
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
    let base = format!("https://{addr}");
    let session: SessionInfo = loop {
        match client.post(format!("{base}/v1/sessions")).send().await {
            Ok(r) if r.status() == 201 => break r.json().await.expect("json"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let execute = format!("{base}/v1/sessions/{}/execute", session.id);
    let body = serde_json::json!({ "code": "print(1)" });
    // Warm the connection and the interpreter.
    for _ in 0..20 {
        client.post(&execute).json(&body).send().await.expect("warm").bytes().await.expect("body");
    }
    let mut warm = Vec::with_capacity(WARM_RUNS);
    for _ in 0..WARM_RUNS {
        let started = Instant::now();
        let result: ExecuteResult = client
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
    warm.sort();
    fresh.sort();
    let (w50, w99) = (percentile(&warm, 0.5), percentile(&warm, 0.99));
    let (f50, f99) = (percentile(&fresh, 0.5), percentile(&fresh, 0.99));
    println!("print(1) round trip ({WARM_RUNS} warm runs over mTLS, {FRESH_RUNS} fresh processes)");
    println!("{:<44} {:>10} {:>10}", "", "p50 (ms)", "p99 (ms)");
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "agent: warm session, HTTPS+mTLS, execute",
        ms(w50),
        ms(w99)
    );
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "baseline: fresh `python3 -c 'print(1)'`",
        ms(f50),
        ms(f99)
    );
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "ratio agent / baseline",
        ms(w50) / ms(f50),
        ms(w99) / ms(f99)
    );
    println!(
        "target warm p50 <= 5 ms: {}",
        if w50 <= Duration::from_millis(5) { "met" } else { "NOT met" }
    );
    let _ = stop_tx.send(());
    let _ = server.await;
}
