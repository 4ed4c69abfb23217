//! The harness playing the kubelet (after `pool-manager/tests/common/kubelet.rs`, which e2e may
//! not depend on): for every new pool pod it starts the real processes its containers stand for
//! (the image's entrypoint, `antwort-sandbox-agent --config <its kind's agent.yaml>`, plus the
//! container's args and `ANTWORT_*` env, with a loopback address, temp folders for the volumes
//! and an SVID for the pod's SPIFFE ID), then writes the pod's status (Running, podIP, Ready).
//! Python pods have two containers, the agent and the `sandbox` container's spawner: as root,
//! each runs under its container's uid and the pod's group (fsGroup), as in a real pod, and only
//! the agent gets the SVID. Pods that go away lose their processes; dropping the kubelet stops
//! all.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use antwort_common::identity::dev_ca::DevCa;
use antwort_e2e::kube_env::KubeEnv;
use antwort_e2e::{manifests, tools, workspace};
use serde_json::Value;

/// One container's process; SIGTERM (the agent deletes its sessions first), then SIGKILL after
/// 5 s.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One pod: its containers' processes (the agent first, so it stops before the spawner) and the
/// folder standing in for its volumes.
struct Agent {
    /// `(container, process)`.
    processes: Vec<(String, Process)>,
    _dir: tempfile::TempDir,
}

