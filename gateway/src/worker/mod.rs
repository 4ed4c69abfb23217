//! BACKGROUND: the worker pool that runs `background: true` responses.
//!
//! `POST /v1/responses` with `background: true` stores the response as `queued` together with its
//! request (`api::background`). Every gateway replica runs [`Workers`]: each worker claims the
//! oldest queued response from the shared store (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
//! replicas never get the same one), runs it through the engine as a stream, and appends every
//! event to the store (so `GET /v1/responses/{id}?stream=true` can replay and follow it) before
//! writing the final Response. While it runs, the worker renews its lease (heartbeat) and polls
//! for a cancel request. A response created with `conversation` joins it (its input, then its
//! output) with that final write, as a foreground one does; until then the conversation does not
//! hold the turn, so the model's context is the conversation as it was before it.
//!
//! Failure policy (retry only when it is clean):
//! - A worker that dies (kill -9, lost host) stops renewing its lease. The reaper of any replica
//!   puts such a response back in the queue (atomically: one replica wins), and whoever claims it
//!   next decides. If the dead attempt already stored events, a re-run would show the client a
//!   second, different stream, so the response is failed (`worker_lost`) with a
//!   `response.failed` event; if it stored nothing (it died waiting for the model's first token)
//!   it runs again, up to `max_attempts` attempts.
//! - SIGTERM ([`Workers::drain`]): stop claiming, let running responses finish within the grace
//!   period, then stop the rest: one that has not streamed anything yet goes back to the queue for
//!   another replica; one that has is failed (`gateway_shutdown`).
//!
//! Layout: `mod.rs` settings, the pool, the claim loop and the reaper; [`job`] one claimed
//! response from start to final status.

mod job;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::Engine;
use crate::store::Store;

/// Background mode settings (`background:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackgroundSettings {
    /// Background responses this replica runs at once; 0 runs none here (other replicas will).
    pub workers: usize,
    /// How long a claim holds without a heartbeat; a worker silent for longer is presumed dead.
    pub lease_secs: f64,
    /// How often a running worker renews its lease; well below `lease_secs`.
    pub heartbeat_secs: f64,
    /// How often an idle worker looks for queued work, a running one checks for a cancel
    /// request, and a resumed stream looks for new events.
    pub poll_interval_ms: u64,
    /// Attempts at one response, counting the first; only attempts that stored no event are
    /// retried (see the module docs).
    pub max_attempts: u32,
    /// How long `POST /v1/responses/{id}/cancel` waits for the worker to stop before answering.
    pub cancel_wait_secs: f64,
    /// A stored stream (`stream: true, store: true`, not background) writes its events in
    /// batches of at most this many ...
    pub event_batch: usize,
    /// ... or once the oldest unwritten event has waited this long (a resumed stream lags the
    /// first client by up to this plus `poll_interval_ms`).
    pub event_flush_ms: u64,
    /// A resumed stream of a non-background response that gets no new event for this long ends
    /// with an `error` event (its gateway probably died mid-stream; nothing will end it).
    pub resume_idle_secs: f64,
}

impl Default for BackgroundSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_secs: 30.0,
            heartbeat_secs: 5.0,
            poll_interval_ms: 200,
            max_attempts: 2,
            cancel_wait_secs: 10.0,
            event_batch: 32,
            event_flush_ms: 50,
            resume_idle_secs: 300.0,
        }
    }
}

