//! One claimed background response, from claim to final status. The engine builds the stream
//! as for any streamed request; this module gives its Response the stored identity (id,
//! `created_at`, `background`, `store`), appends every event to the store before the final
//! status is written, renews the lease and watches for cancel requests and the drain deadline.

use futures::StreamExt;
use serde_json::{Value, json};

use super::Context;
use crate::auth::{Principal, Scopes};
use crate::error::Error;
use crate::openresponses::events::{Sequenced, StreamEvent};
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::{ResponseObject, ResponseStatus};
use crate::store::{Access, Claim, StoredEvent};

/// Events written to the store in one call at most.
const BATCH: usize = 64;

pub(super) async fn run(context: &Context, worker: &str, claim: Claim) {
    use tracing::Instrument;
    let span = tracing::info_span!("background", response_id = %claim.id, attempt = claim.attempts);
    if let Err(error) = run_inner(context, worker, &claim).instrument(span.clone()).await {
        // A store failure mid-way: leave the lease to expire; the reaper of some replica requeues
        // it and the next claim fails it cleanly.
        span.in_scope(|| tracing::error!(%error, "background response stopped on a store error"));
    }
}

async fn run_inner(context: &Context, worker: &str, claim: &Claim) -> Result<(), Error> {
    let store = &context.store;
    let access = Access::owner(&claim.owner);
    let Some(stored) = store.get_response(&access, &claim.id).await? else {
        return Ok(()); // deleted meanwhile
    };
    if claim.attempts > 1 {
        let earlier = store.events_after(&access, &claim.id, None, 1).await?;
        if !earlier.is_empty() || claim.attempts > context.settings.max_attempts {
            return fail(
                context,
                claim,
                stored.response,
                "worker_lost",
                "The gateway worker running this background response stopped before it finished.",
            )
            .await;
        }
    }
    if store.cancel_requested(&claim.id).await? {
        return finish(context, claim, stored.response, ResponseStatus::Cancelled).await;
    }
    let request = match parse_request(&claim.request) {
        Ok(request) => request,
        Err(error) => {
            return fail(context, claim, stored.response, error.code(), &error.to_string()).await;
        }
    };
    let identity = Identity::of(&stored.response);
    let principal = Principal {
        tenant: claim.owner.tenant.clone(),
        user: claim.owner.user.clone(),
        scopes: Scopes::READ_WRITE,
    };
    let mut latest = stored.response;
    let events = match context.engine.create_stream(&principal, request).await {
        Ok(events) => events,
        Err(error) => {
            return fail(context, claim, latest, error.code(), &error.to_string()).await;
        }
    };
    let mut events = std::pin::pin!(events.ready_chunks(BATCH));
    let mut sequence_number = 0u64;
    let mut status: Option<ResponseStatus> = None;
    let mut heartbeat = tokio::time::interval(context.settings.heartbeat());
    heartbeat.tick().await;
    let mut cancel_poll = tokio::time::interval(context.settings.poll_interval());
    cancel_poll.tick().await;
    let mut abort = context.abort.clone();
    loop {
        tokio::select! {
            chunk = events.next() => {
                let Some(chunk) = chunk else { break };
                let mut batch = Vec::with_capacity(chunk.len());
                for mut event in chunk {
                    if let Some(response) = response_of(&mut event) {
                        identity.apply(response);
                        latest = serde_json::to_value(&*response)
                            .map_err(|e| Error::Internal(format!("encoding a response: {e}")))?;
                        status = terminal_status(&event).or(status);
                    }
                    if let StreamEvent::Error { error } = &event {
                        latest["status"] = json!("failed");
                        latest["error"] = json!({"code": error.code.unwrap_or("backend_error"), "message": error.message});
                        status = Some(ResponseStatus::Failed);
                    }
                    let value = serde_json::to_value(Sequenced { event: &event, sequence_number })
                        .map_err(|e| Error::Internal(format!("encoding an event: {e}")))?;
                    batch.push(StoredEvent { sequence_number, event: value });
                    sequence_number += 1;
                }
                store.append_events(&claim.owner, &claim.id, &batch).await?;
            }
            _ = heartbeat.tick() => {
                if !store.heartbeat(&claim.id, worker, context.settings.lease()).await? {
                    // Cancelled while queued, requeued after a stall, or deleted: not ours now.
                    tracing::warn!("lost the lease on a background response; stopping it");
                    return Ok(());
                }
            }
            _ = cancel_poll.tick() => {
                if store.cancel_requested(&claim.id).await? {
                    tracing::info!("background response cancelled");
                    // Dropping the stream drops the backend request: the model stops too.
                    return finish(context, claim, latest, ResponseStatus::Cancelled).await;
                }
            }
            () = async { let _ = abort.wait_for(|a| *a).await; } => {
                if sequence_number == 0 {
                    tracing::info!("shutting down before the model answered; requeueing");
                    let mut queued = latest;
                    queued["status"] = json!("queued");
                    store.update_response(&access, &claim.id, ResponseStatus::Queued, &queued).await?;
                    return Ok(());
                }
                return fail(
                    context,
                    claim,
                    latest,
                    "gateway_shutdown",
                    "The gateway shut down before this background response finished.",
                )
                .await;
            }
        }
    }
    let status = status.unwrap_or(ResponseStatus::Failed);
    if status == ResponseStatus::Failed && latest.get("error").is_none_or(Value::is_null) {
        latest["error"] = json!({"code": "backend_error", "message": "The response stream ended without a final event."});
    }
    latest["status"] = json!(status);
    store.update_response(&access, &claim.id, status, &latest).await?;
    Ok(())
}

