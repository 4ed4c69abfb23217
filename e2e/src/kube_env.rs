//! A real kube-apiserver (1.20, built and cached by `scripts/kube-test-env.sh build`) + etcd on
//! loopback, stopped by PID when dropped; kubectl and helm bound to it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools;
use crate::workspace;

pub struct KubeEnv {
    dir: tempfile::TempDir,
}

impl KubeEnv {
    /// Starts the apiserver; panics with the script's output when it cannot.
    pub fn start() -> KubeEnv {
        let dir = tempfile::tempdir().expect("a temp dir for the apiserver");
        let out = tools::output(
            Command::new(workspace::path("scripts/kube-test-env.sh")).arg("start").arg(dir.path()),
        );
        let env = KubeEnv { dir };
        assert!(
            out.status.success(),
            "scripts/kube-test-env.sh start failed ({}); run `scripts/kube-test-env.sh build` \
             first (scripts/test.sh does):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// kubectl against this apiserver.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(tools::kubectl());
        command.arg("--kubeconfig").arg(self.kubeconfig());
        command
    }

    /// helm against this apiserver.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(tools::helm());
        command.arg("--kubeconfig").arg(self.kubeconfig());
        // Helm keeps caches and config under HOME; keep them out of the machine's.
        command
            .env("HELM_CACHE_HOME", self.dir.path().join("helm-cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm-config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm-data"));
        command
    }

    /// A scratch directory that lives as long as the environment.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        let _ = Command::new(workspace::path("scripts/kube-test-env.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`
/// and the last state `describe` reports.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last state:\n{}", describe());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
