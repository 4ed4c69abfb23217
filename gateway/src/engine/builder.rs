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

use serde_json::Value;

use crate::error::Error;
use crate::ids::{new_id, unix_now};
use crate::openresponses::code_interpreter::{
    CallStatus, CodeInterpreterCall, CodeInterpreterEvent, ContainerFileCitation, Naming,
    PYTHON_TOOL_NAME, code_from_arguments,
};
use crate::openresponses::events::{NamedCodeInterpreterEvent, StreamEvent};
use crate::openresponses::request::{CreateResponse, Include, ToolChoice, ToolChoiceMode};
use crate::openresponses::response::{
    CodeInterpreterItem, IncompleteDetails, InputTokensDetails, ItemStatus, LogProb, OutputContent,
    OutputItem, OutputTokensDetails, ResponseError, ResponseObject, ResponseStatus,
    SuppressedToolCall, Usage,
};
use crate::provider::{FinishReason, ModelEvent};
use crate::tools::ContainerFile;

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
    /// How server-side (code_interpreter) items and events are shaped.
    server: ServerTools,
    /// Calls of server-side tools closed this turn, waiting for the engine to run them.
    pending: Vec<ServerCall>,
    /// Files written by tool calls, not yet cited by an answer's text.
    uncited_files: Vec<ContainerFile>,
    /// Usage of the tool loop's earlier turns.
    usage_before: Usage,
}

/// The server-side tools of a request and how their items go on the wire.
struct ServerTools {
    /// Function names the model calls for them (`python`).
    names: Vec<&'static str>,
    naming: Naming,
    include_outputs: bool,
    /// The container new `code_interpreter_call` items name until a call reports its own.
    container_id: String,
}

/// A model's call of a server-side tool, ready to run: the item is announced, its code is
/// done, and it waits for [`ResponseBuilder::interpreting`] and [`ResponseBuilder::complete_call`].
#[derive(Debug, Clone)]
pub struct ServerCall {
    pub output_index: usize,
    /// The output item's id (`ci_...`).
    pub item_id: String,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// How one model turn ended.
#[derive(Debug)]
pub struct TurnEnd {
    /// Server-side calls to run before the next turn (empty: the model answered).
    pub server_calls: Vec<ServerCall>,
    /// Whether the model also called client functions (the response then goes back to the
    /// client once the server calls ran).
    pub client_calls: bool,
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
    /// A call of a server-side tool (a `code_interpreter_call` item, not a `function_call`).
    server: bool,
}

struct ToolPolicy {
    declared: Vec<String>,
    allowed: Option<Vec<String>>,
    none: bool,
    max_tool_calls: Option<u64>,
    parallel: bool,
}

impl ResponseBuilder {
    /// `naming` shapes server-side tool items and events (config `tools.naming`).
    pub fn new(
        response: ResponseObject,
        request: &CreateResponse,
        streaming: bool,
        naming: Naming,
    ) -> Self {
        let names: Vec<&'static str> =
            request.code_interpreter.iter().map(|_| PYTHON_TOOL_NAME).collect();
        let policy = ToolPolicy {
            declared: request
                .tools
                .iter()
                .map(|t| t.name.clone())
                .chain(names.iter().map(|n| n.to_string()))
                .collect(),
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
            server: ServerTools {
                names,
                naming,
                include_outputs: request.include.contains(&Include::CodeInterpreterCallOutputs),
                container_id: String::new(),
            },
            pending: Vec::new(),
            uncited_files: Vec::new(),
            usage_before: Usage::default(),
        }
    }

    /// The container new `code_interpreter_call` items name (the chain's, once known).
    pub fn set_container(&mut self, container_id: &str) {
        self.server.container_id = container_id.to_string();
    }

    /// The response as built so far.
    pub fn response(&self) -> &ResponseObject {
        &self.response
    }

