//! One live Python interpreter: the embedded driver (`driver.py`) started by a [`Launcher`]
//! (forked under the agent's `Sandbox`, or by the spawner in the sandbox container; see
//! [`process`]), its pipes, and [`Interpreter::execute`], which runs code under a deadline and
//! collects what it printed and returned. Nothing here depends on which launcher it was.
//!
//! Data flow: three reader tasks turn the child's stdout/stderr (with end-of-execution markers,
//! see [`output`]) and its result pipe (length-prefixed JSON frames) into channel messages;
//! `execute` selects over them, the deadline and the grace period, so nothing here blocks on a
//! child that misbehaves, and output beyond the limit is read and dropped, never stored.

pub mod output;
pub mod process;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use antwort_common::agent_api::ExecError;

use crate::{Error, Result};
use output::{MarkerScanner, Piece, Utf8Chunker};
pub use process::{DRIVER, Exit, LaunchSpec, Launcher, Proc, Signaler};

/// How long output may lag behind the result frame before the agent stops waiting for it.
const MARKER_WAIT: Duration = Duration::from_secs(2);
/// How long a dead interpreter's pipes are drained.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 64 * 1024;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
enum OutputEvent {
    Data(Stream, Vec<u8>),
    Marker(Stream, u64),
    Closed(Stream),
}

/// What a new interpreter needs to know.
#[derive(Debug, Clone)]
pub struct Spec {
    pub python: PathBuf,
    /// The working directory of the code.
    pub workspace: PathBuf,
    /// HOME and TMPDIR.
    pub scratch: PathBuf,
    pub session: String,
    /// Counts the session's interpreters (restarts); names its cgroup.
    pub generation: u64,
    pub start_timeout: Duration,
}

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub timeout: Duration,
    pub interrupt_grace: Duration,
    pub max_output_bytes: usize,
    pub max_value_chars: usize,
    pub max_rich_bytes: usize,
}

/// Why an interpreter is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// The kernel's OOM killer killed it.
    OutOfMemory,
    /// RLIMIT_CPU: the session used up its CPU seconds.
    CpuLimit,
    /// The agent killed it (a timeout that did not stop on SIGINT, or a restart/delete).
    KilledByAgent,
    Signal(i32),
    Exited(i32),
    /// It broke the framing protocol (too-large or malformed frame).
    Protocol(String),
    /// The spawner that started it (in the sandbox container) is gone, and its code with it.
    SpawnerLost,
}

impl Death {
    pub fn describe(&self) -> String {
        match self {
            Death::OutOfMemory => "killed by the kernel: out of memory".into(),
            Death::CpuLimit => "killed: CPU time limit of the session exceeded".into(),
            Death::KilledByAgent => "killed by the agent".into(),
            Death::Signal(sig) => format!("killed by signal {sig}"),
            Death::Exited(code) => format!("the interpreter exited with status {code}"),
            Death::Protocol(why) => format!("the interpreter broke the protocol: {why}"),
            Death::SpawnerLost => {
                "the sandbox container's spawner is gone (the sandbox is unavailable)".into()
            }
        }
    }
}

/// The driver's `result` frame.
#[derive(Debug, Deserialize)]
pub struct Reply {
    pub value: Option<String>,
    pub error: Option<ExecError>,
    #[serde(default)]
    pub rich: Vec<RichRaw>,
}

/// A rich output as the driver sends it.
#[derive(Debug, Deserialize)]
pub struct RichRaw {
    pub mime_type: String,
    pub data: String,
}

/// Everything one execution produced, before it becomes an API result.
#[derive(Debug)]
pub struct RawOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub output_truncated: bool,
    pub reply: Option<Reply>,
    pub timed_out: bool,
    /// OOM kills in the session's cgroup during the call (a child of the code may have died).
    pub oom_kills: u64,
    /// Set when the interpreter did not survive the call.
    pub death: Option<Death>,
}

