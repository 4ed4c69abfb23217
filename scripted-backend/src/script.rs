//! What a reply should look like: [`Script`] (one or more [`Turn`]s), built in code or read
//! from JSON/YAML ([`ScriptFile`], the `SCRIPT:` directive).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// Characters per streamed delta when a turn does not say otherwise.
pub const DEFAULT_CHUNK_CHARS: usize = 4;

/// The scripted replies for a sequence of requests: one [`Turn`] per request, in order.
///
/// Builder methods (`reasoning`, `ttft`, `fail_first`, ...) configure the *last* turn, so
/// `Script::text("a").ttft(d)` reads naturally and `Script::turns(..)` keeps each turn as built.
/// In a file a script is either one turn object or `{"turns": [turn, ...]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Script {
    pub turns: Vec<Turn>,
}

/// One reply. Every field is optional; an empty turn is the echo reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Turn {
    /// The assistant text. `None` with no tool calls means "echo the last user message";
    /// `None` with tool calls means `content: null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Text>,
    /// Reasoning text, sent before the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Text>,
    /// Which field carries reasoning: vLLM's `reasoning_content` or newer vLLM's `reasoning`.
    pub reasoning_field: ReasoningField,
    /// Tool calls; several are parallel calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// How parallel tool-call deltas are ordered in a stream.
    pub tool_call_layout: ToolCallLayout,
    /// Characters per streamed delta for text given as one string (0 = all in one delta).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_chars: Option<usize>,
    /// Overrides the computed `finish_reason` (e.g. `length`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Overrides parts of the computed usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOverride>,
    /// Delay before the first byte of the response (time to first token), in milliseconds.
    pub ttft_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    pub chunk_delay_ms: u64,
    /// How this turn fails instead of (or before) succeeding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Fail only the first N attempts at this turn, then reply normally (for retry tests).
    /// `None` with a failure set: every attempt fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_times: Option<u32>,
}

