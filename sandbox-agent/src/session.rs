//! Sessions: one interpreter and one workspace each, created, executed in, interrupted, restarted
//! and deleted through [`Sessions`]. This is where a raw outcome becomes a typed
//! [`ExecuteResult`] and where metrics are recorded; nothing here knows about HTTP.

use std::collections::HashMap;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use antwort_common::agent_api::{
    ExecError, ExecStatus, ExecuteResult, FileInfo, FileList, RichOutput, SessionInfo, SessionState,
};

use crate::config::Config;
use crate::interpreter::{
    Death, ExecLimits, Interpreter, Launcher, RawOutcome, Signaler, Spec, Stream,
};
use crate::metrics::Metrics;
use crate::workspace::{self, RelPath};
use crate::{Error, Result};

/// All sessions of the agent.
pub struct Sessions {
    config: Arc<Config>,
    launcher: Launcher,
    metrics: Metrics,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// A session started ahead (`python.spare_session`), listed nowhere: `create` hands it out
    /// at once and starts the next in the background, so a new session does not wait for an
    /// interpreter to start. It takes a `max_sessions` slot only when handed out (so there may
    /// be one interpreter more than sessions).
    spare: Mutex<Option<Arc<Session>>>,
    /// Set while a spare is being started: one at a time.
    refilling: AtomicBool,
    slots: Arc<Semaphore>,
    root: PathBuf,
    scratch_root: PathBuf,
}

