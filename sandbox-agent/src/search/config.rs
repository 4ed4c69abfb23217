//! Configuration of file search and web search: every limit is explicit, has a default, and is
//! checked by `validate`, which reports all problems at once.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File search: what uploads are accepted, how text is chunked, how many results a query gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileSearchConfig {
    /// Largest accepted upload, in bytes (larger: 413).
    pub max_file_bytes: u64,
    /// Most files held at once (more: 409).
    pub max_files: usize,
    /// Most extracted text held at once over all files, in bytes (more: 409).
    pub max_total_text_bytes: u64,
    /// Largest JSON request body (query), in bytes (larger: 413).
    pub max_request_bytes: usize,
    /// Longest accepted query, in characters.
    pub max_query_chars: usize,
    /// Results returned when a query names no `max_results`.
    pub default_max_results: u32,
    /// Ceiling for `max_results` (above: 400).
    pub max_results_limit: u32,
    /// How extracted text is split into indexed chunks.
    pub chunking: ChunkingConfig,
    /// Memory the index writer may buffer before flushing a segment, in bytes. tantivy needs at
    /// least 15 MB.
    pub index_memory_bytes: usize,
    /// How long PDF text extraction may take before the upload is refused, in milliseconds.
    pub extract_timeout_ms: u64,
}

impl Default for FileSearchConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 16 * 1024 * 1024,
            max_files: 1_000,
            max_total_text_bytes: 256 * 1024 * 1024,
            max_request_bytes: 64 * 1024,
            max_query_chars: 2_000,
            default_max_results: 10,
            max_results_limit: 50,
            chunking: ChunkingConfig::default(),
            index_memory_bytes: 20_000_000,
            extract_timeout_ms: 30_000,
        }
    }
}

/// The unit chunk sizes are counted in.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChunkUnit {
    /// Unicode scalar values; chunk ends are moved back to whitespace where possible.
    Chars,
    /// Whitespace-separated words, a cheap stand-in for model tokens (about 0.75 words a token).
    Words,
}

/// Sliding windows over the extracted text.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingConfig {
    pub unit: ChunkUnit,
    /// Window length, in `unit`s.
    pub size: usize,
    /// How much consecutive windows share, in `unit`s; must be below `size`. Overlap keeps a
    /// passage that straddles a boundary findable in one piece.
    pub overlap: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self { unit: ChunkUnit::Chars, size: 1_200, overlap: 200 }
    }
}

/// Web search: one provider (or the offline corpus), timeouts and result limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSearchConfig {
    pub mode: WebSearchMode,
    /// The upstream search API; required in `online` mode, never contacted in `offline` mode.
    pub provider: Option<ProviderConfig>,
    /// JSON file with `[{"title", "url", "snippet"}, ...]`; required in `offline` mode.
    pub offline_corpus: Option<PathBuf>,
    /// Whole-request timeout for one upstream call, in milliseconds (exceeded: 504).
    pub timeout_ms: u64,
    /// TCP + TLS connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest upstream response body read, in bytes (larger: 502).
    pub max_response_bytes: usize,
    /// How many results are asked of the provider, so that `allowed_domains` filtering still
    /// leaves some. Brave and Tavily accept at most 20.
    pub fetch_results: u32,
    /// Results returned when a request names no `max_results`.
    pub default_max_results: u32,
    /// Ceiling for `max_results` (above: 400).
    pub max_results_limit: u32,
    /// Longest accepted query, in characters.
    pub max_query_chars: usize,
    /// Most entries in `allowed_domains`.
    pub max_allowed_domains: usize,
    /// Largest JSON request body, in bytes (larger: 413).
    pub max_request_bytes: usize,
}

impl Default for WebSearchConfig {
    fn default() -> Self {
        Self {
            mode: WebSearchMode::Online,
            provider: None,
            offline_corpus: None,
            timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_response_bytes: 2 * 1024 * 1024,
            fetch_results: 20,
            default_max_results: 5,
            max_results_limit: 20,
            max_query_chars: 1_000,
            max_allowed_domains: 50,
            max_request_bytes: 64 * 1024,
        }
    }
}