/// A running driver process.
pub struct Interpreter {
    proc: Proc,
    requests: pipe::Sender,
    results: mpsc::Receiver<std::result::Result<serde_json::Value, String>>,
    output: mpsc::Receiver<OutputEvent>,
    tasks: Tasks,
    seq: u64,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("pid", &self.proc.pid())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Interpreter {
    /// Starts the driver through `launcher` and waits until it reports ready.
    pub async fn start(launcher: &Launcher, spec: &Spec, max_frame_bytes: usize) -> Result<Self> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let launch = LaunchSpec {
            python: spec.python.clone(),
            workspace: spec.workspace.clone(),
            scratch: spec.scratch.clone(),
            session: spec.session.clone(),
            generation: spec.generation,
            cgroup_name: format!("{}-g{}", spec.session, spec.generation),
            nonce: nonce.clone(),
        };
        let (proc, pipes) = launcher.launch(&launch).await?;
        let wrap = |e: std::io::Error| Error::Spawn(format!("driver pipes: {e}"));
        let requests = pipe::Sender::from_owned_fd(pipes.requests).map_err(wrap)?;
        let stdout = pipe::Receiver::from_owned_fd(pipes.stdout).map_err(wrap)?;
        let stderr = pipe::Receiver::from_owned_fd(pipes.stderr).map_err(wrap)?;
        let result_read = pipes.results;
        let (out_tx, output) = mpsc::channel(16);
        let (res_tx, results) = mpsc::channel(4);
        let tasks = vec![
            tokio::spawn(pump(stdout, Stream::Stdout, nonce.clone(), out_tx.clone())),
            tokio::spawn(pump(stderr, Stream::Stderr, nonce, out_tx)),
            tokio::spawn(read_frames(result_read, max_frame_bytes, res_tx)),
        ];
        let mut interpreter =
            Interpreter { proc, requests, results, output, tasks: Tasks(tasks), seq: 0 };
        match timeout(spec.start_timeout, interpreter.results.recv()).await {
            Ok(Some(Ok(frame))) if frame["op"] == "ready" => Ok(interpreter),
            outcome => {
                let why = match outcome {
                    Err(_) => format!("not ready after {:?}", spec.start_timeout),
                    Ok(Some(Err(e))) => e,
                    _ => "exited before it was ready".to_string(),
                };
                let stderr = interpreter.drain_stderr().await;
                interpreter.shutdown().await;
                Err(Error::Spawn(format!("{why}; stderr: {}", stderr.trim())))
            }
        }
    }

    /// Whether the driver is gone (its result pipe closed).
    pub fn has_exited(&self) -> bool {
        self.results.is_closed()
    }

    /// The driver's pid (its process group id too), in its own container's pid namespace.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Interrupts and kills from outside the session's lock.
    pub fn signaler(&self) -> Signaler {
        self.proc.signaler()
    }

    /// Runs `code`; `sink` receives kept output as it arrives (for streaming).
    pub async fn execute(
        &mut self,
        code: &str,
        limits: &ExecLimits,
        sink: &mut (dyn FnMut(Stream, String) + Send),
    ) -> RawOutcome {
        self.seq += 1;
        let seq = self.seq;
        let oom_before = self.proc.oom_kills().await;
        let mut out = Collector::new(limits.max_output_bytes);
        let mut reply: Option<Reply> = None;
        let mut death: Option<Death> = None;
        let mut markers = [false, false];
        let mut closed = [false, false];
        let mut control_closed = false;
        let mut timed_out = false;
        let mut killed_by_us = false;

        let request = serde_json::json!({
            "op": "execute",
            "seq": seq,
            "code": code,
            "max_value_chars": limits.max_value_chars,
            "max_rich_bytes": limits.max_rich_bytes,
        });
        if let Err(e) = write_frame(&mut self.requests, &request).await {
            tracing::debug!(error = %e, "interpreter gone before the request was written");
            control_closed = true;
        }

        let deadline = Instant::now() + limits.timeout;
        let mut kill_at: Option<Instant> = None;
        let mut stop_at: Option<Instant> =
            if control_closed { Some(Instant::now() + DRAIN_WAIT) } else { None };
        loop {
            let outputs_done = (markers[0] || closed[0]) && (markers[1] || closed[1]);
            if (reply.is_some() && outputs_done) || (control_closed && closed[0] && closed[1]) {
                break;
            }
            tokio::select! {
                event = self.output.recv(), if !(closed[0] && closed[1]) => match event {
                    Some(OutputEvent::Data(stream, bytes)) => out.push(stream, &bytes, sink),
                    Some(OutputEvent::Marker(stream, n)) => {
                        if n == seq {
                            markers[stream.index()] = true;
                        }
                    }
                    Some(OutputEvent::Closed(stream)) => closed[stream.index()] = true,
                    None => closed = [true, true],
                },
                frame = self.results.recv(), if !control_closed => match frame {
                    Some(Ok(frame)) => {
                        if frame["op"] == "result" && frame["seq"] == seq {
                            match serde_json::from_value::<Reply>(frame) {
                                Ok(r) => reply = Some(r),
                                Err(e) => {
                                    death = Some(Death::Protocol(format!("bad result: {e}")));
                                    self.kill();
                                }
                            }
                            stop_at = Some(Instant::now() + MARKER_WAIT);
                        }
                    }
                    Some(Err(why)) => {
                        death = Some(Death::Protocol(why));
                        self.kill();
                    }
                    None => {
                        control_closed = true;
                        stop_at = Some(Instant::now() + DRAIN_WAIT);
                    }
                },
                _ = sleep_until(deadline), if !timed_out && reply.is_none() && !control_closed => {
                    timed_out = true;
                    self.proc.signaler().interrupt();
                    kill_at = Some(Instant::now() + limits.interrupt_grace);
                }
                _ = sleep_opt(kill_at), if reply.is_none() && !control_closed => {
                    kill_at = None;
                    killed_by_us = true;
                    self.kill();
                }
                _ = sleep_opt(stop_at) => break,
            }
        }
        if control_closed && death.is_none() {
            death = Some(self.reap(killed_by_us, oom_before).await);
        } else if death.is_some() {
            let _ = self.proc.wait(DRAIN_WAIT).await;
        }
        let oom_kills = self.proc.oom_kills().await.saturating_sub(oom_before);
        let (stdout, stderr, output_truncated) = out.finish(sink);
        RawOutcome { stdout, stderr, output_truncated, reply, timed_out, oom_kills, death }
    }

