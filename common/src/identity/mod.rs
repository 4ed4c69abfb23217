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
//! - [`client`]: [`mtls_client`], a `reqwest::Client` that checks the server's SPIFFE ID.
//! - `dev_ca` (feature `dev-ca`): a development CA minting bundles and SVIDs into folders.
//! - [`error`]: the one [`Error`] type of this module.
//!
//! **Invariants.** No handshake succeeds without a verified SVID on both ends; a peer's chain is
//! verified only against the bundle of the trust domain its own SPIFFE ID names; an empty policy
//! allows nobody; host names are never checked (SVIDs carry URI SANs only). Only the `ring`
//! provider is used, and TLS 1.2 is never negotiated.

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

pub use client::{mtls_client, mtls_client_builder};
pub use config::IdentityConfig;
pub use error::{Error, Result};
pub use files::{FileSource, FilesConfig};
pub use material::Identity;
pub use policy::{PeerPolicy, PeerRule};
pub use server::{MtlsServer, PeerSpiffeId};
pub use source::{IdentitySource, SharedSource, StaticSource, wait_ready};
pub use spiffe::{SpiffeId, TrustDomain};
pub use tls::{client_config, peer_spiffe_id, server_config};
pub use workload::{WorkloadApiConfig, WorkloadApiSource};