impl BackgroundSettings {
    /// Pushes one line per invalid field onto `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.lease_secs) {
            errors
                .push(format!("background.lease_secs: must be positive, got {}", self.lease_secs));
        }
        if !positive(self.heartbeat_secs) || self.heartbeat_secs >= self.lease_secs {
            errors.push(format!(
                "background.heartbeat_secs: must be positive and below lease_secs ({}), got {}",
                self.lease_secs, self.heartbeat_secs
            ));
        }
        if self.poll_interval_ms == 0 {
            errors.push("background.poll_interval_ms: must be at least 1".to_string());
        }
        if self.max_attempts == 0 {
            errors.push("background.max_attempts: must be at least 1".to_string());
        }
        if self.event_batch == 0 {
            errors.push("background.event_batch: must be at least 1".to_string());
        }
        if self.event_flush_ms == 0 {
            errors.push("background.event_flush_ms: must be at least 1".to_string());
        }
        if !positive(self.resume_idle_secs) {
            errors.push(format!(
                "background.resume_idle_secs: must be positive, got {}",
                self.resume_idle_secs
            ));
        }
        if !(self.cancel_wait_secs.is_finite() && self.cancel_wait_secs >= 0.0) {
            errors.push(format!(
                "background.cancel_wait_secs: must be a non-negative number, got {}",
                self.cancel_wait_secs
            ));
        }
    }

    /// How stored streams batch their event writes.
    pub fn event_batching(&self) -> crate::engine::recorder::EventBatching {
        crate::engine::recorder::EventBatching {
            max_events: self.event_batch,
            max_delay: Duration::from_millis(self.event_flush_ms),
        }
    }

    pub fn resume_idle(&self) -> Duration {
        Duration::from_secs_f64(self.resume_idle_secs)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn cancel_wait(&self) -> Duration {
        Duration::from_secs_f64(self.cancel_wait_secs)
    }
}

/// What every worker task shares.
struct Context {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    settings: BackgroundSettings,
    /// `true`: claim nothing more.
    stop: watch::Receiver<bool>,
    /// `true`: the grace period is over; running jobs stop now.
    abort: watch::Receiver<bool>,
}

/// The running pool of one replica. Dropping it stops claiming and aborts running jobs without
/// cleanup (their leases expire and the reaper of another replica takes over): call
/// [`Workers::drain`] for an orderly stop.
pub struct Workers {
    stop: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    /// Locked only by [`Workers::drain`].
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl Workers {
    /// Starts `settings.workers` workers and one reaper on the current tokio runtime (none when
    /// there is no runtime: such an app only queues).
    pub fn start(store: Arc<dyn Store>, engine: Arc<Engine>, settings: BackgroundSettings) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (abort, abort_rx) = watch::channel(false);
        let context = Arc::new(Context { store, engine, settings, stop: stop_rx, abort: abort_rx });
        let mut tasks = JoinSet::new();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("no tokio runtime: background workers not started");
            return Self { stop, abort, tasks: tokio::sync::Mutex::new(tasks) };
        }
        for _ in 0..context.settings.workers {
            tasks.spawn(claim_loop(context.clone(), crate::ids::new_id("worker")));
        }
        if context.settings.workers > 0 {
            tasks.spawn(reap_loop(context.clone()));
        }
        Self { stop, abort, tasks: tokio::sync::Mutex::new(tasks) }
    }

    /// Stops claiming, waits up to `grace` for running responses, then stops the rest (requeued
    /// when they have streamed nothing yet, failed otherwise) and returns once all have been
    /// written.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.lock().await;
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_ok() {
            return;
        }
        tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "background responses still running after the grace period; stopping them"
        );
        let _ = self.abort.send(true);
        // Requeueing or failing takes a few store writes per job.
        let cleanup = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), cleanup).await.is_err() {
            tracing::error!("background workers did not stop; their leases will expire");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.tasks.get_mut().abort_all();
    }
}

async fn claim_loop(context: Arc<Context>, worker: String) {
    let mut stop = context.stop.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        match context.store.claim_queued(&worker, context.settings.lease()).await {
            Ok(Some(claim)) => job::run(&context, &worker, claim).await,
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(context.settings.poll_interval()) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "claiming a background response failed");
                tokio::select! {
                    () = tokio::time::sleep(context.settings.poll_interval() * 5) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Returns responses whose worker stopped renewing its lease to the queue; the next claim
/// decides whether they run again (see the module docs).
async fn reap_loop(context: Arc<Context>) {
    let mut stop = context.stop.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(context.settings.heartbeat()) => {}
            _ = stop.changed() => return,
        }
        let expired = match context.store.expired_leases(32).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "looking for expired background leases failed");
                continue;
            }
        };
        for lease in expired {
            match context.store.requeue(&lease.id, &lease.worker).await {
                Ok(true) => tracing::warn!(
                    response_id = %lease.id,
                    worker = %lease.worker,
                    attempts = lease.attempts,
                    "a background worker stopped renewing its lease; its response is back in the queue"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, response_id = %lease.id, "requeue failed"),
            }
        }
    }
}
