//! The spawner process: listens on `sandbox.spawner`, serves only the uid `sandbox.agent_uid`,
//! one driver per connection (see the [module docs](super)).
//!
//! Per connection: check the peer, read one request (`ping` or `spawn`), start the driver, send
//! its pipe ends, then watch two things until the agent hangs up: the agent's signals and the
//! driver's exit. When the driver ends, its process group is killed while the leader is still a
//! zombie (so the group id cannot have been reused), and the exit status goes to the agent. When
//! the agent hangs up, everything left is killed and the cgroup removed.

use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::fds;
use super::wire::{Reply, Request, read_frame, write_frame};
use crate::config::Config;
use crate::interpreter::process::{Exit, LaunchSpec, Launched, launch_local};
use crate::sandbox::{Sandbox, SessionCgroup};
use crate::{Error, Result};

/// How long a new connection may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// What every connection needs.
struct Shared {
    sandbox: Sandbox,
    agent_uid: u32,
    python: PathBuf,
    root: PathBuf,
}

/// Checks the configuration, prepares the confinement, binds the socket.
pub struct Spawner {
    shared: Arc<Shared>,
    listener: UnixListener,
    path: PathBuf,
}

impl Spawner {
    pub fn bind(config: &Config) -> Result<Self> {
        config.validate_spawner()?;
        let path = config.sandbox.spawner.clone().expect("validated");
        let agent_uid = config.sandbox.agent_uid.expect("validated");
        let sandbox = Sandbox::for_spawner(config)?;
        tracing::info!(?sandbox, "spawner sandbox prepared");
        // User code runs as our uid: without this it could read or write our memory through
        // /proc/<pid>/mem and leave its own seccomp filter behind.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| Error::Internal(format!("prctl(PR_SET_DUMPABLE): {e}")))?;
        let listener = bind(&path)?;
        let shared = Arc::new(Shared {
            sandbox,
            agent_uid,
            python: config.python.executable.clone(),
            root: config.workspace.root.clone(),
        });
        Ok(Spawner { shared, listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` completes; the drivers die with the connections.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tracing::info!(path = %self.path.display(), agent_uid = self.shared.agent_uid, "spawner listening");
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shared = self.shared.clone();
                        connections.spawn(async move { serve_connection(stream, shared).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = &mut shutdown => break,
            }
        }
        tracing::info!("spawner stopping");
        let _ = std::fs::remove_file(&self.path);
        // Each connection's driver is killed as its task is dropped (kill_on_drop), and its
        // children by PR_SET_PDEATHSIG once we exit.
        connections.shutdown().await;
        Ok(())
    }
}

/// Binds the socket: its directory is made (0770) if missing, a stale socket replaced, the
/// socket itself is 0660 (the agent reaches it through the shared group; `SO_PEERCRED` decides).
fn bind(path: &Path) -> Result<UnixListener> {
    let fail = |what: &str, e: std::io::Error| {
        Error::Config(format!("`sandbox.spawner` {}: {what}: {e}", path.display()))
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| fail("create its directory", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770))
            .map_err(|e| fail("chmod its directory", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| fail("remove the stale socket", e))?
        }
        Ok(_) => return Err(fail("exists", std::io::ErrorKind::AlreadyExists.into())),
        Err(_) => {}
    }
    // Created 0660 from the start: a client that connects right after bind must not find a
    // socket it may not write to. (At startup: no other thread creates files meanwhile.)
    let before = umask(Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    umask(before);
    let listener = bound.map_err(|e| fail("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail("chmod", e))?;
    Ok(listener)
}

async fn serve_connection(mut stream: UnixStream, shared: Arc<Shared>) {
    let peer = match stream.peer_cred() {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials; closing");
            return;
        }
    };
    if peer.uid() != shared.agent_uid {
        tracing::warn!(uid = peer.uid(), pid = ?peer.pid(), "refused a peer that is not the agent");
        let message = format!("uid {} may not use the spawner", peer.uid());
        let _ = write_frame(&mut stream, &Reply::Refused { message }).await;
        return;
    }
    let request = match timeout(REQUEST_WAIT, read_frame::<_, Request>(&mut stream)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let _ = write_frame(&mut stream, &refused(format!("bad request: {e}"))).await;
            return;
        }
        Err(_) => return,
    };
    match request {
        Request::Ping => {
            let _ = write_frame(&mut stream, &Reply::Pong).await;
        }
        Request::Spawn { session, generation, nonce } => {
            run_driver(stream, &shared, session, generation, nonce).await;
        }
        Request::Clear { session } if valid_session(&session) => {
            let dirs = [shared.root.join(&session), shared.root.join(".scratch").join(&session)];
            let cleared = tokio::task::spawn_blocking(move || {
                dirs.iter().filter(|dir| dir.exists()).try_for_each(|dir| empty_dir(dir))
            })
            .await;
            let reply = match cleared {
                Ok(Ok(())) => Reply::Cleared,
                Ok(Err(e)) => refused(format!("clearing the session's files: {e}")),
                Err(e) => refused(format!("clearing the session's files: {e}")),
            };
            let _ = write_frame(&mut stream, &reply).await;
        }
        other => {
            let _ = write_frame(&mut stream, &refused(format!("{other:?} before spawn"))).await;
        }
    }
}

fn refused(message: String) -> Reply {
    Reply::Refused { message }
}

/// Removes everything inside `dir` (not `dir` itself), making the code's directories writable
/// first. We run as the code's uid: what it could delete, we may; nothing else. Symlinks are
/// removed, never followed.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            empty_dir(&path)?;
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Session ids are the agent's UUIDs; anything that could name another path is refused.
fn valid_session(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn run_driver(
    mut stream: UnixStream,
    shared: &Shared,
    session: String,
    generation: u64,
    nonce: String,
) {
    if !valid_session(&session) || !valid_session(&nonce) {
        let _ = write_frame(&mut stream, &refused("malformed session id or nonce".into())).await;
        return;
    }
    // The paths come from our own config, never from the request.
    let spec = LaunchSpec {
        python: shared.python.clone(),
        workspace: shared.root.join(&session),
        scratch: shared.root.join(".scratch").join(&session),
        cgroup_name: format!("{session}-g{generation}"),
        session,
        generation,
        nonce,
    };
    let Launched { mut child, pid, pipes, cgroup } = match launch_local(&shared.sandbox, &spec) {
        Ok(launched) => launched,
        Err(e) => {
            tracing::warn!(error = %e, session = %spec.session, "driver failed to start");
            let _ = write_frame(&mut stream, &refused(e.to_string())).await;
            return;
        }
    };
    tracing::debug!(pid = pid.as_raw(), session = %spec.session, "driver started");
    let reply = Reply::Spawned { pid: pid.as_raw(), cgroup: cgroup.is_some() };
    let ends =
        [pipes.requests.as_fd(), pipes.stdout.as_fd(), pipes.stderr.as_fd(), pipes.results.as_fd()];
    let sent = fds::send_frame(&mut stream, &reply, &ends).await;
    // The agent holds the ends now; ours must close, or the driver never sees EOF.
    drop(pipes);
    let mut group = Group { pid, cgroup, exited: false };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not hand the driver to the agent");
        group.kill();
        let _ = timeout(Duration::from_secs(5), child.wait()).await;
        group.remove().await;
        return;
    }

    // Blocks until the driver is a zombie, without reaping it.
    let mut exited = tokio::task::spawn_blocking(move || {
        let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
    });
    let (mut reader, mut writer) = stream.into_split();
    let (requests_tx, mut requests) = mpsc::channel::<Request>(8);
    let read_task = tokio::spawn(async move {
        while let Ok(Some(request)) = read_frame::<_, Request>(&mut reader).await {
            if requests_tx.send(request).await.is_err() {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            _ = &mut exited, if !group.exited => {
                // The leader is a zombie: its group id is still reserved, so this kill reaches
                // only what the code left behind.
                group.kill();
                group.exited = true;
                let status = timeout(Duration::from_secs(5), child.wait()).await;
                let (code, signal) = match status {
                    Ok(Ok(status)) => match Exit::from_status(status) {
                        Exit::Signal(signal) => (None, Some(signal)),
                        Exit::Code(code) => (Some(code), None),
                        Exit::SpawnerLost => (None, None),
                    },
                    _ => (None, None),
                };
                if write_frame(&mut writer, &Reply::Exited { code, signal }).await.is_err() {
                    break;
                }
            }
            request = requests.recv() => match request {
                Some(Request::Interrupt) => {
                    if !group.exited {
                        let _ = kill(pid, Signal::SIGINT);
                    }
                }
                Some(Request::Kill) => group.kill(),
                Some(Request::Stats) => {
                    let oom_kills = group.cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or(0);
                    if write_frame(&mut writer, &Reply::Stats { oom_kills }).await.is_err() {
                        break;
                    }
                }
                Some(other) => tracing::debug!(?other, "ignored request on a driver connection"),
                // The agent hung up: the session is over.
                None => break,
            },
        }
    }
    read_task.abort();
    if !group.exited {
        group.kill();
        let _ = timeout(Duration::from_secs(5), &mut exited).await;
        group.exited = true;
        let _ = timeout(Duration::from_secs(5), child.wait()).await;
    }
    group.remove().await;
}

/// The driver's process group and cgroup.
struct Group {
    pid: Pid,
    cgroup: Option<SessionCgroup>,
    /// The leader has been seen exiting (after which only the zombie-time kill may use its pid).
    exited: bool,
}

impl Group {
    fn kill(&self) {
        if !self.exited {
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }

    async fn remove(mut self) {
        if let Some(cg) = self.cgroup.take() {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
    }
}
