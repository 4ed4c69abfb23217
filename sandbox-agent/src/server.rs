//! Startup and serving: config -> sandbox -> sessions -> routers -> identity -> listeners, then a
//! warm-up execution that releases `/readyz`, and a drain on shutdown.
//!
//! Phases of [`run`]: (1) everything is built and checked before anything binds; (2) the SVID
//! source starts and we wait (bounded) for the first SVID; (3) the API listener serves over mTLS
//! to the allowed callers only, the admin listener serves health and metrics in plain HTTP; (4)
//! the warm-up runs `print(1 + 1)` in a throwaway session; (5) on shutdown both listeners stop
//! accepting, in-flight requests get `server.shutdown_grace_ms`, and every session is deleted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use antwort_common::identity::{MtlsServer, PeerPolicy, SharedSource, wait_ready};

use crate::api::{self, AppState, Readiness};
use crate::config::Config;
use crate::interpreter::Launcher;
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::{Error, Result, search};

/// A built agent: state and routers, not yet serving.
#[derive(Clone)]
pub struct Agent {
    pub state: AppState,
    config: Arc<Config>,
    file_search: Option<search::FileSearch>,
    web_search: Option<search::WebSearch>,
}

impl Agent {
    /// Prepares the sandbox, the sessions and the enabled capabilities. `identity` is the SVID
    /// source `/readyz` waits for (`None` when the caller serves the router itself, e.g. tests).
    pub fn build(config: Config, identity: Option<SharedSource>) -> Result<Self> {
        let config = Arc::new(config);
        let launcher = Launcher::new(&config)?;
        tracing::info!(?launcher, "interpreter launcher prepared");
        let spawner = match &launcher {
            Launcher::Spawner(client) if config.capabilities.code => Some(client.clone()),
            _ => None,
        };
        let sessions = Arc::new(Sessions::new(config.clone(), launcher, Metrics::new())?);
        let file_search = if config.capabilities.file_search {
            Some(
                search::FileSearch::new(config.file_search.clone())
                    .map_err(|e| Error::Config(format!("file_search: {e}")))?,
            )
        } else {
            None
        };
        let web_search = if config.capabilities.web_search {
            Some(
                search::WebSearch::new(config.web_search.clone())
                    .map_err(|e| Error::Config(format!("web_search: {e}")))?,
            )
        } else {
            None
        };
        let readiness = Arc::new(Readiness { identity, spawner, ..Readiness::default() });
        Ok(Agent { state: AppState { sessions, readiness }, config, file_search, web_search })
    }

    /// The API router with every enabled capability.
    pub fn router(&self) -> Router {
        let mut router = if self.config.capabilities.code {
            api::router(self.state.clone())
        } else {
            api::admin_router(self.state.clone())
        };
        if let Some(fs) = &self.file_search {
            router = router.merge(search::file_search_router(fs.clone()));
        }
        if let Some(ws) = &self.web_search {
            router = router.merge(search::web_search_router(ws.clone()));
        }
        router
    }

    /// `/healthz`, `/readyz`, `/metrics` for the plain-HTTP admin listener.
    pub fn admin_router(&self) -> Router {
        api::admin_router(self.state.clone())
    }

    /// Runs one real execution in a throwaway session; `/readyz` turns ready only after it
    /// printed what it should. Without the code capability there is nothing to warm up.
    pub async fn warm_up(&self) -> Result<()> {
        if self.config.capabilities.code && self.config.python.warm_up {
            let sessions = &self.state.sessions;
            // The pod's containers start in any order: wait for the spawner to come up.
            let mut attempts = 0u32;
            let info = loop {
                match sessions.create(Some("warm-up".into())).await {
                    Err(Error::SpawnerUnavailable(why)) => {
                        if attempts.is_multiple_of(20) {
                            tracing::info!(%why, "waiting for the spawner");
                        }
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    other => break other?,
                }
            };
            let result = sessions.execute(&info.id, "print(1 + 1)", None, &mut |_, _| {}).await;
            let _ = sessions.delete(&info.id).await;
            let result = result?;
            if result.stdout != "2\n" {
                return Err(Error::Internal(format!("warm-up execution printed {result:?}")));
            }
        }
        // The first session asked for need not wait for Python to start either.
        self.state.sessions.refill_spare();
        self.state.readiness.warmed_up.store(true, Ordering::SeqCst);
        tracing::info!("warm-up execution succeeded; ready");
        Ok(())
    }

    /// Deletes sessions idle past the limit, every few seconds, until dropped.
    pub async fn reap_idle_sessions(&self) {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            self.state.sessions.reap_idle().await;
        }
    }
}

/// Serves the agent until `shutdown` completes (see the module docs for the phases).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Some(identity_config) = config.identity.clone() else {
        return Err(Error::Config(
            "`identity`: required to serve (source: files | workload_api)".into(),
        ));
    };
    let policy = PeerPolicy::exact(config.server.allowed_callers.iter().map(String::as_str))
        .map_err(|e| Error::Config(format!("`server.allowed_callers`: {e}")))?;
    if policy.is_empty() {
        return Err(Error::Config("`server.allowed_callers`: name at least one caller".into()));
    }
    let source = identity_config.start().map_err(|e| Error::Config(format!("`identity`: {e}")))?;
    let agent = Agent::build(config.clone(), Some(source.clone()))?;
    let api_listener = TcpListener::bind(config.server.listen).await?;
    tracing::info!(addr = %api_listener.local_addr()?, "API (mTLS) listening");
    let admin_listener = match config.server.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "admin (HTTP) listening");
            Some(listener)
        }
        None => None,
    };
    serve(agent, source, policy, api_listener, admin_listener, &config, shutdown).await
}

/// Serves on already-bound listeners (tests bind port 0 and read the address first).
pub async fn serve(
    agent: Agent,
    source: SharedSource,
    policy: PeerPolicy,
    api_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = admin_listener {
        let router = agent.admin_router();
        let stop = stopped();
        tasks.spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stop).await.map_err(Error::from)
        });
    }
    let identity_timeout = Duration::from_millis(config.server.identity_timeout_ms);
    wait_ready(source.as_ref(), identity_timeout)
        .await
        .map_err(|e| Error::Config(format!("`identity`: {e}")))?;
    tracing::info!("SVID received");
    let mtls =
        MtlsServer::new(source, policy).map_err(|e| Error::Config(format!("`identity`: {e}")))?;
    let router = agent.router();
    let stop = stopped();
    tasks.spawn(async move {
        mtls.serve(api_listener, router, stop).await.map_err(|e| Error::Internal(e.to_string()))
    });
    let warm = agent.clone();
    tasks.spawn(async move {
        let warmed = warm.warm_up().await;
        if let Err(e) = &warmed {
            tracing::error!(error = %e, "warm-up failed: the agent stays unready");
        }
        warmed
    });
    let reaper = agent.clone();
    tasks.spawn(async move {
        reaper.reap_idle_sessions().await;
        Ok(())
    });

    shutdown.await;
    tracing::info!("shutting down: draining");
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        // The reaper never ends; everything else does once the listeners stopped.
        while tasks.len() > 1 {
            if let Some(Ok(Err(e))) = tasks.join_next().await {
                tracing::warn!(error = %e, "task ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(?grace, "shutdown grace period expired; aborting in-flight requests");
    }
    tasks.abort_all();
    agent.state.sessions.delete_all().await;
    tracing::info!("stopped");
    Ok(())
}
