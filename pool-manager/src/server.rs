//! Startup and serving: config -> identity -> runtime -> leadership -> manager -> listeners, then
//! a drain on shutdown.
//!
//! Phases of [`run`]: (1) the SVID source starts (or, on the local runtime without `identity`, the
//! manager mints its own from the development CA) and we wait, bounded, for the first SVID; (2) the
//! runtime connects (Kubernetes: the CRD must be queryable) or prepares (local); (3) leadership:
//! a Lease on Kubernetes, always the leader locally; (4) the admin listener (plain HTTP), the claim
//! API (mTLS, allowed callers only), the runtime's change watch and the reconcile loop start; (5)
//! on shutdown the listeners stop accepting, in-flight requests get `server.shutdown_grace_ms`,
//! the Lease is given up and local agent processes are stopped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use antwort_common::identity::{
    FileSource, FilesConfig, MtlsServer, PeerPolicy, SharedSource, wait_ready,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::AgentClient;
use crate::config::{Config, RuntimeConfig};
use crate::error::{Error, Result};
use crate::leader::{self, LeaseSettings};
use crate::manager::Manager;
use crate::runtime::Runtime;
use crate::runtime::kube::KubeRuntime;
use crate::runtime::local::LocalRuntime;
use crate::{api, reconcile};

/// Already-bound listeners (tests bind port 0 and read the addresses first).
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config.server`.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let api = TcpListener::bind(config.server.listen).await?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        tracing::info!(addr = %api.local_addr()?, "claim API (mTLS) listening");
        tracing::info!(addr = %admin.local_addr()?, "admin (HTTP) listening");
        Ok(Listeners { api, admin })
    }
}

/// Serves until `shutdown` completes (see the module docs for the phases). `kube_client` is used
/// with the Kubernetes runtime; `None` loads the kubeconfig or in-cluster configuration.
pub async fn run(
    config: Config,
    kube_client: Option<kube::Client>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    match &config.runtime {
        RuntimeConfig::Kubernetes(kube_config) => {
            let source = start_identity(&config).await?;
            let manager_id = own_id(&source)?;
            let client = match kube_client {
                Some(client) => client,
                None => kube::Client::try_default()
                    .await
                    .map_err(|e| Error::ClientConfig(e.to_string()))?,
            };
            let runtime =
                KubeRuntime::connect(client.clone(), kube_config.clone(), vec![manager_id]).await?;
            let (leader_tx, leader_rx) = watch::channel(false);
            let settings = LeaseSettings {
                namespace: kube_config.namespace.clone(),
                name: kube_config.lease_name.clone(),
                holder: replica_name(),
                duration: Duration::from_secs(kube_config.lease_duration_secs),
            };
            tracing::info!(holder = %settings.holder, lease = %settings.name, "competing for leadership");
            let (stop_lease_tx, stop_lease_rx) = tokio::sync::oneshot::channel::<()>();
            let election = tokio::spawn(leader::run(client, settings, leader_tx, async move {
                let _ = stop_lease_rx.await;
            }));
            let served = serve(runtime, &config, source, leader_rx, listeners, shutdown).await;
            let _ = stop_lease_tx.send(());
            let _ = election.await;
            served
        }
        RuntimeConfig::Local(local) => {
            let trust_domain = local.trust_domain.clone();
            let minted_id = format!("spiffe://{trust_domain}/ns/local/sa/pool-manager");
            let (runtime, source) = match &config.identity {
                Some(_) => {
                    let source = start_identity(&config).await?;
                    let runtime = LocalRuntime::new(local.clone(), vec![own_id(&source)?])?;
                    (runtime, source)
                }
                None => {
                    let runtime = LocalRuntime::new(local.clone(), vec![minted_id.clone()])?;
                    let dir = runtime.work_dir().join("manager-svid");
                    runtime.ca().write_svid(&minted_id, &dir)?;
                    let source: SharedSource = FileSource::start(FilesConfig::in_dir(dir))?;
                    (runtime, source)
                }
            };
            // One manager per machine: it always leads.
            let (_leader_tx, leader_rx) = watch::channel(true);
            serve(runtime, &config, source, leader_rx, listeners, shutdown).await
        }
    }
}

async fn start_identity(config: &Config) -> Result<SharedSource> {
    let identity =
        config.identity.as_ref().ok_or_else(|| Error::Config("identity: required".to_owned()))?;
    let source = identity.start()?;
    wait_ready(source.as_ref(), Duration::from_millis(config.server.identity_timeout_ms)).await?;
    Ok(source)
}

fn own_id(source: &SharedSource) -> Result<String> {
    source
        .current()
        .map(|identity| identity.spiffe_id().to_string())
        .ok_or_else(|| Error::Config("identity: no SVID yet".to_owned()))
}

/// This replica's name in the Lease: the pod name (`HOSTNAME`) plus a random suffix, so two
/// managers in one process or a restarted pod never share one.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "pool-manager".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// Serves one manager on `runtime` until `shutdown`.
pub async fn serve<R: Runtime>(
    runtime: R,
    config: &Config,
    source: SharedSource,
    leader: watch::Receiver<bool>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let callers = PeerPolicy::exact(config.server.allowed_callers.iter().map(String::as_str))?;
    let agents =
        AgentClient::new(source.clone(), Duration::from_millis(config.reconcile.agent_timeout_ms));
    let manager = Arc::new(Manager::new(
        runtime,
        config.claims.clone(),
        config.reconcile.clone(),
        agents,
        leader,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    {
        let router = api::admin_router(manager.clone(), source.clone());
        let stop = stopped();
        let listener = listeners.admin;
        tasks.spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stop).await.map_err(Error::from)
        });
    }
    {
        let mtls = MtlsServer::new(source, callers)?;
        let router = api::claim_router(manager.clone());
        let stop = stopped();
        let listener = listeners.api;
        tasks.spawn(async move { mtls.serve(listener, router, stop).await.map_err(Error::from) });
    }
    {
        let manager = manager.clone();
        let stop = stopped();
        tasks.spawn(async move {
            reconcile::run(manager, stop).await;
            Ok(())
        });
    }
    // The change watch never ends by itself: it is aborted with the rest below.
    let watcher = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.runtime.watch(manager.pulse.clone()).await })
    };

    shutdown.await;
    tracing::info!("shutting down: draining");
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(error)) = joined {
                tracing::warn!(%error, "a task ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(?grace, "shutdown grace period expired; aborting in-flight requests");
    }
    tasks.abort_all();
    watcher.abort();
    manager.runtime.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
