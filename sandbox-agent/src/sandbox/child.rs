//! The `pre_exec` hook: the only `unsafe` code of the agent. It runs in the forked child before
//! `exec`, where only async-signal-safe calls are allowed, so everything it needs (file
//! descriptors, limits, the compiled BPF programs) is prepared by the parent and the hook makes
//! plain system calls only: no allocation, no locks.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use nix::libc;
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Pid, Uid, getppid, setgid, setgroups, setsid, setuid};

use super::seccomp::Filters;

/// Everything the child does, prepared by the parent.
pub(super) struct Plan {
    /// Becomes fd 3 (the driver's result channel).
    pub control_fd: RawFd,
    /// Open `cgroup.procs` files to write `0` into.
    pub cgroup_procs: Vec<RawFd>,
    pub new_network_namespace: bool,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub switch_to: Option<(Uid, Gid)>,
    pub filters: Option<Arc<Filters>>,
    /// Set for the spawner's children: files the code creates stay readable and writable by the
    /// group it shares with the agent.
    pub umask: Option<Mode>,
    /// The spawner's pid: the child dies with it (`PR_SET_PDEATHSIG`), and refuses to start if
    /// it is already gone.
    pub die_with: Option<Pid>,
}

pub(super) fn install(command: &mut tokio::process::Command, plan: Plan) {
    // SAFETY: the closure runs between fork and exec in the child. It only makes system calls
    // through thin wrappers (setsid, write, unshare, dup2, setrlimit, setgroups, setgid, setuid,
    // umask, prctl, getppid, seccomp) on memory the parent allocated before forking; it never
    // allocates, locks
    // or touches state another thread of the parent could have left inconsistent.
    unsafe {
        command.pre_exec(move || confine(&plan));
    }
}

fn confine(plan: &Plan) -> io::Result<()> {
    // Own process group and session: the agent kills the whole group, and no terminal signals
    // reach it.
    setsid()?;
    // Join the session's cgroups before anything can fork.
    for &fd in &plan.cgroup_procs {
        // SAFETY: `fd` is an open `cgroup.procs` file of the parent, inherited across fork;
        // the buffer is a static byte string.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if written != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    if plan.new_network_namespace {
        unshare(CloneFlags::CLONE_NEWNET)?;
    }
    // SAFETY: `control_fd` is the write end of a pipe the parent keeps open until spawn returns;
    // dup2 onto 3 clears close-on-exec for the copy, and fcntl does when it already is 3.
    let placed = if plan.control_fd == 3 {
        unsafe { libc::fcntl(3, libc::F_SETFD, 0) }
    } else {
        unsafe { libc::dup2(plan.control_fd, 3) - 3 }
    };
    if placed != 0 {
        return Err(io::Error::last_os_error());
    }
    for &(resource, soft, hard) in &plan.rlimits {
        setrlimit(resource, soft, hard)?;
    }
    if let Some((uid, gid)) = plan.switch_to {
        setgroups(&[gid])?;
        setgid(gid)?;
        setuid(uid)?;
    }
    if let Some(mask) = plan.umask {
        umask(mask);
    }
    // After the uid switch, which would clear it. The signal comes when the *thread* that
    // forked ends; the spawner forks on runtime worker threads, which live as long as it does.
    if let Some(parent) = plan.die_with {
        set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    if let Some(filters) = &plan.filters {
        for program in &filters.programs {
            seccompiler::apply_filter(program)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        }
    }
    Ok(())
}