/// The request as the engine runs it: streamed, and not stored by the engine (this module
/// writes the stored response itself, under the id the client already has).
fn parse_request(request: &Value) -> Result<CreateResponse, Error> {
    let bytes = serde_json::to_vec(request)
        .map_err(|e| Error::Internal(format!("encoding a stored request: {e}")))?;
    let mut request = CreateResponse::from_json(&bytes)?;
    request.background = false;
    request.stream = true;
    request.store = false;
    Ok(request)
}

/// What the stored Response says about itself, imposed on the engine's snapshots.
struct Identity {
    id: String,
    created_at: i64,
}

impl Identity {
    fn of(response: &Value) -> Self {
        Self {
            id: response["id"].as_str().unwrap_or_default().to_string(),
            created_at: response["created_at"].as_i64().unwrap_or_default(),
        }
    }

    fn apply(&self, response: &mut ResponseObject) {
        response.id.clone_from(&self.id);
        response.created_at = self.created_at;
        response.background = true;
        response.store = true;
    }
}

fn response_of(event: &mut StreamEvent) -> Option<&mut ResponseObject> {
    match event {
        StreamEvent::Created { response }
        | StreamEvent::InProgress { response }
        | StreamEvent::Completed { response }
        | StreamEvent::Incomplete { response }
        | StreamEvent::Failed { response } => Some(response),
        _ => None,
    }
}

fn terminal_status(event: &StreamEvent) -> Option<ResponseStatus> {
    match event {
        StreamEvent::Completed { .. } => Some(ResponseStatus::Completed),
        StreamEvent::Incomplete { .. } => Some(ResponseStatus::Incomplete),
        StreamEvent::Failed { .. } => Some(ResponseStatus::Failed),
        _ => None,
    }
}

/// The sequence number after the last stored event of a response.
async fn next_sequence(context: &Context, claim: &Claim) -> Result<u64, Error> {
    let access = Access::owner(&claim.owner);
    let mut after = None;
    loop {
        let page = context.store.events_after(&access, &claim.id, after, 1000).await?;
        match page.last() {
            Some(last) => after = Some(last.sequence_number),
            None => return Ok(after.map_or(0, |a| a + 1)),
        }
    }
}

/// Ends a response as `failed` with `code`: a `response.failed` event after whatever was
/// streamed (so a follower stops), then the stored status.
async fn fail(
    context: &Context,
    claim: &Claim,
    mut response: Value,
    code: &str,
    message: &str,
) -> Result<(), Error> {
    response["status"] = json!("failed");
    response["error"] = json!({"code": code, "message": message});
    let sequence_number = next_sequence(context, claim).await?;
    let event = json!({
        "type": "response.failed",
        "response": response,
        "sequence_number": sequence_number,
    });
    context
        .store
        .append_events(&claim.owner, &claim.id, &[StoredEvent { sequence_number, event }])
        .await?;
    finish(context, claim, response, ResponseStatus::Failed).await
}

/// Writes the final status (and the Response as it stands).
async fn finish(
    context: &Context,
    claim: &Claim,
    mut response: Value,
    status: ResponseStatus,
) -> Result<(), Error> {
    response["status"] = json!(status);
    let access = Access::owner(&claim.owner);
    context.store.update_response(&access, &claim.id, status, &response).await?;
    Ok(())
}
