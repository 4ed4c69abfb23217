//! The local runtime: the same pools as `antwort-sandbox-agent` processes on loopback, for the
//! one-machine stack and tests. Each sandbox gets its own folder (config, SVID minted by the
//! development CA, workspace), its own SPIFFE ID and, when the manager runs as root, its own uid
//! for user code. The agent confines every execution itself (setsid, rlimits, uid switch,
//! seccomp, a private network namespace); `launcher` can wrap the agent process in more (e.g.
//! `unshare`, `bwrap`).
//!
//! State lives in this process (one manager per machine); marks are versioned like a pod's
//! `resourceVersion`, so the claim code is the same as on Kubernetes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use antwort_common::identity::dev_ca::DevCa;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use super::{Marks, Phase, Pool, Pulse, Runtime, Sandbox};
use crate::crd::{SandboxKind, SandboxPoolSpec, SandboxPoolStatus};
use crate::error::{Error, Result};
use crate::state::now_secs;

/// The agent binary's file name, looked up next to the manager's executable by default.
pub const AGENT_BINARY_NAME: &str = "antwort-sandbox-agent";

/// The `runtime:` config section when `kind: local`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// The agent executable; default: `antwort-sandbox-agent` next to the manager's executable.
    pub agent_binary: Option<PathBuf>,
    /// Where sandbox folders go; default: a temporary folder removed at exit.
    pub work_dir: Option<PathBuf>,
    /// The trust domain of the development CA and of every SPIFFE ID minted here.
    pub trust_domain: String,
    /// The development CA's folder (`ca.crt`, `ca.key`), created if absent; default:
    /// `<work_dir>/ca`. Give the gateway the same folder so both trust one bundle.
    pub ca_dir: Option<PathBuf>,
    /// When the manager runs as root, sandbox `n` runs user code as uid/gid `base + n % 10000`
    /// (distinct uids keep per-uid process limits apart); otherwise as the manager's own uid.
    pub sandbox_uid_base: u32,
    /// A command the agent is started under (`["unshare", "--mount", "--"]`); empty: none.
    pub launcher: Vec<String>,
    /// Extra `ANTWORT_*` settings for every agent (`ANTWORT_LIMITS__MAX_SESSIONS: "4"`).
    pub agent_env: BTreeMap<String, String>,
    /// How long an agent may take to print its listening address, in milliseconds.
    pub start_timeout_ms: u64,
    /// The pools: a name plus the `SandboxPool` spec fields (`minReady`, `maxPods`, ...).
    pub pools: Vec<LocalPool>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            agent_binary: None,
            work_dir: None,
            trust_domain: "antwort.local".to_owned(),
            ca_dir: None,
            sandbox_uid_base: 40_000,
            launcher: Vec::new(),
            agent_env: BTreeMap::new(),
            start_timeout_ms: 30_000,
            pools: Vec::new(),
        }
    }
}

/// One local pool: `name` and the `SandboxPool` spec (`image` may be left out: there is none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalPool {
    pub name: String,
    #[serde(flatten)]
    pub spec: SandboxPoolSpec,
}

impl<'de> Deserialize<'de> for LocalPool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_yaml_ng::Mapping::deserialize(deserializer)?;
        let name = map
            .remove("name")
            .and_then(|name| name.as_str().map(str::to_owned))
            .ok_or_else(|| D::Error::custom("missing field `name`"))?;
        if !map.contains_key("image") {
            map.insert("image".into(), "local".into());
        }
        let spec = serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(map))
            .map_err(|e| D::Error::custom(format!("pool {name}: {e}")))?;
        Ok(LocalPool { name, spec })
    }
}

