//! The harness playing the kubelet (after `pool-manager/tests/common/kubelet.rs`, which e2e may
//! not depend on): for every new pool pod it starts the real `antwort-sandbox-agent` the pod
//! stands for (its image's `agent.yaml` and the pod's own `ANTWORT_*` env, with a loopback
//! address, a temp workspace and an SVID for the pod's SPIFFE ID instead of the container's), then writes the pod's status
//! (Running, podIP, Ready). Pods that go away lose their agent; dropping the kubelet stops all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_e2e::kube_env::KubeEnv;
use antwort_e2e::{manifests, tools, workspace};
use serde_json::Value;

/// One agent process; SIGTERM (it deletes its sessions first), then SIGKILL after 5 s.
struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kubelet stand-in for one namespace; call [`Kubelet::sync`] while waiting on the cluster.
pub struct Kubelet {
    namespace: String,
    ca: DevCa,
    agent_port: u16,
    binary: PathBuf,
    agents: HashMap<String, Agent>,
    started: u32,
}

impl Kubelet {
    /// Agents listen on `<own 127.x.y.z>:agent_port` with SVIDs minted by `ca`.
    pub fn new(namespace: &str, ca: DevCa, agent_port: u16) -> Kubelet {
        Kubelet {
            namespace: namespace.to_owned(),
            ca,
            agent_port,
            binary: workspace::binary("antwort-sandbox-agent", "antwort-sandbox-agent"),
            agents: HashMap::new(),
            started: 0,
        }
    }

    /// How many agents run now.
    pub fn running(&self) -> usize {
        self.agents.len()
    }

    /// One kubelet round: agents of deleted pods stop, new pods get an agent and a status.
    pub fn sync(&mut self, env: &KubeEnv) {
        let out = tools::output(env.kubectl().args([
            "get",
            "pods",
            "-n",
            &self.namespace,
            "-l",
            "app.kubernetes.io/managed-by=antwort-pool-manager",
            "-o",
            "json",
        ]));
        if !out.status.success() {
            return; // the next round retries
        }
        let pods: Value = serde_json::from_slice(&out.stdout).expect("kubectl -o json prints JSON");
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        let live = |pod: &&Value| pod["metadata"]["deletionTimestamp"].is_null();
        let names: Vec<&str> = pods.iter().filter(live).map(manifests::name).collect();
        self.agents.retain(|name, _| names.contains(&name.as_str()));
        for pod in pods.iter().filter(live) {
            let name = manifests::name(pod);
            if self.agents.contains_key(name) || pod["status"]["podIP"].is_string() {
                continue;
            }
            let ip = self.next_ip();
            let agent = self.start_agent(pod, &ip);
            self.agents.insert(name.to_owned(), agent);
            let status = serde_json::json!({ "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{ "type": "Ready", "status": "True" }],
            }});
            // The pod may be gone by now; the next round drops its agent.
            let _ = tools::output(
                env.kubectl()
                    .args(["patch", "pod", name, "-n", &self.namespace])
                    .args(["--subresource=status", "--type=merge", "-p"])
                    .arg(status.to_string()),
            );
        }
    }

    /// A loopback address no other test process of this run is likely to use.
    fn next_ip(&mut self) -> String {
        let n = self.started;
        self.started += 1;
        let pid = std::process::id();
        format!("127.{}.{}.{}", 100 + (pid % 100), (pid / 100) % 250, n % 250 + 2)
    }

    fn start_agent(&self, pod: &Value, ip: &str) -> Agent {
        let spec = &pod["spec"];
        let account = spec["serviceAccountName"].as_str().unwrap_or("default");
        let id = format!(
            "spiffe://{}/ns/{}/sa/{account}",
            self.ca.trust_domain().as_str(),
            self.namespace
        );
        let dir = tempfile::tempdir().expect("an agent folder");
        self.ca.write_svid(&id, &dir.path().join("svid")).expect("an SVID for the pod");
        std::fs::create_dir_all(dir.path().join("workspace")).expect("a workspace");
        // Sandboxed code runs as a uid of its own per agent, as in the pool manager's tests.
        let uid = 50_000 + (std::process::id() % 500) * 20 + 10 + self.started % 8;
        // The container's entrypoint: the agent with the config file its kind's image bakes in.
        let kind = pod["metadata"]["labels"]["antwort.dev/kind"].as_str().expect("a kind label");
        let config = workspace::path(&format!("images/sandbox-{kind}/agent.yaml"));
        assert!(config.is_file(), "no image config {} for kind {kind}", config.display());
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn");
        for (name, value) in manifests::env(&spec["containers"][0]) {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        command
            .env("ANTWORT_SERVER__LISTEN", format!("{ip}:{}", self.agent_port))
            .env("ANTWORT_SERVER__ADMIN_LISTEN", format!("{ip}:0"))
            .env("ANTWORT_WORKSPACE__ROOT", dir.path().join("workspace"))
            .env("ANTWORT_IDENTITY__SOURCE", "files")
            .env("ANTWORT_IDENTITY__DIR", dir.path().join("svid"))
            .env("ANTWORT_SANDBOX__UID", uid.to_string())
            .env("ANTWORT_SANDBOX__GID", uid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().expect("start the pod's antwort-sandbox-agent");
        Agent { child, _dir: dir }
    }
}
