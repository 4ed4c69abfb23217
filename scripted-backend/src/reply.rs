//! Decides the content of one reply from a [`Turn`] and the request: echo text, truncation,
//! delta boundaries, tool-call fragments, finish reason and token counts. No I/O, no JSON.

use std::borrow::Cow;

use crate::request::{ChatRequest, count_words};
use crate::script::{DEFAULT_CHUNK_CHARS, ReasoningField, Text, ToolCallLayout, Turn};
use crate::wire::Usage;

pub(crate) struct Reply<'a> {
    pub id: String,
    pub created: u64,
    pub model: &'a str,
    pub reasoning_field: ReasoningField,
    pub reasoning: Option<Piece<'a>>,
    /// `None` is `content: null` (a tool-call-only reply).
    pub content: Option<Piece<'a>>,
    pub tool_calls: Vec<ReplyToolCall<'a>>,
    pub tool_call_layout: ToolCallLayout,
    pub finish_reason: &'a str,
    pub usage: Usage,
    /// `Some(k)` when the request asked for logprobs with `k` alternatives.
    pub top_logprobs: Option<usize>,
}

/// A text both whole (non-streaming) and as its deltas (streaming).
pub(crate) struct Piece<'a> {
    pub full: Cow<'a, str>,
    pub chunks: Vec<&'a str>,
}

pub(crate) struct ReplyToolCall<'a> {
    pub id: Cow<'a, str>,
    pub name: &'a str,
    pub arguments: &'a str,
    pub fragments: Vec<&'a str>,
}

/// The echo reply's text, cut to `max_tokens` words; `true` when it was cut.
pub(crate) fn echo_text(request: &ChatRequest<'_>) -> (String, bool) {
    let mut text = format!("You said: {}", request.last_user_text());
    let Some(max_words) = request.max_tokens else {
        return (text, false);
    };
    let end = match max_words.checked_sub(1) {
        None => Some(0),
        Some(last) => text.split_whitespace().nth(usize::try_from(last).unwrap_or(usize::MAX)).map(
            // The word is a subslice of `text`, so its end is an offset into it.
            |word| word.as_ptr() as usize - text.as_ptr() as usize + word.len(),
        ),
    };
    match end {
        Some(end) if text[end..].split_whitespace().next().is_some() => {
            text.truncate(end);
            (text, true)
        }
        _ => (text, false),
    }
}

/// Builds the reply. `echo` is the echo text (from [`echo_text`]) when `turn.is_echo()`.
pub(crate) fn build<'a>(
    turn: &'a Turn,
    request: &ChatRequest<'a>,
    echo: Option<&'a (String, bool)>,
    sequence: u64,
    created: u64,
) -> Reply<'a> {
    let chunk_chars = turn.chunk_chars.unwrap_or(DEFAULT_CHUNK_CHARS);
    let piece = |text: &'a Text| match text {
        Text::Whole(text) => Piece { full: Cow::Borrowed(text), chunks: split(text, chunk_chars) },
        Text::Chunks(chunks) => Piece {
            full: Cow::Owned(chunks.concat()),
            chunks: chunks.iter().map(String::as_str).collect(),
        },
    };
    let (content, truncated) = match (echo, &turn.content) {
        (Some((text, truncated)), _) => (
            Some(Piece { full: Cow::Borrowed(text), chunks: split(text, chunk_chars) }),
            *truncated,
        ),
        (None, Some(text)) => (Some(piece(text)), false),
        (None, None) => (None, false),
    };
    let reasoning = turn.reasoning.as_ref().map(piece);
    let tool_calls: Vec<_> = turn
        .tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| ReplyToolCall {
            id: match &call.id {
                Some(id) => Cow::Borrowed(id),
                None => Cow::Owned(format!("call_{sequence}_{index}")),
            },
            name: &call.name,
            arguments: &call.arguments,
            fragments: split(&call.arguments, chunk_chars),
        })
        .collect();

    let finish_reason = match &turn.finish_reason {
        Some(reason) => reason.as_str(),
        None if truncated => "length",
        None if !tool_calls.is_empty() => "tool_calls",
        None => "stop",
    };
    let usage = usage(turn, request, content.as_ref(), reasoning.as_ref(), &tool_calls);
    Reply {
        id: format!("chatcmpl-scripted-{sequence}"),
        created,
        model: request.model,
        reasoning_field: turn.reasoning_field,
        reasoning,
        content,
        tool_calls,
        tool_call_layout: turn.tool_call_layout,
        finish_reason,
        usage,
        top_logprobs: request.logprobs.then_some(request.top_logprobs),
    }
}

/// Deterministic token counts: whitespace-separated words.
fn usage(
    turn: &Turn,
    request: &ChatRequest<'_>,
    content: Option<&Piece<'_>>,
    reasoning: Option<&Piece<'_>>,
    tool_calls: &[ReplyToolCall<'_>],
) -> Usage {
    let reasoning_words = reasoning.map_or(0, |piece| count_words(&piece.full));
    let content_words = content.map_or(0, |piece| count_words(&piece.full));
    let call_words: u64 =
        tool_calls.iter().map(|call| count_words(call.name) + count_words(call.arguments)).sum();
    let overrides = turn.usage.clone().unwrap_or_default();
    let prompt_tokens = overrides.prompt_tokens.unwrap_or_else(|| request.prompt_words());
    let completion_tokens =
        overrides.completion_tokens.unwrap_or(content_words + reasoning_words + call_words);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: overrides.total_tokens.unwrap_or(prompt_tokens + completion_tokens),
        reasoning_tokens: overrides.reasoning_tokens.unwrap_or(reasoning_words),
        cached_tokens: overrides.cached_tokens.unwrap_or(0),
    }
}

/// Splits `text` into pieces of `chars` characters (never inside a character); 0 = one piece.
fn split(text: &str, chars: usize) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    if chars == 0 {
        return vec![text];
    }
    let mut pieces = Vec::with_capacity(text.len() / chars + 1);
    let mut start = 0;
    for (count, (offset, _)) in text.char_indices().enumerate() {
        if count > 0 && count % chars == 0 {
            pieces.push(&text[start..offset]);
            start = offset;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_characters() {
        assert_eq!(split("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(split("héllo", 2), ["hé", "ll", "o"]);
        assert_eq!(split("abc", 0), ["abc"]);
        assert!(split("", 4).is_empty());
    }

    #[test]
    fn echo_truncates_to_max_tokens_words() {
        let body = serde_json::json!({
            "model": "m", "max_tokens": 3,
            "messages": [{"role": "user", "content": "one two three four"}],
        });
        let request = ChatRequest::parse(&body).expect("valid request");
        assert_eq!(echo_text(&request), ("You said: one".to_owned(), true));

        let body = serde_json::json!({
            "model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "one two three"}],
        });
        let request = ChatRequest::parse(&body).expect("valid request");
        assert_eq!(echo_text(&request), ("You said: one two three".to_owned(), false));
    }
}
