//! A component as a child process: in a process group of its own (the terminal's Ctrl-C
//! reaches only `antwort`, which then stops the components in order, and everything the
//! component starts — the pool manager's agents — can be signalled as one group), sent SIGTERM
//! by the kernel if `antwort` dies (`PR_SET_PDEATHSIG`, so even a SIGKILLed `antwort` leaves
//! nothing running), its output forwarded to our stderr prefixed with its name.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// A component that ended, as the supervisor learns it.
#[derive(Debug)]
pub struct Exit {
    pub component: &'static str,
    pub pid: u32,
    pub status: Option<ExitStatus>,
}

/// When start-up must be done by.
#[derive(Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub secs: u64,
}

impl Deadline {
    pub fn after(secs: u64) -> Deadline {
        Deadline { at: Instant::now() + Duration::from_secs(secs), secs }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// A running component. Its process is reaped by a watcher task, which reports the exit on the
/// channel given to [`spawn`] and in [`Component::exit_status`].
pub struct Component {
    pub name: &'static str,
    /// The process id, which is also its process group id.
    pub pid: u32,
    /// Output lines for [`Component::wait_for`]; dropped after start-up (lines are then only
    /// forwarded).
    lines: Option<mpsc::UnboundedReceiver<String>>,
    /// `Some(status)` once the process has been reaped (`status` is `None` if waiting failed).
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
}

/// Starts `command` as component `name`. Its environment, arguments and working folder are the
/// caller's; stdio, the process group and the parent-death signal are set here.
pub fn spawn(
    name: &'static str,
    mut command: Command,
    exits: mpsc::UnboundedSender<Exit>,
) -> Result<Component> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .process_group(0)
        // A guard for a panic in `antwort` only: the orderly path is `stop`.
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let program = Path::new(command.as_std().get_program()).to_path_buf();
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        component: name,
        program: program.clone(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");
    tracing::debug!(component = name, pid, program = %program.display(), "started");

    let (lines_tx, lines) = mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(name, stdout, lines_tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(name, stderr, lines_tx));
    }
    let (exit_tx, exit) = watch::channel(None);
    // Detached on purpose: it ends when the process does, which `stop` makes sure of.
    tokio::spawn(async move {
        let status = child.wait().await.ok();
        let _ = exit_tx.send(Some(status));
        let _ = exits.send(Exit { component: name, pid, status });
    });
    Ok(Component { name, pid, lines: Some(lines), exit })
}

/// Copies `stream`'s lines to our stderr as `[name] line`, and to `lines` while anyone listens.
async fn forward(
    name: &'static str,
    stream: impl AsyncRead + Unpin,
    lines: mpsc::UnboundedSender<String>,
) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        eprintln!("[{name}] {line}");
        let _ = lines.send(line);
    }
}

/// The child gets SIGTERM when `antwort` dies, however it dies. SIGTERM, not SIGKILL: the pool
/// manager stops its agents on SIGTERM, while a SIGKILLed manager would leave them running.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec. It makes two system calls
    // through thin wrappers (prctl, getppid) and builds its error from an errno: no allocation,
    // no lock, no state another thread of the parent could have left half-written.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // `antwort` died between fork and prctl: the signal will never come.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

impl Component {
    /// The next output line containing `needle`; an error if the process ends first or the
    /// deadline passes.
    pub async fn wait_for(&mut self, needle: &str, deadline: Deadline) -> Result<String> {
        let lines = self.lines.as_mut().expect("wait_for is used during start-up only");
        loop {
            match tokio::time::timeout_at(deadline.at, lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return Ok(line),
                Ok(Some(_)) => {}
                // Both outputs closed: the process has ended (or is about to).
                Ok(None) => {
                    let status = self.wait_exit(Instant::now() + Duration::from_secs(5)).await;
                    return Err(Error::Exited { component: self.name, pid: self.pid, status });
                }
                Err(_) => {
                    return Err(Error::NotReady {
                        component: self.name,
                        secs: deadline.secs,
                        detail: format!("it never logged {needle:?}"),
                    });
                }
            }
        }
    }

    /// Start-up is over: lines are only forwarded from now on.
    pub fn stop_reading(&mut self) {
        self.lines = None;
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&self) -> Option<Option<ExitStatus>> {
        *self.exit.borrow()
    }

    /// Waits until the process has exited or `until`; the status when it has.
    async fn wait_exit(&mut self, until: Instant) -> Option<ExitStatus> {
        match tokio::time::timeout_at(until, self.exit.wait_for(Option::is_some)).await {
            Ok(Ok(status)) => status.flatten(),
            _ => None,
        }
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Stops the component and everything in its process group: SIGTERM to the group, then
    /// SIGKILL to whatever is left after `grace`. Returns once the process is reaped and no
    /// live process remains in the group.
    pub async fn stop(&mut self, grace: Duration) {
        let Ok(raw) = i32::try_from(self.pid) else { return };
        let group = Pid::from_raw(raw);
        let deadline = Instant::now() + grace;
        let _ = killpg(group, Signal::SIGTERM);
        self.wait_exit(deadline).await;
        loop {
            let left = group_members(raw);
            if self.exited() && left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    component = self.name,
                    ?grace,
                    ?left,
                    "still running after SIGTERM; killing its process group"
                );
                let _ = killpg(group, Signal::SIGKILL);
                self.wait_exit(Instant::now() + Duration::from_secs(5)).await;
                // SIGKILL cannot be ignored; give the kernel a moment to tear them down.
                let until = Instant::now() + Duration::from_secs(5);
                while !group_members(raw).is_empty() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(component = self.name, "stopped");
    }
}

/// Live (not zombie) processes in process group `group`, from `/proc/*/stat`. A zombie has
/// released everything but its exit status, and an orphan's may wait on a parent that never
/// reaps it, so only live ones count.
fn group_members(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            pgrp == Some(group) && state != Some("Z")
        })
        .collect()
}
