//! The agent's configuration: one YAML file plus `ANTWORT_*` overrides (`ANTWORT_LIMITS__MAX_SESSIONS=4`),
//! loaded by `antwort_common::config`, then [`Config::validate`]d, which reports every problem with
//! its field path. Every limit is explicit and has a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::search::{FileSearchConfig, WebSearchConfig};

/// The whole configuration tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Where our SVID comes from (`source: files | workload_api`, see
    /// `antwort_common::identity::IdentityConfig`); required to serve the API.
    #[serde(serialize_with = "serialize_as_null")]
    pub identity: Option<antwort_common::identity::IdentityConfig>,
    /// What this image is for; everything else is off.
    pub capabilities: Capabilities,
    pub python: PythonConfig,
    pub workspace: WorkspaceConfig,
    pub sandbox: SandboxConfig,
    pub limits: Limits,
    pub file_search: FileSearchConfig,
    pub web_search: WebSearchConfig,
}

/// Listeners and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The API (mTLS).
    pub listen: SocketAddr,
    /// Plain HTTP with only `/healthz`, `/readyz`, `/metrics`, for kubelet probes and Prometheus,
    /// which cannot present an SVID. `null` serves those routes on the API listener only.
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_body_bytes: usize,
    /// SPIFFE IDs allowed to call the API (the gateway, the pool manager); nobody else gets past
    /// the TLS handshake.
    pub allowed_callers: Vec<String>,
    /// How long to wait for the first SVID at start, in milliseconds.
    pub identity_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".parse().expect("static address"),
            admin_listen: Some("0.0.0.0:9090".parse().expect("static address")),
            shutdown_grace_ms: 10_000,
            max_json_body_bytes: 4 << 20,
            allowed_callers: Vec::new(),
            identity_timeout_ms: 30_000,
        }
    }
}

/// Which capabilities this agent serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Sessions, execute, files.
    pub code: bool,
    pub file_search: bool,
    pub web_search: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self { code: true, file_search: false, web_search: false }
    }
}

/// The interpreter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PythonConfig {
    pub executable: PathBuf,
    /// How long a new interpreter may take to report ready, in milliseconds.
    pub start_timeout_ms: u64,
    /// Run one execution at start and be ready only once it succeeded.
    pub warm_up: bool,
    /// Keep one session's interpreter started ahead, so creating a session does not wait for
    /// Python to start (it takes one of `limits.max_sessions`).
    pub spare_session: bool,
}

impl Default for PythonConfig {
    fn default() -> Self {
        Self {
            executable: "/usr/bin/python3".into(),
            start_timeout_ms: 20_000,
            warm_up: true,
            spare_session: true,
        }
    }
}

/// Session workspaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Each session works in `root/<session id>`; `root/.scratch/<session id>` holds its HOME and
    /// TMPDIR (outside the workspace so they never show up as the code's files).
    pub root: PathBuf,
    /// Most entries a listing or a change scan walks.
    pub max_listed_files: usize,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self { root: "/mnt/data".into(), max_listed_files: 10_000 }
    }
}

/// How the kernel confines user code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The uid/gid user code runs as (the agent must be root to switch; otherwise both must equal
    /// the agent's own).
    pub uid: u32,
    pub gid: u32,
    /// Allow user code to open network sockets (AF_INET/AF_INET6/AF_PACKET). Off: the seccomp
    /// filter refuses them and, when the agent is root, the code gets an empty network namespace.
    pub network: bool,
    /// Install the seccomp filter (ptrace, mount, bpf, keyctl, kernel modules, ... refused).
    pub seccomp: bool,
    /// `auto` (v2, then v1, then none), `v1`, `v2` or `none`.
    pub cgroup: CgroupMode,
    /// Parent cgroup for sessions, relative to each hierarchy's root; default: a child of the
    /// agent's own cgroup.
    pub cgroup_parent: Option<String>,
    /// The spawner's Unix socket (`antwort-sandbox-agent spawner`, the pod's `sandbox`
    /// container). Set: the agent starts interpreters through it, and user code runs as the
    /// spawner's uid (`uid`, distinct from the agent's) sharing the group `gid` with the agent
    /// for the workspace. Unset (`null`): the agent forks interpreters itself.
    pub spawner: Option<PathBuf>,
    /// The spawner's only client: the agent's uid (`SO_PEERCRED` is checked on every
    /// connection). Required to run the spawner.
    pub agent_uid: Option<u32>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            uid: 65534,
            gid: 65534,
            network: false,
            seccomp: true,
            cgroup: CgroupMode::Auto,
            cgroup_parent: None,
            spawner: None,
            agent_uid: None,
        }
    }
}

/// Which cgroup version confines sessions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    Auto,
    V1,
    V2,
    None,
}

