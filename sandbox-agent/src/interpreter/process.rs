//! Where an interpreter process comes from and how it is signalled: forked by the agent itself
//! ([`Launcher::Fork`], the one-machine stack) or started by the spawner in the sandbox container
//! ([`Launcher::Spawner`], pods). Above this module both look the same: four pipe ends, a pid to
//! report, a [`Signaler`] for interrupts and kills, and an exit status.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, pipe2};
use tokio::process::Child;
use tokio::time::timeout;

use crate::config::Config;
use crate::sandbox::{Sandbox, SessionCgroup};
use crate::spawner::client::{Remote, SpawnerClient};
use crate::{Error, Result};

/// The driver's source, passed with `-c` so no file has to exist in the image.
pub const DRIVER: &str = include_str!("driver.py");

/// How interpreters are started, decided once from the config.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// The agent forks and confines the interpreter itself.
    Fork(Arc<Sandbox>),
    /// The spawner in the sandbox container does, as a uid of its own (`sandbox.spawner`).
    Spawner(SpawnerClient),
}

/// Who owns what the agent creates in a workspace, and with which modes.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub dir_mode: u32,
    pub file_mode: u32,
}

impl Launcher {
    pub fn new(config: &Config) -> Result<Self> {
        match &config.sandbox.spawner {
            Some(path) => Ok(Launcher::Spawner(SpawnerClient::new(path.clone(), config))),
            None => Ok(Launcher::Fork(Arc::new(Sandbox::new(config)?))),
        }
    }

    /// Forked code runs as the sandbox user, which owns its directories alone. The spawner's
    /// code runs as another uid in the agent's group: directories are the agent's, group-shared
    /// and setgid (so everything below stays in the group), files group-writable.
    pub fn ownership(&self) -> Ownership {
        match self {
            Launcher::Fork(sandbox) => {
                let (uid, gid) = sandbox.user();
                Ownership { uid, gid, dir_mode: 0o700, file_mode: 0o644 }
            }
            Launcher::Spawner(client) => Ownership {
                uid: nix::unistd::geteuid().as_raw(),
                gid: client.shared_gid(),
                dir_mode: 0o2770,
                file_mode: 0o660,
            },
        }
    }

    /// Starts one driver: `session`/`generation` name its workspace and cgroup.
    pub async fn launch(&self, spec: &LaunchSpec) -> Result<(Proc, Pipes)> {
        match self {
            Launcher::Fork(sandbox) => {
                let local = launch_local(sandbox, spec)?;
                let pipes = local.pipes;
                let proc = Proc::Local(LocalProc {
                    pid: local.pid,
                    child: local.child,
                    cgroup: local.cgroup,
                    reaped: false,
                });
                Ok((proc, pipes))
            }
            Launcher::Spawner(client) => {
                let (remote, pipes) = client.spawn(spec).await?;
                Ok((Proc::Remote(remote), pipes))
            }
        }
    }
}

/// What one driver is started with.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub python: PathBuf,
    /// The working directory of the code.
    pub workspace: PathBuf,
    /// HOME and TMPDIR.
    pub scratch: PathBuf,
    /// The session id (the spawner derives the paths from it, never trusting the agent's).
    pub session: String,
    pub generation: u64,
    /// Unique name of its cgroup.
    pub cgroup_name: String,
    /// Marks the end of each execution on stdout/stderr.
    pub nonce: String,
}

/// The parent's ends of the driver's pipes: its stdin (requests), stdout, stderr and fd 3
/// (result frames).
#[derive(Debug)]
pub struct Pipes {
    pub requests: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub results: OwnedFd,
}

/// A freshly forked, confined driver.
#[derive(Debug)]
pub struct Launched {
    pub child: Child,
    pub pid: Pid,
    pub pipes: Pipes,
    pub cgroup: Option<SessionCgroup>,
}

/// Forks the driver under `sandbox` (the agent's fork path and the spawner share this).
pub fn launch_local(sandbox: &Sandbox, spec: &LaunchSpec) -> Result<Launched> {
    let cgroup =
        sandbox.cgroups.create(&spec.cgroup_name, sandbox.memory_bytes, sandbox.processes)?;
    let procs = match &cgroup {
        Some(cg) => cg.procs_files()?,
        None => Vec::new(),
    };
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Spawn(format!("pipe: {e}")));
    let (stdin_read, requests) = pipe()?;
    let (stdout, stdout_write) = pipe()?;
    let (stderr, stderr_write) = pipe()?;
    let (results, result_write) = pipe()?;
    let mut command = tokio::process::Command::new(&spec.python);
    command
        .args(["-I", "-u", "-B", "-c", DRIVER, &spec.nonce])
        .env_clear()
        .envs(environment(&spec.scratch))
        .current_dir(&spec.workspace)
        .stdin(Stdio::from(stdin_read))
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write))
        .kill_on_drop(true);
    sandbox.confine(&mut command, &result_write, &procs);
    let spawned = command.spawn();
    // The child's ends live in the child only (the Command held them; dropping it closes ours).
    drop(command);
    drop(result_write);
    drop(procs);
    match spawned {
        Ok(child) => {
            let pid = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or(0));
            let pipes = Pipes { requests, stdout, stderr, results };
            Ok(Launched { child, pid, pipes, cgroup })
        }
        Err(e) => {
            if let Some(cg) = cgroup {
                std::thread::spawn(move || cg.remove());
            }
            Err(Error::Spawn(format!("{}: {e}", spec.python.display())))
        }
    }
}

