//! A `stream: true, store: true` response while it streams: stored as `in_progress` when it
//! starts (`response.created`), its events appended in batches as they go, so that
//! `GET /v1/responses/{id}` answers `in_progress` and `GET /v1/responses/{id}?stream=true` can
//! replay and follow it, from any replica, with the sequence numbers the first client saw.
//!
//! Batching ([`EventBatching`]): pending events are written once `max_events` of them wait, or
//! `max_delay` after the oldest one arrived, whichever comes first, and always (the final event
//! included) before the final Response is saved and the final event goes to the client. A batch
//! that fails to write stays pending and is retried with the next one: the client's stream does not
//! wait for the store, only its final event does.
//!
//! A stream that stops before its final write is *abandoned*, and dropping the [`Recorder`] ends
//! the stored response in a detached task (it must outlive the dropped stream):
//! - the client went away (the stream was dropped mid-way): `cancelled`, as OpenAI cancels a
//!   non-background response whose client leaves. The model call stops with the dropped stream;
//!   the record keeps the events written so far and the output items that were finished;
//! - the final write failed (store down): `failed`, and the `error` event the client got takes the
//!   final event's place (and sequence number) in the stored stream when that event could not be
//!   written either (if only the Response write failed, the stored stream keeps its final event
//!   while the record says `failed`).
//!
//! A gateway killed mid-stream leaves its record `in_progress` (nothing runs to end it); resumed
//! streams of such a record stop after `background.resume_idle_secs` without an event.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::Result;
use crate::openresponses::events::{Sequenced, StreamEvent};
use crate::openresponses::response::ResponseStatus;
use crate::store::{Access, NewResponse, Owner, Store, StoredEvent};

/// When a stored stream writes its pending events (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventBatching {
    /// Events per write at most; 1 writes every event at once.
    pub max_events: usize,
    /// How long an event may wait for its batch.
    pub max_delay: Duration,
}

impl Default for EventBatching {
    fn default() -> Self {
        Self { max_events: 32, max_delay: Duration::from_millis(50) }
    }
}

/// How an abandoned stream ends in the store.
enum Abandon {
    Cancelled,
    Failed { code: &'static str, message: String },
}

pub(super) struct Recorder {
    store: Arc<dyn Store>,
    owner: Owner,
    batching: EventBatching,
    /// Set once the response is stored as `in_progress`.
    id: Option<String>,
    /// The Response as the last event carrying it showed it.
    latest: Value,
    /// Output items finished so far (`response.output_item.done`), for an abandoned response.
    done_items: Vec<Value>,
    pending: Vec<StoredEvent>,
    oldest_pending: Option<Instant>,
    next_sequence: u64,
    /// The final status is written (or nothing was ever stored): nothing left to end on drop.
    settled: bool,
    abandon: Abandon,
}

impl Recorder {
    pub(super) fn new(store: Arc<dyn Store>, owner: Owner, batching: EventBatching) -> Self {
        Self {
            store,
            owner,
            batching,
            id: None,
            latest: Value::Null,
            done_items: Vec::new(),
            pending: Vec::new(),
            oldest_pending: None,
            next_sequence: 0,
            settled: false,
            abandon: Abandon::Cancelled,
        }
    }

    /// Stores the response as it starts (`in_progress`, no output yet).
    pub(super) async fn start(&mut self, record: NewResponse) -> Result<()> {
        self.store.save_response(&record).await?;
        self.latest = record.response;
        self.id = Some(record.id);
        Ok(())
    }

    /// Takes the next event of the stream (sequence numbers count every event, as the SSE
    /// writer's do) into the pending batch.
    pub(super) fn record(&mut self, event: &StreamEvent) {
        let sequence_number = self.next_sequence;
        self.next_sequence += 1;
        match event {
            StreamEvent::Created { response }
            | StreamEvent::InProgress { response }
            | StreamEvent::Completed { response }
            | StreamEvent::Incomplete { response }
            | StreamEvent::Failed { response } => {
                if let Ok(value) = serde_json::to_value(response) {
                    self.latest = value;
                }
            }
            StreamEvent::OutputItemDone { item, .. } => {
                if let Ok(value) = serde_json::to_value(item) {
                    self.done_items.push(value);
                }
            }
            _ => {}
        }
        match serde_json::to_value(Sequenced { event, sequence_number }) {
            Ok(value) => {
                self.pending.push(StoredEvent { sequence_number, event: value });
                self.oldest_pending.get_or_insert_with(Instant::now);
            }
            Err(error) => tracing::error!(%error, "encoding a stream event failed"),
        }
    }