impl LocalConfig {
    /// Every problem, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if antwort_common::identity::TrustDomain::new(&self.trust_domain).is_err() {
            problems.push(format!(
                "runtime.trust_domain: {:?} is not a trust domain",
                self.trust_domain
            ));
        }
        if self.start_timeout_ms == 0 {
            problems.push("runtime.start_timeout_ms: must be at least 1".to_owned());
        }
        if self.pools.is_empty() {
            problems.push("runtime.pools: declare at least one pool".to_owned());
        }
        for (index, pool) in self.pools.iter().enumerate() {
            let valid_name = !pool.name.is_empty()
                && pool.name.len() <= 40
                && pool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid_name {
                problems.push(format!(
                    "runtime.pools[{index}].name: {:?} must be 1-40 of [a-z0-9-]",
                    pool.name
                ));
            }
            if self.pools[..index].iter().any(|other| other.name == pool.name) {
                problems.push(format!(
                    "runtime.pools[{index}].name: {:?} is declared twice",
                    pool.name
                ));
            }
            for problem in pool.spec.problems() {
                problems.push(format!(
                    "runtime.pools[{index}].{}",
                    problem.trim_start_matches("spec.")
                ));
            }
        }
        for key in self.agent_env.keys() {
            if !key.starts_with("ANTWORT_") {
                problems.push(format!("runtime.agent_env.{key}: only ANTWORT_* settings"));
            }
        }
        problems
    }

    /// The agent binary: configured, or next to the running executable (or one folder up, where
    /// cargo puts binaries relative to test and bench executables in `deps/`).
    pub fn resolve_agent_binary(&self) -> Result<PathBuf> {
        if let Some(path) = &self.agent_binary {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(Error::Config(format!(
                    "runtime.agent_binary: {} is not a file",
                    path.display()
                )))
            };
        }
        let exe = std::env::current_exe()?;
        let candidates: Vec<PathBuf> =
            exe.ancestors().skip(1).take(2).map(|dir| dir.join(AGENT_BINARY_NAME)).collect();
        candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
            Error::Config(format!(
                "runtime.agent_binary: not set, and no {AGENT_BINARY_NAME} in {}",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
            ))
        })
    }
}

/// Sandboxes as agent processes on this machine.
#[derive(Clone)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalConfig,
    binary: PathBuf,
    work_dir: PathBuf,
    /// Keeps a temporary work folder alive (and removes it at the end).
    _temp: Option<tempfile::TempDir>,
    ca: DevCa,
    /// Allowed to call every agent on top of each pool's `allowedCallers` (this manager).
    manager_ids: Vec<String>,
    /// Running as root: each sandbox gets its own uid.
    root: bool,
    pulse: Pulse,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, Entry>,
    /// Numbers sandboxes and versions marks; never reused.
    counter: u64,
}

struct Entry {
    sandbox: Sandbox,
    /// The agent process's id while it runs (for SIGTERM).
    pid: Option<u32>,
}

