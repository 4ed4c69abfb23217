//! The OpenResponses wire format (spec version 2026-04-24): what clients send and what the gateway
//! sends back. Pure data and validation; no I/O.

pub mod code_interpreter;
pub mod compaction;
pub mod events;
pub mod request;
pub mod response;
