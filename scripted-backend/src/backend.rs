//! [`ScriptedBackend`]: the handle tests hold. Starts the server task, scripts it, reads back
//! what it recorded, and stops it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::record::{Cancellation, RecordedRequest};
use crate::script::{Script, ScriptFile};
use crate::server::{self, Shared};

/// Limits of one backend.
#[derive(Clone, Debug)]
pub struct Options {
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Requests recorded before recording stops (0 = never record).
    pub record_limit: usize,
    /// Serve the `/_scripted/` control API (see the `admin` module); for the binary.
    pub admin: bool,
    /// A connection that does not send a complete request head in this time is closed; this
    /// includes idle keep-alive connections waiting for their next request.
    pub header_read_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            record_limit: usize::MAX,
            admin: false,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// A running scripted Chat Completions server. Dropping it stops the server too;
/// [`ScriptedBackend::shutdown`] also waits for it.
pub struct ScriptedBackend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl ScriptedBackend {
    /// Starts on 127.0.0.1 with a port chosen by the OS.
    ///
    /// # Panics
    /// When 127.0.0.1:0 cannot be bound, which only happens on a broken machine.
    pub async fn start() -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self::start_on(addr).await.expect("binding 127.0.0.1:0 for the scripted backend")
    }

    pub async fn start_on(addr: SocketAddr) -> Result<Self> {
        Self::start_with(addr, Options::default()).await
    }

    pub async fn start_with(addr: SocketAddr, options: Options) -> Result<Self> {
        let listener = server::bind(addr).await?;
        let addr = listener.local_addr().map_err(|source| crate::Error::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(&options));
        let (shutdown, stop) = watch::channel(false);
        let server = tokio::spawn(server::run(listener, shared.clone(), stop));
        Ok(Self { shared, addr, shutdown, server: Some(server) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request for `model` follows `script` (its turns in order, then the last again).
    pub fn on_model(&self, model: impl Into<String>, script: Script) {
        self.shared.book.on_model(model.into(), script);
    }

    /// The next requests, whatever their model, follow `script` (one turn each, FIFO after
    /// earlier enqueued scripts). Takes precedence over everything else.
    pub fn enqueue(&self, script: Script) {
        self.shared.book.enqueue(script);
    }

    /// Replaces the echo reply for requests nothing else matches.
    pub fn set_default(&self, script: Script) {
        self.shared.book.set_fallback(script);
    }

    /// Lists `name` in `GET /v1/models` (scripted models are listed anyway).
    pub fn add_model_name(&self, name: impl Into<String>) {
        self.shared.book.add_model_name(name.into());
    }

    /// Applies a script file: model scripts, queue, default and model names.
    pub fn load(&self, file: ScriptFile) {
        for name in file.model_names {
            self.add_model_name(name);
        }
        for (model, script) in file.models {
            self.on_model(model, script);
        }
        for script in file.queue {
            self.enqueue(script);
        }
        if let Some(script) = file.default {
            self.set_default(script);
        }
    }

    /// Enqueued scripts not yet fully played.
    pub fn queued(&self) -> usize {
        self.shared.book.queued()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.requests()
    }

    /// Every reply whose client went away before its end.
    pub fn cancellations(&self) -> Vec<Cancellation> {
        self.shared.recorder.cancellations()
    }

    /// Waits until at least `count` requests were received; returns them, or `None` on timeout.
    pub async fn wait_for_requests(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<RecordedRequest>> {
        self.shared.recorder.wait_until(timeout, |recorder| recorder.requests_if(count)).await
    }

    /// Waits until at least `count` cancellations were seen; returns them, or `None` on timeout.
    pub async fn wait_for_cancellations(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<Cancellation>> {
        self.shared.recorder.wait_until(timeout, |recorder| recorder.cancellations_if(count)).await
    }

    /// Turns request recording on or off (off in benchmarks: no copy of each request).
    pub fn set_recording(&self, enabled: bool) {
        self.shared.recorder.set_enabled(enabled);
    }

    /// Forgets recorded requests and cancellations.
    pub fn clear_recorded(&self) {
        self.shared.recorder.clear();
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shared.recorder.close();
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Serves until `signal` resolves, then shuts down (for the binary).
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.shared.recorder.close();
        let _ = self.shutdown.send(true);
    }
}

impl std::fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBackend").field("addr", &self.addr).finish_non_exhaustive()
    }
}
