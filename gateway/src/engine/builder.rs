//! Builds a Response from [`ModelEvent`]s, and (when streaming) the exact sequence of
//! OpenResponses events that describes the build.
//!
//! Items open in the order the model starts them and keep that `output_index`. A message or
//! reasoning item closes when something else starts; tool calls stay open until the model
//! finishes, because backends may interleave their argument fragments. The tool-call policy of the
//! request (declared tools, `allowed_tools`, `tool_choice: none`, `max_tool_calls`,
//! `parallel_tool_calls: false`) is enforced here: a call outside it is never emitted, only
//! recorded in `antwort:suppressed_tool_calls`.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::ids::{new_id, unix_now};
use crate::openresponses::events::StreamEvent;
use crate::openresponses::request::{CreateResponse, ToolChoice, ToolChoiceMode};
use crate::openresponses::response::{
    IncompleteDetails, ItemStatus, LogProb, OutputContent, OutputItem, ResponseError,
    ResponseObject, ResponseStatus, SuppressedToolCall, Usage,
};
use crate::provider::{FinishReason, ModelEvent};

pub struct ResponseBuilder {
    response: ResponseObject,
    /// The message or reasoning item being written, if any.
    open: Option<OpenItem>,
    tool_calls: BTreeMap<u32, ToolCallState>,
    policy: ToolPolicy,
    accepted_calls: u64,
    finish: Option<FinishReason>,
    /// `None` when the client did not ask for a stream: no events are built at all.
    events: Option<Vec<StreamEvent>>,
}

struct OpenItem {
    output_index: usize,
    id: String,
    kind: OpenKind,
    /// Index and text of the content part being written.
    part_index: usize,
    part: Option<OpenPart>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenKind {
    Message,
    Reasoning,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
    Reasoning,
}

struct OpenPart {
    kind: PartKind,
    text: String,
    logprobs: Vec<LogProb>,
}

struct ToolCallState {
    id: String,
    call_id: String,
    name: Option<String>,
    arguments: String,
    /// Where the call sits in `output`; `None` while undecided or when suppressed.
    output_index: Option<usize>,
    suppressed: bool,
}

struct ToolPolicy {
    declared: Vec<String>,
    allowed: Option<Vec<String>>,
    none: bool,
    max_tool_calls: Option<u64>,
    parallel: bool,
}

impl ResponseBuilder {
    pub fn new(response: ResponseObject, request: &CreateResponse, streaming: bool) -> Self {
        let policy = ToolPolicy {
            declared: request.tools.iter().map(|t| t.name.clone()).collect(),
            allowed: match &request.tool_choice {
                ToolChoice::AllowedTools { names, .. } => Some(names.clone()),
                _ => None,
            },
            none: matches!(
                request.tool_choice,
                ToolChoice::Mode(ToolChoiceMode::None)
                    | ToolChoice::AllowedTools { mode: ToolChoiceMode::None, .. }
            ),
            max_tool_calls: request.max_tool_calls,
            parallel: request.parallel_tool_calls.unwrap_or(true),
        };
        Self {
            response,
            open: None,
            tool_calls: BTreeMap::new(),
            policy,
            accepted_calls: 0,
            finish: None,
            events: streaming.then(Vec::new),
        }
    }

    /// `response.created` and `response.in_progress`: the response now exists for the client.
    pub fn start(&mut self) {
        if self.events.is_some() {
            let snapshot = self.response.clone();
            self.emit(StreamEvent::Created { response: snapshot.clone() });
            self.emit(StreamEvent::InProgress { response: snapshot });
        }
    }

    /// Events built since the last call, in order.
    pub fn take_events(&mut self) -> Vec<StreamEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn emit(&mut self, event: StreamEvent) {
        if let Some(events) = &mut self.events {
            events.push(event);
        }
    }

