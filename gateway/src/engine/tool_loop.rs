//! The agentic loop of one response: call the model, run the server-side tool calls it made,
//! feed their outputs back, and repeat until the model answers without server-side calls, a
//! client function call must go back to the client, or the turn limit is hit.
//!
//! Everything a turn produces goes through the one [`ResponseBuilder`], so a streamed response
//! is one lifecycle with one sequence over all turns, and usage is summed. Tool failures are
//! outputs the model reads, never request errors. The loop is a future: dropping it (client
//! gone, response cancelled) drops the model request and the running tool calls, whose
//! executors interrupt the sandbox execution on drop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Engine;
use super::builder::{ResponseBuilder, ServerCall};
use crate::error::Result;
use crate::openresponses::code_interpreter::{ContainerParam, Naming};
use crate::openresponses::events::StreamEvent;
use crate::openresponses::request::{CreateResponse, InputItem};
use crate::provider::{ModelStream, Route};
use crate::tools::code_interpreter::CodeInterpreter;
use crate::tools::{ContainerBinding, Owner, ToolCall, ToolContext, ToolExecutor, ToolItem};

/// The server-side tools this gateway runs, and the loop's limits (config `tools`).
#[derive(Clone)]
pub struct ServerTools {
    pub code_interpreter: Option<Arc<CodeInterpreter>>,
    /// Model calls per response; a model still calling tools after this many is `incomplete`.
    pub max_turns: u32,
}

impl Default for ServerTools {
    fn default() -> Self {
        Self { code_interpreter: None, max_turns: 10 }
    }
}

impl ServerTools {
    /// How code_interpreter items and events are named on the wire.
    pub fn naming(&self) -> Naming {
        self.code_interpreter.as_ref().map(|ci| ci.naming()).unwrap_or_default()
    }
}

/// How the loop ended (failures are the `Err` of [`run`]).
pub enum LoopEnd {
    /// The model answered, or handed client function calls back.
    Answered,
    /// `max_turns` model calls and the model still wanted these tools run.
    TurnLimit(Vec<ServerCall>),
}

/// Where a streamed loop's events go as they are built (`None`: not streaming).
pub type EventSink = Option<tokio::sync::mpsc::UnboundedSender<StreamEvent>>;

/// Runs the turns of one response, starting from `first` (the first model call, already
/// accepted by the backend). `started` tells the caller whether `response.created` went out,
/// which decides how a failure is reported.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    route: &Route,
    mut request: CreateResponse,
    builder: &mut ResponseBuilder,
    first: ModelStream,
    owner: &Owner,
    sink: &EventSink,
    started: &mut bool,
) -> Result<LoopEnd> {
    let started_at = Instant::now();
    let mut binding = container_binding(&request);
    if let ContainerBinding::Auto { current: Some(id) } | ContainerBinding::Explicit(id) = &binding
    {
        builder.set_container(id);
    }
    // Cancelled when this future is dropped, so executors stop their sandbox work.
    let cancel = CancellationToken::new();
    let _cancel_on_drop = cancel.clone().drop_guard();
    // What every call of this response shares; each call adds its container.
    let shared = ToolContext {
        owner: owner.clone(),
        container: binding.clone(),
        cancel: cancel.clone(),
        progress: None,
        memory_limit: memory_limit(&request),
    };
    let mut model = first;
    let mut turn = 1u32;
    loop {
        let turn_start = builder.response().output.len();
        while let Some(batch) = model.next().await {
            let batch = batch?;
            if !*started {
                *started = true;
                engine
                    .metrics
                    .time_to_first_token
                    .with_label_values(&[&request.model])
                    .observe(started_at.elapsed().as_secs_f64());
                builder.start();
            }
            for event in batch {
                builder.apply(event);
            }
            send_events(builder, sink);
        }
        if !*started {
            *started = true;
            builder.start();
        }
        let end = builder.end_turn();
        send_events(builder, sink);
        if end.server_calls.is_empty() || end.client_calls {
            // Client calls go back now; server calls made beside them still run, so the
            // client sees their results with the function calls.
            if !end.server_calls.is_empty() {
                run_calls(engine, builder, &end.server_calls, &shared, &mut binding, sink).await;
                send_events(builder, sink);
            }
            return Ok(LoopEnd::Answered);
        }
        if turn >= engine.tools.max_turns {
            return Ok(LoopEnd::TurnLimit(end.server_calls));
        }
        let outputs =
            run_calls(engine, builder, &end.server_calls, &shared, &mut binding, sink).await;
        send_events(builder, sink);
        request.input.extend(builder.turn_input(turn_start, &outputs));
        builder.next_turn();
        turn += 1;
        model = route
            .provider
            .start(&request, &route.upstream_model, sink.is_some())
            .instrument(super::backend_span(route))
            .await?;
    }
}

