//! Code shared by antwort's three binaries.
//!
//! # Layout
//! - [`error`]: the error envelope of the internal APIs (`{"error": {"type", "code", "message"}}`).

#![forbid(unsafe_code)]

pub mod error;
