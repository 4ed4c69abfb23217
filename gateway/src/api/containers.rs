//! Containers (OpenAI's Containers API): `POST/GET /v1/containers`, `GET/DELETE
//! /v1/containers/{id}`, `POST/GET /v1/containers/{id}/files`, `GET/DELETE
//! /v1/containers/{id}/files/{file_id}`, `GET /v1/containers/{id}/files/{file_id}/content`.
//!
//! A container is a code interpreter sandbox session owned by its creator; `code_interpreter`
//! calls with `container: "cntr_..."` run in it. Handlers parse and shape the wire objects; the
//! work (store records, the sandbox agent's file routes) is in
//! `tools::code_interpreter::containers`. Uploads stream through to the agent and downloads
//! stream back; neither is held whole in memory. Another user's container is "not found".

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::SinkExt;
use http::header;
use serde_json::{Map, Value, json};

use super::responses::json_body;
use super::{AppState, list};
use crate::auth::Principal;
use crate::error::Error;
use crate::openresponses::code_interpreter::MEMORY_LIMITS;
use crate::store::{Access, Owner, StoredContainer, StoredContainerFile};
use crate::tools::code_interpreter::CodeInterpreter;
use crate::tools::code_interpreter::containers::{ContainerSpec, api_path};

/// The longest `expires_after.minutes` accepted (one week).
const MAX_EXPIRY_MINUTES: u64 = 7 * 24 * 60;
/// Room for the multipart framing around an upload's bytes, when checking `Content-Length`.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

fn interpreter(state: &AppState) -> Result<std::sync::Arc<CodeInterpreter>, Error> {
    state.engine.tools().code_interpreter.clone().ok_or_else(|| {
        Error::invalid_request(
            None,
            "containers_unavailable",
            "Containers need the code interpreter, which this gateway does not run \
             (no `tools.code_interpreter` in its config).",
        )
    })
}

fn object(container: &StoredContainer) -> Value {
    let minutes = (container.idle_ms.max(1) as u64).div_ceil(60_000);
    let mut object = json!({
        "id": container.id,
        "object": "container",
        "created_at": container.created_at,
        "status": container.status.as_str(),
        "name": container.name,
        "expires_after": {"anchor": "last_active_at", "minutes": minutes},
        "last_active_at": container.last_active_at / 1000,
    });
    if let Some(limit) = &container.memory_limit {
        object["memory_limit"] = json!(limit);
    }
    object
}

fn file_object(file: &StoredContainerFile) -> Value {
    json!({
        "id": file.id,
        "object": "container.file",
        "created_at": file.created_at,
        "bytes": file.bytes,
        "container_id": file.container_id,
        "path": api_path(&file.path),
        "source": file.source,
    })
}

fn missing(param: &str) -> Error {
    Error::invalid_request(
        Some(param),
        "missing_required_parameter",
        format!("Missing required parameter: '{param}'."),
    )
}

fn no_files_api(param: &str) -> Error {
    Error::invalid_request(
        Some(param),
        "unsupported_parameter",
        format!(
            "'{param}' is not supported: this gateway has no Files API. Upload files with \
             POST /v1/containers/{{id}}/files instead."
        ),
    )
}

