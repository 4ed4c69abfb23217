//! Warm claim latency of the pool manager over mTLS, against a baseline measured in the same run
//! on the same connection: `GET /healthz` on the claim API (the same mTLS listener, a handler that
//! does nothing). Printed as p50/p99 and as ratios to the baseline, plus the refill time (release
//! -> the replacement sandbox warmed up and ready) after one release and after a burst.
//!
//! - Local runtime: real `antwort-sandbox-agent` processes on loopback (the dev-profile binary;
//!   `ANTWORT_SANDBOX_AGENT_BIN` picks another), pool `minReady` = [`LOCAL_BATCH`].
//! - Kubernetes runtime: a real kube-apiserver + etcd (`scripts/kube-test-env.sh`, skipped with
//!   the reason printed when it is not built), the test harness playing the kubelet with real
//!   agent processes. A claim there is four API-server round trips (pool, pod list, conditional
//!   patch, pod list), so it is reported, not held to the local target.
//!
//! Run: `cargo bench -p antwort-pool-manager --bench claims`. `ANTWORT_BENCH_ROUNDS` sets the
//! rounds per runtime (default 25 local, a third of it on Kubernetes); `ANTWORT_BENCH_ONLY=local`
//! skips the Kubernetes part. Target (2 cores): warm claim p50 <= 5 ms on the local runtime.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{FilesConfig, IdentityConfig};
use antwort_common::pool_api::Claim;
use antwort_pool_manager::config::RuntimeConfig;
use antwort_pool_manager::crd::{PoolResources, RecyclePolicy, SandboxKind, SandboxPoolSpec};
use antwort_pool_manager::runtime::kube::KubeConfig;
use antwort_pool_manager::runtime::local::{LocalConfig, LocalPool};
use antwort_pool_manager::sandbox_identity::SandboxIdentity;
use antwort_pool_manager::{Config, SandboxPool};
use common::stack::{self, Api, Clients, ManagerProcess};
use kube::api::PostParams;

const POOL: &str = "bench";
/// Warm sandboxes of the local pool: each round claims them all, then releases them all.
const LOCAL_BATCH: u32 = 8;
/// The same on Kubernetes (each pod is an agent process started by the harness).
const KUBE_BATCH: u32 = 4;
/// Target: warm claim p50 on the local runtime.
const TARGET_CLAIM_P50: Duration = Duration::from_millis(5);
/// Single-release refills measured per runtime.
const SINGLE_REFILLS: usize = 5;