/// Text as one string (streamed in `chunk_chars` pieces) or as explicit chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    Whole(String),
    Chunks(Vec<String>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningField {
    #[default]
    ReasoningContent,
    Reasoning,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallLayout {
    /// All deltas of call 0, then all of call 1, ... (what vLLM does).
    #[default]
    Sequential,
    /// Round-robin: the first delta of every call, then the next fragment of each, ...
    Interleaved,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// Defaults to `call_<request>_<index>`, unique within one backend run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// The arguments JSON text, sent verbatim. In files an object is accepted and serialized.
    #[serde(deserialize_with = "arguments_text")]
    pub arguments: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageOverride {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
}

/// How a turn fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Failure {
    /// An HTTP error status with an OpenAI error body, before any byte of a reply.
    Http(HttpError),
    /// An invalid JSON `data:` line after `after_chunks` events; the stream then goes on.
    Garbled { after_chunks: usize },
    /// Send `after_chunks` events, then hang forever without closing.
    Stall { after_chunks: usize },
    /// Send `after_chunks` events, then drop the connection (no terminating chunk, no `[DONE]`).
    Disconnect { after_chunks: usize },
    /// Close the connection before sending any byte.
    Hangup,
    /// After `after_chunks` events, an OpenAI error object as an event, then `[DONE]`: what
    /// vLLM sends when generation fails mid-stream. Without streaming: a 500 with that error.
    StreamError {
        after_chunks: usize,
        #[serde(default = "HttpError::default_message")]
        message: String,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        error_type: Option<String>,
        #[serde(default)]
        code: serde_json::Value,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpError {
    pub status: u16,
    #[serde(default = "HttpError::default_message")]
    pub message: String,
    /// The error `type`; defaults from the status (e.g. `rate_limit_error` for 429).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default)]
    pub code: serde_json::Value,
    #[serde(default)]
    pub param: serde_json::Value,
    /// Value of a `Retry-After` header, e.g. `"1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// A raw body to send instead of the OpenAI error object (e.g. an HTML proxy page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A script file for the binary: per-model scripts, a FIFO queue, and the fallback reply.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptFile {
    /// Extra names listed by `GET /v1/models` (scripted models are listed anyway).
    pub model_names: Vec<String>,
    pub models: BTreeMap<String, Script>,
    pub queue: Vec<Script>,
    /// Replaces the echo reply for requests no other script matches.
    pub default: Option<Script>,
}

// === impl Script ===

impl Script {
    /// The echo reply (`You said: ...`).
    pub fn echo() -> Self {
        Self::from(Turn::default())
    }

    /// A text reply, streamed in [`DEFAULT_CHUNK_CHARS`]-character deltas.
    pub fn text(content: impl Into<String>) -> Self {
        Self::from(Turn { content: Some(Text::Whole(content.into())), ..Turn::default() })
    }

    /// A text reply streamed as exactly these deltas.
    pub fn chunks<S: Into<String>>(chunks: impl IntoIterator<Item = S>) -> Self {
        let chunks = chunks.into_iter().map(Into::into).collect();
        Self::from(Turn { content: Some(Text::Chunks(chunks)), ..Turn::default() })
    }

    /// A reply that is one tool call (add more with [`Script::and_tool_call`]).
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self::from(Turn::default()).and_tool_call(name, arguments)
    }

    /// An HTTP error reply with an OpenAI error body.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let error = HttpError { status, message: message.into(), ..HttpError::default() };
        Self::from(Turn { failure: Some(Failure::Http(error)), ..Turn::default() })
    }

    /// Several replies, one per request, in order.
    pub fn turns(scripts: impl IntoIterator<Item = Script>) -> Self {
        Self { turns: scripts.into_iter().flat_map(|script| script.turns).collect() }
    }

    /// Appends the turns of `next` after this script's.
    pub fn then(mut self, next: Script) -> Self {
        self.turns.extend(next.turns);
        self
    }

    /// Parses a script from JSON text (the `SCRIPT:` directive's format).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        parse_json(text)
    }

    fn last(&mut self) -> &mut Turn {
        if self.turns.is_empty() {
            self.turns.push(Turn::default());
        }
        self.turns.last_mut().expect("just ensured one turn")
    }

    /// Adds a parallel tool call with a generated id.
    pub fn and_tool_call(mut self, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        let call = ToolCall { id: None, name: name.into(), arguments: arguments.into() };
        self.last().tool_calls.push(call);
        self
    }

    /// Adds a parallel tool call with this id.
    pub fn and_tool_call_with_id(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        let call = ToolCall { id: Some(id.into()), name: name.into(), arguments: arguments.into() };
        self.last().tool_calls.push(call);
        self
    }

    /// Sets the content (e.g. text alongside tool calls).
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.last().content = Some(Text::Whole(content.into()));
        self
    }

    /// Reasoning text, streamed before the content.
    pub fn reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.last().reasoning = Some(Text::Whole(reasoning.into()));
        self
    }

    /// Reasoning streamed as exactly these deltas.
    pub fn reasoning_chunks<S: Into<String>>(
        mut self,
        chunks: impl IntoIterator<Item = S>,
    ) -> Self {
        self.last().reasoning = Some(Text::Chunks(chunks.into_iter().map(Into::into).collect()));
        self
    }

    pub fn reasoning_field(mut self, field: ReasoningField) -> Self {
        self.last().reasoning_field = field;
        self
    }

    pub fn tool_call_layout(mut self, layout: ToolCallLayout) -> Self {
        self.last().tool_call_layout = layout;
        self
    }

    /// Characters per streamed delta (0 = one delta).
    pub fn chunk_chars(mut self, chars: usize) -> Self {
        self.last().chunk_chars = Some(chars);
        self
    }

    pub fn finish_reason(mut self, reason: impl Into<String>) -> Self {
        self.last().finish_reason = Some(reason.into());
        self
    }

    pub fn usage(mut self, usage: UsageOverride) -> Self {
        self.last().usage = Some(usage);
        self
    }

    /// Delay before the first byte (time to first token).
    pub fn ttft(mut self, delay: Duration) -> Self {
        self.last().ttft_ms = millis(delay);
        self
    }

    /// Delay between streamed chunks.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.last().chunk_delay_ms = millis(delay);
        self
    }

    /// Adds a `Retry-After` header to an HTTP error turn (no effect on other turns).
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        if let Some(Failure::Http(error)) = &mut self.last().failure {
            error.retry_after = Some(value.into());
        }
        self
    }

    /// Fails every attempt at this turn this way.
    pub fn fail(mut self, failure: Failure) -> Self {
        let turn = self.last();
        turn.failure = Some(failure);
        turn.fail_times = None;
        self
    }

    /// Fails the first `attempts` requests this way, then replies normally.
    pub fn fail_first(mut self, attempts: u32, failure: Failure) -> Self {
        let turn = self.last();
        turn.failure = Some(failure);
        turn.fail_times = Some(attempts);
        self
    }

    pub fn garbled_after(self, after_chunks: usize) -> Self {
        self.fail(Failure::Garbled { after_chunks })
    }

    pub fn stall_after(self, after_chunks: usize) -> Self {
        self.fail(Failure::Stall { after_chunks })
    }

    pub fn disconnect_after(self, after_chunks: usize) -> Self {
        self.fail(Failure::Disconnect { after_chunks })
    }

    pub fn hangup(self) -> Self {
        self.fail(Failure::Hangup)
    }

    /// An error event after `after_chunks` events, then `[DONE]` (vLLM's mid-stream failure).
    pub fn stream_error_after(self, after_chunks: usize, message: impl Into<String>) -> Self {
        self.fail(Failure::StreamError {
            after_chunks,
            message: message.into(),
            error_type: None,
            code: serde_json::Value::Null,
        })
    }
}