/// The kubelet stand-in for one namespace; call [`Kubelet::sync`] while waiting on the cluster.
pub struct Kubelet {
    namespace: String,
    ca: DevCa,
    agent_port: u16,
    binary: PathBuf,
    agents: HashMap<String, Agent>,
    started: u32,
    bin_dir: tempfile::TempDir,
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
            bin_dir: tempfile::tempdir().expect("a folder for the binary"),
        }
    }

    /// The agent binary, linked into a folder every uid may read (the checkout may not be).
    fn binary(&self) -> PathBuf {
        let path = self.bin_dir.path().join("antwort-sandbox-agent");
        if !path.exists() {
            set_mode(self.bin_dir.path(), 0o755);
            if std::fs::hard_link(&self.binary, &path).is_err() {
                std::fs::copy(&self.binary, &path).expect("copy the agent binary");
            }
        }
        path
    }

    /// For every pod, its containers' processes and the uid each runs as (from `/proc`).
    pub fn process_uids(&self) -> Vec<(String, Vec<(String, u32)>)> {
        let mut pods: Vec<_> = self
            .agents
            .iter()
            .map(|(pod, agent)| {
                let uids = agent
                    .processes
                    .iter()
                    .map(|(name, process)| {
                        let status =
                            std::fs::read_to_string(format!("/proc/{}/status", process.0.id()))
                                .unwrap_or_default();
                        // `Uid:` real, effective, saved, filesystem.
                        let uid = status
                            .lines()
                            .find_map(|line| line.strip_prefix("Uid:"))
                            .and_then(|ids| ids.split_whitespace().nth(1))
                            .and_then(|uid| uid.parse().ok())
                            .unwrap_or(u32::MAX);
                        (name.clone(), uid)
                    })
                    .collect();
                (pod.clone(), uids)
            })
            .collect();
        pods.sort();
        pods
    }

    /// Whether the processes run under their pods' own uids (needs root).
    pub fn runs_pod_uids(&self) -> bool {
        running_as_root()
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
        let dir = tempfile::tempdir().expect("a pod folder");
        let folder = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).expect("a pod folder");
            path
        };
        let (svid, workspace, run) = (folder("svid"), folder("workspace"), folder("run"));
        self.ca.write_svid(&id, &svid).expect("an SVID for the pod");
        // The container's entrypoint: the agent with the config file its kind's image bakes in.
        let kind = pod["metadata"]["labels"]["antwort.dev/kind"].as_str().expect("a kind label");
        let image_config = workspace::path(&format!("images/sandbox-{kind}/agent.yaml"));
        assert!(
            image_config.is_file(),
            "no image config {} for kind {kind}",
            image_config.display()
        );
        let containers = spec["containers"].as_array().expect("containers");
        // Without root the two uids cannot be had: the agent alone then, on the fork path.
        let split = containers.iter().any(|c| c["name"] == "sandbox") && running_as_root();
        // Where the pod's uids can read it, whatever the checkout's permissions.
        let config = dir.path().join("agent.yaml");
        std::fs::copy(&image_config, &config).expect("copy the image's config");
        set_mode(&config, 0o644);
        let mut processes = Vec::new();
        // The spawner first: the agent's warm-up waits for it either way.
        for container in containers.iter().rev() {
            let name = container["name"].as_str().unwrap_or("?");
            if name != "agent" && !split {
                continue;
            }
            let mut command = Command::new(self.binary());
            command
                .arg("--config")
                .arg(&config)
                .args(container["args"].as_array().into_iter().flatten().filter_map(Value::as_str))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("RUST_LOG", "warn");
            let env = manifests::env(container);
            for (name, value) in &env {
                if let Some(value) = value {
                    command.env(name, value);
                }
            }
            // What the node would provide instead: loopback listeners, folders for the volumes.
            command.env("ANTWORT_WORKSPACE__ROOT", &workspace);
            if env.iter().any(|(name, _)| name == "ANTWORT_SANDBOX__SPAWNER") {
                command.env("ANTWORT_SANDBOX__SPAWNER", run.join("spawner.sock"));
            }
            if name == "agent" {
                command
                    .env("ANTWORT_SERVER__LISTEN", format!("{ip}:{}", self.agent_port))
                    .env("ANTWORT_SERVER__ADMIN_LISTEN", format!("{ip}:0"))
                    .env("ANTWORT_IDENTITY__SOURCE", "files")
                    .env("ANTWORT_IDENTITY__DIR", &svid);
            }
            if split {
                // The pod's own uids: the container's runAsUser (else the pod's), the pod's
                // group; the volumes belong to root and the group, like emptyDirs with fsGroup.
                let uid_of = |c: &Value| {
                    c["securityContext"]["runAsUser"]
                        .as_u64()
                        .or(spec["securityContext"]["runAsUser"].as_u64())
                        .expect("a runAsUser") as u32
                };
                let gid = spec["securityContext"]["fsGroup"].as_u64().expect("an fsGroup") as u32;
                let uid = uid_of(container);
                for path in [dir.path(), &workspace, &run] {
                    std::os::unix::fs::chown(path, Some(0), Some(gid)).expect("chown");
                    set_mode(path, if path == dir.path() { 0o750 } else { 0o2770 });
                }
                if name == "agent" {
                    for entry in std::fs::read_dir(&svid).expect("the SVID folder") {
                        let path = entry.expect("an SVID file").path();
                        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
                    }
                    std::os::unix::fs::chown(&svid, Some(uid), Some(gid)).expect("chown");
                    set_mode(&svid, 0o700);
                }
                command.uid(uid).gid(gid);
            } else {
                // One container (no user code): the fork path, with a uid of its own per agent,
                // as in the pool manager's tests.
                let uid = 50_000 + (std::process::id() % 500) * 20 + 10 + self.started % 8;
                command
                    .env("ANTWORT_SANDBOX__SPAWNER", "null")
                    .env("ANTWORT_SANDBOX__UID", uid.to_string())
                    .env("ANTWORT_SANDBOX__GID", uid.to_string());
            }
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
            let child = command.spawn().unwrap_or_else(|e| panic!("start the pod's {name}: {e}"));
            processes.push((name.to_owned(), Process(child)));
            if name == "sandbox" {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !run.join("spawner.sock").exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        processes.reverse();
        Agent { processes, _dir: dir }
    }
}

/// The kubelet's own uid (its processes' folder `/proc/self` belongs to it).
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|meta| meta.uid()).unwrap_or(u32::MAX)
}

fn running_as_root() -> bool {
    own_uid() == 0
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
