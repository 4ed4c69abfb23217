//! How user code is confined, decided once at start ([`Sandbox::new`]) and applied to every
//! interpreter the agent spawns ([`Sandbox::confine`]): its own process group, a per-session
//! cgroup, rlimits, an unprivileged uid/gid with no supplementary groups, an empty network
//! namespace and a seccomp filter. All of it is enforced by the kernel in the child between
//! `fork` and `exec`, before any user code exists.
//!
//! - [`seccomp`]: the deny-list filters.
//! - [`cgroup`]: per-session cgroups (v1 or v2) for memory, process count, kill-all and OOM.
//! - `child`: the one `unsafe` block, the `pre_exec` hook.

pub mod cgroup;
mod child;
pub mod seccomp;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::sys::resource::Resource;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, getegid, geteuid, getpid};

use crate::config::Config;
use crate::{Error, Result};

pub use cgroup::{Cgroups, SessionCgroup};

/// The confinement every interpreter gets.
pub struct Sandbox {
    /// `Some` when the agent is root and must drop to the sandbox user in the child.
    switch_to: Option<(Uid, Gid)>,
    rlimits: Vec<(Resource, u64, u64)>,
    filters: Option<Arc<seccomp::Filters>>,
    /// An empty network namespace needs CAP_SYS_ADMIN; without it the seccomp rule alone denies.
    new_network_namespace: bool,
    /// The spawner's mode: a umask keeping the code's files group-shared, and death with it.
    spawner: bool,
    pub cgroups: Cgroups,
    pub memory_bytes: u64,
    pub processes: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("switch_to", &self.switch_to)
            .field("seccomp", &self.filters.is_some())
            .field("new_network_namespace", &self.new_network_namespace)
            .field("spawner", &self.spawner)
            .field("cgroups", &self.cgroups.describe())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Checks that the configured confinement is possible here and prepares it.
    pub fn new(config: &Config) -> Result<Self> {
        let s = &config.sandbox;
        let l = &config.limits;
        let is_root = geteuid().is_root();
        let switch_to = if is_root {
            if s.uid == 0 || s.gid == 0 {
                return Err(Error::Config(
                    "`sandbox.uid`/`sandbox.gid`: user code must not run as root (0)".into(),
                ));
            }
            Some((Uid::from_raw(s.uid), Gid::from_raw(s.gid)))
        } else if geteuid().as_raw() == s.uid && getegid().as_raw() == s.gid {
            None
        } else {
            return Err(Error::Config(format!(
                "`sandbox.uid`/`sandbox.gid`: the agent runs as {}:{} and cannot switch to {}:{} \
                 without root",
                geteuid(),
                getegid(),
                s.uid,
                s.gid
            )));
        };
        let filters = if s.seccomp { Some(Arc::new(seccomp::build(s.network)?)) } else { None };
        let cgroups = Cgroups::setup(s.cgroup, s.cgroup_parent.as_deref())?;
        let mut rlimits = vec![
            // SIGXCPU at the soft limit, SIGKILL a little later if it is caught.
            (Resource::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 2),
            (Resource::RLIMIT_AS, l.address_space_bytes, l.address_space_bytes),
            (Resource::RLIMIT_NOFILE, l.open_files, l.open_files),
            (Resource::RLIMIT_FSIZE, l.file_size_bytes, l.file_size_bytes),
            (Resource::RLIMIT_CORE, 0, 0),
        ];
        // RLIMIT_NPROC counts every process of the uid, across sessions: with a pids cgroup it
        // is only a backstop for the whole agent; without one it is the only process limit.
        let nproc = match cgroups {
            Cgroups::None => l.processes,
            _ => l.processes.saturating_mul(l.max_sessions as u64 + 1),
        };
        if switch_to.is_some() {
            rlimits.push((Resource::RLIMIT_NPROC, nproc, nproc));
        }
        Ok(Sandbox {
            switch_to,
            rlimits,
            filters,
            new_network_namespace: !s.network && is_root,
            spawner: false,
            cgroups,
            memory_bytes: l.memory_bytes,
            processes: l.processes,
        })
    }

    /// The confinement of the spawner's children (`antwort-sandbox-agent spawner`): as
    /// [`Sandbox::new`], plus umask 0007 (the workspace is shared with the agent through the
    /// group) and death with the spawner.
    pub fn for_spawner(config: &Config) -> Result<Self> {
        Ok(Sandbox { spawner: true, ..Self::new(config)? })
    }

    /// The uid/gid user code runs as.
    pub fn user(&self) -> (u32, u32) {
        match self.switch_to {
            Some((uid, gid)) => (uid.as_raw(), gid.as_raw()),
            None => (geteuid().as_raw(), getegid().as_raw()),
        }
    }

    /// Arranges for `command`'s child to confine itself before exec: `control` becomes its fd 3,
    /// and it joins the cgroups whose `cgroup.procs` files are given.
    pub fn confine(
        &self,
        command: &mut tokio::process::Command,
        control: &OwnedFd,
        cgroup_procs: &[OwnedFd],
    ) {
        let plan = child::Plan {
            control_fd: control.as_raw_fd(),
            cgroup_procs: cgroup_procs.iter().map(|fd| fd.as_raw_fd()).collect(),
            new_network_namespace: self.new_network_namespace,
            rlimits: self.rlimits.clone(),
            switch_to: self.switch_to,
            filters: self.filters.clone(),
            umask: self.spawner.then(|| Mode::from_bits_truncate(0o007)),
            die_with: self.spawner.then(getpid),
        };
        child::install(command, plan);
    }
}