/// Whether web search may use the network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebSearchMode {
    Online,
    /// Answer from `offline_corpus` only; no HTTP client is even built.
    Offline,
}

/// One upstream search API, each with its own request shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// A SearXNG instance with the `json` output format enabled (`GET /search?q=..&format=json`).
    Searxng {
        /// e.g. `http://searxng:8080` (a path prefix is kept).
        base_url: String,
        /// Optional `language` parameter (e.g. `en`).
        #[serde(default)]
        language: Option<String>,
    },
    /// Brave Search API (`GET /res/v1/web/search`, header `X-Subscription-Token`).
    Brave {
        #[serde(default = "default_brave_url")]
        base_url: String,
        /// The key inline; prefer `api_key_env`.
        #[serde(default, skip_serializing)]
        api_key: Option<Secret>,
        /// Name of the environment variable holding the key.
        #[serde(default)]
        api_key_env: Option<String>,
    },
    /// Tavily (`POST /search`, header `Authorization: Bearer`).
    Tavily {
        #[serde(default = "default_tavily_url")]
        base_url: String,
        #[serde(default, skip_serializing)]
        api_key: Option<Secret>,
        #[serde(default)]
        api_key_env: Option<String>,
        /// `basic` or `advanced`.
        #[serde(default = "default_tavily_depth")]
        search_depth: String,
    },
}

fn default_brave_url() -> String {
    "https://api.search.brave.com".to_owned()
}

fn default_tavily_url() -> String {
    "https://api.tavily.com".to_owned()
}

fn default_tavily_depth() -> String {
    "basic".to_owned()
}

/// A string that never shows in `Debug` output (API keys must not reach logs).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The inline key, else the environment variable's value.
fn resolve_key(inline: Option<&Secret>, env_var: Option<&str>) -> Result<String, String> {
    if let Some(key) = inline.map(|k| k.0.trim()).filter(|k| !k.is_empty()) {
        return Ok(key.to_owned());
    }
    match env_var {
        Some(var) => match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
            _ => Err(format!("environment variable {var} (api_key_env) is unset or empty")),
        },
        None => Err("needs api_key or api_key_env".to_owned()),
    }
}

impl ProviderConfig {
    /// The name used in responses and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderConfig::Searxng { .. } => "searxng",
            ProviderConfig::Brave { .. } => "brave",
            ProviderConfig::Tavily { .. } => "tavily",
        }
    }

    /// The provider's API key (`None` for SearXNG, which takes none).
    pub(crate) fn api_key(&self) -> Option<Result<String, String>> {
        match self {
            ProviderConfig::Searxng { .. } => None,
            ProviderConfig::Brave { api_key, api_key_env, .. }
            | ProviderConfig::Tavily { api_key, api_key_env, .. } => {
                Some(resolve_key(api_key.as_ref(), api_key_env.as_deref()))
            }
        }
    }

    pub(crate) fn base_url(&self) -> &str {
        match self {
            ProviderConfig::Searxng { base_url, .. }
            | ProviderConfig::Brave { base_url, .. }
            | ProviderConfig::Tavily { base_url, .. } => base_url,
        }
    }
}

// === impl FileSearchConfig ===

impl FileSearchConfig {
    /// Every problem, as `field: reason` lines; empty when the config is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: u64| {
            if value == 0 {
                problems.push(format!("file_search.{name}: must be above 0"));
            }
        };
        positive("max_file_bytes", self.max_file_bytes);
        positive("max_files", self.max_files as u64);
        positive("max_total_text_bytes", self.max_total_text_bytes);
        positive("max_request_bytes", self.max_request_bytes as u64);
        positive("max_query_chars", self.max_query_chars as u64);
        positive("default_max_results", u64::from(self.default_max_results));
        positive("max_results_limit", u64::from(self.max_results_limit));
        positive("chunking.size", self.chunking.size as u64);
        positive("extract_timeout_ms", self.extract_timeout_ms);
        if self.default_max_results > self.max_results_limit {
            problems.push("file_search.default_max_results: above max_results_limit".to_owned());
        }
        if self.chunking.overlap >= self.chunking.size {
            problems.push("file_search.chunking.overlap: must be below chunking.size".to_owned());
        }
        if self.index_memory_bytes < super::index::MIN_WRITER_MEMORY {
            problems.push(format!(
                "file_search.index_memory_bytes: must be at least {}",
                super::index::MIN_WRITER_MEMORY
            ));
        }
        problems
    }
}

