//! `compaction` items: what `POST /v1/responses/compact` hands out, and how such an item reads
//! back as input.
//!
//! The spec calls the payload `encrypted_content`: opaque to the client. antwort does not need
//! secrecy here (the client could send the same text as a message), only a stable, versioned
//! encoding, so the content is `antwort.compaction.v1.` + base64url(summary). As input the item
//! becomes a system message carrying the summary, which every Chat Completions backend accepts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::request::{ContentPart, InputItem, MAX_INPUT_CHARS, Role};
use crate::error::Error;

const PREFIX: &str = "antwort.compaction.v1.";

/// What the model reads in place of the compacted turns.
const HEADER: &str = "Summary of the earlier conversation (compacted):";

/// The `encrypted_content` for `summary`.
pub fn encode(summary: &str) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(summary.as_bytes()))
}

/// The summary inside `encrypted_content`, or `None` when it was not made by [`encode`].
pub fn decode(content: &str) -> Option<String> {
    let encoded = content.strip_prefix(PREFIX)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// A `compaction` input item (`CompactionSummaryItemParam`) at `path` as the message the model
/// sees.
pub fn parse_item(path: &str, mut item: Map<String, Value>) -> Result<InputItem, Error> {
    let param = format!("{path}.encrypted_content");
    let content = match item.remove("encrypted_content") {
        Some(Value::String(content)) => content,
        None | Some(Value::Null) => {
            return Err(Error::invalid_request(
                Some(&param),
                "missing_required_parameter",
                format!("Missing required parameter: '{param}'."),
            ));
        }
        Some(_) => return Err(Error::invalid_type(&param, "a string")),
    };
    if content.chars().count() > MAX_INPUT_CHARS {
        return Err(Error::invalid_value(
            &param,
            format!("'{param}' is longer than {MAX_INPUT_CHARS} characters."),
        ));
    }
    let summary = decode(&content).ok_or_else(|| {
        Error::invalid_value(
            &param,
            "This compaction item was not produced by this gateway's /v1/responses/compact.",
        )
    })?;
    Ok(InputItem::Message {
        role: Role::System,
        content: vec![ContentPart::Text(format!("{HEADER}\n{summary}"))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_foreign_content() {
        let text = "The user asked for a landing page; ünïcode and\nnewlines survive.";
        assert_eq!(decode(&encode(text)).as_deref(), Some(text));
        assert_eq!(decode("gAAAAABpM0Yj-..."), None);
        assert_eq!(decode("antwort.compaction.v1.!!!"), None);
    }

    #[test]
    fn an_item_becomes_a_system_summary() {
        let Value::Object(item) = json!({"encrypted_content": encode("earlier: x=1")}) else {
            unreachable!()
        };
        match parse_item("input[1]", item).expect("parses") {
            InputItem::Message { role: Role::System, content } => {
                assert_eq!(content, vec![ContentPart::Text(format!("{HEADER}\nearlier: x=1"))]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let Value::Object(item) = json!({"encrypted_content": "opaque"}) else { unreachable!() };
        let err = parse_item("input[1]", item).expect_err("foreign content");
        assert_eq!(err.param(), Some("input[1].encrypted_content"));
        let Value::Object(item) = json!({}) else { unreachable!() };
        let err = parse_item("input[0]", item).expect_err("missing");
        assert_eq!(err.code(), "missing_required_parameter");
    }
}