    pub fn apply(&mut self, event: ModelEvent) {
        match event {
            ModelEvent::ReasoningDelta(delta) => {
                self.delta(OpenKind::Reasoning, PartKind::Reasoning, delta, Vec::new())
            }
            ModelEvent::TextDelta { text, logprobs } => {
                self.delta(OpenKind::Message, PartKind::Text, text, logprobs)
            }
            ModelEvent::RefusalDelta(delta) => {
                self.delta(OpenKind::Message, PartKind::Refusal, delta, Vec::new())
            }
            ModelEvent::ToolCallDelta { index, id, name, arguments } => {
                self.tool_call_delta(index, id, name, arguments)
            }
            ModelEvent::Finish(reason) => self.finish = Some(reason),
            ModelEvent::Usage(usage) => self.response.usage = Some(usage),
        }
    }

    fn delta(
        &mut self,
        kind: OpenKind,
        part_kind: PartKind,
        delta: String,
        logprobs: Vec<LogProb>,
    ) {
        if self.open.as_ref().is_some_and(|o| o.kind != kind) {
            self.close_open(ItemStatus::Completed);
        }
        if self.open.is_none() {
            self.open_item(kind);
        }
        if self.open.as_ref().and_then(|o| o.part.as_ref()).is_some_and(|p| p.kind != part_kind) {
            self.close_part();
            if let Some(open) = &mut self.open {
                open.part_index += 1;
            }
        }
        let streaming = self.events.is_some();
        let open = self.open.as_mut().expect("opened above");
        let (item_id, output_index, content_index) =
            (open.id.clone(), open.output_index, open.part_index);
        let starting = open.part.is_none();
        if starting {
            open.part =
                Some(OpenPart { kind: part_kind, text: String::new(), logprobs: Vec::new() });
            let part = empty_part(part_kind);
            self.emit(StreamEvent::ContentPartAdded {
                item_id: item_id.clone(),
                output_index,
                content_index,
                part,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        let part = open.part.as_mut().expect("started above");
        part.text.push_str(&delta);
        if streaming {
            part.logprobs.extend(logprobs.iter().cloned());
        } else {
            part.logprobs.extend(logprobs);
            return;
        }
        let event = match part_kind {
            PartKind::Text => StreamEvent::OutputTextDelta {
                item_id,
                output_index,
                content_index,
                delta,
                logprobs,
            },
            PartKind::Refusal => {
                StreamEvent::RefusalDelta { item_id, output_index, content_index, delta }
            }
            PartKind::Reasoning => {
                StreamEvent::ReasoningDelta { item_id, output_index, content_index, delta }
            }
        };
        self.emit(event);
    }

    fn open_item(&mut self, kind: OpenKind) {
        let output_index = self.response.output.len();
        let (id, item) = match kind {
            OpenKind::Message => {
                let id = new_id("msg");
                let item = OutputItem::Message {
                    id: id.clone(),
                    status: ItemStatus::InProgress,
                    role: "assistant",
                    content: Vec::new(),
                };
                (id, item)
            }
            OpenKind::Reasoning => {
                let id = new_id("rs");
                (id.clone(), OutputItem::Reasoning { id, summary: Vec::new(), content: Vec::new() })
            }
        };
        self.response.output.push(item.clone());
        self.emit(StreamEvent::OutputItemAdded { output_index, item });
        self.open = Some(OpenItem { output_index, id, kind, part_index: 0, part: None });
    }

    /// Finishes the current content part: its `.done` events, and the part lands in the item.
    fn close_part(&mut self) {
        let Some(open) = self.open.as_mut() else { return };
        let Some(part) = open.part.take() else { return };
        let (item_id, output_index, content_index) =
            (open.id.clone(), open.output_index, open.part_index);
        let content = part.content();
        if self.events.is_some() {
            let done = match part.kind {
                PartKind::Text => StreamEvent::OutputTextDone {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    text: part.text,
                    logprobs: part.logprobs,
                },
                PartKind::Refusal => StreamEvent::RefusalDone {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    refusal: part.text,
                },
                PartKind::Reasoning => StreamEvent::ReasoningDone {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    text: part.text,
                },
            };
            self.emit(done);
            self.emit(StreamEvent::ContentPartDone {
                item_id,
                output_index,
                content_index,
                part: content.clone(),
            });
        }
        match &mut self.response.output[output_index] {
            OutputItem::Message { content: parts, .. }
            | OutputItem::Reasoning { content: parts, .. } => parts.push(content),
            OutputItem::FunctionCall { .. } => {}
        }
    }

    fn close_open(&mut self, status: ItemStatus) {
        self.close_part();
        let Some(open) = self.open.take() else { return };
        let item = &mut self.response.output[open.output_index];
        if let OutputItem::Message { status: s, .. } = item {
            *s = status;
        }
        let item = item.clone();
        self.emit(StreamEvent::OutputItemDone { output_index: open.output_index, item });
    }

    fn tool_call_delta(
        &mut self,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    ) {
        if !self.tool_calls.contains_key(&index) {
            // A tool call ends whatever text came before it.
            self.close_open(ItemStatus::Completed);
            self.tool_calls.insert(
                index,
                ToolCallState {
                    id: new_id("fc"),
                    call_id: id.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| new_id("call")),
                    name: None,
                    arguments: String::new(),
                    output_index: None,
                    suppressed: false,
                },
            );
        }
        let call = self.tool_calls.get_mut(&index).expect("inserted above");
        call.arguments.push_str(&arguments);
        if call.name.is_none() && call.output_index.is_none() && !call.suppressed {
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                // The name has not arrived yet; keep collecting arguments until it does.
                return;
            };
            call.name = Some(name.clone());
            if let Some(reason) = self.policy_violation(&name) {
                let call = self.tool_calls.get_mut(&index).expect("present");
                call.suppressed = true;
                let suppressed = SuppressedToolCall {
                    call_id: call.call_id.clone(),
                    name: name.clone(),
                    reason,
                };
                tracing::warn!(tool = %name, reason, "suppressed a tool call outside the request's tool policy");
                self.response.suppressed_tool_calls.push(suppressed);
                return;
            }
            self.accepted_calls += 1;
            let output_index = self.response.output.len();
            let call = self.tool_calls.get_mut(&index).expect("present");
            call.output_index = Some(output_index);
            let item = OutputItem::FunctionCall {
                id: call.id.clone(),
                call_id: call.call_id.clone(),
                name,
                arguments: String::new(),
                status: ItemStatus::InProgress,
            };
            let (item_id, pending) = (call.id.clone(), call.arguments.clone());
            self.response.output.push(item.clone());
            self.emit(StreamEvent::OutputItemAdded { output_index, item });
            if !pending.is_empty() {
                self.emit(StreamEvent::FunctionCallArgumentsDelta {
                    item_id,
                    output_index,
                    delta: pending,
                });
            }
            return;
        }
        if let (Some(output_index), false) = (call.output_index, arguments.is_empty()) {
            let item_id = call.id.clone();
            self.emit(StreamEvent::FunctionCallArgumentsDelta {
                item_id,
                output_index,
                delta: arguments,
            });
        }
    }

    fn policy_violation(&self, name: &str) -> Option<&'static str> {
        if !self.policy.declared.iter().any(|d| d == name) {
            return Some("unknown_tool");
        }
        if self.policy.none {
            return Some("tool_choice_none");
        }
        if let Some(allowed) = &self.policy.allowed
            && !allowed.iter().any(|a| a == name)
        {
            return Some("not_in_allowed_tools");
        }
        if self.policy.max_tool_calls.is_some_and(|max| self.accepted_calls >= max) {
            return Some("max_tool_calls");
        }
        if !self.policy.parallel && self.accepted_calls >= 1 {
            return Some("parallel_tool_calls_disabled");
        }
        None
    }