/// The scrubbed environment of user code.
fn environment(scratch: &Path) -> Vec<(&'static str, String)> {
    let scratch = scratch.display().to_string();
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME", scratch.clone()),
        ("TMPDIR", format!("{scratch}/tmp")),
        ("XDG_CACHE_HOME", format!("{scratch}/.cache")),
        ("MPLCONFIGDIR", format!("{scratch}/.config/matplotlib")),
        ("MPLBACKEND", "Agg".into()),
        ("LANG", "C.UTF-8".into()),
        ("LC_ALL", "C.UTF-8".into()),
    ]
}

/// How a driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Signal(i32),
    Code(i32),
    /// The spawner went away (its container died, or it was killed) before reporting.
    SpawnerLost,
}

impl Exit {
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        match (status.signal(), status.code()) {
            (Some(signal), _) => Exit::Signal(signal),
            (None, Some(code)) => Exit::Code(code),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// Interrupts and kills that must not wait for the session's lock.
#[derive(Debug, Clone, Default)]
pub enum Signaler {
    /// No live driver.
    #[default]
    None,
    /// A driver the agent forked: its pid, which is also its process group.
    Local(i32),
    Remote(crate::spawner::client::RemoteSignals),
}

impl Signaler {
    /// SIGINT to the driver: `KeyboardInterrupt` in the running code.
    pub fn interrupt(&self) -> bool {
        match self {
            Signaler::None => false,
            Signaler::Local(pid) => *pid > 0 && kill(Pid::from_raw(*pid), Signal::SIGINT).is_ok(),
            Signaler::Remote(signals) => signals.interrupt(),
        }
    }

    /// SIGKILL to the driver's process group (and its cgroup, by whoever made it).
    pub fn kill(&self) {
        match self {
            Signaler::None => {}
            Signaler::Local(pid) => {
                if *pid > 0 {
                    let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                }
            }
            Signaler::Remote(signals) => signals.kill(),
        }
    }
}

/// The driver process, however it was started.
#[derive(Debug)]
pub enum Proc {
    Local(LocalProc),
    Remote(Remote),
}

#[derive(Debug)]
pub struct LocalProc {
    child: Child,
    pid: Pid,
    cgroup: Option<SessionCgroup>,
    /// Set once the child was waited for: its pid may be reused, never signal it again.
    reaped: bool,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        match self {
            Proc::Local(local) => local.pid.as_raw(),
            Proc::Remote(remote) => remote.pid(),
        }
    }

    pub fn signaler(&self) -> Signaler {
        match self {
            Proc::Local(local) if !local.reaped => Signaler::Local(local.pid.as_raw()),
            Proc::Local(_) => Signaler::None,
            Proc::Remote(remote) => Signaler::Remote(remote.signals()),
        }
    }

    /// Kills the driver's process group and everything in its cgroup.
    pub fn kill(&self) {
        match self {
            Proc::Local(local) => {
                if !local.reaped {
                    let _ = killpg(local.pid, Signal::SIGKILL);
                }
                if let Some(cg) = &local.cgroup {
                    cg.kill_all();
                }
            }
            Proc::Remote(remote) => remote.signals().kill(),
        }
    }

    /// OOM kills seen in the driver's cgroup so far (0 without one).
    pub async fn oom_kills(&self) -> u64 {
        match self {
            Proc::Local(local) => local.cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or(0),
            Proc::Remote(remote) => remote.oom_kills().await,
        }
    }

    /// Waits (bounded) for the driver to end.
    pub async fn wait(&mut self, limit: Duration) -> Option<Exit> {
        match self {
            Proc::Local(local) => match timeout(limit, local.child.wait()).await {
                Ok(Ok(status)) => {
                    local.reaped = true;
                    Some(Exit::from_status(status))
                }
                _ => None,
            },
            Proc::Remote(remote) => remote.wait(limit).await,
        }
    }

    /// Kills everything the driver started and cleans up after it.
    pub async fn shutdown(mut self) {
        self.kill();
        let _ = self.wait(Duration::from_secs(5)).await;
        match &mut self {
            Proc::Local(local) => {
                if let Some(cg) = local.cgroup.take() {
                    let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
                }
            }
            // Closing the connection tells the spawner to kill and remove what is left.
            Proc::Remote(_) => {}
        }
    }
}

impl Drop for LocalProc {
    fn drop(&mut self) {
        // `shutdown` is the orderly way; this catches a panic or a dropped future.
        if !self.reaped {
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
        if let Some(cg) = self.cgroup.take() {
            cg.kill_all();
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || cg.remove());
                }
                Err(_) => cg.remove(),
            }
        }
    }
}
