//! What tests assert on: every request received, and every streaming reply whose client went
//! away before the end (with the `Instant` it was noticed).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One request as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    pub headers: http::HeaderMap,
    /// The parsed JSON body; `Null` when the body was empty or not JSON.
    pub body: serde_json::Value,
    pub received_at: Instant,
}

impl RecordedRequest {
    /// A header's value, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// A reply abandoned by its client: the connection closed while the backend was still
/// waiting to send (time to first token, chunk delays, a stall).
#[derive(Clone, Debug)]
pub struct Cancellation {
    /// Index into [`crate::ScriptedBackend::requests`], when the request was recorded.
    pub request_index: Option<usize>,
    pub model: String,
    /// When the backend noticed the client had gone.
    pub at: Instant,
    /// SSE events sent before the client went away.
    pub events_sent: usize,
}

pub(crate) struct Recorder {
    enabled: AtomicBool,
    /// Recording stops at this many requests, so a long benchmark cannot grow memory forever.
    limit: usize,
    /// `requests.len()`, readable without the lock on the hot path.
    recorded: AtomicUsize,
    /// Set on shutdown: connections aborted then are not client cancellations.
    closing: AtomicBool,
    /// When the backend started; the admin API reports times relative to it.
    pub started: Instant,
    requests: Mutex<Vec<RecordedRequest>>,
    cancellations: Mutex<Vec<Cancellation>>,
    changed: Notify,
}

impl Recorder {
    pub fn new(limit: usize) -> Self {
        Self {
            enabled: AtomicBool::new(limit > 0),
            limit,
            recorded: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            cancellations: Mutex::new(Vec::new()),
            changed: Notify::new(),
        }
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether a request arriving now would be recorded (on, and not full).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed) && self.recorded.load(Ordering::Relaxed) < self.limit
    }

    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Stores the request; returns its index, or `None` when recording is off or full.
    pub fn record(&self, request: RecordedRequest) -> Option<usize> {
        if !self.is_enabled() {
            return None;
        }
        let index = {
            let mut requests = lock(&self.requests);
            if requests.len() >= self.limit {
                return None;
            }
            requests.push(request);
            self.recorded.store(requests.len(), Ordering::Relaxed);
            requests.len() - 1
        };
        self.changed.notify_waiters();
        Some(index)
    }

    pub fn cancel(&self, cancellation: Cancellation) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        lock(&self.cancellations).push(cancellation);
        self.changed.notify_waiters();
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub fn cancellations(&self) -> Vec<Cancellation> {
        lock(&self.cancellations).clone()
    }

    pub fn clear(&self) {
        let mut requests = lock(&self.requests);
        requests.clear();
        self.recorded.store(0, Ordering::Relaxed);
        drop(requests);
        lock(&self.cancellations).clear();
    }

    /// Waits until `check` returns something, or the timeout passes (then one last check).
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before checking, so a change between the check and the await is seen.
            notified.as_mut().enable();
            if let Some(found) = check(self) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(self);
            }
        }
    }

    pub fn requests_if(&self, count: usize) -> Option<Vec<RecordedRequest>> {
        let requests = lock(&self.requests);
        (requests.len() >= count).then(|| requests.clone())
    }

    pub fn cancellations_if(&self, count: usize) -> Option<Vec<Cancellation>> {
        let cancellations = lock(&self.cancellations);
        (cancellations.len() >= count).then(|| cancellations.clone())
    }
}

/// A poisoned lock only means a panic elsewhere mid-push; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lives as long as a reply is in flight; dropped before [`CancelGuard::finish`] means the
/// client went away (hyper drops the handler future or the body when the connection closes).
pub(crate) struct CancelGuard {
    recorder: Arc<Recorder>,
    request_index: Option<usize>,
    model: String,
    pub events_sent: usize,
    finished: bool,
}

impl CancelGuard {
    pub fn new(recorder: Arc<Recorder>, request_index: Option<usize>, model: String) -> Self {
        Self { recorder, request_index, model, events_sent: 0, finished: false }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.recorder.cancel(Cancellation {
                request_index: self.request_index,
                model: std::mem::take(&mut self.model),
                at: Instant::now(),
                events_sent: self.events_sent,
            });
        }
    }
}