    fn close_tool_calls(&mut self, status: ItemStatus) {
        let calls = std::mem::take(&mut self.tool_calls);
        for call in calls.into_values() {
            let Some(output_index) = call.output_index else { continue };
            if let OutputItem::FunctionCall { arguments, status: s, .. } =
                &mut self.response.output[output_index]
            {
                arguments.clone_from(&call.arguments);
                *s = status;
            }
            let item = self.response.output[output_index].clone();
            self.emit(StreamEvent::FunctionCallArgumentsDone {
                item_id: call.id,
                output_index,
                arguments: call.arguments,
            });
            self.emit(StreamEvent::OutputItemDone { output_index, item });
        }
    }

    /// The model is done: closes every item and sets the final status. Returns the response and,
    /// when streaming, the terminal `response.completed` / `response.incomplete` event is the last
    /// of the pending events.
    pub fn finish(mut self) -> (ResponseObject, Vec<StreamEvent>) {
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        let item_status = match finish {
            FinishReason::Length | FinishReason::ContentFilter => ItemStatus::Incomplete,
            _ => ItemStatus::Completed,
        };
        self.close_open(item_status);
        self.close_tool_calls(item_status);
        let (status, reason) = match finish {
            FinishReason::Length => (ResponseStatus::Incomplete, Some("max_output_tokens")),
            FinishReason::ContentFilter => (ResponseStatus::Incomplete, Some("content_filter")),
            _ => (ResponseStatus::Completed, None),
        };
        self.response.status = status;
        self.response.incomplete_details = reason.map(|reason| IncompleteDetails { reason });
        self.response.completed_at = (status == ResponseStatus::Completed).then(unix_now);
        if self.response.usage.is_none() {
            self.response.usage = Some(Usage::default());
        }
        if self.events.is_some() {
            let response = self.response.clone();
            self.emit(match status {
                ResponseStatus::Completed => StreamEvent::Completed { response },
                _ => StreamEvent::Incomplete { response },
            });
        }
        let events = self.take_events();
        (self.response, events)
    }

