//! HTTP edge: routes, extractors and the SSE stream. Handlers parse, call [`Sessions`] and wrap
//! the answer; errors become the envelope once, in [`Error`]'s `IntoResponse`.
//!
//! Routes (wire types in `antwort_common::agent_api`): see that module's docs; plus `/healthz`,
//! `/readyz`, `/metrics` here and on the admin router.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream as FuturesStream;
use tokio::sync::mpsc;

use antwort_common::agent_api::{
    CreateSessionRequest, EVENT_ERROR, EVENT_RESULT, EVENT_STDERR, EVENT_STDOUT, ExecuteRequest,
    InterruptResult, OutputChunk, SessionList,
};
use antwort_common::identity::SharedSource;

use crate::interpreter::Stream;
use crate::session::Sessions;
use crate::spawner::client::SpawnerClient;
use crate::{Error, Result};

/// What `/readyz` waits for.
#[derive(Debug, Default)]
pub struct Readiness {
    /// A real execution succeeded at start.
    pub warmed_up: AtomicBool,
    /// Our SVID source, when serving over mTLS.
    pub identity: Option<SharedSource>,
    /// The spawner in the sandbox container, when interpreters come from there: it must answer
    /// a ping for the agent to be ready.
    pub spawner: Option<SpawnerClient>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.warmed_up.load(Ordering::SeqCst)
            && self.identity.as_ref().is_none_or(|source| source.is_ready())
    }

    /// [`Readiness::is_ready`], and the spawner (if any) answers.
    pub async fn check(&self) -> bool {
        if !self.is_ready() {
            return false;
        }
        match &self.spawner {
            None => true,
            Some(spawner) => match spawner.ping().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "not ready");
                    false
                }
            },
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub sessions: Arc<Sessions>,
    pub readiness: Arc<Readiness>,
}

/// The API: sessions, execute, files, health.
pub fn router(state: AppState) -> Router {
    let json_limit = state.sessions.config().server.max_json_body_bytes;
    let sessions = Router::new()
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/execute", post(execute))
        .route("/v1/sessions/{id}/execute/stream", post(execute_stream))
        .route("/v1/sessions/{id}/interrupt", post(interrupt))
        .route("/v1/sessions/{id}/restart", post(restart))
        .route("/v1/sessions/{id}/files", get(list_files))
        .layer(DefaultBodyLimit::max(json_limit));
    // Uploads stream to disk and count bytes themselves (413 past `limits.max_upload_bytes`).
    let files = Router::new()
        .route(
            "/v1/sessions/{id}/files/{*path}",
            get(download_file).put(upload_file).delete(delete_file),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(sessions)
        .merge(files)
        .merge(health_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics` alone, for the plain-HTTP admin listener.
pub fn admin_router(state: AppState) -> Router {
    health_routes().fallback(not_found).with_state(state)
}

fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.check().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.sessions.metrics().render())
        .into_response()
}

async fn not_found() -> Error {
    Error::Http(StatusCode::NOT_FOUND, "route_not_found", "no such route".into())
}

async fn method_not_allowed() -> Error {
    Error::Http(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here".into(),
    )
}

/// `Json` whose rejections use the error envelope.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::Http(StatusCode::PAYLOAD_TOO_LARGE, "too_large", rejection.body_text())
    } else {
        Error::BadRequest(rejection.body_text())
    }
}

async fn create_session(State(state): State<AppState>, req: Request) -> Result<Response> {
    // The body is optional: empty means defaults.
    let body =
        axum::body::to_bytes(req.into_body(), state.sessions.config().server.max_json_body_bytes)
            .await
            .map_err(|_| {
                Error::Http(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large".into())
            })?;
    let request: CreateSessionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSessionRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))?
    };
    let info = state.sessions.create(request.label).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list_sessions(State(state): State<AppState>) -> Json<SessionList> {
    Json(SessionList { sessions: state.sessions.list() })
}

async fn get_session(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(state.sessions.get(&id)?.info()).into_response())
}

async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.sessions.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(state.sessions.restart(&id).await?).into_response())
}

async fn interrupt(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let interrupted = state.sessions.interrupt(&id)?;
    Ok(Json(InterruptResult { interrupted }).into_response())
}

async fn execute(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(request): AppJson<ExecuteRequest>,
) -> Result<Response> {
    // Detached, as in `execute_stream`: if the client goes away mid-run, dropping this handler
    // would drop the execution half-way (the session looking idle while Python still runs the
    // code), so an interrupt would find nothing to stop and the next execution would queue
    // behind the abandoned one. The task runs to the end (or to an interrupt) either way.
    let sessions = state.sessions.clone();
    let result = tokio::spawn(async move {
        sessions.execute(&id, &request.code, request.timeout_ms, &mut |_, _| {}).await
    })
    .await
    .map_err(|e| Error::Internal(format!("the execution task failed: {e}")))??;
    Ok(Json(result).into_response())
}

async fn execute_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(request): AppJson<ExecuteRequest>,
) -> Result<Response> {
    // Refuse what cannot run with a status, before the stream starts.
    let session = state.sessions.get(&id)?;
    if session.info().state == antwort_common::agent_api::SessionState::Busy {
        return Err(Error::SessionBusy(id));
    }
    // Bounded by the output limit: only kept output is sent.
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let sessions = state.sessions.clone();
    // Detached on purpose: a client that goes away does not cancel the execution, which keeps
    // the session consistent; the result is simply not delivered.
    tokio::spawn(async move {
        let chunks = tx.clone();
        let mut sink = move |stream: Stream, text: String| {
            let name = match stream {
                Stream::Stdout => EVENT_STDOUT,
                Stream::Stderr => EVENT_STDERR,
            };
            let data = serde_json::to_string(&OutputChunk { text }).expect("serializable");
            let _ = chunks.send(Event::default().event(name).data(data));
        };
        let event = match sessions.execute(&id, &request.code, request.timeout_ms, &mut sink).await
        {
            Ok(result) => Event::default()
                .event(EVENT_RESULT)
                .data(serde_json::to_string(&result).expect("serializable")),
            Err(e) => Event::default()
                .event(EVENT_ERROR)
                .data(serde_json::to_string(&e.envelope().1).expect("serializable")),
        };
        let _ = tx.send(event);
    });
    Ok(Sse::new(events(rx)).into_response())
}

fn events(
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> impl FuturesStream<Item = std::result::Result<Event, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|event| event.map(Ok)))
}

async fn list_files(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(state.sessions.list_files(&id).await?).into_response())
}

async fn download_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response> {
    let (file, size) = state.sessions.open_file(&id, &path)?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn upload_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let limit = state.sessions.config().limits.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Cheap checks first, so a refused upload is not read at all.
    state.sessions.get(&id)?;
    crate::workspace::RelPath::parse(&path)?;
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge(limit));
    }
    let body = req.into_body().into_data_stream();
    let info = state.sessions.upload(&id, &path, body).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn delete_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<StatusCode> {
    state.sessions.delete_file(&id, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}