/// Every limit, explicit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Live sessions at once (more: 429).
    pub max_sessions: usize,
    /// Per-call wall-clock limit when a request names none, in milliseconds.
    pub default_timeout_ms: u64,
    /// Ceiling for a request's `timeout_ms`.
    pub max_timeout_ms: u64,
    /// After a timeout the code gets SIGINT; if it has not stopped this long after, the session's
    /// processes are killed, in milliseconds.
    pub interrupt_grace_ms: u64,
    /// stdout + stderr kept per call, in bytes; the rest is dropped and the result says so.
    pub max_output_bytes: usize,
    /// Longest `repr()` of a trailing expression, in characters.
    pub max_value_chars: usize,
    /// PNG bytes (figures, images) returned per call.
    pub max_rich_output_bytes: usize,
    /// Largest file upload, in bytes (larger: 413).
    pub max_upload_bytes: u64,
    /// Largest code in an execute request, in bytes.
    pub max_code_bytes: usize,
    /// Per-session memory (cgroup memory limit), in bytes.
    pub memory_bytes: u64,
    /// Per-process address space (RLIMIT_AS), in bytes; the only memory limit without cgroups.
    pub address_space_bytes: u64,
    /// CPU seconds per interpreter process (RLIMIT_CPU), over the session's life until restart.
    pub cpu_seconds: u64,
    /// Processes/threads per session (cgroup pids.max; RLIMIT_NPROC, which counts per uid).
    pub processes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file the code may write (RLIMIT_FSIZE), in bytes.
    pub file_size_bytes: u64,
    /// Sessions idle longer than this are deleted, in seconds; 0 keeps them.
    pub session_idle_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 8,
            default_timeout_ms: 30_000,
            max_timeout_ms: 300_000,
            interrupt_grace_ms: 2_000,
            max_output_bytes: 1 << 20,
            max_value_chars: 64 * 1024,
            max_rich_output_bytes: 16 << 20,
            max_upload_bytes: 100 << 20,
            max_code_bytes: 1 << 20,
            memory_bytes: 1 << 30,
            address_space_bytes: 4 << 30,
            cpu_seconds: 3_600,
            processes: 128,
            open_files: 1_024,
            file_size_bytes: 1 << 30,
            session_idle_timeout_secs: 0,
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads `file` (if any) and the `ANTWORT_*` variables of `env`, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, crate::Error> {
        let config: Config = antwort_common::config::load(file, env)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot; every problem is reported, each with its field path.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, path: &str, what: &str| {
            if !ok {
                problems.push(format!("`{path}`: {what}"));
            }
        };
        let l = &self.limits;
        need(l.max_sessions >= 1, "limits.max_sessions", "must be at least 1");
        need(l.default_timeout_ms >= 1, "limits.default_timeout_ms", "must be at least 1");
        need(
            l.max_timeout_ms >= l.default_timeout_ms,
            "limits.max_timeout_ms",
            "must be at least limits.default_timeout_ms",
        );
        need(l.max_output_bytes >= 1, "limits.max_output_bytes", "must be at least 1");
        need(l.max_upload_bytes >= 1, "limits.max_upload_bytes", "must be at least 1");
        need(l.max_code_bytes >= 1, "limits.max_code_bytes", "must be at least 1");
        need(
            l.memory_bytes >= 32 << 20,
            "limits.memory_bytes",
            "must be at least 32 MiB (Python alone needs ~10 MiB)",
        );
        need(
            l.address_space_bytes >= 64 << 20,
            "limits.address_space_bytes",
            "must be at least 64 MiB",
        );
        need(l.cpu_seconds >= 1, "limits.cpu_seconds", "must be at least 1");
        need(l.processes >= 1, "limits.processes", "must be at least 1");
        need(l.open_files >= 16, "limits.open_files", "must be at least 16");
        need(l.file_size_bytes >= 1, "limits.file_size_bytes", "must be at least 1");
        need(self.python.executable.is_absolute(), "python.executable", "must be an absolute path");
        need(self.python.start_timeout_ms >= 1, "python.start_timeout_ms", "must be at least 1");
        need(self.workspace.root.is_absolute(), "workspace.root", "must be an absolute path");
        need(
            self.sandbox.spawner.as_ref().is_none_or(|p| p.is_absolute()),
            "sandbox.spawner",
            "must be an absolute path (or null)",
        );
        need(
            self.sandbox.spawner.is_none() || (self.sandbox.uid != 0 && self.sandbox.gid != 0),
            "sandbox.uid",
            "user code must not run as root (0)",
        );
        need(self.workspace.max_listed_files >= 1, "workspace.max_listed_files", "must be >= 1");
        need(
            self.server.max_json_body_bytes >= 1024,
            "server.max_json_body_bytes",
            "must be at least 1024",
        );
        need(
            self.capabilities.code || self.capabilities.file_search || self.capabilities.web_search,
            "capabilities",
            "enable at least one of code, file_search, web_search",
        );
        for (i, id) in self.server.allowed_callers.iter().enumerate() {
            need(
                antwort_common::identity::SpiffeId::new(id).is_ok(),
                &format!("server.allowed_callers[{i}]"),
                "is not a SPIFFE ID (spiffe://<trust-domain>/<path>)",
            );
        }
        if problems.is_empty() { Ok(()) } else { Err(crate::Error::Config(problems.join("; "))) }
    }
}

impl Config {
    /// What the spawner (`antwort-sandbox-agent spawner`) needs on top of [`Config::validate`].
    pub fn validate_spawner(&self) -> Result<(), crate::Error> {
        let s = &self.sandbox;
        let mut problems = Vec::new();
        if s.spawner.is_none() {
            problems.push("`sandbox.spawner`: the socket path is required".to_string());
        }
        match s.agent_uid {
            None => problems
                .push("`sandbox.agent_uid`: the spawner serves only this uid; set it".into()),
            Some(uid) if uid == s.uid => problems.push(
                "`sandbox.agent_uid`: must differ from `sandbox.uid` (user code's uid)".into(),
            ),
            Some(_) => {}
        }
        if problems.is_empty() { Ok(()) } else { Err(crate::Error::Config(problems.join("; "))) }
    }
}

impl Limits {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }
    pub fn interrupt_grace(&self) -> Duration {
        Duration::from_millis(self.interrupt_grace_ms)
    }
}

/// The identity section is only read, never written back; `null` keeps `identity` a known
/// top-level key for `ANTWORT_IDENTITY__*` overrides.
fn serialize_as_null<T, S: serde::Serializer>(_: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_none()
}
