//! Conversations (OpenAI's Conversations API): `POST/GET/DELETE /v1/conversations[/{id}]`
//! (`POST /v1/conversations/{id}` updates metadata), `GET/POST /v1/conversations/{id}/items`,
//! `GET/DELETE /v1/conversations/{id}/items/{item_id}`. A response created with `conversation`
//! adds its input and output here (see `engine::context` and the store). Another user's
//! conversation is "not found" on every route.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use serde_json::{Map, Value, json};

use super::responses::json_body;
use super::{AppState, list};
use crate::auth::Principal;
use crate::engine::context::stored_item;
use crate::error::Error;
use crate::ids::{new_id, unix_now};
use crate::openresponses::request::parse_stored_item;
use crate::store::{Access, Conversation, Owner};

/// Most items one create or append request may carry (OpenAI's limit).
const MAX_ITEMS_PER_REQUEST: usize = 20;
const MAX_METADATA_PAIRS: usize = 16;

fn object(conversation: &Conversation) -> Value {
    json!({
        "id": conversation.id,
        "object": "conversation",
        "created_at": conversation.created_at,
        "metadata": conversation.metadata,
    })
}

fn not_found(id: &str) -> Error {
    Error::NotFound { object: "conversation", id: id.to_string() }
}

async fn body_object(state: &AppState, request: Request) -> Result<Map<String, Value>, Error> {
    let body = json_body(request, state.max_body_bytes).await?;
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => {
            Err(Error::invalid_request(None, "invalid_type", "The body must be a JSON object."))
        }
        Err(e) => Err(Error::invalid_request(
            None,
            "invalid_json",
            format!("The body is not valid JSON: {e}"),
        )),
    }
}

fn metadata(body: &mut Map<String, Value>) -> Result<Option<Map<String, Value>>, Error> {
    match body.remove("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if map.len() > MAX_METADATA_PAIRS {
                return Err(Error::invalid_value(
                    "metadata",
                    format!("'metadata' may hold at most {MAX_METADATA_PAIRS} pairs."),
                ));
            }
            for (key, value) in &map {
                let ok = key.chars().count() <= 64
                    && value.as_str().is_some_and(|v| v.chars().count() <= 512);
                if !ok {
                    return Err(Error::invalid_value(
                        &format!("metadata.{key}"),
                        "Metadata keys are at most 64 characters and values strings of at most 512.",
                    ));
                }
            }
            Ok(Some(map))
        }
        Some(_) => Err(Error::invalid_type("metadata", "an object")),
    }
}

/// Validates `items` as input items and gives each its stored form (with a fresh id).
fn items(body: &mut Map<String, Value>, required: bool) -> Result<Vec<Value>, Error> {
    let list = match body.remove("items") {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        None | Some(Value::Null) => {
            return Err(Error::invalid_request(
                Some("items"),
                "missing_required_parameter",
                "Missing required parameter: 'items'.",
            ));
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(Error::invalid_type("items", "an array of items")),
    };
    if list.len() > MAX_ITEMS_PER_REQUEST {
        return Err(Error::invalid_value(
            "items",
            format!("At most {MAX_ITEMS_PER_REQUEST} items per request."),
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, item)| {
            let parsed = parse_stored_item(item).map_err(|e| match e {
                Error::InvalidRequest { param, code, message } => Error::InvalidRequest {
                    param: param.map(|p| p.replacen("item", &format!("items[{i}]"), 1)),
                    code,
                    message: message.replacen("'item", &format!("'items[{i}]"), 1),
                },
                other => other,
            })?;
            Ok(stored_item(&parsed))
        })
        .collect()
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let mut body = body_object(&state, request).await?;
    let metadata = metadata(&mut body)?.unwrap_or_default();
    let items = items(&mut body, false)?;
    let conversation = Conversation {
        id: new_id("conv"),
        owner: Owner::of(&principal),
        created_at: unix_now(),
        metadata,
    };
    state.store.create_conversation(&conversation, &items).await?;
    Ok(Json(object(&conversation)))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let conversation = state
        .store
        .get_conversation(&Access::of(&principal), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(object(&conversation)))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let mut body = body_object(&state, request).await?;
    let metadata = metadata(&mut body)?.ok_or_else(|| {
        Error::invalid_request(
            Some("metadata"),
            "missing_required_parameter",
            "Missing required parameter: 'metadata'.",
        )
    })?;
    let conversation = state
        .store
        .update_conversation(&Access::of(&principal), &id, &metadata)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(object(&conversation)))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    if !state.store.delete_conversation(&Access::of(&principal), &id).await? {
        return Err(not_found(&id));
    }
    Ok(Json(json!({"id": id, "object": "conversation.deleted", "deleted": true})))
}

pub async fn list_items(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Error> {
    let page = list::page(query.as_deref())?;
    let listed = state
        .store
        .list_conversation_items(&Access::of(&principal), &id, &page)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(list::body(listed.data, listed.has_more)))
}

pub async fn add_items(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let mut body = body_object(&state, request).await?;
    let items = items(&mut body, true)?;
    if !state.store.append_conversation_items(&Access::of(&principal), &id, &items).await? {
        return Err(not_found(&id));
    }
    Ok(Json(list::body(items, false)))
}

pub async fn get_item(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let item = state
        .store
        .get_conversation_item(&Access::of(&principal), &id, &item_id)
        .await?
        .ok_or(Error::NotFound { object: "item", id: item_id })?;
    Ok(Json(item))
}

/// Answers the conversation, as OpenAI does.
pub async fn delete_item(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let access = Access::of(&principal);
    let conversation =
        state.store.get_conversation(&access, &id).await?.ok_or_else(|| not_found(&id))?;
    if !state.store.delete_conversation_item(&access, &id, &item_id).await? {
        return Err(Error::NotFound { object: "item", id: item_id });
    }
    Ok(Json(object(&conversation)))
}
