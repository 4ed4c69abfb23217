//! The agent's side of the spawner socket: [`SpawnerClient::spawn`] opens one connection per
//! interpreter and returns a [`Remote`] (pid, signals, OOM counts, exit status) plus the driver's
//! pipe ends; [`SpawnerClient::ping`] is the readiness check.
//!
//! A connection task owns the socket: it writes the signals the session sends (through
//! [`RemoteSignals`], usable without the session's lock) and turns the spawner's frames into the
//! exit status. The spawner going away is an exit of its own, [`Exit::SpawnerLost`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use super::fds;
use super::wire::{Reply, Request, SPAWNED_FDS, read_frame, write_frame};
use crate::config::Config;
use crate::interpreter::process::{Exit, LaunchSpec, Pipes};
use crate::{Error, Result};

/// How long connecting, a ping or a stats question may take.
const QUICK: Duration = Duration::from_secs(2);
/// How long emptying a session's directories may take.
const CLEAR_WAIT: Duration = Duration::from_secs(60);

/// Where the spawner listens, and who it must be.
#[derive(Debug, Clone)]
pub struct SpawnerClient {
    path: PathBuf,
    /// The uid user code (and so the spawner) runs as: `sandbox.uid`.
    spawner_uid: u32,
    /// The group both containers share: `sandbox.gid`.
    shared_gid: u32,
    /// How long the spawner may take to start a driver (`python.start_timeout_ms`).
    spawn_timeout: Duration,
}

impl SpawnerClient {
    pub fn new(path: PathBuf, config: &Config) -> Self {
        Self {
            path,
            spawner_uid: config.sandbox.uid,
            shared_gid: config.sandbox.gid,
            spawn_timeout: Duration::from_millis(config.python.start_timeout_ms),
        }
    }

    pub fn shared_gid(&self) -> u32 {
        self.shared_gid
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> Error {
        Error::SpawnerUnavailable(format!("{}: {what}", self.path.display()))
    }

    /// Connects and checks that the listener runs as the sandbox uid.
    async fn connect(&self) -> Result<UnixStream> {
        let stream = match timeout(QUICK, UnixStream::connect(&self.path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unavailable(e)),
            Err(_) => return Err(self.unavailable("connect timed out")),
        };
        let peer = stream.peer_cred().map_err(|e| self.unavailable(e))?;
        if peer.uid() != self.spawner_uid {
            return Err(self.unavailable(format!(
                "the listener runs as uid {}, not the sandbox uid {}",
                peer.uid(),
                self.spawner_uid
            )));
        }
        Ok(stream)
    }

    /// The spawner is there and answers us.
    pub async fn ping(&self) -> Result<()> {
        let mut stream = self.connect().await?;
        let answer = timeout(QUICK, async {
            write_frame(&mut stream, &Request::Ping).await?;
            read_frame::<_, Reply>(&mut stream).await
        })
        .await;
        match answer {
            Ok(Ok(Some(Reply::Pong))) => Ok(()),
            Ok(Ok(Some(Reply::Refused { message }))) => Err(self.unavailable(message)),
            Ok(Ok(other)) => Err(self.unavailable(format!("unexpected answer {other:?}"))),
            Ok(Err(e)) => Err(self.unavailable(e)),
            Err(_) => Err(self.unavailable("no answer to a ping")),
        }
    }

    /// Has the spawner empty a session's directories (as the code's uid), before the agent
    /// removes them.
    pub async fn clear(&self, session: &str) -> Result<()> {
        let mut stream = self.connect().await?;
        let answer = timeout(CLEAR_WAIT, async {
            write_frame(&mut stream, &Request::Clear { session: session.to_owned() }).await?;
            read_frame::<_, Reply>(&mut stream).await
        })
        .await;
        match answer {
            Ok(Ok(Some(Reply::Cleared))) => Ok(()),
            Ok(Ok(Some(Reply::Refused { message }))) => Err(Error::Internal(message)),
            Ok(Ok(other)) => Err(self.unavailable(format!("unexpected answer {other:?}"))),
            Ok(Err(e)) => Err(self.unavailable(e)),
            Err(_) => Err(self.unavailable("no answer to clear in time")),
        }
    }

    /// Has the spawner start a driver; returns it and the parent's ends of its pipes.
    pub async fn spawn(&self, spec: &LaunchSpec) -> Result<(Remote, Pipes)> {
        let mut stream = self.connect().await?;
        let request = Request::Spawn {
            session: spec.session.clone(),
            generation: spec.generation,
            nonce: spec.nonce.clone(),
        };
        write_frame(&mut stream, &request).await.map_err(|e| self.unavailable(e))?;
        let (reply, fds) = match timeout(self.spawn_timeout, fds::recv_frame(&mut stream)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.unavailable(format!("no answer to spawn: {e}"))),
            Err(_) => return Err(self.unavailable("no answer to spawn in time")),
        };
        let (pid, cgroup) = match reply {
            Reply::Spawned { pid, cgroup } if fds.len() == SPAWNED_FDS => (pid, cgroup),
            Reply::Refused { message } => return Err(Error::Spawn(message)),
            other => {
                return Err(self.unavailable(format!(
                    "unexpected answer to spawn: {other:?} with {} descriptors",
                    fds.len()
                )));
            }
        };
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("four descriptors were counted");
        let pipes = Pipes { requests: next(), stdout: next(), stderr: next(), results: next() };
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(connection(stream, ops_rx, exit_tx));
        Ok((Remote { pid, cgroup, ops, exit }, pipes))
    }
}

