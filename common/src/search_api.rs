//! Wire types of the sandbox agent's search API (file search and web search), shared by the agent
//! (server) and the gateway (client).
//!
//! Routes, all JSON unless noted, errors as [`crate::error::ErrorEnvelope`]:
//! - `POST /v1/file_search/files?filename=NAME` — raw file bytes in the body -> [`FileObject`]
//! - `GET /v1/file_search/files` -> [`FileList`]
//! - `GET /v1/file_search/files/{id}` -> [`FileObject`]
//! - `GET /v1/file_search/files/{id}/text` -> the extracted text (`text/plain`) that offsets index
//! - `DELETE /v1/file_search/files/{id}` -> [`FileDeleted`]
//! - `POST /v1/file_search/query` [`FileSearchRequest`] -> [`FileSearchResponse`]
//! - `POST /v1/web_search` [`WebSearchRequest`] -> [`WebSearchResponse`]

use serde::{Deserialize, Serialize};

/// Path prefix of the file-search routes.
pub const FILE_SEARCH_FILES_PATH: &str = "/v1/file_search/files";
/// Path of the file-search query route.
pub const FILE_SEARCH_QUERY_PATH: &str = "/v1/file_search/query";
/// Path of the web-search route.
pub const WEB_SEARCH_PATH: &str = "/v1/web_search";

/// How an uploaded file's text was obtained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Plain text, markdown, source code, config: indexed as uploaded (UTF-8).
    Text,
    /// A PDF whose text layer was extracted.
    Pdf,
}

/// One indexed file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileObject {
    pub id: String,
    pub filename: String,
    pub kind: FileKind,
    /// Size of the upload in bytes.
    pub bytes: u64,
    /// Size of the extracted text in bytes (what offsets index into).
    pub text_bytes: u64,
    /// Number of chunks the text was split into.
    pub chunks: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// `GET /v1/file_search/files`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileList {
    pub data: Vec<FileObject>,
}

/// `DELETE /v1/file_search/files/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDeleted {
    pub id: String,
    pub deleted: bool,
}

/// `POST /v1/file_search/query`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSearchRequest {
    /// Natural-language query; must contain a non-whitespace character.
    pub query: String,
    /// At most this many chunks (default and ceiling come from the agent's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
    /// Only search these files; every id must exist (else 404).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_ids: Option<Vec<String>>,
}

/// Ranked chunks, best first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSearchResponse {
    pub data: Vec<FileSearchHit>,
}

/// One chunk that matched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSearchHit {
    pub file_id: String,
    pub filename: String,
    /// BM25 score; higher is better. Comparable only within one response.
    pub score: f32,
    /// The chunk's text: exactly `extracted_text[offsets.start..offsets.end]`.
    pub text: String,
    pub offsets: TextOffsets,
}

/// A half-open range of **byte** offsets into the file's extracted UTF-8 text (both ends lie on
/// character boundaries).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TextOffsets {
    pub start: u64,
    pub end: u64,
}

/// `POST /v1/web_search`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSearchRequest {
    pub query: String,
    /// Keep a result only if its host equals one of these domains or is a subdomain of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// Results in the provider's order (offline mode: best match first).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebSearchResponse {
    /// Which backend answered: `searxng`, `brave`, `tavily` or `offline`.
    pub provider: String,
    pub results: Vec<WebSearchResult>,
}

/// One web result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebSearchResult {
    pub title: String,
    pub url: String,
    pub snippet: String,
}