/// One session.
pub struct Session {
    pub id: String,
    /// Set when the session is handed out (a spare is made before anyone names it).
    label: Mutex<Option<String>>,
    created_at: AtomicU64,
    workspace: PathBuf,
    scratch: PathBuf,
    /// `None` while the interpreter is dead. Held for the whole of an execution, so `try_lock`
    /// failing means busy.
    interpreter: tokio::sync::Mutex<Option<Interpreter>>,
    /// Signals for the live driver, for interrupts that must not wait for the lock.
    signaler: Mutex<Signaler>,
    busy: AtomicBool,
    dead: AtomicBool,
    executions: AtomicU64,
    generation: AtomicU64,
    last_used: Mutex<Instant>,
    /// Its `max_sessions` slot (none while it is the spare).
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Sessions {
    pub fn new(config: Arc<Config>, launcher: Launcher, metrics: Metrics) -> Result<Self> {
        let root = config.workspace.root.clone();
        let scratch_root = root.join(".scratch");
        for dir in [&root, &scratch_root] {
            std::fs::create_dir_all(dir)?;
            // Sandbox users may pass through but not list: session ids stay unguessable. A
            // volume root the agent does not own (a pod's emptyDir) keeps the mode it was given.
            let hidden = std::fs::Permissions::from_mode(0o711);
            match std::fs::set_permissions(dir, hidden) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && dir == &root => {
                    tracing::info!(root = %root.display(), "workspace root not ours; mode kept");
                }
                other => other?,
            }
        }
        Ok(Self {
            slots: Arc::new(Semaphore::new(config.limits.max_sessions)),
            config,
            launcher,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            refilling: AtomicBool::new(false),
            root,
            scratch_root,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn get(&self, id: &str) -> Result<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::SessionNotFound(id.to_string()))
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut all: Vec<_> =
            self.sessions.lock().expect("sessions lock").values().map(|s| s.info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// A new session with a live interpreter: the spare when there is one (then the next spare
    /// starts in the background), else one started now.
    pub async fn create(self: &Arc<Self>, label: Option<String>) -> Result<SessionInfo> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManySessions(self.config.limits.max_sessions))?;
        let spare = self.spare.lock().expect("spare lock").take();
        self.metrics.spare_sessions.set(0);
        let session = match spare {
            Some(spare) if self.usable(&spare).await => spare,
            Some(unusable) => {
                discard(&self.launcher, unusable).await;
                self.start_session().await?
            }
            None => self.start_session().await?,
        };
        *session.slot.lock().expect("slot lock") = Some(slot);
        *session.label.lock().expect("label lock") = label;
        session.created_at.store(workspace::unix_now(), Ordering::SeqCst);
        *session.last_used.lock().expect("last_used lock") = Instant::now();
        self.sessions.lock().expect("sessions lock").insert(session.id.clone(), session.clone());
        self.metrics.live_sessions.inc();
        self.refill_spare();
        Ok(session.info())
    }

    /// Starts the next spare in the background, if spares are on and none is there or coming.
    pub fn refill_spare(self: &Arc<Self>) {
        if !(self.config.python.spare_session && self.config.capabilities.code) {
            return;
        }
        if self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let sessions = Arc::clone(self);
        tokio::spawn(async move {
            if sessions.spare.lock().expect("spare lock").is_none() {
                match sessions.start_session().await {
                    Ok(started) => {
                        *sessions.spare.lock().expect("spare lock") = Some(started);
                        sessions.metrics.spare_sessions.set(1);
                    }
                    // The spawner away, ...: the next `create` starts its own session.
                    Err(e) => tracing::debug!(error = %e, "no spare session"),
                }
            }
            sessions.refilling.store(false, Ordering::SeqCst);
        });
    }

    /// Whether the spare can be handed out: its interpreter still runs (and, with the spawner,
    /// the spawner still answers: a spare outliving its spawner must not hide that it is gone).
    async fn usable(&self, spare: &Session) -> bool {
        if spare.dead.load(Ordering::SeqCst) {
            return false;
        }
        if let Launcher::Spawner(client) = &self.launcher
            && client.ping().await.is_err()
        {
            return false;
        }
        match spare.interpreter.try_lock() {
            Ok(interpreter) => interpreter.as_ref().is_some_and(|i| !i.has_exited()),
            Err(_) => false,
        }
    }

    /// A session with a live interpreter, not yet listed and holding no slot.
    async fn start_session(&self) -> Result<Arc<Session>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let workspace = self.root.join(&id);
        let scratch = self.scratch_root.join(&id);
        let owner = self.launcher.ownership();
        let make_dirs = || -> std::io::Result<()> {
            for dir in [&workspace, &scratch, &scratch.join("tmp")] {
                std::fs::create_dir_all(dir)?;
                chown(dir, Some(owner.uid), Some(owner.gid))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(owner.dir_mode))?;
            }
            Ok(())
        };
        make_dirs()?;
        let session = Arc::new(Session {
            id,
            label: Mutex::new(None),
            created_at: AtomicU64::new(workspace::unix_now()),
            workspace,
            scratch,
            interpreter: tokio::sync::Mutex::new(None),
            signaler: Mutex::new(Signaler::None),
            busy: AtomicBool::new(false),
            dead: AtomicBool::new(true),
            executions: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
            slot: Mutex::new(None),
        });
        if let Err(e) = self.start_interpreter(&session).await {
            remove_dirs(None, &session).await;
            return Err(e);
        }
        Ok(session)
    }

    async fn start_interpreter(&self, session: &Session) -> Result<()> {
        let mut slot = session.interpreter.lock().await;
        if let Some(old) = slot.take() {
            session.take_signaler();
            old.shutdown().await;
        }
        let generation = session.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let spec = Spec {
            python: self.config.python.executable.clone(),
            workspace: session.workspace.clone(),
            scratch: session.scratch.clone(),
            session: session.id.clone(),
            generation,
            start_timeout: Duration::from_millis(self.config.python.start_timeout_ms),
        };
        let interpreter = Interpreter::start(&self.launcher, &spec, self.max_frame_bytes()).await?;
        *session.signaler.lock().expect("signaler lock") = interpreter.signaler();
        session.dead.store(false, Ordering::SeqCst);
        *slot = Some(interpreter);
        Ok(())
    }

    /// Frames carry base64 PNGs, a repr and a traceback; anything much larger is a broken driver.
    fn max_frame_bytes(&self) -> usize {
        let l = &self.config.limits;
        l.max_rich_output_bytes * 4 / 3 + l.max_value_chars * 6 + (4 << 20)
    }

    /// Kills the interpreter (ending any execution) and starts a fresh one; files stay.
    pub async fn restart(&self, id: &str) -> Result<SessionInfo> {
        let session = self.get(id)?;
        session.take_signaler().kill();
        self.start_interpreter(&session).await?;
        Ok(session.info())
    }

    /// Kills the interpreter and removes the workspace.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let session = self
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(id)
            .ok_or_else(|| Error::SessionNotFound(id.to_string()))?;
        self.metrics.live_sessions.dec();
        session.take_signaler().kill();
        if let Some(interpreter) = session.interpreter.lock().await.take() {
            interpreter.shutdown().await;
        }
        remove_dirs(Some(&self.launcher), &session).await;
        Ok(())
    }

    /// Deletes every session and the spare (shutdown).
    pub async fn delete_all(&self) {
        let spare = self.spare.lock().expect("spare lock").take();
        self.metrics.spare_sessions.set(0);
        if let Some(spare) = spare {
            discard(&self.launcher, spare).await;
        }
        let ids: Vec<String> =
            self.sessions.lock().expect("sessions lock").keys().cloned().collect();
        for id in ids {
            let _ = self.delete(&id).await;
        }
    }

    /// Deletes sessions idle for longer than the configured limit.
    pub async fn reap_idle(&self) {
        let limit = self.config.limits.session_idle_timeout_secs;
        if limit == 0 {
            return;
        }
        let idle: Vec<String> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| {
                !s.busy.load(Ordering::SeqCst)
                    && s.last_used.lock().expect("lock").elapsed() > Duration::from_secs(limit)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            tracing::info!(session = %id, "deleting idle session");
            let _ = self.delete(&id).await;
        }
    }

    /// SIGINT to a running execution.
    pub fn interrupt(&self, id: &str) -> Result<bool> {
        let session = self.get(id)?;
        if !session.busy.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let signaler = session.signaler.lock().expect("signaler lock").clone();
        Ok(signaler.interrupt())
    }

    /// Runs code in a session; `sink` receives output as it appears.
    pub async fn execute(
        &self,
        id: &str,
        code: &str,
        timeout_ms: Option<u64>,
        sink: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<ExecuteResult> {
        let l = &self.config.limits;
        if code.len() > l.max_code_bytes {
            return Err(Error::BadRequest(format!(
                "code is {} bytes, more than the limit of {}",
                code.len(),
                l.max_code_bytes
            )));
        }
        if timeout_ms == Some(0) {
            return Err(Error::BadRequest("timeout_ms must be at least 1".into()));
        }
        let session = self.get(id)?;
        let mut slot =
            session.interpreter.try_lock().map_err(|_| Error::SessionBusy(id.to_string()))?;
        let Some(interpreter) = slot.as_mut() else {
            return Err(Error::SessionDead(id.to_string()));
        };
        let limits = ExecLimits {
            timeout: Duration::from_millis(timeout_ms.unwrap_or(l.default_timeout_ms))
                .min(Duration::from_millis(l.max_timeout_ms)),
            interrupt_grace: l.interrupt_grace(),
            max_output_bytes: l.max_output_bytes,
            max_value_chars: l.max_value_chars,
            max_rich_bytes: l.max_rich_output_bytes,
        };
        session.busy.store(true, Ordering::SeqCst);
        let _busy = BusyGuard(&session);
        let max_files = self.config.workspace.max_listed_files;
        let before = scan(&session.workspace, max_files).await;
        let started = Instant::now();
        let raw = interpreter.execute(code, &limits, sink).await;
        let duration = started.elapsed();
        let after = scan(&session.workspace, max_files).await;
        if raw.death.is_some() {
            session.dead.store(true, Ordering::SeqCst);
            session.take_signaler();
            if let Some(gone) = slot.take() {
                gone.shutdown().await;
            }
        }
        drop(slot);
        session.executions.fetch_add(1, Ordering::SeqCst);
        *session.last_used.lock().expect("lock") = Instant::now();
        let mut result = to_result(raw, &limits, duration);
        result.files = workspace::diff(&before, &after);
        self.metrics.record_execution(result.status, duration.as_secs_f64());
        Ok(result)
    }

    pub async fn list_files(&self, id: &str) -> Result<FileList> {
        let session = self.get(id)?;
        let max = self.config.workspace.max_listed_files;
        let root = session.workspace.clone();
        blocking(move || Ok(workspace::list(&root, max))).await
    }

    pub fn open_file(&self, id: &str, path: &str) -> Result<(std::fs::File, u64)> {
        let session = self.get(id)?;
        let path = RelPath::parse(path)?;
        workspace::open_file(&session.workspace, &path)
    }

    pub async fn delete_file(&self, id: &str, path: &str) -> Result<()> {
        let session = self.get(id)?;
        let path = RelPath::parse(path)?;
        let root = session.workspace.clone();
        blocking(move || workspace::delete(&root, &path)).await
    }

    /// Writes an upload: `body` is streamed into a scratch file, refused past the limit, and
    /// moved into place only when complete.
    pub async fn upload<S, E>(&self, id: &str, path: &str, mut body: S) -> Result<FileInfo>
    where
        S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let session = self.get(id)?;
        let rel = RelPath::parse(path)?;
        let limit = self.config.limits.max_upload_bytes;
        let tmp_name = format!(".upload-{}", uuid::Uuid::new_v4().simple());
        let tmp_path = session.scratch.join(&tmp_name);
        let mut file = tokio::fs::File::create(&tmp_path).await?;
        let mut written: u64 = 0;
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    if e.to_string().contains("length limit") {
                        Error::TooLarge(limit)
                    } else {
                        Error::BadRequest(format!("reading the body: {e}"))
                    }
                })?;
                written += chunk.len() as u64;
                if written > limit {
                    return Err(Error::TooLarge(limit));
                }
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = outcome {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(e);
        }
        let owner = self.launcher.ownership();
        let (root, scratch) = (session.workspace.clone(), session.scratch.clone());
        let installed =
            blocking(move || workspace::install(&root, &scratch, &tmp_name, &rel, owner)).await;
        if installed.is_err() {
            let _ = tokio::fs::remove_file(&tmp_path).await;
        }
        installed
    }
}

