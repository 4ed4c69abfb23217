//! HTTP: the accept loop (TCP_NODELAY on every socket), routes, and turning a picked turn
//! into a response. Each request is handled in three steps: read and parse the body, decide
//! the whole reply synchronously (`prepare`), then deliver it on the scripted schedule.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::book::Book;
use crate::error::Error;
use crate::record::{CancelGuard, RecordedRequest, Recorder};
use crate::request::ChatRequest;
use crate::script::{Failure, HttpError};
use crate::sse::{MidStream, SseBody};
use crate::{admin, reply, sse, wire};

/// Listed by `GET /v1/models` when no model is scripted or named.
pub const DEFAULT_MODEL: &str = "scripted-echo";

/// State shared by every connection.
pub(crate) struct Shared {
    pub book: Book,
    pub recorder: Arc<Recorder>,
    /// Numbers replies: `chatcmpl-scripted-N`, `call_N_i`.
    sequence: AtomicU64,
    max_body_bytes: usize,
    /// Serve the `/_scripted/` control API.
    admin: bool,
    header_read_timeout: Duration,
}

impl Shared {
    pub fn new(options: &crate::Options) -> Self {
        Self {
            book: Book::new(),
            recorder: Arc::new(Recorder::new(options.record_limit)),
            sequence: AtomicU64::new(1),
            max_body_bytes: options.max_body_bytes,
            admin: options.admin,
            header_read_timeout: options.header_read_timeout,
        }
    }
}

/// Accepts until `shutdown` flips, then aborts the open connections (stalled streams would
/// otherwise hold a graceful drain forever; this is a test double, not a production server).
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Flipped to true, or the handle is gone: stop either way.
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                // Out of file descriptors or a reset before accept: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Without it each small SSE write waits ~40 ms for the peer's delayed ACK.
    let _ = stream.set_nodelay(true);
    let header_read_timeout = shared.header_read_timeout;
    let service = hyper::service::service_fn(move |request| handle(shared.clone(), request));
    // Connection errors (resets, the scripted hangups) are expected in tests; nothing to do.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Returned by the service to make hyper close the connection without any response.
#[derive(Debug)]
pub(crate) struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted hangup")
    }
}

impl std::error::Error for Hangup {}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, Hangup> {
    let received_at = Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, shared.max_body_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(Error::BodyTooLarge { limit: shared.max_body_bytes })
        }
        Err(error) => Err(Error::ReadBody(error.to_string())),
    };
    if shared.admin && parts.uri.path().starts_with(admin::PREFIX) {
        let answer =
            bytes.and_then(|bytes| admin::handle(&shared, &parts.method, parts.uri.path(), &bytes));
        return Ok(match answer {
            Ok(Some(body)) => json(StatusCode::OK, body),
            Ok(None) => {
                let mut response = Response::new(Body::Full(None));
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            Err(error) => error_response(&error),
        });
    }
    let response = match (&parts.method, parts.uri.path(), bytes) {
        (_, _, Err(error)) => Err(error),
        (&Method::POST, "/v1/chat/completions", Ok(bytes)) => {
            return chat(&shared, parts, &bytes, received_at).await;
        }
        (&Method::GET, "/v1/models", Ok(_)) => {
            let mut names = shared.book.model_names();
            if names.is_empty() {
                names.push(DEFAULT_MODEL.to_owned());
            }
            Ok(json(StatusCode::OK, wire::model_list(names.iter().map(String::as_str))))
        }
        (&Method::GET, "/health", Ok(_)) => Ok(Response::new(Body::Full(None))),
        (method, path, Ok(_)) => {
            Err(Error::NotFound { method: method.to_string(), path: path.to_owned() })
        }
    };
    record(&shared, parts, Value::Null, received_at);
    Ok(response.unwrap_or_else(|error| error_response(&error)))
}

fn record(
    shared: &Shared,
    parts: http::request::Parts,
    body: Value,
    received_at: Instant,
) -> Option<usize> {
    if !shared.recorder.is_enabled() {
        return None;
    }
    shared.recorder.record(RecordedRequest {
        method: parts.method,
        path: parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |pq| pq.to_string()),
        headers: parts.headers,
        body,
        received_at,
    })
}

async fn chat(
    shared: &Arc<Shared>,
    parts: http::request::Parts,
    bytes: &Bytes,
    received_at: Instant,
) -> Result<Response<Body>, Hangup> {
    let body: Value = match serde_json::from_slice(bytes) {
        Ok(body) => body,
        Err(error) => {
            record(shared, parts, Value::Null, received_at);
            let error = Error::BadRequest(format!("the body is not valid JSON: {error}"));
            return Ok(error_response(&error));
        }
    };
    let prepared = prepare(shared, &body);
    let index = record(shared, parts, body, received_at);
    match prepared {
        Ok(prepared) => deliver(shared, prepared, index).await,
        Err(error) => Ok(error_response(&error)),
    }
}

