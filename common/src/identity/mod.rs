//! Workload identity for all three binaries: every connection between them is mutual TLS with
//! X.509 SVIDs, and every server authorizes its peer by SPIFFE ID.
//!
//! # Layout
//! Data flows top to bottom: a source publishes [`Identity`] snapshots; the TLS layer reads the
//! latest one at every handshake; the server and client helpers wrap the TLS layer.
//! - [`config`]: [`IdentityConfig`], the `identity:` config section -> a started source.
//! - [`source`]: the [`IdentitySource`] trait (a `watch` of `Option<Arc<Identity>>`), readiness,
//!   and [`StaticSource`] (an identity the program sets itself; tests).
//! - [`workload`]: [`WorkloadApiSource`], SVIDs streamed from the SPIFFE Workload API (SPIRE).
//! - [`files`]: [`FileSource`], PEM files re-read on an interval (cert-manager, dev CA).
//! - [`material`]: [`Identity`], one SVID + bundles converted for rustls; chain verification.
//! - [`policy`]: [`PeerPolicy`], allowed SPIFFE IDs (exact, or trust domain + path prefix).
//! - [`tls`]: rustls [`server_config`]/[`client_config`] (TLS 1.3, client cert required, ring).
//! - [`server`]: [`MtlsServer`], an axum `Router` over mTLS with [`PeerSpiffeId`] per request.
//! - [`authorize`]: [`RequirePeer`], a route layer narrowing the peer policy per route (403).
//! - [`client`]: [`mtls_client`], a `reqwest::Client` that checks the server's SPIFFE ID.
//! - `dev_ca` (feature `dev-ca`): a development CA minting bundles and SVIDs into folders.
//! - [`error`]: the one [`Error`] type of this module.
//!
//! **Invariants.** No handshake succeeds without a verified SVID on both ends; a peer's chain is
//! verified only against the bundle of the trust domain its own SPIFFE ID names; an empty policy
//! allows nobody; host names are never checked (SVIDs carry URI SANs only). Only the `ring`
//! provider is used, and TLS 1.2 is never negotiated.
//!
//! # Usage
//! ```no_run
//! use std::time::Duration;
//!
//! use antwort_common::identity::{
//!     IdentityConfig, IdentitySource as _, MtlsServer, PeerPolicy, PeerRule, PeerSpiffeId,
//!     mtls_client_builder, wait_ready,
//! };
//! use axum::{Extension, Router, routing::get};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. The source, from the `identity:` config section; it starts in the background.
//! let config: IdentityConfig =
//!     serde_yaml_ng::from_str("source: files\ndir: /var/run/secrets/spiffe.io")?;
//! let source = config.start()?;
//! // `/readyz` answers `source.is_ready()`; a binary may also wait at startup:
//! wait_ready(source.as_ref(), Duration::from_secs(30)).await?;
//!
//! // 2. Serve a Router over mTLS to the peers the config allows; handlers get the peer's ID.
//! let allowed: PeerPolicy = serde_yaml_ng::from_str(
//!     "- id: spiffe://antwort.local/ns/antwort/sa/gateway\n\
//!      - trust_domain: antwort.local\n  path_prefix: /ns/antwort/sa/pool-manager",
//! )?;
//! let router = Router::new().route(
//!     "/whoami",
//!     get(|Extension(peer): Extension<PeerSpiffeId>| async move { peer.to_string() }),
//! );
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let server = MtlsServer::new(source.clone(), allowed)?;
//! let serving = tokio::spawn(server.serve(listener, router, shutdown));
//!
//! // 3. A client that talks only to sandbox agents (server authorized by SPIFFE ID, not host).
//! let agents = PeerPolicy::new([PeerRule::prefix("antwort.local", "/ns/antwort-sandboxes/")?]);
//! let client = mtls_client_builder(source.clone(), agents)?
//!     .timeout(Duration::from_secs(30))
//!     .build()?;
//! let answer = client.get("https://10.0.0.7:8443/v1/sessions").send().await?;
//! # drop((answer, serving));
//! # Ok(())
//! # }
//! ```

pub mod authorize;
pub mod client;
pub mod config;
#[cfg(feature = "dev-ca")]
pub mod dev_ca;
pub mod error;
pub mod files;
pub mod material;
pub mod policy;
pub mod server;
pub mod source;
pub mod tls;
pub mod workload;

pub use authorize::RequirePeer;
pub use client::{mtls_client, mtls_client_builder};
pub use config::IdentityConfig;
pub use error::{Error, Result};
pub use files::{FileSource, FilesConfig};
pub use material::Identity;
pub use policy::{PeerPolicy, PeerRule};
pub use server::{MtlsServer, PeerSpiffeId, ServerLimits};
pub use source::{IdentitySource, SharedSource, StaticSource, wait_ready};
pub use spiffe::{SpiffeId, TrustDomain};
pub use tls::{client_config, peer_spiffe_id, server_config};
pub use workload::{WorkloadApiConfig, WorkloadApiSource};