/// Runs one turn's server calls, in parallel (the request's `parallel_tool_calls: false` already
/// let at most one through). A new `auto` container is made by the first call alone, so the
/// others share it. Returns what each call told the model, by item id.
async fn run_calls(
    engine: &Engine,
    builder: &mut ResponseBuilder,
    calls: &[ServerCall],
    shared: &ToolContext,
    binding: &mut ContainerBinding,
    sink: &EventSink,
) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let Some(executor) = engine.tools.code_interpreter.clone() else {
        // The request parser refuses code_interpreter without an executor; nothing to run.
        return outputs;
    };
    for call in calls {
        builder.interpreting(call);
    }
    send_events(builder, sink);
    // Live output only where someone reads it and asked for outputs at all.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = (sink.is_some() && executor.stream_output() && builder.includes_outputs())
        .then_some(progress_tx);
    let shared = ToolContext { progress, ..shared.clone() };
    let mut live = LiveOutput { progress: &mut progress_rx, builder, calls, sink };
    let mut rest = calls;
    if matches!(binding, ContainerBinding::Auto { current: None })
        && let Some((first, others)) = calls.split_first()
    {
        let outcome = live.forward(execute(&executor, &shared, binding, first)).await;
        if let Some(id) = &outcome.container_id {
            *binding = ContainerBinding::Auto { current: Some(id.clone()) };
        }
        finish_call(engine, live.builder, first, outcome, &mut outputs);
        send_events(live.builder, sink);
        rest = others;
    }
    let outcomes = live
        .forward(futures::future::join_all(
            rest.iter().map(|call| execute(&executor, &shared, binding, call)),
        ))
        .await;
    live.drain();
    for (call, outcome) in rest.iter().zip(outcomes) {
        finish_call(engine, live.builder, call, outcome, &mut outputs);
    }
    outputs
}

/// Forwards the live output of running calls to the client as the calls produce it.
struct LiveOutput<'a> {
    progress: &'a mut tokio::sync::mpsc::UnboundedReceiver<crate::tools::ToolProgress>,
    builder: &'a mut ResponseBuilder,
    calls: &'a [ServerCall],
    sink: &'a EventSink,
}

impl LiveOutput<'_> {
    /// Awaits `work`, emitting output events meanwhile. With live output off, the channel is
    /// closed and this is just `work.await`.
    async fn forward<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                Some(piece) = self.progress.recv() => self.emit(piece),
            }
        }
    }

    /// Output that arrived after the last call finished but before we looked.
    fn drain(&mut self) {
        while let Ok(piece) = self.progress.try_recv() {
            self.emit(piece);
        }
    }

    fn emit(&mut self, piece: crate::tools::ToolProgress) {
        if let Some(call) = self.calls.iter().find(|call| call.item_id == piece.item_id) {
            self.builder.call_output(call, piece.stream, piece.text);
            send_events(self.builder, self.sink);
        }
    }
}

fn send_events(builder: &mut ResponseBuilder, sink: &EventSink) {
    if let Some(sink) = sink {
        for event in builder.take_events() {
            // The receiver only goes away with the loop itself.
            let _ = sink.send(event);
        }
    }
}

async fn execute(
    executor: &CodeInterpreter,
    shared: &ToolContext,
    binding: &ContainerBinding,
    call: &ServerCall,
) -> crate::tools::ToolOutcome {
    let ctx = ToolContext { container: binding.clone(), ..shared.clone() };
    let tool_call = ToolCall {
        call_id: call.call_id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    };
    executor.execute(&ctx, &tool_call, &call.item_id).await
}

fn finish_call(
    engine: &Engine,
    builder: &mut ResponseBuilder,
    call: &ServerCall,
    outcome: crate::tools::ToolOutcome,
    outputs: &mut BTreeMap<String, String>,
) {
    let result = match outcome.failure.as_ref() {
        Some(failure) => failure.code(),
        None => "ok",
    };
    engine.metrics.tool_calls.with_label_values(&[call.name.as_str(), result]).inc();
    outputs.insert(call.item_id.clone(), outcome.output_for_model);
    match outcome.item {
        ToolItem::CodeInterpreter(item) => builder.complete_call(call, item, outcome.files),
    }
}

/// The `memory_limit` an `auto` container of this request asks for (picks its pool).
fn memory_limit(request: &CreateResponse) -> Option<String> {
    match request.code_interpreter.as_ref().map(|t| &t.container) {
        Some(ContainerParam::Auto { memory_limit: Some(limit), .. }) => {
            Some(limit.as_str().to_string())
        }
        _ => None,
    }
}

/// The container the request's code_interpreter calls start in: the one it names, or (`auto`)
/// the one the latest call of its context ran in, so a chain keeps its variables and files.
fn container_binding(request: &CreateResponse) -> ContainerBinding {
    match request.code_interpreter.as_ref().map(|t| &t.container) {
        Some(ContainerParam::Id(id)) => ContainerBinding::Explicit(id.clone()),
        _ => ContainerBinding::Auto {
            current: request.input.iter().rev().find_map(|item| match item {
                InputItem::CodeInterpreterCall { container_id, .. } if !container_id.is_empty() => {
                    Some(container_id.clone())
                }
                _ => None,
            }),
        },
    }
}
