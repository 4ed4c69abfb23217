//! Code shared by antwort's three binaries.
//!
//! # Layout
//! - [`agent_api`]: requests and responses of the sandbox agent's sessions, execute and files routes.
//! - [`config`]: one YAML file + `ANTWORT_*` env overrides -> a typed config, errors name the field.
//! - [`error`]: the error envelope of the internal APIs (`{"error": {"type", "code", "message"}}`).
//! - [`pool_api`]: requests and responses of the pool manager's claim API (the gateway claims sandboxes).
//! - [`identity`]: workload identity (SPIFFE): SVID sources (Workload API, files) -> rustls mTLS
//!   configs -> an axum mTLS server handing handlers the peer's SPIFFE ID, and an mTLS reqwest
//!   client; peer allow lists by SPIFFE ID; a development CA behind the `dev-ca` feature.
//! - [`search_api`]: requests and responses of the sandbox agent's file-search and web-search routes.
//! - [`shutdown`]: SIGTERM/SIGINT as a future, the start of every graceful drain.
//! - [`telemetry`]: tracing (text/JSON) and OpenTelemetry OTLP export, W3C context propagation.

#![forbid(unsafe_code)]

pub mod agent_api;
pub mod config;
pub mod error;
pub mod identity;
pub mod pool_api;
pub mod search_api;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
