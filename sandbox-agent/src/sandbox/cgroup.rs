//! Per-session cgroups: memory and process limits the kernel enforces for the session's whole
//! process tree, a reliable "kill everything in the session", and the OOM-kill counter that tells
//! an out-of-memory death from other kills.
//!
//! Two layouts exist in the wild, so this is an enum: cgroup v1 (one hierarchy per controller,
//! what this testbed has) and v2 (one unified hierarchy, what production nodes usually run). Each
//! agent makes its own parent (`<own cgroup>/antwort-<pid>-<n>-<random>`, always new) and one
//! child per interpreter.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::CgroupMode;
use crate::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// Where session cgroups are made, or nowhere.
#[derive(Debug)]
pub enum Cgroups {
    /// No cgroup confinement (rlimits and process groups only).
    None,
    /// v1: session dirs under `memory` and `pids`.
    V1 { memory: PathBuf, pids: PathBuf },
    /// v2: session dirs under one parent whose subtree has `memory` and `pids` enabled.
    V2 { parent: PathBuf },
}

/// One interpreter's cgroup(s).
#[derive(Debug)]
pub struct SessionCgroup {
    dirs: Vec<PathBuf>,
    version: u8,
}

static PARENT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    /// Sets up the agent's parent cgroup according to `mode`. `auto` falls back to `None` (with a
    /// warning) when no usable hierarchy exists or it is not writable.
    pub fn setup(mode: CgroupMode, parent: Option<&str>) -> Result<Self> {
        // Unique beyond the pid: a parent left behind by an earlier process with the same pid
        // (another uid, perhaps) must never be taken for ours.
        let name = format!(
            "antwort-{}-{}-{}",
            std::process::id(),
            PARENT_COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let attempt = |version: CgroupMode| -> Result<Self> {
            match version {
                CgroupMode::V1 => setup_v1(parent, &name),
                CgroupMode::V2 => setup_v2(parent, &name),
                _ => Ok(Cgroups::None),
            }
        };
        match mode {
            CgroupMode::None => Ok(Cgroups::None),
            CgroupMode::V1 | CgroupMode::V2 => attempt(mode)
                .map_err(|e| Error::Config(format!("sandbox.cgroup: {mode:?} unusable: {e}"))),
            CgroupMode::Auto => {
                for version in [CgroupMode::V2, CgroupMode::V1] {
                    match attempt(version) {
                        Ok(cgroups) => return Ok(cgroups),
                        Err(e) => tracing::debug!(?version, error = %e, "cgroup version unusable"),
                    }
                }
                tracing::warn!("no writable cgroup hierarchy; sessions limited by rlimits only");
                Ok(Cgroups::None)
            }
        }
    }

    /// Human-readable name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Cgroups::None => "none",
            Cgroups::V1 { .. } => "v1",
            Cgroups::V2 { .. } => "v2",
        }
    }

    /// Makes the cgroup of one interpreter with its limits.
    pub fn create(
        &self,
        name: &str,
        memory_bytes: u64,
        pids: u64,
    ) -> Result<Option<SessionCgroup>> {
        match self {
            Cgroups::None => Ok(None),
            Cgroups::V1 { memory, pids: pids_root } => {
                let mem = memory.join(name);
                let pid_dir = pids_root.join(name);
                mkdir(&mem)?;
                let cgroup = SessionCgroup { dirs: vec![mem.clone(), pid_dir.clone()], version: 1 };
                mkdir(&pid_dir)?;
                write(&mem.join("memory.limit_in_bytes"), &memory_bytes.to_string())?;
                // Without swap accounting the file is absent; with it, swap must not dodge the limit.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &memory_bytes.to_string())?;
                }
                write(&pid_dir.join("pids.max"), &pids.to_string())?;
                Ok(Some(cgroup))
            }
            Cgroups::V2 { parent } => {
                let dir = parent.join(name);
                mkdir(&dir)?;
                let cgroup = SessionCgroup { dirs: vec![dir.clone()], version: 2 };
                write(&dir.join("memory.max"), &memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("pids.max"), &pids.to_string())?;
                Ok(Some(cgroup))
            }
        }
    }

    /// Removes the agent's parent cgroup(s); session cgroups must be gone already.
    pub fn teardown(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroups::None => vec![],
            Cgroups::V1 { memory, pids } => vec![memory, pids],
            Cgroups::V2 { parent } => vec![parent],
        };
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.teardown();
    }
}