/// A reply decided and rendered, waiting for its time to first token.
struct Prepared {
    ttft: Duration,
    model: String,
    action: Action,
}

enum Action {
    Respond(Response<Body>),
    Stream {
        events: sse::Events,
        delay: Duration,
        failure: Option<MidStream>,
    },
    /// Never answer (non-streaming stall).
    Stall,
    Hangup,
}

fn prepare(shared: &Shared, body: &Value) -> Result<Prepared, Error> {
    let request = ChatRequest::parse(body)?;
    let pick = shared.book.pick(&request)?;
    let turn = &*pick.turn;
    let failure = if pick.failing { turn.failure.as_ref() } else { None };
    let action = match failure {
        Some(Failure::Http(error)) => Action::Respond(scripted_error(error)),
        Some(Failure::Hangup) => Action::Hangup,
        failure => {
            let echo = turn.is_echo().then(|| reply::echo_text(&request));
            let sequence = shared.sequence.fetch_add(1, Ordering::Relaxed);
            let reply = reply::build(turn, &request, echo.as_ref(), sequence, unix_now());
            if let Some(Failure::StreamError { after_chunks, message, error_type, code }) = failure
            {
                let error_type = error_type.as_deref().unwrap_or("server_error");
                let error = wire::error(message, error_type, code, &Value::Null);
                if request.stream {
                    let events = sse::render(&reply, request.include_usage)
                        .end_with_error(*after_chunks, &error);
                    Action::Stream { events, delay: turn.chunk_delay(), failure: None }
                } else {
                    Action::Respond(json(StatusCode::INTERNAL_SERVER_ERROR, error))
                }
            } else if request.stream {
                let events = sse::render(&reply, request.include_usage);
                let failure = failure.and_then(|failure| MidStream::from_failure(failure, &events));
                Action::Stream { events, delay: turn.chunk_delay(), failure }
            } else {
                let mut completion = wire::completion(&reply);
                match failure {
                    Some(Failure::Stall { .. }) => Action::Stall,
                    Some(Failure::Disconnect { .. }) => Action::Hangup,
                    Some(Failure::Garbled { .. }) => {
                        completion.truncate(completion.len() / 2);
                        Action::Respond(json(StatusCode::OK, completion))
                    }
                    _ => Action::Respond(json(StatusCode::OK, completion)),
                }
            }
        }
    };
    Ok(Prepared { ttft: turn.ttft(), model: request.model.to_owned(), action })
}

async fn deliver(
    shared: &Shared,
    prepared: Prepared,
    index: Option<usize>,
) -> Result<Response<Body>, Hangup> {
    // Dropped with this future if the client leaves during the wait or a stall.
    let mut guard = CancelGuard::new(shared.recorder.clone(), index, prepared.model);
    if !prepared.ttft.is_zero() {
        tokio::time::sleep(prepared.ttft).await;
    }
    match prepared.action {
        Action::Respond(response) => {
            guard.finish();
            Ok(response)
        }
        Action::Hangup => {
            guard.finish();
            Err(Hangup)
        }
        Action::Stall => match std::future::pending::<Infallible>().await {},
        Action::Stream { events, delay, failure } => {
            let body = Body::Sse(Box::new(SseBody::new(events, delay, failure, guard)));
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
    }
}

fn scripted_error(error: &HttpError) -> Response<Body> {
    let Ok(status) = StatusCode::from_u16(error.status) else {
        let message = format!("invalid script: {} is not an HTTP status", error.status);
        return error_response(&Error::InvalidScript(message));
    };
    let body = match &error.body {
        Some(raw) => raw.clone().into_bytes(),
        None => wire::error(
            &error.message,
            error.error_type.as_deref().unwrap_or_else(|| wire::error_type_for(error.status)),
            &error.code,
            &error.param,
        ),
    };
    let mut response = json(status, body);
    if let Some(retry_after) = &error.retry_after {
        match HeaderValue::from_str(retry_after) {
            Ok(value) => {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            Err(_) => {
                let message = format!("invalid script: bad Retry-After value {retry_after:?}");
                return error_response(&Error::InvalidScript(message));
            }
        }
    }
    response
}

/// The one place an [`Error`] becomes an HTTP response.
fn error_response(error: &Error) -> Response<Body> {
    let (status, error_type) = error.status_and_type();
    let code = Value::Null;
    json(status, wire::error(&error.to_string(), error_type, &code, &Value::Null))
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// A whole body at once, or an SSE stream.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Body::Sse(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Sse(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Sse(body) => body.size_hint(),
        }
    }
}

/// Binds `addr`; [`run`] then serves on it.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}
