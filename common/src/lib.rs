//! Code shared by antwort's three binaries.
//!
//! # Layout
//! - [`error`]: the error envelope of the internal APIs (`{"error": {"type", "code", "message"}}`).
//! - [`identity`]: workload identity (SPIFFE): SVID sources (Workload API, files) -> rustls mTLS
//!   configs -> an axum mTLS server handing handlers the peer's SPIFFE ID, and an mTLS reqwest
//!   client; peer allow lists by SPIFFE ID; a development CA behind the `dev-ca` feature.

#![forbid(unsafe_code)]

pub mod error;
pub mod identity;
