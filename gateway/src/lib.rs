//! antwort's gateway: the OpenResponses API (`/v1/responses`) in front of OpenAI-compatible Chat
//! Completions backends (vLLM, LiteLLM, Ollama).
//!
//! # Layout
//! A request reads top to bottom through these modules:
//! - [`api`]: ROUTE. axum router, handlers, auth, request ids, metrics, SSE framing, and the one
//!   place errors become HTTP (`api::error`). Also WebSocket mode (`api::websocket`),
//!   `/v1/responses/compact` (`api::compact`) and the containers API (`api::containers`).
//! - [`auth`]: who is calling ([`auth::Principal`]: tenant, user, scopes) and how it is
//!   established: a chain of authenticators (hashed API keys, OIDC JWTs; `mode: none` only when
//!   configured), scope checks (read/write, 403) and per-principal rate limits (429). Run by
//!   `api`'s middleware on every route but the probes.
//! - [`openresponses`]: the wire format: request parsing/validation, the Response object, events.
//! - [`engine`]: ENGINE. Routes a request to its backend, runs the tool loop (model call,
//!   server-side tool calls, model call again: `engine::tool_loop`) and builds the Response (and
//!   its event stream) from what the model produces (`engine::builder`).
//! - [`provider`]: PROVIDER. The backend boundary: the `Provider` trait, model routing, the Chat
//!   Completions client and its request translation.
//! - [`store`]: STORE. Responses (items, events, background queue state), conversations and
//!   code interpreter containers (with their files), owned by (tenant, user), behind one
//!   `Store` trait: in-memory, SQLite (embedded default) and PostgreSQL (`store::sql`),
//!   migrations from `migrations/`. The engine writes a `store: true`
//!   response before its final event; `engine::context` reads chains and conversations back.
//! - [`worker`]: BACKGROUND. The worker pool that claims `background: true` responses from the
//!   store, runs them through the engine and stores their events (`api::background` queues
//!   and cancels them, `api::resume` replays and follows their events).
//! - [`tools`]: TOOLS. Server-side tools the engine runs between model calls behind one
//!   `ToolExecutor` boundary: the sandbox-backed code interpreter (pool-manager claim + agent
//!   execution over mTLS, `cntr_...` containers per owner, recorded in the store so any replica
//!   can use them).
//! - [`config`]: the YAML schema and its validation; [`metrics`]: Prometheus; [`error`]: the one
//!   error type; [`ids`]: object ids.
//!
//! `main.rs` only parses the command line and calls [`build`] and [`serve`]; tests do the same
//! in-process.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod openresponses;
pub mod provider;
pub mod store;
pub mod tools;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::Error;
use crate::provider::chat_completions::ChatCompletionsProvider;
use crate::provider::{Provider, Route, Router};

/// Builds the whole application with an in-memory store (nothing survives the process): for
/// tests and embedding. The binary opens the configured store ([`open_store`]) and calls
/// [`build_with_store`].
pub fn build(config: &Config) -> Result<axum::Router, Error> {
    build_with_store(config, Arc::new(store::memory::MemoryStore::new()))
}

/// Opens the configured store (`config.store`) and runs its migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn store::Store>, Error> {
    store::open(&config.store).await
}

/// Builds the whole application (providers, engine, routes) from a validated config and an open
/// store.
pub fn build_with_store(
    config: &Config,
    store: Arc<dyn store::Store>,
) -> Result<axum::Router, Error> {
    build_app(config, store).map(|app| app.router)
}

/// A built gateway: its routes, and the background workers to drain at shutdown ([`serve_app`]).
pub struct App {
    pub router: axum::Router,
    pub workers: Arc<worker::Workers>,
    /// Cancelled at shutdown: the code interpreter's reaper ends every container (sessions
    /// deleted, claims released) and `reaper` finishes.
    pub tools_shutdown: tokio_util::sync::CancellationToken,
    pub reaper: Option<tokio::task::JoinHandle<()>>,
}

/// [`build_with_store`], keeping the handle on the background workers (started here, on the
/// current tokio runtime).
pub fn build_app(config: &Config, store: Arc<dyn store::Store>) -> Result<App, Error> {
    // reqwest is built without a bundled crypto provider; ring is the one we ship.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut providers: Vec<(String, Arc<dyn Provider>)> = Vec::new();
    for settings in &config.backends {
        let provider: Arc<dyn Provider> = Arc::new(ChatCompletionsProvider::new(settings.clone())?);
        providers.push((settings.name.clone(), provider));
    }
    let find = |name: &str| providers.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone());
    let default = config.default_backend.as_deref().and_then(find);
    let mut router = Router::new(default, providers.iter().map(|(_, p)| p.clone()).collect());
    for model in &config.models {
        let provider = find(&model.backend).ok_or_else(|| {
            Error::Internal(format!("model {} names an unknown backend", model.name))
        })?;
        router.add_model(
            model.name.clone(),
            Route { provider, upstream_model: model.upstream_model.clone() },
        );
    }
    let metrics = Arc::new(metrics::Metrics::new());
    let code_interpreter = match &config.tools.code_interpreter {
        Some(ci) => Some(Arc::new(
            tools::code_interpreter::CodeInterpreter::from_config(ci)?.with_store(store.clone()),
        )),
        None => None,
    };
    let tools_shutdown = tokio_util::sync::CancellationToken::new();
    let reaper = code_interpreter.clone().map(|ci| {
        let shutdown = tools_shutdown.clone();
        tokio::spawn(async move { ci.run_reaper(shutdown.cancelled_owned()).await })
    });
    let engine = Arc::new(
        engine::Engine::new(router, metrics.clone(), store.clone())
            .with_event_batching(config.background.event_batching())
            .with_tools(engine::tool_loop::ServerTools {
                code_interpreter,
                max_turns: config.tools.max_turns,
            }),
    );
    let workers =
        Arc::new(worker::Workers::start(store.clone(), engine.clone(), config.background.clone()));
    let router = api::router(api::AppState {
        background: config.background.clone(),
        workers: workers.clone(),
        engine,
        metrics,
        max_body_bytes: config.max_body_bytes,
        store,
        websocket: config.websocket.clone(),
        auth: Arc::new(auth::Auth::new(&config.auth)?),
        sse_keep_alive: config.sse_keep_alive,
    });
    Ok(App { router, workers, tools_shutdown, reaper })
}

/// [`serve`] for an [`App`]: when `shutdown` resolves, the background workers stop claiming and
/// drain (within `grace`) while the HTTP side drains.
pub async fn serve_app(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use futures::FutureExt;
    let shutdown = shutdown.boxed().shared();
    let workers = app.workers.clone();
    let (tools_shutdown, reaper) = (app.tools_shutdown.clone(), app.reaper);
    let drain = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            workers.drain(grace).await;
            tools_shutdown.cancel();
            if let Some(reaper) = reaper {
                let _ = tokio::time::timeout(grace, reaper).await;
            }
        }
    };
    let (served, ()) = tokio::join!(serve(listener, app.router, shutdown, grace), drain);
    served
}

/// Serves `app` until `shutdown` resolves, then lets in-flight requests finish for at most
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        // Small SSE frames must leave at once, not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(%err, "could not set TCP_NODELAY");
        }
    });
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    });
    let deadline = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "shutdown grace period expired; dropping in-flight requests");
            Ok(())
        }
    }
}