impl Session {
    /// The live driver's signals, leaving none behind (its pid may be reused once it is gone).
    fn take_signaler(&self) -> Signaler {
        std::mem::take(&mut *self.signaler.lock().expect("signaler lock"))
    }

    pub fn info(&self) -> SessionInfo {
        let state = if self.dead.load(Ordering::SeqCst) {
            SessionState::Dead
        } else if self.busy.load(Ordering::SeqCst) {
            SessionState::Busy
        } else {
            SessionState::Idle
        };
        SessionInfo {
            id: self.id.clone(),
            label: self.label.lock().expect("label lock").clone(),
            state,
            workspace: self.workspace.display().to_string(),
            created_at: self.created_at.load(Ordering::SeqCst),
            executions: self.executions.load(Ordering::SeqCst),
            generation: self.generation.load(Ordering::SeqCst),
        }
    }
}

struct BusyGuard<'a>(&'a Session);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
    }
}

/// Turns what the interpreter produced into the API's typed result.
fn to_result(raw: RawOutcome, limits: &ExecLimits, duration: Duration) -> ExecuteResult {
    let RawOutcome { stdout, stderr, output_truncated, reply, timed_out, oom_kills, death } = raw;
    let mut value = None;
    let mut rich_outputs = Vec::new();
    let mut error = None;
    if let Some(reply) = reply {
        value = reply.value;
        error = reply.error;
        rich_outputs = reply.rich.into_iter().filter_map(rich_output).collect();
    }
    let memory_error = error.as_ref().is_some_and(|e| e.name == "MemoryError");
    let status = if timed_out {
        error = Some(ExecError {
            name: "TimeoutError".into(),
            value: format!(
                "execution exceeded its time limit of {} ms",
                limits.timeout.as_millis()
            ),
            traceback: error.map(|e| e.traceback).unwrap_or_default(),
        });
        ExecStatus::Timeout
    } else if memory_error || oom_kills > 0 || death == Some(Death::OutOfMemory) {
        if error.is_none() {
            error = Some(ExecError {
                name: "MemoryError".into(),
                value: "the session ran out of memory".into(),
                traceback: Vec::new(),
            });
        }
        ExecStatus::OutOfMemory
    } else if let Some(death) = &death {
        let name = match death {
            Death::SpawnerLost => "SandboxUnavailable",
            _ => "InterpreterDied",
        };
        error = Some(ExecError {
            name: name.into(),
            value: format!("{}; restart the session", death.describe()),
            traceback: Vec::new(),
        });
        ExecStatus::Killed
    } else if error.is_some() {
        ExecStatus::Error
    } else if output_truncated {
        ExecStatus::OutputTruncated
    } else {
        ExecStatus::Ok
    };
    let mut stdout = String::from_utf8_lossy(&stdout).into_owned();
    if output_truncated {
        stdout.push_str(&format!(
            "\n[output truncated: more than {} bytes of stdout+stderr]\n",
            limits.max_output_bytes
        ));
    }
    ExecuteResult {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        value,
        rich_outputs,
        files: Vec::new(),
        error,
        output_truncated,
        duration_ms: duration.as_millis() as u64,
    }
}

