//! What a request continues, and what a turn leaves behind: resolves `previous_response_id`
//! (the chain's inputs and outputs, oldest first; never its `instructions`), `conversation`
//! (its items so far) and `item_reference`s into the model's input, and turns the request's own
//! input into stored items (wire JSON, each with an id). Everything is looked up as the caller
//! ([`Access`]): another user's response or conversation is "not found".

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::openresponses::request::{
    ContentPart, CreateResponse, InputItem, Role, parse_stored_item,
};
use crate::store::{Access, Store};

/// The longest `previous_response_id` chain followed; older turns are left out.
const MAX_CHAIN: usize = 10_000;

/// The stored form of the request's own input (what `input_items` lists), after resolving
/// its references, and the context that precedes it for the model.
pub struct Resolved {
    pub own_input: Vec<Value>,
}

/// Resolves `request`'s context in place: `request.input` becomes context + own input (with
/// references replaced by the stored items). Returns the own input as stored items.
pub async fn resolve(
    store: &dyn Store,
    access: &Access,
    request: &mut CreateResponse,
) -> Result<Resolved> {
    let mut own_input: Vec<Value> = request.input.iter().map(stored_item).collect();
    if !request.item_references.is_empty() {
        let ids: Vec<String> = request.item_references.iter().map(|r| r.id.clone()).collect();
        let found = store.find_items(access, &ids).await?;
        // Insert from the back so earlier positions stay valid.
        for reference in request.item_references.iter().rev() {
            let item = found
                .iter()
                .find(|item| item.get("id").and_then(Value::as_str) == Some(reference.id.as_str()))
                .ok_or_else(|| Error::NotFound { object: "item", id: reference.id.clone() })?;
            let model_item = parse_stored_item(item.clone())?;
            let position = reference.position.min(request.input.len());
            request.input.insert(position, model_item);
            own_input.insert(position, item.clone());
        }
        request.item_references.clear();
    }
    let mut context: Vec<Value> = Vec::new();
    if let Some(previous) = &request.previous_response_id {
        let mut next = Some(previous.clone());
        let mut turns: Vec<Vec<Value>> = Vec::new();
        while let Some(id) = next.take() {
            if turns.len() >= MAX_CHAIN {
                break;
            }
            let Some(stored) = store.get_response(access, &id).await? else {
                if turns.is_empty() {
                    return Err(Error::PreviousResponseNotFound(id));
                }
                // An earlier turn was deleted: the chain starts after it.
                break;
            };
            let items = store.response_items(access, &id).await?.unwrap_or_default();
            turns.push(items);
            next = stored.previous_response_id;
        }
        context.extend(turns.into_iter().rev().flatten());
    }
    if let Some(conversation) = &request.conversation {
        if store.get_conversation(access, conversation).await?.is_none() {
            return Err(Error::NotFound { object: "conversation", id: conversation.clone() });
        }
        let mut page = crate::store::Page {
            limit: 100,
            after: None,
            before: None,
            order: crate::store::Order::Asc,
        };
        loop {
            let Some(list) = store.list_conversation_items(access, conversation, &page).await?
            else {
                break;
            };
            let last = list
                .data
                .last()
                .and_then(|i| i.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            context.extend(list.data);
            match (list.has_more, last) {
                (true, Some(last)) => page.after = Some(last),
                _ => break,
            }
        }
    }
    if !context.is_empty() {
        let mut input: Vec<InputItem> = context
            .into_iter()
            // Items the model cannot take back as input (none today) are left out of its context.
            .filter_map(|item| parse_stored_item(item).ok())
            .collect();
        input.append(&mut request.input);
        request.input = input;
    }
    Ok(Resolved { own_input })
}

/// An input item as it is stored and listed (`ItemField` of the spec), with a fresh id.
pub fn stored_item(item: &InputItem) -> Value {
    match item {
        InputItem::Message { role, content } => {
            let assistant = *role == Role::Assistant;
            json!({
                "type": "message",
                "id": new_id("msg"),
                "status": "completed",
                "role": match role {
                    Role::User => "user",
                    Role::System => "system",
                    Role::Developer => "developer",
                    Role::Assistant => "assistant",
                },
                "content": content.iter().map(|part| stored_part(part, assistant)).collect::<Vec<_>>(),
            })
        }
        InputItem::FunctionCall { call_id, name, arguments } => json!({
            "type": "function_call",
            "id": new_id("fc"),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }),
        InputItem::FunctionCallOutput { call_id, output } => {
            let output = match output.as_slice() {
                [ContentPart::Text(text)] => Value::String(text.clone()),
                parts => Value::Array(parts.iter().map(|p| stored_part(p, false)).collect()),
            };
            json!({
                "type": "function_call_output",
                "id": new_id("fco"),
                "call_id": call_id,
                "output": output,
                "status": "completed",
            })
        }
        InputItem::CodeInterpreterCall { id, code, container_id, output } => json!({
            "type": crate::openresponses::code_interpreter::Naming::Openai.item_type(),
            "id": id,
            "status": "completed",
            "code": code,
            "container_id": container_id,
            "outputs": [{"type": "logs", "logs": output}],
        }),
        InputItem::Reasoning { summary, content } => json!({
            "type": "reasoning",
            "id": new_id("rs"),
            "summary": summary.iter().map(|t| json!({"type": "summary_text", "text": t})).collect::<Vec<_>>(),
            "content": content.iter().map(|t| json!({"type": "reasoning_text", "text": t})).collect::<Vec<_>>(),
        }),
    }
}

fn stored_part(part: &ContentPart, assistant: bool) -> Value {
    match part {
        ContentPart::Text(text) if assistant => {
            json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
        }
        ContentPart::Text(text) => json!({"type": "input_text", "text": text}),
        ContentPart::Refusal(refusal) => json!({"type": "refusal", "refusal": refusal}),
        ContentPart::Image { url, detail } => json!({
            "type": "input_image",
            "image_url": url,
            "detail": detail.map_or(json!("auto"), |d| json!(d)),
        }),
        ContentPart::File { filename, file_data, file_url } => {
            let mut part = json!({"type": "input_file"});
            for (key, value) in
                [("filename", filename), ("file_data", file_data), ("file_url", file_url)]
            {
                if let Some(value) = value {
                    part[key] = json!(value);
                }
            }
            part
        }
        ContentPart::Video { url } => json!({"type": "input_video", "video_url": url}),
    }
}