fn main() {
    let rounds: usize =
        std::env::var("ANTWORT_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let only_local = std::env::var("ANTWORT_BENCH_ONLY").is_ok_and(|v| v == "local");
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Quiet: the harness would log every reconcile step otherwise.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    stack::prefer_dev_agent();
    let agent = stack::agent_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("pool-manager claims bench (agent binary {})", agent.display());
    let local = runtime.block_on(bench_local(rounds));
    local.print("local runtime");
    let met = local.claim.p50() <= TARGET_CLAIM_P50;
    if only_local {
        println!("\nkubernetes runtime: skipped (ANTWORT_BENCH_ONLY=local)");
    } else {
        match runtime.block_on(bench_kube(rounds.div_ceil(3).max(2))) {
            Ok(kube) => kube.print("kubernetes runtime (real kube-apiserver, harness kubelet)"),
            Err(reason) => println!("\nkubernetes runtime: skipped ({reason})"),
        }
    }
    println!(
        "\ntarget: local warm claim p50 {} <= {}: {}",
        ms(local.claim.p50()),
        ms(TARGET_CLAIM_P50),
        if met { "met" } else { "MISSED" }
    );
}

/// One runtime's figures.
struct Figures {
    baseline: Samples,
    claim: Samples,
    release: Samples,
    burst_refill: Samples,
    single_refill: Samples,
    batch: u32,
}

impl Figures {
    fn print(&self, title: &str) {
        println!("\n{title}");
        let base = &self.baseline;
        println!("  baseline  mTLS GET /healthz        {}", base.summary());
        for (name, samples) in [
            ("claim     POST /v1/claims (warm)", &self.claim),
            ("release   DELETE /v1/claims/{id}", &self.release),
        ] {
            println!(
                "  {name}  {}  = {:.2}x / {:.2}x baseline",
                samples.summary(),
                ratio(samples.p50(), base.p50()),
                ratio(samples.p99(), base.p99()),
            );
        }
        println!(
            "  refill    one release -> replacement ready       p50 {}  max {}  (n={})",
            ms(self.single_refill.p50()),
            ms(self.single_refill.max()),
            self.single_refill.len()
        );
        println!(
            "  refill    burst of {} releases -> all ready again p50 {}  max {}  (n={})",
            self.batch,
            ms(self.burst_refill.p50()),
            ms(self.burst_refill.max()),
            self.burst_refill.len()
        );
    }
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn percentile(&self, percent: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((percent / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }

    fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!("p50 {:>9}  p99 {:>9}  (n={})", ms(self.p50()), ms(self.p99()), self.len())
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

fn ratio(value: Duration, base: Duration) -> f64 {
    value.as_secs_f64() / base.as_secs_f64().max(1e-9)
}

/// Rounds of: `batch` warm claims one after another (each preceded by a baseline round trip),
/// then all released at once and the refill timed; then single-release refills.
async fn measure(api: &Api, batch: u32, rounds: usize) -> Figures {
    let mut figures = Figures {
        baseline: Samples::default(),
        claim: Samples::default(),
        release: Samples::default(),
        burst_refill: Samples::default(),
        single_refill: Samples::default(),
        batch,
    };
    api.wait_ready(POOL, batch).await;
    // Warm the connection (handshake, pool) outside the figures.
    for _ in 0..20 {
        healthz(api).await;
    }
    for round in 0..rounds {
        api.wait_ready(POOL, batch).await;
        let mut claims = Vec::new();
        for n in 0..batch {
            figures.baseline.push(healthz(api).await);
            let started = Instant::now();
            let response = api.claim(POOL, &format!("round-{round}-{n}")).await;
            let status = response.status();
            let text = response.text().await.expect("a claim body");
            figures.claim.push(started.elapsed());
            assert_eq!(status, 200, "a warm claim: {text}");
            let claim: Claim = serde_json::from_str(&text).expect("a Claim");
            assert!(!claim.reused, "a fresh session key gets a fresh claim");
            claims.push(claim);
        }
        let released = Instant::now();
        for claim in &claims {
            let started = Instant::now();
            assert_eq!(api.release(&claim.claim_id).await, 204);
            figures.release.push(started.elapsed());
        }
        figures.burst_refill.push(refilled(api, batch, released).await);
    }
    for n in 0..SINGLE_REFILLS {
        api.wait_ready(POOL, batch).await;
        let claim = api.claim_ok(POOL, &format!("single-{n}")).await;
        let released = Instant::now();
        assert_eq!(api.release(&claim.claim_id).await, 204);
        figures.single_refill.push(refilled(api, batch, released).await);
    }
    figures
}

async fn healthz(api: &Api) -> Duration {
    let started = Instant::now();
    let response =
        api.client.get(format!("{}/healthz", api.base)).send().await.expect("GET /healthz");
    let status = response.status();
    let _ = response.bytes().await.expect("a body");
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "the baseline answers");
    elapsed
}

/// How long after `since` the pool had `batch` ready sandboxes again (polled every 5 ms).
async fn refilled(api: &Api, batch: u32, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(120);
    loop {
        let status = api.pool(POOL).await;
        if status.ready == batch && status.starting == 0 && status.claimed == 0 {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "the pool never refilled: {status:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bench_local(rounds: usize) -> Figures {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca_dir = dir.path().join("ca");
    let ca = DevCa::load_or_create(&ca_dir, stack::TRUST_DOMAIN).expect("a dev CA");
    let pools: Vec<LocalPool> = serde_yaml_ng::from_str(&format!(
        "- name: {POOL}\n  kind: python\n  minReady: {LOCAL_BATCH}\n  maxPods: {}\n  \
         allowedCallers: [\"{}\"]\n",
        LOCAL_BATCH * 2,
        stack::GATEWAY_ID
    ))
    .expect("pools YAML");
    let mut config = Config::default();
    config.server.allowed_callers = vec![stack::GATEWAY_ID.to_owned()];
    config.reconcile.interval_ms = 200;
    config.runtime = RuntimeConfig::Local(LocalConfig {
        agent_binary: Some(stack::agent_binary()),
        work_dir: Some(dir.path().join("work")),
        trust_domain: stack::TRUST_DOMAIN.to_owned(),
        ca_dir: Some(ca_dir),
        sandbox_uid_base: stack::uid_base(),
        pools,
        ..LocalConfig::default()
    });
    let manager = ManagerProcess::start(config, None).await;
    let clients = Clients { ca };
    let api = Api {
        base: manager.api.clone(),
        client: clients
            .gateway(&format!("spiffe://{}/ns/local/sa/pool-manager", stack::TRUST_DOMAIN)),
    };
    let figures = measure(&api, LOCAL_BATCH, rounds).await;
    manager.stop().await;
    figures
}

async fn bench_kube(rounds: usize) -> Result<Figures, String> {
    let cache = std::env::var("ANTWORT_K8S_CACHE")
        .unwrap_or_else(|_| "/var/cache/antwort/k8s-1.20.2".to_owned());
    if !std::path::Path::new(&cache).join("bin/kube-apiserver").is_file() {
        return Err(format!("no kube-apiserver in {cache}: run scripts/kube-test-env.sh build"));
    }
    let env = common::KubeEnv::start().await;
    let ca = DevCa::new(stack::TRUST_DOMAIN).expect("a CA");
    let manager_svid = tempfile::tempdir().expect("a folder");
    ca.write_svid(stack::MANAGER_ID, manager_svid.path()).expect("the manager's SVID");
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let _kubelet =
        common::kubelet::start(env.pods(), &ca, stack::TRUST_DOMAIN, common::NAMESPACE, agent_port);
    let pool = SandboxPool::new(
        POOL,
        SandboxPoolSpec {
            kind: SandboxKind::Python,
            image: "registry.example/antwort-sandbox:bench".to_owned(),
            min_ready: KUBE_BATCH,
            max_pods: KUBE_BATCH * 2,
            resources: PoolResources::default(),
            runtime_class_name: None,
            idle_timeout_seconds: 600,
            max_lifetime_seconds: 3600,
            recycle_policy: RecyclePolicy::Destroy,
            egress: false,
            allowed_callers: vec![stack::GATEWAY_ID.to_owned()],
        },
    );
    env.pools().create(&PostParams::default(), &pool).await.map_err(|e| e.to_string())?;
    let mut config = Config::default();
    config.server.allowed_callers = vec![stack::GATEWAY_ID.to_owned()];
    config.identity = Some(IdentityConfig::Files(FilesConfig::in_dir(manager_svid.path())));
    config.reconcile.interval_ms = 300;
    config.runtime = RuntimeConfig::Kubernetes(KubeConfig {
        namespace: common::NAMESPACE.to_owned(),
        agent_port,
        trust_domain: stack::TRUST_DOMAIN.to_owned(),
        service_account: "default".to_owned(),
        // The harness playing the kubelet mints each pod's SVID itself.
        sandbox_identity: Some(SandboxIdentity::Files { secret_name: "sandbox-svid".to_owned() }),
        lease_name: "antwort-pool-manager".to_owned(),
        lease_duration_secs: 3,
    });
    let manager = ManagerProcess::start(config, Some(env.client.clone())).await;
    let clients = Clients { ca };
    let api = Api { base: manager.api.clone(), client: clients.gateway(stack::MANAGER_ID) };
    let figures = measure(&api, KUBE_BATCH, rounds).await;
    manager.stop().await;
    Ok(figures)
}
