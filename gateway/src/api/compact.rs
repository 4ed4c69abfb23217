//! `POST /v1/responses/compact`: shrinks a conversation to what the next turn needs. The model
//! writes a summary of the whole context (input, or the `previous_response_id` chain plus input);
//! the answer (`CompactResource`) keeps the user's messages verbatim and replaces everything else
//! with one `compaction` item carrying that summary (see `openresponses::compaction`). Sent back
//! as input, the item reads as a system message with the summary.

use axum::Json;
use axum::extract::{Extension, Request, State};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::{new_id, unix_now};
use crate::openresponses::compaction;
use crate::openresponses::request::{ContentPart, CreateResponse, ImageDetail, InputItem, Role};
use crate::openresponses::response::{OutputContent, OutputItem};

/// The body fields of `CompactResponseMethodPublicBody`; anything else is ignored.
const FIELDS: [&str; 5] =
    ["model", "input", "previous_response_id", "instructions", "prompt_cache_key"];

/// The last turn of the summarizing request, after the conversation itself.
const SUMMARY_PROMPT: &str = "Write a summary of the conversation above that lets you continue it \
without the original messages: the user's goals and constraints, decisions made, facts and tool \
results learned, work done and what is still open. Be complete but concise. Reply with the \
summary only.";

pub async fn compact(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let body = super::responses::json_body(request, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid_request(None, "invalid_json", format!("The body is not valid JSON: {e}"))
    })?;
    drop(body);
    let Value::Object(mut body) = value else {
        return Err(Error::invalid_request(
            None,
            "invalid_type",
            "The body must be a JSON object.",
        ));
    };
    let mut create = Map::new();
    for field in FIELDS {
        if let Some(value) = body.remove(field) {
            create.insert(field.to_string(), value);
        }
    }
    // The summary is a means, not a response of its own: it leaves no trace.
    create.insert("store".into(), json!(false));
    let encoded = serde_json::to_vec(&Value::Object(create))
        .map_err(|e| Error::Internal(format!("re-encoding the compact body failed: {e}")))?;
    let mut request = CreateResponse::from_json(&encoded)?;
    let kept: Vec<Value> = request.input.iter().filter_map(user_message).collect();
    request.input.push(InputItem::Message {
        role: Role::User,
        content: vec![ContentPart::Text(SUMMARY_PROMPT.to_string())],
    });
    let response = state.engine.create(&principal, request).await?;
    let summary = response
        .output
        .iter()
        .filter_map(|item| match item {
            OutputItem::Message { content, .. } => Some(content),
            _ => None,
        })
        .flatten()
        .filter_map(|part| match part {
            OutputContent::OutputText { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("");
    if summary.trim().is_empty() {
        return Err(Error::Backend { message: "the model returned an empty summary".to_string() });
    }
    let mut output = kept;
    output.push(json!({
        "type": "compaction",
        "id": new_id("cmp"),
        "encrypted_content": compaction::encode(&summary),
    }));
    Ok(Json(json!({
        "id": response.id,
        "object": "response.compaction",
        "created_at": unix_now(),
        "output": output,
        "usage": response.usage.unwrap_or_default(),
    })))
}

/// A user message of the input as a `Message` item of the compacted output.
fn user_message(item: &InputItem) -> Option<Value> {
    let InputItem::Message { role: Role::User, content } = item else { return None };
    let content: Vec<Value> = content
        .iter()
        .map(|part| match part {
            ContentPart::Text(text) => json!({"type": "input_text", "text": text}),
            ContentPart::Refusal(refusal) => json!({"type": "refusal", "refusal": refusal}),
            ContentPart::Image { url, detail } => json!({
                "type": "input_image",
                "image_url": url,
                "detail": detail.unwrap_or(ImageDetail::Auto),
            }),
            ContentPart::File { filename, file_data, file_url } => {
                let mut part = Map::new();
                part.insert("type".into(), json!("input_file"));
                for (key, value) in
                    [("filename", filename), ("file_data", file_data), ("file_url", file_url)]
                {
                    if let Some(value) = value {
                        part.insert(key.into(), json!(value));
                    }
                }
                Value::Object(part)
            }
            ContentPart::Video { url } => json!({"type": "input_video", "video_url": url}),
        })
        .collect();
    Some(json!({
        "type": "message",
        "id": new_id("msg"),
        "status": "completed",
        "role": "user",
        "content": content,
    }))
}
