//! [`RequirePeer`]: a per-route narrowing of the connection's peer policy. [`super::MtlsServer`]
//! already admits only the peers its policy allows; this layer lets some routes accept fewer
//! (e.g. the agent's reset route: the pool manager only), answering 403 with the internal error
//! envelope.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;

use super::policy::PeerPolicy;
use super::server::PeerSpiffeId;
use crate::error::ErrorEnvelope;

/// A layer admitting only requests whose [`PeerSpiffeId`] `policy` allows. Use with
/// `Router::route_layer(RequirePeer::new(policy))`. A request without a peer ID (not served by
/// [`super::MtlsServer`]) is refused too.
#[derive(Debug, Clone)]
pub struct RequirePeer {
    policy: Arc<PeerPolicy>,
}

impl RequirePeer {
    /// Admits only peers `policy` allows.
    pub fn new(policy: PeerPolicy) -> Self {
        Self { policy: Arc::new(policy) }
    }
}

impl<S> tower::Layer<S> for RequirePeer {
    type Service = RequirePeerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePeerService { inner, policy: self.policy.clone() }
    }
}

/// The service [`RequirePeer`] wraps a route in.
#[derive(Debug, Clone)]
pub struct RequirePeerService<S> {
    inner: S,
    policy: Arc<PeerPolicy>,
}

impl<S> tower::Service<Request> for RequirePeerService<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let peer = request.extensions().get::<PeerSpiffeId>();
        if peer.is_some_and(|peer| self.policy.allows(peer)) {
            return Box::pin(self.inner.call(request));
        }
        let who = peer.map_or_else(|| "a peer without SPIFFE ID".to_owned(), |p| p.to_string());
        tracing::info!(peer = %who, path = %request.uri().path(), "peer not allowed on this route");
        let body = ErrorEnvelope::new(
            "permission_error",
            "peer_not_allowed",
            format!("{who} may not call {}", request.uri().path()),
        );
        Box::pin(std::future::ready(Ok((StatusCode::FORBIDDEN, axum::Json(body)).into_response())))
    }
}