// === impl WebSearchConfig ===

impl WebSearchConfig {
    /// Every problem, as `field: reason` lines; empty when the config is usable. Checks that
    /// provider keys resolve (env vars are read here).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: u64| {
            if value == 0 {
                problems.push(format!("web_search.{name}: must be above 0"));
            }
        };
        positive("timeout_ms", self.timeout_ms);
        positive("connect_timeout_ms", self.connect_timeout_ms);
        positive("max_response_bytes", self.max_response_bytes as u64);
        positive("fetch_results", u64::from(self.fetch_results));
        positive("default_max_results", u64::from(self.default_max_results));
        positive("max_results_limit", u64::from(self.max_results_limit));
        positive("max_query_chars", self.max_query_chars as u64);
        positive("max_request_bytes", self.max_request_bytes as u64);
        if self.default_max_results > self.max_results_limit {
            problems.push("web_search.default_max_results: above max_results_limit".to_owned());
        }
        match self.mode {
            WebSearchMode::Offline => {
                if self.offline_corpus.is_none() {
                    problems.push("web_search.offline_corpus: required in offline mode".to_owned());
                }
            }
            WebSearchMode::Online => match &self.provider {
                None => problems.push("web_search.provider: required in online mode".to_owned()),
                Some(provider) => {
                    let base = provider.base_url();
                    match reqwest::Url::parse(base) {
                        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                        _ => problems.push(format!(
                            "web_search.provider.base_url: {base:?} is not an http(s) URL"
                        )),
                    }
                    if let Some(Err(why)) = provider.api_key() {
                        problems.push(format!("web_search.provider ({}): {why}", provider.name()));
                    }
                    if let ProviderConfig::Tavily { search_depth, .. } = provider
                        && !matches!(search_depth.as_str(), "basic" | "advanced")
                    {
                        problems.push(
                            "web_search.provider.search_depth: must be basic or advanced"
                                .to_owned(),
                        );
                    }
                }
            },
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(FileSearchConfig::default().validate(), Vec::<String>::new());
        let offline = WebSearchConfig {
            mode: WebSearchMode::Offline,
            offline_corpus: Some("corpus.json".into()),
            ..WebSearchConfig::default()
        };
        assert_eq!(offline.validate(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported() {
        let config = FileSearchConfig {
            max_files: 0,
            chunking: ChunkingConfig { unit: ChunkUnit::Words, size: 10, overlap: 10 },
            ..FileSearchConfig::default()
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("max_files"));
        assert!(problems[1].contains("overlap"));

        // Online without a provider, and a Brave key from an unset variable.
        assert!(WebSearchConfig::default().validate()[0].contains("provider: required"));
        let brave: WebSearchConfig = serde_json::from_value(serde_json::json!({
            "provider": {"kind": "brave", "api_key_env": "ANTWORT_TEST_SURELY_UNSET_VAR"}
        }))
        .expect("valid shape");
        let problems = brave.validate();
        assert!(problems[0].contains("ANTWORT_TEST_SURELY_UNSET_VAR"), "{problems:?}");
    }

    #[test]
    fn provider_config_shapes() {
        let tavily: ProviderConfig = serde_json::from_value(serde_json::json!({
            "kind": "tavily", "api_key": "tvly-secret"
        }))
        .expect("valid shape");
        assert_eq!(tavily.base_url(), "https://api.tavily.com");
        assert!(!format!("{tavily:?}").contains("tvly-secret"), "key must not be printed");
        let unknown = serde_json::from_value::<ProviderConfig>(serde_json::json!({
            "kind": "searxng", "base_url": "http://x", "bogus": 1
        }));
        assert!(unknown.is_err());
    }
}