    /// The backend failed after the response existed: `response.failed` with the error.
    pub fn fail(mut self, error: &Error) -> (ResponseObject, Vec<StreamEvent>) {
        // Items cut off mid-way stay in the output, marked incomplete; no further item events.
        if let Some(open) = self.open.take()
            && let Some(part) = open.part.as_ref().map(OpenPart::content)
        {
            match &mut self.response.output[open.output_index] {
                OutputItem::Message { content, status, .. } => {
                    content.push(part);
                    *status = ItemStatus::Incomplete;
                }
                OutputItem::Reasoning { content, .. } => content.push(part),
                OutputItem::FunctionCall { .. } => {}
            }
        }
        for call in std::mem::take(&mut self.tool_calls).into_values() {
            if let Some(i) = call.output_index
                && let OutputItem::FunctionCall { arguments, status, .. } =
                    &mut self.response.output[i]
            {
                *arguments = call.arguments;
                *status = ItemStatus::Incomplete;
            }
        }
        self.response.status = ResponseStatus::Failed;
        self.response.error =
            Some(ResponseError { code: error.code(), message: error.to_string() });
        if self.events.is_some() {
            let response = self.response.clone();
            self.emit(StreamEvent::Failed { response });
        }
        let events = self.take_events();
        (self.response, events)
    }
}

impl OpenPart {
    /// The part as it stands in the item's `content`.
    fn content(&self) -> OutputContent {
        match self.kind {
            PartKind::Text => OutputContent::OutputText {
                text: self.text.clone(),
                annotations: Vec::new(),
                logprobs: self.logprobs.clone(),
            },
            PartKind::Refusal => OutputContent::Refusal { refusal: self.text.clone() },
            PartKind::Reasoning => OutputContent::ReasoningText { text: self.text.clone() },
        }
    }
}

fn empty_part(kind: PartKind) -> OutputContent {
    match kind {
        PartKind::Text => OutputContent::OutputText {
            text: String::new(),
            annotations: Vec::new(),
            logprobs: Vec::new(),
        },
        PartKind::Refusal => OutputContent::Refusal { refusal: String::new() },
        PartKind::Reasoning => OutputContent::ReasoningText { text: String::new() },
    }
}
