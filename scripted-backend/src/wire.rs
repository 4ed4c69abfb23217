//! The JSON the backend sends: `chat.completion`, `chat.completion.chunk`, usage, logprobs,
//! the model list and the OpenAI error object. Borrowed structs, serialized straight into
//! the output buffer.

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::reply::{Reply, ReplyToolCall};
use crate::script::ReasoningField;

/// Token counts of one reply (see `reply::usage` for how they are computed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
}

impl Serialize for Usage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Cached {
            cached_tokens: u64,
        }
        #[derive(Serialize)]
        struct Reasoning {
            reasoning_tokens: u64,
        }
        let mut usage = serializer.serialize_struct("Usage", 5)?;
        usage.serialize_field("prompt_tokens", &self.prompt_tokens)?;
        usage.serialize_field("completion_tokens", &self.completion_tokens)?;
        usage.serialize_field("total_tokens", &self.total_tokens)?;
        usage.serialize_field(
            "prompt_tokens_details",
            &Cached { cached_tokens: self.cached_tokens },
        )?;
        usage.serialize_field(
            "completion_tokens_details",
            &Reasoning { reasoning_tokens: self.reasoning_tokens },
        )?;
        usage.end()
    }
}

// === chat.completion ===

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The non-streaming body.
pub(crate) fn completion(reply: &Reply<'_>) -> Vec<u8> {
    let reasoning = reply.reasoning.as_ref().map(|piece| piece.full.as_ref());
    let (reasoning_content, reasoning) = split_reasoning(reply.reasoning_field, reasoning);
    let content = reply.content.as_ref();
    let body = Completion {
        id: &reply.id,
        object: "chat.completion",
        created: reply.created,
        model: reply.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: content.map(|piece| piece.full.as_ref()),
                reasoning_content,
                reasoning,
                tool_calls: reply
                    .tool_calls
                    .iter()
                    .map(|call: &ReplyToolCall<'_>| ToolCall {
                        id: &call.id,
                        kind: "function",
                        function: Function { name: call.name, arguments: call.arguments },
                    })
                    .collect(),
            },
            logprobs: reply.top_logprobs.map(|top| Logprobs {
                content: content
                    .map(|piece| piece.chunks.iter().map(|t| TokenLogprob::new(t, top)).collect())
                    .unwrap_or_default(),
            }),
            finish_reason: reply.finish_reason,
        }],
        usage: reply.usage,
    };
    serde_json::to_vec(&body).expect("serializing plain structs cannot fail")
}

fn split_reasoning(field: ReasoningField, text: Option<&str>) -> (Option<&str>, Option<&str>) {
    match field {
        ReasoningField::ReasoningContent => (text, None),
        ReasoningField::Reasoning => (None, text),
    }
}

// === chat.completion.chunk ===

#[derive(Serialize)]
pub(crate) struct Chunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Serialize)]
pub(crate) struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<Logprobs<'a>>,
    pub finish_reason: Option<&'a str>,
}

#[derive(Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[DeltaToolCall<'a>; 1]>,
}

impl<'a> Delta<'a> {
    pub fn reasoning(field: ReasoningField, text: &'a str) -> Self {
        let (reasoning_content, reasoning) = split_reasoning(field, Some(text));
        Self { reasoning_content, reasoning, ..Self::default() }
    }
}

#[derive(Serialize)]
pub(crate) struct DeltaToolCall<'a> {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: DeltaFunction<'a>,
}

#[derive(Serialize)]
pub(crate) struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

// === logprobs ===

#[derive(Serialize)]
pub(crate) struct Logprobs<'a> {
    pub content: Vec<TokenLogprob<'a>>,
}

#[derive(Serialize)]
pub(crate) struct TokenLogprob<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
    top_logprobs: Vec<TopLogprob<'a>>,
}

#[derive(Serialize)]
struct TopLogprob<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
}

/// Stand-in alternatives for `top_logprobs`; plausible English tokens.
const ALTERNATIVES: [&str; 21] = [
    " the", " a", ",", ".", " and", " of", " to", " in", " is", " it", " that", " for", " on",
    " with", " as", " was", " be", " this", " by", " at", " or",
];

impl<'a> TokenLogprob<'a> {
    /// Deterministic: the logprob comes from a hash of the token, alternatives are less likely.
    pub fn new(token: &'a str, top: usize) -> Self {
        let logprob = token_logprob(token);
        let mut top_logprobs = Vec::with_capacity(top);
        if top > 0 {
            top_logprobs.push(TopLogprob { token, logprob, bytes: token.as_bytes() });
        }
        let alternatives = ALTERNATIVES.iter().filter(|alternative| **alternative != token);
        for (rank, alternative) in alternatives.take(top.saturating_sub(1)).enumerate() {
            top_logprobs.push(TopLogprob {
                token: alternative,
                logprob: logprob - 0.5 - rank as f64 * 0.25,
                bytes: alternative.as_bytes(),
            });
        }
        Self { token, logprob, bytes: token.as_bytes(), top_logprobs }
    }
}

/// A value in [-2.0, -0.001], from FNV-1a of the token.
fn token_logprob(token: &str) -> f64 {
    let hash = token.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    -((1 + hash % 2000) as f64) / 1000.0
}

// === models and errors ===

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

pub(crate) fn model_list<'a>(names: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let data = names
        .map(|id| Model { id, object: "model", created: 0, owned_by: "antwort-scripted-backend" })
        .collect();
    serde_json::to_vec(&ModelList { object: "list", data })
        .expect("serializing plain structs cannot fail")
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    error_type: &'a str,
    code: &'a serde_json::Value,
    param: &'a serde_json::Value,
}

/// `{"error": {"message", "type", "code", "param"}}`.
pub(crate) fn error(
    message: &str,
    error_type: &str,
    code: &serde_json::Value,
    param: &serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&ErrorEnvelope { error: ErrorBody { message, error_type, code, param } })
        .expect("serializing plain structs cannot fail")
}

/// The OpenAI error `type` that goes with an HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}
