//! The streaming side: renders a reply as SSE events (`data: {chunk}\n\n` ... `data: [DONE]`)
//! into one buffer, then [`SseBody`] sends them with the scripted delays and failures.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use crate::record::CancelGuard;
use crate::reply::Reply;
use crate::script::{Failure, ToolCallLayout};
use crate::wire::{
    Chunk, ChunkChoice, Delta, DeltaFunction, DeltaToolCall, Logprobs, TokenLogprob,
};

/// All events of one stream in one buffer; `ends[i]` is where event `i` ends.
pub(crate) struct Events {
    bytes: Bytes,
    ends: Vec<usize>,
}

/// What the `Garbled` failure sends: an SSE data line that is not JSON.
const GARBLED: &[u8] = b"data: {\"id\": \"garbled\", \"choices\": [{\"delta\": \n\n";

pub(crate) fn render(reply: &Reply<'_>, include_usage: bool) -> Events {
    let mut buf = Vec::with_capacity(512);
    let mut ends = Vec::new();
    let mut push = |choices: &[ChunkChoice<'_>], usage| {
        let chunk = Chunk {
            id: &reply.id,
            object: "chat.completion.chunk",
            created: reply.created,
            model: reply.model,
            choices,
            usage,
        };
        buf.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut buf, &chunk).expect("serializing plain structs cannot fail");
        buf.extend_from_slice(b"\n\n");
        ends.push(buf.len());
    };
    let delta = |delta| [ChunkChoice { index: 0, delta, logprobs: None, finish_reason: None }];

    push(&delta(Delta { role: Some("assistant"), content: Some(""), ..Delta::default() }), None);
    if let Some(reasoning) = &reply.reasoning {
        for text in &reasoning.chunks {
            push(&delta(Delta::reasoning(reply.reasoning_field, text)), None);
        }
    }
    if let Some(content) = &reply.content {
        for text in &content.chunks {
            let logprobs = reply
                .top_logprobs
                .map(|top| Logprobs { content: vec![TokenLogprob::new(text, top)] });
            let choice = ChunkChoice {
                index: 0,
                delta: Delta { content: Some(text), ..Delta::default() },
                logprobs,
                finish_reason: None,
            };
            push(&[choice], None);
        }
    }
    for call in tool_call_deltas(reply) {
        push(&delta(Delta { tool_calls: Some([call]), ..Delta::default() }), None);
    }
    let finish = ChunkChoice {
        index: 0,
        delta: Delta::default(),
        logprobs: None,
        finish_reason: Some(reply.finish_reason),
    };
    push(&[finish], None);
    if include_usage {
        push(&[], Some(reply.usage));
    }
    buf.extend_from_slice(b"data: [DONE]\n\n");
    ends.push(buf.len());
    Events { bytes: Bytes::from(buf), ends }
}

/// The OpenAI split: a call's first delta has `id`, `type`, `name` and empty arguments; the
/// next ones carry argument fragments, all keyed by `index`.
fn tool_call_deltas<'a>(reply: &'a Reply<'a>) -> Vec<DeltaToolCall<'a>> {
    let per_call: Vec<Vec<DeltaToolCall<'a>>> = reply
        .tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let first = DeltaToolCall {
                index,
                id: Some(&call.id),
                kind: Some("function"),
                function: DeltaFunction { name: Some(call.name), arguments: "" },
            };
            let rest = call.fragments.iter().map(move |fragment| DeltaToolCall {
                index,
                id: None,
                kind: None,
                function: DeltaFunction { name: None, arguments: fragment },
            });
            std::iter::once(first).chain(rest).collect()
        })
        .collect();
    match reply.tool_call_layout {
        ToolCallLayout::Sequential => per_call.into_iter().flatten().collect(),
        ToolCallLayout::Interleaved => {
            let longest = per_call.iter().map(Vec::len).max().unwrap_or(0);
            let mut iters: Vec<_> = per_call.into_iter().map(Vec::into_iter).collect();
            let mut out = Vec::new();
            for _ in 0..longest {
                out.extend(iters.iter_mut().filter_map(Iterator::next));
            }
            out
        }
    }
}

