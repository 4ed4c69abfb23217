//! The harness playing the kubelet: for every new sandbox pod it starts the agent process the pod
//! stands for (the pod's own `ANTWORT_*` env, with loopback addresses and a temp workspace
//! instead of the container's), on its own 127.x.y.z address, with an SVID for the pod's SPIFFE
//! ID; then it writes the pod's status (Running, podIP, Ready). Pods that go away lose their agent.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use antwort_common::identity::dev_ca::DevCa;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A running kubelet stand-in; stops its agents (SIGTERM) when dropped.
pub struct Kubelet {
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the agent deletes its sessions (and their processes) before it exits.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
}

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other test process of this run is likely to use.
fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}.{}", 100 + (pid % 100), (pid / 100) % 250, n % 250 + 2)
}

/// Starts playing the kubelet for the pods in `pods`; agents listen on `agent_port`.
pub fn start(
    pods: Api<Pod>,
    ca: &DevCa,
    trust_domain: &str,
    namespace: &str,
    agent_port: u16,
) -> Kubelet {
    let binary = super::stack::agent_binary();
    let ca_dir = tempfile::tempdir().expect("a CA folder");
    ca.save(ca_dir.path()).expect("save the CA");
    let ca = DevCa::load_or_create(ca_dir.path(), trust_domain).expect("the CA");
    let namespace = namespace.to_owned();
    let task = tokio::spawn(async move {
        let _ca_dir = ca_dir;
        let mut agents: HashMap<String, Agent> = HashMap::new();
        let uid_base = super::stack::uid_base() + 10;
        let mut started = 0u32;
        loop {
            let list = match pods
                .list(
                    &ListParams::default()
                        .labels("app.kubernetes.io/managed-by=antwort-pool-manager"),
                )
                .await
            {
                Ok(list) => list.items,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let live: Vec<String> = list
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .map(ResourceExt::name_any)
                .collect();
            agents.retain(|name, _| live.contains(name));
            for pod in &list {
                let name = pod.name_any();
                if pod.metadata.deletion_timestamp.is_some() || agents.contains_key(&name) {
                    continue;
                }
                let has_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                if has_ip {
                    continue;
                }
                let ip = next_ip();
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into());
                let id = format!(
                    "spiffe://{trust}/ns/{namespace}/sa/{account}",
                    trust = ca.trust_domain().as_str()
                );
                let dir = tempfile::tempdir().expect("an agent folder");
                ca.write_svid(&id, &dir.path().join("svid")).expect("an SVID");
                std::fs::create_dir_all(dir.path().join("workspace")).expect("a workspace");
                let uid = uid_base + started % 8;
                started += 1;
                let mut command = Command::new(&binary);
                command
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("RUST_LOG", "warn");
                for var in pod
                    .spec
                    .as_ref()
                    .map(|s| s.containers[0].env.clone().unwrap_or_default())
                    .unwrap_or_default()
                {
                    if let Some(value) = var.value {
                        command.env(var.name, value);
                    }
                }
                command
                    .env("ANTWORT_SERVER__LISTEN", format!("{ip}:{agent_port}"))
                    .env("ANTWORT_SERVER__ADMIN_LISTEN", format!("{ip}:0"))
                    .env("ANTWORT_WORKSPACE__ROOT", dir.path().join("workspace"))
                    .env("ANTWORT_IDENTITY__SOURCE", "files")
                    .env("ANTWORT_IDENTITY__DIR", dir.path().join("svid"))
                    .env("ANTWORT_SANDBOX__UID", uid.to_string())
                    .env("ANTWORT_SANDBOX__GID", uid.to_string())
                    // Only the agent container is played here: its code runs through the fork
                    // path, not the `sandbox` container's spawner (e2e's kubelet runs both).
                    .env("ANTWORT_SANDBOX__SPAWNER", "null")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true);
                let child = command.spawn().expect("start the pod's agent");
                agents.insert(name.clone(), Agent { child, _dir: dir });
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = serde_json::json!({ "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": now }],
                }});
                let _ =
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Kubelet { task }
}
