//! File search and web search capabilities of the agent.
//!
//! # Layout
//! Requests enter at `routes` and flow down; nothing below `routes` knows about HTTP.
//! - `routes`: [`file_search_router`] and [`web_search_router`]; body limits, JSON parsing.
//! - `files`: [`FileSearch`], the file store; upload = extract -> chunk -> index.
//!   - `extract`: file type by name, text from UTF-8 or PDF (pdf-extract, on a blocking thread).
//!   - `chunk`: text -> overlapping windows as byte ranges (chars or words).
//!   - `index`: an in-memory tantivy BM25 index of passages keyed by (file id, chunk number).
//! - `web`: [`WebSearch`]: request checks, `allowed_domains` filtering, de-duplication.
//!   - `providers`: SearXNG, Brave, Tavily over HTTP; timeouts -> 504, failures -> 502.
//!   - `offline`: a local corpus ranked by `index`; never touches the network.
//! - `config`: [`FileSearchConfig`], [`WebSearchConfig`]: every limit, with defaults.
//! - `error`: [`SearchError`], mapped once to a status and the internal error envelope.
//!
//! Wire types live in `antwort_common::search_api`, shared with the gateway.

mod chunk;
mod config;
mod error;
mod extract;
mod files;
mod index;
mod offline;
mod providers;
mod routes;
mod web;

pub use config::{
    ChunkUnit, ChunkingConfig, FileSearchConfig, ProviderConfig, Secret, WebSearchConfig,
    WebSearchMode,
};
pub use error::{Result, SearchError};
pub use files::FileSearch;
pub use routes::{file_search_router, web_search_router};
pub use web::WebSearch;