impl From<Turn> for Script {
    fn from(turn: Turn) -> Self {
        Self { turns: vec![turn] }
    }
}

impl<'de> Deserialize<'de> for Script {
    /// `{"turns": [...]}` or a single turn; goes through a `Value` so errors keep their path
    /// (an untagged enum would only say "did not match any variant").
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Turns {
            turns: Vec<Turn>,
        }
        let value = serde_json::Value::deserialize(deserializer)?;
        let is_sequence = value.get("turns").is_some();
        let script = if is_sequence {
            from_value::<Turns>(value).map(|turns| Script { turns: turns.turns })
        } else {
            from_value::<Turn>(value).map(Script::from)
        };
        script.map_err(serde::de::Error::custom)
    }
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." { error.inner().to_string() } else { format!("{path}: {}", error.inner()) }
    })
}

fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        Error::InvalidScript(if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        })
    })
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

fn arguments_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    })
}

// === impl Turn ===

impl Turn {
    pub fn ttft(&self) -> Duration {
        Duration::from_millis(self.ttft_ms)
    }

    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.chunk_delay_ms)
    }

    /// True when this turn's reply is the echo of the request.
    pub fn is_echo(&self) -> bool {
        self.content.is_none() && self.tool_calls.is_empty()
    }
}

// === impl HttpError ===

impl HttpError {
    fn default_message() -> String {
        "scripted error".to_owned()
    }
}

impl Default for HttpError {
    fn default() -> Self {
        Self {
            status: 500,
            message: Self::default_message(),
            error_type: None,
            code: serde_json::Value::Null,
            param: serde_json::Value::Null,
            retry_after: None,
            body: None,
        }
    }
}

// === impl ScriptFile ===

impl ScriptFile {
    /// Reads a script file; `.yaml`/`.yml` is YAML, anything else JSON. Errors name the path
    /// inside the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadScript { path: path.to_owned(), source })?;
        let is_yaml = matches!(path.extension().and_then(|ext| ext.to_str()), Some("yaml" | "yml"));
        let parsed = if is_yaml {
            let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(deserializer)
                .map_err(|error| format!("{}: {}", error.path(), error.inner()))
        } else {
            let deserializer = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(deserializer)
                .map_err(|error| format!("{}: {}", error.path(), error.inner()))
        };
        parsed.map_err(|message| Error::ParseScript { path: path.to_owned(), message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_one_turn_or_a_list_of_turns() {
        let one = Script::from_json(r#"{"content": "hi", "ttft_ms": 5}"#).expect("one turn");
        assert_eq!(one, Script::text("hi").ttft(Duration::from_millis(5)));

        let two = Script::from_json(
            r#"{"turns": [
                {"tool_calls": [{"name": "f", "arguments": {"a": 1}}]},
                {"content": ["x", "y"], "failure": {"kind": "stall", "after_chunks": 1}}
            ]}"#,
        )
        .expect("two turns");
        let expected = Script::turns([
            Script::tool_call("f", r#"{"a":1}"#),
            Script::chunks(["x", "y"]).stall_after(1),
        ]);
        assert_eq!(two, expected);
    }

    #[test]
    fn scripts_survive_a_json_round_trip() {
        let script = Script::turns([
            Script::text("a").reasoning("r").reasoning_field(ReasoningField::Reasoning),
            Script::error(429, "slow").retry_after("3").then(Script::tool_call("f", "{}")),
            Script::text("b").fail_first(2, Failure::Disconnect { after_chunks: 3 }),
        ]);
        let json = serde_json::to_string(&script).expect("serializing");
        assert_eq!(Script::from_json(&json).expect("parsing it back"), script);
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (r#"{"contnet": "x"}"#, "unknown field `contnet`"),
            (r#"{"turns": [{}, {"ttft_ms": "soon"}]}"#, "turns[1].ttft_ms"),
            (
                r#"{"failure": {"kind": "http", "status": 500, "retry": 1}}"#,
                "unknown field `retry`",
            ),
            (r#"{"failure": {"kind": "explode"}}"#, "unknown variant `explode`"),
            (r#"{"tool_calls": [{"arguments": "{}"}]}"#, "missing field `name`"),
        ];
        for (text, expected) in cases {
            let error = Script::from_json(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    #[test]
    fn the_example_script_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("script-example.yaml");
        let file = ScriptFile::load(&path).expect("the example loads");
        assert!(file.models.contains_key("agent"));
        assert_eq!(file.queue.len(), 1);
        assert!(file.default.is_some());
    }
}