    fn emit_code_interpreter(&mut self, event: CodeInterpreterEvent) {
        let naming = self.server.naming;
        self.emit(StreamEvent::CodeInterpreter(NamedCodeInterpreterEvent { event, naming }));
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
            // A backend may report a turn's usage more than once (running totals): the last
            // report of a turn counts, added to the turns before it.
            ModelEvent::Usage(usage) => {
                let before = self.usage_before;
                self.response.usage = Some(Usage {
                    input_tokens: before.input_tokens + usage.input_tokens,
                    output_tokens: before.output_tokens + usage.output_tokens,
                    total_tokens: before.total_tokens + usage.total_tokens,
                    input_tokens_details: InputTokensDetails {
                        cached_tokens: before.input_tokens_details.cached_tokens
                            + usage.input_tokens_details.cached_tokens,
                        cache_write_tokens: before.input_tokens_details.cache_write_tokens
                            + usage.input_tokens_details.cache_write_tokens,
                    },
                    output_tokens_details: OutputTokensDetails {
                        reasoning_tokens: before.output_tokens_details.reasoning_tokens
                            + usage.output_tokens_details.reasoning_tokens,
                    },
                });
            }
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
        let mut content = part.content();
        if part.kind == PartKind::Text && !self.uncited_files.is_empty() {
            let citations = self.cite_files(&part.text);
            for (annotation_index, annotation) in citations.iter().enumerate() {
                self.emit(StreamEvent::OutputTextAnnotationAdded {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    annotation_index,
                    annotation: annotation.clone(),
                });
            }
            if let OutputContent::OutputText { annotations, .. } = &mut content {
                *annotations = citations;
            }
        }
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
            OutputItem::FunctionCall { .. } | OutputItem::CodeInterpreterCall(_) => {}
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
                    server: false,
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
            if self.server.names.contains(&name.as_str()) {
                // Its code streams as one delta once the arguments are complete: the code is
                // a string inside JSON arguments, which arrive in arbitrary fragments.
                let call = self.tool_calls.get_mut(&index).expect("present");
                call.output_index = Some(output_index);
                call.server = true;
                call.id = new_id("ci");
                let item_id = call.id.clone();
                let item = self.code_interpreter_item(CodeInterpreterCall {
                    id: item_id.clone(),
                    status: CallStatus::InProgress,
                    code: String::new(),
                    container_id: self.server.container_id.clone(),
                    outputs: Vec::new(),
                });
                self.response.output.push(item.clone());
                self.emit(StreamEvent::OutputItemAdded { output_index, item });
                self.emit_code_interpreter(CodeInterpreterEvent::InProgress {
                    output_index,
                    item_id,
                });
                return;
            }
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
        if let (Some(output_index), false, false) =
            (call.output_index, arguments.is_empty(), call.server)
        {
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

    fn code_interpreter_item(&self, call: CodeInterpreterCall) -> OutputItem {
        OutputItem::CodeInterpreterCall(CodeInterpreterItem {
            call,
            naming: self.server.naming,
            include_outputs: self.server.include_outputs,
        })
    }

    fn close_tool_calls(&mut self, status: ItemStatus) {
        let calls = std::mem::take(&mut self.tool_calls);
        for call in calls.into_values() {
            let Some(output_index) = call.output_index else { continue };
            if call.server {
                self.close_server_call(call, output_index, status);
                continue;
            }
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

    /// A server call's arguments are complete: its code goes out (`code.delta`, `code.done`)
    /// and it waits for the engine. A call cut off (`max_output_tokens`) does not run.
    fn close_server_call(&mut self, call: ToolCallState, output_index: usize, status: ItemStatus) {
        let code = code_from_arguments(&call.arguments).unwrap_or_else(|_| call.arguments.clone());
        if let OutputItem::CodeInterpreterCall(item) = &mut self.response.output[output_index] {
            item.call.code.clone_from(&code);
        }
        if !code.is_empty() {
            self.emit_code_interpreter(CodeInterpreterEvent::CodeDelta {
                output_index,
                item_id: call.id.clone(),
                delta: code.clone(),
            });
        }
        self.emit_code_interpreter(CodeInterpreterEvent::CodeDone {
            output_index,
            item_id: call.id.clone(),
            code,
        });
        if status == ItemStatus::Completed {
            self.pending.push(ServerCall {
                output_index,
                item_id: call.id,
                call_id: call.call_id,
                name: call.name.unwrap_or_default(),
                arguments: call.arguments,
            });
        } else {
            self.set_call(output_index, |c| c.status = CallStatus::Incomplete);
            let item = self.response.output[output_index].clone();
            self.emit(StreamEvent::OutputItemDone { output_index, item });
        }
    }

    fn set_call(&mut self, output_index: usize, change: impl FnOnce(&mut CodeInterpreterCall)) {
        if let OutputItem::CodeInterpreterCall(item) = &mut self.response.output[output_index] {
            change(&mut item.call);
        }
    }

    /// Ends one model turn: closes its items and hands back the server calls to run. The
    /// response stays open for the next turn (or [`ResponseBuilder::finish`]).
    pub fn end_turn(&mut self) -> TurnEnd {
        let item_status = match self.finish {
            Some(FinishReason::Length | FinishReason::ContentFilter) => ItemStatus::Incomplete,
            _ => ItemStatus::Completed,
        };
        self.close_open(item_status);
        let client_calls = self.tool_calls.values().any(|c| !c.server && c.output_index.is_some());
        self.close_tool_calls(item_status);
        TurnEnd { server_calls: std::mem::take(&mut self.pending), client_calls }
    }

    /// Starts the next model turn: the previous turn's finish reason no longer applies.
    pub fn next_turn(&mut self) {
        self.finish = None;
        self.usage_before = self.response.usage.unwrap_or_default();
    }

    /// The engine starts running `call`.
    pub fn interpreting(&mut self, call: &ServerCall) {
        self.set_call(call.output_index, |c| c.status = CallStatus::Interpreting);
        self.emit_code_interpreter(CodeInterpreterEvent::Interpreting {
            output_index: call.output_index,
            item_id: call.item_id.clone(),
        });
    }

    /// Whether the request asked for code_interpreter outputs (`include`).
    pub fn includes_outputs(&self) -> bool {
        self.server.include_outputs
    }

    /// Live output of a running call (antwort extension event).
    pub fn call_output(&mut self, call: &ServerCall, stream: &'static str, delta: String) {
        self.emit_code_interpreter(CodeInterpreterEvent::OutputDelta {
            output_index: call.output_index,
            item_id: call.item_id.clone(),
            stream,
            delta,
        });
    }

    /// `call` ran: its item becomes `done` with what the executor reported, and the files it
    /// wrote wait to be cited by the answer.
    pub fn complete_call(
        &mut self,
        call: &ServerCall,
        result: CodeInterpreterCall,
        files: Vec<ContainerFile>,
    ) {
        let output_index = call.output_index;
        if !result.container_id.is_empty() {
            self.server.container_id.clone_from(&result.container_id);
        }
        self.set_call(output_index, |c| *c = result);
        for file in files {
            self.uncited_files.retain(|f| f.file_id != file.file_id);
            self.uncited_files.push(file);
        }
        self.emit_code_interpreter(CodeInterpreterEvent::Completed {
            output_index,
            item_id: call.item_id.clone(),
        });
        let item = self.response.output[output_index].clone();
        self.emit(StreamEvent::OutputItemDone { output_index, item });
    }

    /// The output items from `from` on, as the model's input for its next turn; server calls
    /// carry exactly what their executor told the model (`outputs_for_model`, by item id).
    pub fn turn_input(
        &self,
        from: usize,
        outputs_for_model: &BTreeMap<String, String>,
    ) -> Vec<crate::openresponses::request::InputItem> {
        use crate::openresponses::request::InputItem;
        self.response.output[from..]
            .iter()
            .filter_map(|item| match item {
                OutputItem::CodeInterpreterCall(item) => Some(InputItem::CodeInterpreterCall {
                    id: item.call.id.clone(),
                    code: item.call.code.clone(),
                    container_id: item.call.container_id.clone(),
                    output: outputs_for_model
                        .get(&item.call.id)
                        .cloned()
                        .unwrap_or_else(|| item.call.as_input_output()),
                }),
                other => other.as_input(),
            })
            .collect()
    }

    /// Citations of the files tool calls wrote, for a text part of the answer: each cites the
    /// span where the text names the file, or the end of the text.
    fn cite_files(&mut self, text: &str) -> Vec<Value> {
        let naming = self.server.naming;
        std::mem::take(&mut self.uncited_files)
            .into_iter()
            .map(|file| {
                let filename = file.path.rsplit('/').next().unwrap_or(&file.path).to_string();
                let (start_index, end_index) = match text
                    .find(&file.path)
                    .map(|i| (i, file.path.len()))
                    .or_else(|| text.find(&filename).map(|i| (i, filename.len())))
                {
                    Some((start, len)) => (start, start + len),
                    None => (text.len(), text.len()),
                };
                ContainerFileCitation {
                    container_id: file.container_id,
                    file_id: file.file_id,
                    filename,
                    start_index,
                    end_index,
                }
                .to_json(naming)
            })
            .collect()
    }

    /// The loop stopped at the turn limit with calls still wanted: `incomplete`.
    /// `unrun` are the calls the model made in its last turn, which do not run.
    pub fn finish_at_turn_limit(
        mut self,
        unrun: &[ServerCall],
    ) -> (ResponseObject, Vec<StreamEvent>) {
        self.close_open(ItemStatus::Completed);
        self.close_tool_calls(ItemStatus::Completed);
        for call in unrun.iter().chain(std::mem::take(&mut self.pending).iter()) {
            self.set_call(call.output_index, |c| c.status = CallStatus::Incomplete);
            let item = self.response.output[call.output_index].clone();
            self.emit(StreamEvent::OutputItemDone { output_index: call.output_index, item });
        }
        self.finish = Some(FinishReason::Length);
        self.finish_with(ResponseStatus::Incomplete, Some("max_tool_turns"))
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
        self.finish_with(status, reason)
    }

    fn finish_with(
        mut self,
        status: ResponseStatus,
        reason: Option<&'static str>,
    ) -> (ResponseObject, Vec<StreamEvent>) {
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
                OutputItem::FunctionCall { .. } | OutputItem::CodeInterpreterCall(_) => {}
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
        for i in 0..self.response.output.len() {
            self.set_call(i, |c| {
                if matches!(c.status, CallStatus::InProgress | CallStatus::Interpreting) {
                    c.status = CallStatus::Incomplete;
                }
            });
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