/// The create request, validated.
fn spec(
    interpreter: &CodeInterpreter,
    mut body: Map<String, Value>,
) -> Result<ContainerSpec, Error> {
    let mut spec = interpreter.default_spec();
    spec.name = match body.remove("name") {
        Some(Value::String(name)) if !name.is_empty() && name.chars().count() <= 256 => name,
        Some(Value::String(_)) => {
            return Err(Error::invalid_value("name", "'name' must be 1 to 256 characters."));
        }
        None | Some(Value::Null) => return Err(missing("name")),
        Some(_) => return Err(Error::invalid_type("name", "a string")),
    };
    match body.remove("expires_after") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut expiry)) => {
            match expiry.remove("anchor") {
                Some(Value::String(anchor)) if anchor == "last_active_at" => {}
                None => return Err(missing("expires_after.anchor")),
                Some(_) => {
                    return Err(Error::invalid_value(
                        "expires_after.anchor",
                        "'expires_after.anchor' must be 'last_active_at'.",
                    ));
                }
            }
            let minutes = match expiry.remove("minutes") {
                None => return Err(missing("expires_after.minutes")),
                Some(value) => value
                    .as_u64()
                    .filter(|m| (1..=MAX_EXPIRY_MINUTES).contains(m))
                    .ok_or_else(|| {
                        Error::invalid_value(
                            "expires_after.minutes",
                            format!(
                                "'expires_after.minutes' must be an integer from 1 to \
                                 {MAX_EXPIRY_MINUTES}."
                            ),
                        )
                    })?,
            };
            if let Some(key) = expiry.keys().next() {
                return Err(unknown(&format!("expires_after.{key}")));
            }
            spec.idle = Duration::from_secs(minutes * 60);
        }
        Some(_) => return Err(Error::invalid_type("expires_after", "an object")),
    }
    match body.remove("file_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) if ids.is_empty() => {}
        Some(Value::Array(_)) => return Err(no_files_api("file_ids")),
        Some(_) => return Err(Error::invalid_type("file_ids", "an array of file ids")),
    }
    match body.remove("memory_limit") {
        None | Some(Value::Null) => {}
        Some(Value::String(limit)) if MEMORY_LIMITS.contains(&limit.as_str()) => {
            spec.memory_limit = Some(limit);
        }
        Some(_) => {
            return Err(Error::invalid_value(
                "memory_limit",
                format!("'memory_limit' must be one of {}.", MEMORY_LIMITS.join(", ")),
            ));
        }
    }
    match body.remove("network_policy") {
        None | Some(Value::Null) => {}
        // Sandboxes have no network: "disabled" is what they are anyway.
        Some(Value::Object(policy)) if policy.get("type") == Some(&json!("disabled")) => {}
        Some(_) => {
            return Err(Error::invalid_request(
                Some("network_policy"),
                "unsupported_parameter",
                "Sandboxes have no network access; only {\"type\": \"disabled\"} is supported.",
            ));
        }
    }
    match body.remove("skills") {
        None | Some(Value::Null) => {}
        Some(Value::Array(skills)) if skills.is_empty() => {}
        Some(_) => {
            return Err(Error::invalid_request(
                Some("skills"),
                "unsupported_parameter",
                "'skills' are not supported.",
            ));
        }
    }
    if let Some(key) = body.keys().next() {
        return Err(unknown(key));
    }
    Ok(spec)
}

fn unknown(param: &str) -> Error {
    Error::invalid_request(
        Some(param),
        "unknown_parameter",
        format!("Unknown parameter: '{param}'."),
    )
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let body = json_body(request, state.max_body_bytes).await?;
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(Error::invalid_request(
                None,
                "invalid_type",
                "The body must be a JSON object.",
            ));
        }
        Err(e) => {
            return Err(Error::invalid_request(
                None,
                "invalid_json",
                format!("The body is not valid JSON: {e}"),
            ));
        }
    };
    let spec = spec(&interpreter, body)?;
    let container = interpreter.api_create(&Owner::of(&principal), &spec).await?;
    Ok(Json(object(&container)))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let page = list::page(query.as_deref())?;
    let name = list::param(query.as_deref(), "name");
    let listed = interpreter.api_list(&Access::of(&principal), &page, name.as_deref()).await?;
    Ok(Json(list::body(listed.data.iter().map(object).collect(), listed.has_more)))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let container = interpreter.api_get(&Access::of(&principal), &id).await?;
    Ok(Json(object(&container)))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    if !interpreter.delete_container(&Access::of(&principal), &id).await? {
        return Err(Error::NotFound { object: "container", id });
    }
    Ok(Json(json!({"id": id, "object": "container.deleted", "deleted": true})))
}

pub async fn list_files(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let page = list::page(query.as_deref())?;
    let listed = interpreter.api_list_files(&Access::of(&principal), &id, &page).await?;
    Ok(Json(list::body(listed.data.iter().map(file_object).collect(), listed.has_more)))
}

pub async fn get_file(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let file = interpreter.api_get_file(&Access::of(&principal), &id, &file_id).await?;
    Ok(Json(file_object(&file)))
}

pub async fn delete_file(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    interpreter.api_delete_file(&Access::of(&principal), &id, &file_id).await?;
    Ok(Json(json!({"id": file_id, "object": "container.file.deleted", "deleted": true})))
}

