//! A real `antwort-gateway` process started from a YAML config, for the tests that kill or
//! signal it. Its output is echoed to the test's stderr with a `[name]` prefix.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

pub struct GatewayProcess {
    pub child: tokio::process::Child,
    /// `http://addr`, as the gateway logged it.
    pub url: String,
}

impl GatewayProcess {
    /// Writes `yaml` to `dir/name.yaml` and starts the binary on it; the config must listen on
    /// `127.0.0.1:0` (the address is read from the gateway's log).
    pub async fn start(dir: &Path, name: &str, yaml: &str) -> Self {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).expect("config written");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_antwort-gateway"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("gateway binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for pipe in
            [Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, Box::new(stderr)]
        {
            let tx = tx.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{name}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = rx.recv().await {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String =
                        rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                    return format!("http://{addr}");
                }
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway listens within 30 s");
        Self { child, url }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, signal).expect("signal sent");
    }

    pub async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the gateway exits in time")
            .expect("wait")
    }

    pub async fn kill_9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait(Duration::from_secs(5)).await;
    }
}