/// Checks a PNG from the driver and reads its size from the IHDR chunk.
fn rich_output(raw: crate::interpreter::RichRaw) -> Option<RichOutput> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(&raw.data).ok()?;
    let (width, height) = png_size(&bytes)?;
    Some(RichOutput {
        mime_type: raw.mime_type,
        data: raw.data,
        width: Some(width),
        height: Some(height),
    })
}

/// Width and height of a PNG, or `None` if it is not one.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

async fn scan(
    root: &std::path::Path,
    max: usize,
) -> std::collections::BTreeMap<String, workspace::Stamp> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || workspace::scan(&root, max).0).await.unwrap_or_default()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("task: {e}")))?
}

/// Ends a session nobody was handed (a spare): its interpreter, then its directories.
async fn discard(launcher: &Launcher, session: Arc<Session>) {
    session.take_signaler().kill();
    if let Some(interpreter) = session.interpreter.lock().await.take() {
        interpreter.shutdown().await;
    }
    remove_dirs(Some(launcher), &session).await;
}

/// Removes the session's directories. With the spawner, the code's uid empties them first: the
/// code may have made directories the agent cannot enter (`chmod 0500`); `None` when no code
/// ever ran there.
async fn remove_dirs(launcher: Option<&Launcher>, session: &Session) {
    if let Some(Launcher::Spawner(client)) = launcher
        && let Err(e) = client.clear(&session.id).await
    {
        tracing::warn!(error = %e, session = %session.id, "the spawner could not clear the files");
    }
    let dirs = [session.workspace.clone(), session.scratch.clone()];
    let _ = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
    .await;
}