impl LocalRuntime {
    /// Prepares the work folder and the CA; starts nothing until the reconcile loop asks.
    pub fn new(config: LocalConfig, manager_ids: Vec<String>) -> Result<LocalRuntime> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        let binary = config.resolve_agent_binary()?;
        let (work_dir, temp) = match &config.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("antwort-sandboxes-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let ca_dir = config.ca_dir.clone().unwrap_or_else(|| work_dir.join("ca"));
        let ca = DevCa::load_or_create(&ca_dir, &config.trust_domain)?;
        let root = nix::unistd::geteuid().is_root();
        Ok(LocalRuntime {
            inner: Arc::new(Inner {
                config,
                binary,
                work_dir,
                _temp: temp,
                ca,
                manager_ids,
                root,
                pulse: Pulse::new(),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The development CA the agents' SVIDs come from.
    pub fn ca(&self) -> &DevCa {
        &self.inner.ca
    }

    pub fn work_dir(&self) -> &Path {
        &self.inner.work_dir
    }

    fn pool_of(&self, spec: &LocalPool) -> Pool {
        Pool { name: spec.name.clone(), spec: spec.spec.clone(), resource: None }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("the local state lock is never poisoned")
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the local state lock is never poisoned")
    }

    /// Sets a sandbox's phase (a new version) and tells the waiters.
    fn set_phase(&self, name: &str, phase: Phase) {
        let mut state = self.state();
        state.counter += 1;
        let version = state.counter.to_string();
        if let Some(entry) = state.sandboxes.get_mut(name) {
            // A sandbox being deleted stays Terminating whatever its process does.
            if entry.sandbox.phase != Phase::Terminating {
                entry.sandbox.phase = phase;
                entry.sandbox.version = version;
            }
        }
        drop(state);
        self.pulse.beat();
    }
}

/// What an agent's config file says, by sandbox.
fn agent_yaml(dir: &Path, spec: &SandboxPoolSpec, callers: &[String], uid: Option<u32>) -> String {
    let callers = serde_json::to_string(callers).expect("strings serialize");
    let mut yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  allowed_callers: {callers}\n\
         identity:\n  source: files\n  dir: {svid}\n\
         workspace:\n  root: {workspace}\n\
         capabilities:\n  code: {code}\n  file_search: {file_search}\n  web_search: {web_search}\n\
         limits:\n  memory_bytes: {memory}\n\
         sandbox:\n  network: {egress}\n",
        svid = serde_json::to_string(&dir.join("svid")).expect("paths serialize"),
        workspace = serde_json::to_string(&dir.join("workspace")).expect("paths serialize"),
        code = spec.kind == SandboxKind::Python,
        file_search = spec.kind == SandboxKind::FileSearch,
        web_search = spec.kind == SandboxKind::WebSearch,
        egress = spec.egress,
        // The pool's memory is each session's (validated as a quantity with the pool).
        memory = spec.resources.memory_bytes().unwrap_or(1 << 30),
    );
    if let Some(uid) = uid {
        yaml.push_str(&format!("  uid: {uid}\n  gid: {uid}\n"));
    }
    yaml
}

/// Reads the agent's log lines: the API address makes the sandbox Running; the rest goes to our
/// log. When the output ends the process has exited (or closed stdout): it is Failed.
async fn follow_agent(inner: Weak<Inner>, name: String, mut child: Child, start_timeout: Duration) {
    let Some(stdout) = child.stdout.take() else { return };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let started = tokio::time::Instant::now();
    let mut running = false;
    loop {
        let next = if running {
            lines.next_line().await
        } else {
            match tokio::time::timeout_at(started + start_timeout, lines.next_line()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(sandbox = %name, ?start_timeout, "agent did not start listening in time");
                    break;
                }
            }
        };
        let Ok(Some(line)) = next else { break };
        tracing::debug!(sandbox = %name, "agent: {line}");
        if !running
            && line.contains("API (mTLS) listening")
            && let Some(addr) =
                line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next())
        {
            let Some(inner) = inner.upgrade() else { break };
            let spiffe_id = sandbox_spiffe_id(&inner.config.trust_domain, &name);
            inner.set_phase(
                &name,
                Phase::Running { endpoint: format!("https://{addr}"), spiffe_id },
            );
            running = true;
        }
    }
    // Reap the process; if it still runs (start timeout), kill it first.
    let _ = child.start_kill();
    let status = child.wait().await;
    if let Some(inner) = inner.upgrade() {
        let reason = match status {
            Ok(status) => format!("agent exited: {status}"),
            Err(error) => format!("agent lost: {error}"),
        };
        tracing::info!(sandbox = %name, %reason, "local sandbox ended");
        inner.set_phase(&name, Phase::Failed(reason));
    }
}

/// The SPIFFE ID of local sandbox `name`.
pub fn sandbox_spiffe_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/local-sandboxes/sa/{name}")
}

/// SIGTERM, then SIGKILL after `grace` if the process is still there.
async fn terminate(pid: u32, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else { return };
    let pid = Pid::from_raw(raw);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    // Signal 0 probes whether the process still exists (it is reaped by `follow_agent`).
    while kill(pid, None).is_ok() {
        if tokio::time::Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long an agent gets to drain and delete its sessions after SIGTERM.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

impl Runtime for LocalRuntime {
    async fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self.inner.config.pools.iter().map(|pool| self.pool_of(pool)).collect())
    }

    async fn pool(&self, name: &str) -> Result<Option<Pool>> {
        Ok(self
            .inner
            .config
            .pools
            .iter()
            .find(|pool| pool.name == name)
            .map(|pool| self.pool_of(pool)))
    }

    async fn sandboxes(&self, pool: &Pool) -> Result<Vec<Sandbox>> {
        Ok(self
            .state()
            .sandboxes
            .values()
            .filter(|entry| entry.sandbox.pool == pool.name)
            .map(|entry| entry.sandbox.clone())
            .collect())
    }

    async fn find_claim(&self, claim_id: &str) -> Result<Option<(Pool, Sandbox)>> {
        let found = self
            .state()
            .sandboxes
            .values()
            .find(|entry| {
                entry.sandbox.marks.claim.as_ref().is_some_and(|claim| claim.id == claim_id)
            })
            .map(|entry| entry.sandbox.clone());
        let Some(sandbox) = found else { return Ok(None) };
        Ok(self.pool(&sandbox.pool).await?.map(|pool| (pool, sandbox)))
    }

    async fn create(&self, pool: &Pool) -> Result<()> {
        let inner = &self.inner;
        let (name, number) = {
            let mut state = self.state();
            state.counter += 1;
            (format!("{}-{}", pool.name, state.counter), state.counter)
        };
        let dir = inner.work_dir.join("sandboxes").join(&name);
        std::fs::create_dir_all(dir.join("workspace"))?;
        let spiffe_id = sandbox_spiffe_id(&inner.config.trust_domain, &name);
        inner.ca.write_svid(&spiffe_id, &dir.join("svid"))?;
        let mut callers = pool.spec.allowed_callers.clone();
        for id in &inner.manager_ids {
            if !callers.contains(id) {
                callers.push(id.clone());
            }
        }
        let uid = inner
            .root
            .then(|| inner.config.sandbox_uid_base + u32::try_from(number % 10_000).unwrap_or(0));
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, agent_yaml(&dir, &pool.spec, &callers, uid))?;

        let mut argv: Vec<&std::ffi::OsStr> =
            inner.config.launcher.iter().map(std::ffi::OsStr::new).collect();
        argv.push(inner.binary.as_os_str());
        let mut command = Command::new(argv[0]);
        command
            .args(&argv[1..])
            .arg("--config")
            .arg(&config_path)
            // Our own ANTWORT_* settings must not leak into the agent's config.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("RUST_LOG", "info")
            .envs(&inner.config.agent_env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| Error::Local(format!("start {}: {e}", inner.binary.display())))?;
        let pid = child.id();
        let sandbox = Sandbox {
            name: name.clone(),
            pool: pool.name.clone(),
            version: number.to_string(),
            created_at: now_secs(),
            phase: Phase::Pending,
            marks: Marks::default(),
        };
        self.state().sandboxes.insert(name.clone(), Entry { sandbox, pid });
        tracing::info!(pool = %pool.name, sandbox = %name, ?pid, "local sandbox started");
        let timeout = Duration::from_millis(inner.config.start_timeout_ms);
        // Detached on purpose: it ends with the process, which `delete`/`shutdown` end.
        tokio::spawn(follow_agent(Arc::downgrade(inner), name, child, timeout));
        inner.pulse.beat();
        Ok(())
    }

