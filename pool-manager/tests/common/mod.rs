//! Test harness: a real kube-apiserver + etcd started by `scripts/kube-test-env.sh` (stopped on
//! drop), the CRD installed from the Rust type, the manager run in-process, and helpers that play
//! the kubelet by writing pod status through the status subresource.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use antwort_pool_manager::SandboxPool;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};

pub mod kubelet;
pub mod stack;

pub const NAMESPACE: &str = "default";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-test-env.sh")
}

/// A running apiserver + etcd; stopped (by PID, via the script) when dropped.
pub struct KubeEnv {
    dir: tempfile::TempDir,
    pub client: Client,
}

impl KubeEnv {
    pub async fn start() -> KubeEnv {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
                |_| tracing_subscriber::EnvFilter::new("antwort_pool_manager=debug"),
            ))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("a temp dir for the apiserver");
        let output = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run scripts/kube-test-env.sh start");
        if !output.status.success() {
            let _ = Command::new(script()).arg("stop").arg(dir.path()).status();
            panic!(
                "kube-test-env.sh start failed ({}); run `scripts/kube-test-env.sh build` first?\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let kubeconfig =
            Kubeconfig::read_from(dir.path().join("kubeconfig")).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a client config from the kubeconfig");
        let client = Client::try_from(config).expect("a kube client");
        let env = KubeEnv { dir, client };
        env.install_crd().await;
        env
    }

    async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.create(&PostParams::default(), &SandboxPool::crd())
            .await
            .expect("create the SandboxPool CRD");
        let pools = self.pools();
        // Established takes a moment; the pool API answers once it is.
        eventually("the SandboxPool API is served", || async {
            pools.list(&ListParams::default()).await.is_ok()
        })
        .await;
    }

    pub fn pools(&self) -> Api<SandboxPool> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// The kubeconfig's path (for a manager run as a process).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The pods of `pool` that are not being deleted.
    pub async fn live_pods(&self, pool: &str) -> Vec<Pod> {
        let selector = format!("antwort.dev/pool={pool}");
        self.pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect()
    }

    pub async fn set_pod_status(&self, name: &str, status: serde_json::Value) {
        self.pods()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "status": status })),
            )
            .await
            .expect("patch pod status");
    }

    pub async fn pool_status(&self, name: &str) -> antwort_pool_manager::SandboxPoolStatus {
        self.pools().get_status(name).await.expect("get pool status").status.unwrap_or_default()
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after 30 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
