//! [`WorkloadApiSource`]: SVIDs and bundles from the SPIFFE Workload API (the SPIRE agent's
//! socket), through the `spiffe` crate's `X509Source`, which streams rotations to us.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use spiffe::X509Source;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::error::{Error, Result};
use super::material::Identity;
use super::source::{IdentitySource, Publisher};

/// Where the Workload API listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// `unix:///run/spire/agent.sock` or `tcp://127.0.0.1:8081`. Unset: the standard
    /// `SPIFFE_ENDPOINT_SOCKET` environment variable.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl WorkloadApiConfig {
    /// The Workload API at `endpoint` (`unix:/path` or `tcp://ip:port`).
    pub fn at(endpoint: impl Into<String>) -> Self {
        Self { endpoint: Some(endpoint.into()) }
    }

    fn validate(&self) -> Result<()> {
        match &self.endpoint {
            Some(endpoint) => spiffe::transport::Endpoint::parse(endpoint)
                .map(|_| ())
                .map_err(|e| Error::Config(format!("workload_api.endpoint {endpoint:?}: {e}"))),
            None => spiffe::workload_api::endpoint::from_env().map(|_| ()).map_err(|e| {
                Error::Config(format!(
                    "workload_api.endpoint is unset and SPIFFE_ENDPOINT_SOCKET is not usable: {e}"
                ))
            }),
        }
    }
}

/// An identity streamed from the SPIFFE Workload API.
///
/// Construction returns at once; the connection, the first SVID and every rotation happen in the
/// background (the source is not ready until the first SVID arrives, which may be never if the
/// agent has no registration for this workload: a warning is logged every 30 s meanwhile).
#[derive(Debug)]
pub struct WorkloadApiSource {
    publisher: Publisher,
    _stop: DropGuard,
}

/// How often "still no SVID" is logged while the first connection is pending.
const PENDING_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before rebuilding the source after it failed or closed.
const REBUILD_BACKOFF: Duration = Duration::from_secs(1);

impl WorkloadApiSource {
    /// Validates the endpoint and starts streaming. Must be called within a tokio runtime.
    pub fn start(config: WorkloadApiConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let stop = CancellationToken::new();
        let source =
            Arc::new(Self { publisher: Publisher::new(), _stop: stop.clone().drop_guard() });
        let weak = Arc::downgrade(&source);
        // Detached on purpose: it holds only a weak reference and the drop guard cancels it.
        tokio::spawn(async move {
            loop {
                let x509 = tokio::select! {
                    () = stop.cancelled() => return,
                    built = build(&config) => built,
                };
                match x509 {
                    Ok(x509) => {
                        follow(&x509, &weak, &stop).await;
                        // Bounded: X509Source's default shutdown timeout is 30 s; ours is shorter.
                        let _closed = x509.shutdown_with_timeout(Duration::from_secs(5)).await;
                        if stop.is_cancelled() || weak.strong_count() == 0 {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "SPIFFE Workload API source failed; retrying")
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REBUILD_BACKOFF) => {}
                }
            }
        });
        Ok(source)
    }
}

impl IdentitySource for WorkloadApiSource {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.publisher.subscribe()
    }
}

/// Builds the `X509Source` (it retries transient failures by itself until the first SVID),
/// logging while it waits so a missing registration is visible.
async fn build(config: &WorkloadApiConfig) -> Result<X509Source> {
    let mut builder = X509Source::builder();
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint(endpoint);
    }
    let building = builder.build();
    tokio::pin!(building);
    let mut waiting = tokio::time::interval(PENDING_LOG_INTERVAL);
    waiting.tick().await;
    loop {
        tokio::select! {
            built = &mut building => return built.map_err(|e| Error::WorkloadApi(e.to_string())),
            _ = waiting.tick() => tracing::warn!(
                endpoint = config.endpoint.as_deref().unwrap_or("$SPIFFE_ENDPOINT_SOCKET"),
                "still waiting for the first SVID from the SPIFFE Workload API"
            ),
        }
    }
}

/// Publishes the source's current context, then every update, until the source closes, we are
/// stopped, or nobody holds the `WorkloadApiSource` any more.
async fn follow(
    x509: &X509Source,
    weak: &std::sync::Weak<WorkloadApiSource>,
    stop: &CancellationToken,
) {
    // Subscribe before reading, so an update between the two is not lost.
    let mut updates = x509.updated();
    loop {
        match x509
            .x509_context()
            .map_err(|e| Error::WorkloadApi(e.to_string()))
            .and_then(|c| Identity::from_x509_context(&c))
        {
            Ok(identity) => match weak.upgrade() {
                Some(source) => source.publisher.publish(identity),
                None => return,
            },
            Err(error) => tracing::warn!(%error, "SVID update rejected; keeping the last identity"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = updates.changed() => if let Err(error) = changed {
                tracing::warn!(%error, "SPIFFE Workload API source closed; reconnecting");
                return;
            },
        }
    }
}