    /// When the pending events are due, if any wait.
    pub(super) fn flush_deadline(&self) -> Option<Instant> {
        self.oldest_pending.map(|oldest| oldest + self.batching.max_delay)
    }

    pub(super) fn batch_full(&self) -> bool {
        self.pending.len() >= self.batching.max_events
    }

    /// Writes the pending events. On failure they stay pending for the next try.
    pub(super) async fn flush(&mut self) -> Result<()> {
        let Some(id) = &self.id else { return Ok(()) };
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.append_events(&self.owner, id, &self.pending).await {
            tracing::warn!(%error, response_id = %id, pending = self.pending.len(), "writing stream events failed; retrying with the next batch");
            // The next try is a whole delay away, not at once again.
            self.oldest_pending = Some(Instant::now());
            return Err(error);
        }
        self.pending.clear();
        self.oldest_pending = None;
        Ok(())
    }

    /// The final Response is stored: nothing to do on drop.
    pub(super) fn settle(&mut self) {
        self.settled = true;
    }

    /// The final write failed and the client gets `error_event` in place of the final event:
    /// the stored stream gets it too (when the final event is not stored yet), and the record
    /// ends `failed` when this recorder is dropped.
    pub(super) fn final_write_failed(
        &mut self,
        error_event: &StreamEvent,
        code: &'static str,
        message: String,
    ) {
        let is_final = |e: &StoredEvent| {
            matches!(
                e.event.get("type").and_then(Value::as_str),
                Some("response.completed" | "response.incomplete" | "response.failed")
            )
        };
        if let Some(last) = self.pending.last()
            && is_final(last)
        {
            let sequence_number = last.sequence_number;
            self.pending.pop();
            if let Ok(value) =
                serde_json::to_value(Sequenced { event: error_event, sequence_number })
            {
                self.pending.push(StoredEvent { sequence_number, event: value });
            }
        }
        self.abandon = Abandon::Failed { code, message };
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(response_id = %id, "no runtime to end an abandoned stored stream; it stays in_progress");
            return;
        };
        let (status, error) = match std::mem::replace(&mut self.abandon, Abandon::Cancelled) {
            Abandon::Cancelled => (ResponseStatus::Cancelled, None),
            Abandon::Failed { code, message } => {
                (ResponseStatus::Failed, Some(json!({"code": code, "message": message})))
            }
        };
        let mut response = std::mem::take(&mut self.latest);
        response["status"] = json!(status);
        if let Some(error) = error {
            response["error"] = error;
        }
        let has_output = response["output"].as_array().is_some_and(|o| !o.is_empty());
        if !has_output {
            response["output"] = Value::Array(std::mem::take(&mut self.done_items));
        }
        let ending = Ending {
            store: self.store.clone(),
            owner: self.owner.clone(),
            id,
            pending: std::mem::take(&mut self.pending),
            status,
            response,
        };
        // Deliberately detached: the stream that owned this recorder is gone, and the record
        // must not stay `in_progress` (see the module docs).
        runtime.spawn(ending.run());
    }
}

/// The store writes that end an abandoned stream, retried a few times (the store may be the
/// reason it was abandoned).
struct Ending {
    store: Arc<dyn Store>,
    owner: Owner,
    id: String,
    pending: Vec<StoredEvent>,
    status: ResponseStatus,
    response: Value,
}

impl Ending {
    const ATTEMPTS: u32 = 5;

    async fn run(self) {
        let access = Access::owner(&self.owner);
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=Self::ATTEMPTS {
            let result = async {
                if !self.pending.is_empty() {
                    self.store.append_events(&self.owner, &self.id, &self.pending).await?;
                }
                self.store.update_response(&access, &self.id, self.status, &self.response).await
            }
            .await;
            match result {
                Ok(_) => {
                    tracing::info!(response_id = %self.id, status = self.status.as_str(), "stored stream ended early");
                    return;
                }
                Err(error) if attempt < Self::ATTEMPTS => {
                    tracing::warn!(%error, response_id = %self.id, attempt, "ending an abandoned stored stream failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    tracing::error!(%error, response_id = %self.id, "ending an abandoned stored stream failed; it stays in_progress");
                }
            }
        }
    }
}