/// Streams the file from the agent to the client as it arrives.
pub async fn file_content(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Response, Error> {
    let interpreter = interpreter(&state)?;
    let download = interpreter.api_download(&Access::of(&principal), &id, &file_id).await?;
    let name = download.file.path.rsplit('/').next().unwrap_or("file");
    let shown: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let mut headers = vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{shown}\"")),
    ];
    if let Some(length) = download.response.content_length() {
        headers.push((header::CONTENT_LENGTH, length.to_string()));
    }
    let mut response = Body::from_stream(download.response.bytes_stream()).into_response();
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// The workspace name of an upload: the client's file name without any directories.
fn upload_name(file_name: Option<&str>) -> Result<String, Error> {
    let name = file_name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("").trim();
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') || name.len() > 255 {
        return Err(Error::invalid_request(
            Some("file"),
            "invalid_file_name",
            "The 'file' part needs a file name (1 to 255 bytes, not '.' or '..').",
        ));
    }
    Ok(name.to_string())
}

fn bad_multipart(detail: impl std::fmt::Display) -> Error {
    Error::invalid_request(
        None,
        "invalid_multipart",
        format!("The body is not a valid multipart/form-data upload with a 'file' part: {detail}"),
    )
}

/// How feeding the upload to the agent ended, on the client's side.
enum Pumped {
    Done,
    TooLarge,
    Broken(String),
    /// The agent stopped reading (it refused or failed); its answer says why.
    AgentGone,
}

/// `POST /v1/containers/{id}/files`: multipart with a `file` part. The bytes go to the agent as
/// they arrive; past `max_upload_bytes` the upload is cut off (the agent installs a file only
/// when it is complete) and the client gets 413.
pub async fn upload(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, Error> {
    let interpreter = interpreter(&state)?;
    let limit = interpreter.limits().max_upload_bytes;
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type == "application/json" {
        // `{"file_id": ...}` names a file of the Files API, which is not here.
        return Err(no_files_api("file_id"));
    }
    if media_type != "multipart/form-data" {
        return Err(bad_multipart("send Content-Type: multipart/form-data"));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(Error::PayloadTooLarge { limit: limit as usize });
    }
    let mut multipart = Multipart::from_request(request, &()).await.map_err(bad_multipart)?;
    let mut field = loop {
        match multipart.next_field().await.map_err(bad_multipart)? {
            Some(field) if field.name() == Some("file") => break field,
            Some(field) if field.name() == Some("file_id") => return Err(no_files_api("file_id")),
            // Other parts carry nothing for us; skip them.
            Some(_) => continue,
            None => return Err(missing("file")),
        }
    };
    let name = upload_name(field.file_name())?;
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let access = Access::of(&principal);
    let send = interpreter.api_upload(&access, &id, &name, reqwest::Body::wrap_stream(rx));
    let pump = async {
        let mut tx = tx;
        let mut total: u64 = 0;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                // Dropping `tx` ends the agent's body: the upload is complete.
                Ok(None) => return Pumped::Done,
                Err(err) => {
                    let _ = tx.send(Err(std::io::Error::other("upload broken"))).await;
                    return Pumped::Broken(err.to_string());
                }
            };
            total += chunk.len() as u64;
            if total > limit {
                // An error, not an end: the agent must not install a truncated file.
                let _ = tx.send(Err(std::io::Error::other("upload too large"))).await;
                return Pumped::TooLarge;
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return Pumped::AgentGone;
            }
        }
    };
    let (sent, pumped) = tokio::join!(send, pump);
    match pumped {
        Pumped::TooLarge => return Err(Error::PayloadTooLarge { limit: limit as usize }),
        Pumped::Broken(detail) => return Err(bad_multipart(detail)),
        Pumped::Done | Pumped::AgentGone => {}
    }
    match sent? {
        Ok(file) => Ok(Json(file_object(&file))),
        Err(refusal) if refusal.status == 413 => {
            Err(Error::PayloadTooLarge { limit: limit as usize })
        }
        Err(refusal) if refusal.status == 400 => Err(Error::invalid_request(
            Some("file"),
            "invalid_file",
            format!("The sandbox refused the file: {}", refusal.message),
        )),
        Err(refusal) => Err(Error::SandboxUnavailable(format!(
            "the sandbox refused the upload: {} {}: {}",
            refusal.status, refusal.code, refusal.message
        ))),
    }
}