// === impl SessionCgroup ===

impl SessionCgroup {
    /// `cgroup.procs` of every hierarchy, opened for the child to write `0` into (joining before
    /// it execs, so nothing it starts escapes). Close-on-exec, so the code never sees them.
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|dir| {
                let file = fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?;
                Ok(OwnedFd::from(file))
            })
            .collect()
    }

    /// OOM kills seen in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        let (file, dir) = match self.version {
            1 => ("memory.oom_control", &self.dirs[0]),
            _ => ("memory.events", &self.dirs[0]),
        };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup, repeating while forks race the kill.
    pub fn kill_all(&self) {
        if self.version == 2 {
            let _ = write(&self.dirs[0].join("cgroup.kill"), "1");
        }
        for _ in 0..50 {
            let mut any = false;
            for dir in &self.dirs {
                for pid in read_pids(dir) {
                    any = true;
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if !any {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills what is left and removes the directories (retrying while the dead are reaped).
    pub fn remove(&self) {
        self.kill_all();
        for dir in &self.dirs {
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn setup_v1(parent: Option<&str>, name: &str) -> Result<Cgroups> {
    let own = own_cgroups()?;
    let mut dirs = Vec::new();
    for controller in ["memory", "pids"] {
        let hierarchy = Path::new(ROOT).join(controller);
        if !hierarchy.join("cgroup.procs").exists() {
            return Err(Error::Internal(format!("no v1 {controller} hierarchy")));
        }
        let base = match parent {
            Some(p) => p.trim_start_matches('/').to_string(),
            None => own
                .iter()
                .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
                .map(|(_, path)| path.trim_start_matches('/').to_string())
                .unwrap_or_default(),
        };
        let dir = hierarchy.join(base).join(name);
        mkdir_new(&dir)?;
        dirs.push(dir);
    }
    let pids = dirs.pop().expect("two dirs");
    let memory = dirs.pop().expect("two dirs");
    Ok(Cgroups::V1 { memory, pids })
}

fn setup_v2(parent: Option<&str>, name: &str) -> Result<Cgroups> {
    let root = Path::new(ROOT);
    let controllers = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| Error::Internal(format!("no v2 hierarchy at {ROOT}: {e}")))?;
    for needed in ["memory", "pids"] {
        if !controllers.split_whitespace().any(|c| c == needed) {
            return Err(Error::Internal(format!("v2 hierarchy lacks the {needed} controller")));
        }
    }
    let base = match parent {
        Some(p) => root.join(p.trim_start_matches('/')),
        None => {
            let own = own_cgroups()?
                .into_iter()
                .find(|(controllers, _)| controllers.is_empty())
                .map(|(_, path)| path)
                .ok_or_else(|| Error::Internal("no v2 entry in /proc/self/cgroup".into()))?;
            root.join(own.trim_start_matches('/'))
        }
    };
    // v2 forbids processes in a cgroup that delegates controllers: the agent moves itself into a
    // leaf first, then enables memory and pids for its siblings.
    let leaf = base.join("antwort-agent");
    mkdir(&leaf)?;
    write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
    write(&base.join("cgroup.subtree_control"), "+memory +pids")?;
    let parent = base.join(name);
    mkdir_new(&parent)?;
    write(&parent.join("cgroup.subtree_control"), "+memory +pids")?;
    Ok(Cgroups::V2 { parent })
}

/// `(controllers, path)` pairs of `/proc/self/cgroup`.
fn own_cgroups() -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect())
}

fn mkdir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Internal(format!("mkdir {}: {e}", dir.display()))),
    }
}

/// Our own parent: made now, so it is ours and writable (an existing one is refused).
fn mkdir_new(dir: &Path) -> Result<()> {
    fs::create_dir(dir).map_err(|e| Error::Internal(format!("mkdir {}: {e}", dir.display())))
}

fn write(file: &Path, value: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| Error::Internal(format!("write {}: {e}", file.display())))
}