impl Events {
    /// Keeps the first `after` events (never `[DONE]`), then sends `error` as an event and
    /// `[DONE]`.
    pub fn end_with_error(self, after: usize, error: &[u8]) -> Self {
        let keep = after.min(self.ends.len() - 1);
        let kept = if keep == 0 { 0 } else { self.ends[keep - 1] };
        let mut buf = Vec::with_capacity(kept + error.len() + 32);
        buf.extend_from_slice(&self.bytes[..kept]);
        let mut ends = self.ends[..keep].to_vec();
        for event in [error, b"[DONE]".as_slice()] {
            buf.extend_from_slice(b"data: ");
            buf.extend_from_slice(event);
            buf.extend_from_slice(b"\n\n");
            ends.push(buf.len());
        }
        Self { bytes: Bytes::from(buf), ends }
    }
}

/// A failure that happens once `at` events have been sent.
#[derive(Clone, Copy)]
pub(crate) struct MidStream {
    at: usize,
    kind: MidStreamKind,
}

#[derive(Clone, Copy, PartialEq)]
enum MidStreamKind {
    Garbled,
    Stall,
    Disconnect,
}

impl MidStream {
    /// The mid-stream part of a failure, clamped so it happens before `[DONE]`.
    pub fn from_failure(failure: &Failure, events: &Events) -> Option<Self> {
        let (after, kind) = match failure {
            Failure::Garbled { after_chunks } => (*after_chunks, MidStreamKind::Garbled),
            Failure::Stall { after_chunks } => (*after_chunks, MidStreamKind::Stall),
            Failure::Disconnect { after_chunks } => (*after_chunks, MidStreamKind::Disconnect),
            Failure::Http(_) | Failure::Hangup | Failure::StreamError { .. } => return None,
        };
        Some(Self { at: after.min(events.ends.len() - 1), kind })
    }
}

/// Sends [`Events`] with `delay` between events. Without a delay, everything up to the next
/// failure point goes in one write.
pub(crate) struct SseBody {
    events: Events,
    next: usize,
    delay: Duration,
    /// Reused between events (`reset`) rather than allocated per event.
    sleep: Option<Pin<Box<Sleep>>>,
    slept: bool,
    failure: Option<MidStream>,
    /// A disconnect waits one poll so the events before it reach the client.
    flushed: bool,
    guard: CancelGuard,
}

impl SseBody {
    pub fn new(
        events: Events,
        delay: Duration,
        failure: Option<MidStream>,
        guard: CancelGuard,
    ) -> Self {
        Self { events, next: 0, delay, sleep: None, slept: false, failure, flushed: false, guard }
    }

    fn start_of(&self, event: usize) -> usize {
        if event == 0 { 0 } else { self.events.ends[event - 1] }
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(failure) = this.failure.filter(|failure| failure.at == this.next) {
            match failure.kind {
                MidStreamKind::Garbled => {
                    this.failure = None;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(GARBLED)))));
                }
                // Never woken: only the client going away ends this body.
                MidStreamKind::Stall => return Poll::Pending,
                MidStreamKind::Disconnect if !this.flushed => {
                    // hyper flushes what it holds when the body is pending; erroring right
                    // away would drop the events sent so far along with the connection.
                    this.flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                MidStreamKind::Disconnect => {
                    // Our choice, not the client's: not a cancellation.
                    this.guard.finish();
                    return Poll::Ready(Some(Err(std::io::Error::other("scripted disconnect"))));
                }
            }
        }
        let total = this.events.ends.len();
        if this.next >= total {
            return Poll::Ready(None);
        }
        let last = if this.delay.is_zero() {
            this.failure.map_or(total, |failure| failure.at)
        } else {
            if this.next > 0 && !this.slept {
                let delay = this.delay;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                sleep.as_mut().reset(tokio::time::Instant::now() + delay);
                this.slept = true;
            }
            this.next + 1
        };
        let data = this.events.bytes.slice(this.start_of(this.next)..this.start_of(last));
        this.next = last;
        this.slept = false;
        this.guard.events_sent = last;
        if last == total {
            this.guard.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.events.ends.len() && self.failure.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
