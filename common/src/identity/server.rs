//! [`MtlsServer`]: serves an `axum::Router` over mutual TLS on a tokio `TcpListener`, hands each
//! request the peer's SPIFFE ID ([`PeerSpiffeId`]) and drains gracefully on shutdown.
//!
//! Per connection: accept -> TCP_NODELAY -> TLS handshake (our verifier authenticates the SVID
//! and authorizes its SPIFFE ID; a refused peer never reaches the router) -> HTTP/1.1 with the
//! peer's ID in every request's extensions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use spiffe::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::error::{Error, Result};
use super::policy::PeerPolicy;
use super::source::SharedSource;
use super::tls::{peer_spiffe_id, server_config};

/// The authenticated and authorized SPIFFE ID of the peer that sent a request; read it in a
/// handler with `Extension(peer): Extension<PeerSpiffeId>`. (The peer's address is there too, as
/// axum's `ConnectInfo<SocketAddr>`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpiffeId(pub SpiffeId);

impl std::ops::Deref for PeerSpiffeId {
    type Target = SpiffeId;
    fn deref(&self) -> &SpiffeId {
        &self.0
    }
}

/// The server's limits, as a binary's config section (all optional, in milliseconds):
/// ```yaml
/// handshake_timeout_ms: 10000
/// header_read_timeout_ms: 30000
/// max_connections: 1024
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout_ms: u64,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout_ms: u64,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: millis(DEFAULT_HANDSHAKE_TIMEOUT),
            header_read_timeout_ms: millis(DEFAULT_HEADER_READ_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A mutual-TLS HTTP/1.1 server for an axum `Router`.
#[derive(Clone)]
pub struct MtlsServer {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    max_connections: usize,
}

impl std::fmt::Debug for MtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsServer")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// How long a client may take to complete the TLS handshake before we drop it.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's headers may take to arrive, and how long an idle keep-alive connection
/// is kept (hyper applies the same timer to both). Clients should idle out sooner: the reqwest
/// client from [`super::mtls_client_builder`] drops idle connections after
/// [`super::client::POOL_IDLE_TIMEOUT`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; at the limit, accepting pauses until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

impl MtlsServer {
    /// A server presenting `source`'s SVID and accepting only clients that `peers` allows.
    pub fn new(source: SharedSource, peers: PeerPolicy) -> Result<Self> {
        Ok(Self::from_config(Arc::new(server_config(source, peers)?)))
    }

    /// A server with a prepared rustls configuration (from [`super::server_config`]; a config
    /// without mandatory client authentication would serve requests without a [`PeerSpiffeId`],
    /// and such requests are refused with a closed connection).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Applies all of `limits` (zero values are refused: a zero timeout would refuse everyone).
    pub fn with_limits(self, limits: ServerLimits) -> Result<Self> {
        for (name, value) in [
            ("handshake_timeout_ms", limits.handshake_timeout_ms),
            ("header_read_timeout_ms", limits.header_read_timeout_ms),
            ("max_connections", u64::try_from(limits.max_connections).unwrap_or(u64::MAX)),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be greater than 0")));
            }
        }
        Ok(self
            .with_handshake_timeout(Duration::from_millis(limits.handshake_timeout_ms))
            .with_header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
            .with_max_connections(limits.max_connections))
    }

    /// Sets the request-header (and keep-alive idle) timeout (default
    /// [`DEFAULT_HEADER_READ_TIMEOUT`]).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets the connection limit (default [`DEFAULT_MAX_CONNECTIONS`]; at least 1).
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Sets the TLS handshake timeout (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
    /// connection finish its in-flight request, and returns when all have closed.
    ///
    /// Draining has no deadline of its own: wrap the call in `tokio::time::timeout` for one.
    /// Dropping this future (e.g. when that timeout fires) aborts the remaining connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let draining = CancellationToken::new();
        // Owned: dropping the set aborts the connections, so nothing outlives `serve`.
        let mut connections = JoinSet::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        tokio::pin!(shutdown);
        loop {
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let this = self.clone();
            let router = router.clone();
            let draining = draining.clone();
            connections.spawn(async move {
                if let Err(reason) = this.connection(stream, remote, router, draining).await {
                    tracing::debug!(%remote, %reason, "connection closed");
                }
                drop(slot);
            });
        }
        drop(listener);
        draining.cancel();
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    async fn connection(
        self,
        stream: TcpStream,
        remote: SocketAddr,
        router: Router,
        draining: CancellationToken,
    ) -> std::result::Result<(), String> {
        // Responses are often small writes (SSE events): without NODELAY each waits ~40 ms.
        stream.set_nodelay(true).map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        let tls = tokio::select! {
            () = draining.cancelled() => return Ok(()),
            handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)) => {
                handshake
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS handshake refused: {e}"))?
            }
        };
        let peer = peer_spiffe_id(tls.get_ref().1.peer_certificates())
            .ok_or_else(|| "peer presented no SPIFFE ID".to_owned())?;
        tracing::trace!(peer = %peer, "mTLS connection accepted");
        let peer = PeerSpiffeId(peer);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(peer.clone());
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => return served.map_err(|e| format!("HTTP: {e}")),
            () = draining.cancelled() => connection.as_mut().graceful_shutdown(),
        }
        connection.await.map_err(|e| format!("HTTP while draining: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_deserialize_with_defaults_and_refuse_zero() {
        let limits: ServerLimits =
            serde_json::from_str(r#"{"max_connections": 8}"#).expect("valid limits");
        assert_eq!(limits.max_connections, 8);
        assert_eq!(limits.handshake_timeout_ms, 10_000);
        assert_eq!(limits.header_read_timeout_ms, 30_000);
        assert!(serde_json::from_str::<ServerLimits>(r#"{"max_conns": 8}"#).is_err());

        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())),
        );
        let zero = ServerLimits { handshake_timeout_ms: 0, ..ServerLimits::default() };
        let error = MtlsServer::from_config(config.clone()).with_limits(zero).expect_err("zero");
        assert!(error.to_string().contains("handshake_timeout_ms"), "{error}");
        let server = MtlsServer::from_config(config).with_limits(limits).expect("valid");
        assert_eq!(server.max_connections, 8);
        assert_eq!(server.handshake_timeout, Duration::from_secs(10));
    }
}