    /// Why the process ended (it has, or is about to: its result pipe is closed).
    async fn reap(&mut self, killed_by_us: bool, oom_before: u64) -> Death {
        // The session is over: whatever the code left running goes too. The driver is not reaped
        // yet, so its pid (the group id) cannot have been reused.
        self.proc.kill();
        let exit = self.proc.wait(Duration::from_secs(5)).await;
        if self.proc.oom_kills().await > oom_before {
            return Death::OutOfMemory;
        }
        if exit == Some(Exit::SpawnerLost) {
            return Death::SpawnerLost;
        }
        if killed_by_us {
            return Death::KilledByAgent;
        }
        match exit {
            Some(Exit::Signal(sig)) if sig == nix::sys::signal::Signal::SIGXCPU as i32 => {
                Death::CpuLimit
            }
            Some(Exit::Signal(sig)) => Death::Signal(sig),
            Some(Exit::Code(code)) => Death::Exited(code),
            _ => Death::KilledByAgent,
        }
    }

    fn kill(&self) {
        self.proc.kill();
    }

    /// Kills everything the interpreter started and cleans up after it.
    pub async fn shutdown(self) {
        drop(self.tasks);
        self.proc.shutdown().await;
    }

    async fn drain_stderr(&mut self) -> String {
        let mut text = Vec::new();
        while let Ok(Some(event)) = timeout(Duration::from_millis(200), self.output.recv()).await {
            match event {
                OutputEvent::Data(Stream::Stderr, bytes) if text.len() < 4096 => {
                    text.extend_from_slice(&bytes)
                }
                OutputEvent::Closed(Stream::Stderr) => break,
                _ => {}
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// The reader tasks, aborted when the interpreter goes, however it goes (the process itself is
/// killed when its [`Proc`] drops).
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Keeps stdout/stderr up to a shared byte limit; the rest is dropped and remembered.
struct Collector {
    kept: [Vec<u8>; 2],
    decoders: [Utf8Chunker; 2],
    remaining: usize,
    truncated: bool,
}

impl Collector {
    fn new(limit: usize) -> Self {
        Self {
            kept: [Vec::new(), Vec::new()],
            decoders: [Utf8Chunker::default(), Utf8Chunker::default()],
            remaining: limit,
            truncated: false,
        }
    }

    fn push(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        sink: &mut (dyn FnMut(Stream, String) + Send),
    ) {
        let take = bytes.len().min(self.remaining);
        if take < bytes.len() {
            self.truncated = true;
        }
        if take == 0 {
            return;
        }
        self.remaining -= take;
        let kept = &bytes[..take];
        self.kept[stream.index()].extend_from_slice(kept);
        let text = self.decoders[stream.index()].push(kept);
        if !text.is_empty() {
            sink(stream, text);
        }
    }

    fn finish(mut self, sink: &mut (dyn FnMut(Stream, String) + Send)) -> (Vec<u8>, Vec<u8>, bool) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = self.decoders[stream.index()].finish();
            if !rest.is_empty() {
                sink(stream, rest);
            }
        }
        let [stdout, stderr] = self.kept;
        (stdout, stderr, self.truncated)
    }
}

async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    nonce: String,
    events: mpsc::Sender<OutputEvent>,
) {
    let mut scanner = MarkerScanner::new(&nonce);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for piece in scanner.push(&buf[..n]) {
            let event = match piece {
                Piece::Data(bytes) => OutputEvent::Data(stream, bytes),
                Piece::Marker(seq) => OutputEvent::Marker(stream, seq),
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    let rest = scanner.finish();
    if !rest.is_empty() {
        let _ = events.send(OutputEvent::Data(stream, rest)).await;
    }
    let _ = events.send(OutputEvent::Closed(stream)).await;
}

async fn read_frames(
    fd: OwnedFd,
    max_frame_bytes: usize,
    frames: mpsc::Sender<std::result::Result<serde_json::Value, String>>,
) {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            let _ = frames.send(Err(format!("result pipe: {e}"))).await;
            return;
        }
    };
    loop {
        let mut header = [0u8; 4];
        if pipe.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > max_frame_bytes {
            let _ = frames.send(Err(format!("frame of {len} bytes over {max_frame_bytes}"))).await;
            return;
        }
        let mut body = vec![0u8; len];
        if pipe.read_exact(&mut body).await.is_err() {
            return;
        }
        let frame = serde_json::from_slice(&body).map_err(|e| format!("malformed frame: {e}"));
        let failed = frame.is_err();
        if frames.send(frame).await.is_err() || failed {
            return;
        }
    }
}

async fn write_frame(pipe: &mut pipe::Sender, frame: &serde_json::Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(frame)?;
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    pipe.write_all(&len.to_be_bytes()).await?;
    pipe.write_all(&body).await?;
    pipe.flush().await
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
