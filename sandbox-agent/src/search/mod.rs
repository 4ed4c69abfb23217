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
//!
//! # Mounting
//! ```ignore
//! let files = FileSearch::new(config.file_search)?; // validates, lists every problem
//! let web = WebSearch::new(config.web_search)?; // resolves API keys, loads the offline corpus
//! let router = Router::new().merge(file_search_router(files)).merge(web_search_router(web));
//! ```
//! The handlers read bodies themselves under their configured limits (413 in the envelope), so
//! an outer body-limit layer must allow at least `file_search.max_file_bytes`.
//!
//! # Configuration (every key optional; defaults shown)
//! ```yaml
//! file_search:
//!   max_file_bytes: 16777216        # upload limit (413)
//!   max_files: 1000                 # store limit (409)
//!   max_total_text_bytes: 268435456 # extracted text over all files (409)
//!   max_request_bytes: 65536        # query body (413)
//!   max_query_chars: 2000
//!   default_max_results: 10
//!   max_results_limit: 50
//!   chunking: {unit: chars, size: 1200, overlap: 200}   # unit: chars | words
//!   index_memory_bytes: 20000000    # tantivy writer budget, >= 15000000
//!   extract_timeout_ms: 30000       # PDF text extraction
//! web_search:
//!   mode: online                    # online | offline (offline never opens a connection)
//!   provider: {kind: searxng, base_url: "http://searxng:8080", language: en}
//!   # provider: {kind: brave, api_key_env: BRAVE_API_KEY}      # base_url defaults to Brave's
//!   # provider: {kind: tavily, api_key_env: TAVILY_API_KEY, search_depth: basic}
//!   offline_corpus: null            # JSON [{title, url, snippet}], required when offline
//!   timeout_ms: 10000               # upstream call (504)
//!   connect_timeout_ms: 3000
//!   max_response_bytes: 2097152     # upstream body (502 when larger)
//!   fetch_results: 20               # asked of the provider before domain filtering
//!   default_max_results: 5
//!   max_results_limit: 20
//!   max_query_chars: 1000
//!   max_allowed_domains: 50
//!   max_request_bytes: 65536
//! ```

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