    async fn delete(&self, _pool: &Pool, sandbox: &Sandbox) -> Result<()> {
        let pid = {
            let mut state = self.state();
            state.counter += 1;
            let version = state.counter.to_string();
            let Some(entry) = state.sandboxes.get_mut(&sandbox.name) else { return Ok(()) };
            if entry.sandbox.phase == Phase::Terminating {
                return Ok(());
            }
            entry.sandbox.phase = Phase::Terminating;
            entry.sandbox.version = version;
            entry.pid.take()
        };
        self.inner.pulse.beat();
        let inner = self.inner.clone();
        let name = sandbox.name.clone();
        // Detached on purpose: the slot stays occupied (Terminating) until the agent is gone and
        // its folder removed, which is what `maxPods` must count.
        tokio::spawn(async move {
            if let Some(pid) = pid {
                terminate(pid, TERMINATE_GRACE).await;
            }
            let dir = inner.work_dir.join("sandboxes").join(&name);
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, dir = %dir.display(), "could not remove a sandbox folder");
            }
            inner.state().sandboxes.remove(&name);
            inner.pulse.beat();
        });
        Ok(())
    }

    async fn update_marks(
        &self,
        _pool: &Pool,
        sandbox: &Sandbox,
        marks: &Marks,
    ) -> Result<Option<Sandbox>> {
        let updated = {
            let mut state = self.state();
            state.counter += 1;
            let version = state.counter.to_string();
            match state.sandboxes.get_mut(&sandbox.name) {
                Some(entry) if entry.sandbox.version == sandbox.version => {
                    entry.sandbox.marks = marks.clone();
                    entry.sandbox.version = version;
                    Some(entry.sandbox.clone())
                }
                _ => None,
            }
        };
        if updated.is_some() {
            self.inner.pulse.beat();
        }
        Ok(updated)
    }

    async fn write_status(&self, _pool: &Pool, _status: SandboxPoolStatus) -> Result<()> {
        // Nothing to publish to: `GET /v1/pools` and `/metrics` show local pools.
        Ok(())
    }

    async fn watch(&self, pulse: Pulse) {
        let mut changes = self.inner.pulse.subscribe();
        while changes.changed().await.is_ok() {
            pulse.beat();
        }
    }

    async fn shutdown(&self) {
        let pids: Vec<(String, u32)> = {
            let mut state = self.state();
            state
                .sandboxes
                .iter_mut()
                .filter_map(|(name, entry)| {
                    entry.sandbox.phase = Phase::Terminating;
                    entry.pid.take().map(|pid| (name.clone(), pid))
                })
                .collect()
        };
        futures::future::join_all(pids.iter().map(|(_, pid)| terminate(*pid, TERMINATE_GRACE)))
            .await;
        for (name, _) in &pids {
            let _ =
                tokio::fs::remove_dir_all(self.inner.work_dir.join("sandboxes").join(name)).await;
        }
        tracing::info!(stopped = pids.len(), "local sandboxes stopped");
    }
}