enum Op {
    Interrupt,
    Kill,
    Stats(oneshot::Sender<u64>),
}

/// A driver the spawner started. Dropping it closes the connection, and the spawner kills
/// whatever is left of the driver's process group.
#[derive(Debug)]
pub struct Remote {
    pid: i32,
    cgroup: bool,
    ops: mpsc::UnboundedSender<Op>,
    exit: watch::Receiver<Option<Exit>>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Interrupt => "Interrupt",
            Op::Kill => "Kill",
            Op::Stats(_) => "Stats",
        })
    }
}

impl Remote {
    /// The driver's pid in the sandbox container.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Signals that do not keep the connection open (a session keeps them while the
    /// interpreter is replaced).
    pub fn signals(&self) -> RemoteSignals {
        RemoteSignals(self.ops.downgrade())
    }

    pub async fn oom_kills(&self) -> u64 {
        if !self.cgroup {
            return 0;
        }
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Stats(tx)).is_err() {
            return 0;
        }
        timeout(QUICK, rx).await.ok().and_then(|r| r.ok()).unwrap_or(0)
    }

    /// Waits (bounded) for the exit status.
    pub async fn wait(&mut self, limit: Duration) -> Option<Exit> {
        match timeout(limit, self.exit.wait_for(Option::is_some)).await {
            Ok(Ok(exit)) => *exit,
            _ => None,
        }
    }
}

/// Interrupt and kill for a [`Remote`], from outside the session's lock.
#[derive(Debug, Clone)]
pub struct RemoteSignals(mpsc::WeakUnboundedSender<Op>);

impl RemoteSignals {
    pub fn interrupt(&self) -> bool {
        self.0.upgrade().is_some_and(|ops| ops.send(Op::Interrupt).is_ok())
    }

    pub fn kill(&self) {
        if let Some(ops) = self.0.upgrade() {
            let _ = ops.send(Op::Kill);
        }
    }
}

/// Owns the connection: writes ops, reads replies, until the [`Remote`] is dropped.
async fn connection(
    stream: UnixStream,
    mut ops: mpsc::UnboundedReceiver<Op>,
    exit: watch::Sender<Option<Exit>>,
) {
    let (mut reader, mut writer) = stream.into_split();
    // Reading a frame is not cancel-safe, so it has a task of its own.
    let (replies_tx, mut replies) = mpsc::channel::<Reply>(4);
    let read_task = tokio::spawn(async move {
        while let Ok(Some(reply)) = read_frame::<_, Reply>(&mut reader).await {
            if replies_tx.send(reply).await.is_err() {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(read_task);
    let mut waiting: VecDeque<oneshot::Sender<u64>> = VecDeque::new();
    let mut lost = false;
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                let request = match op {
                    Op::Interrupt => Request::Interrupt,
                    Op::Kill => Request::Kill,
                    Op::Stats(answer) if lost => {
                        let _ = answer.send(0);
                        continue;
                    }
                    Op::Stats(answer) => {
                        waiting.push_back(answer);
                        Request::Stats
                    }
                };
                if !lost && write_frame(&mut writer, &request).await.is_err() {
                    lost = true;
                }
            }
            reply = replies.recv(), if !lost => match reply {
                Some(Reply::Exited { code, signal }) => {
                    let status = match (signal, code) {
                        (Some(signal), _) => Exit::Signal(signal),
                        (None, code) => Exit::Code(code.unwrap_or(-1)),
                    };
                    exit.send_replace(Some(status));
                }
                Some(Reply::Stats { oom_kills }) => {
                    if let Some(answer) = waiting.pop_front() {
                        let _ = answer.send(oom_kills);
                    }
                }
                Some(other) => tracing::debug!(?other, "unexpected frame from the spawner"),
                None => lost = true,
            },
        }
        if lost {
            if exit.borrow().is_none() {
                tracing::warn!("the spawner closed the connection of a live interpreter");
                exit.send_replace(Some(Exit::SpawnerLost));
            }
            for answer in waiting.drain(..) {
                let _ = answer.send(0);
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
