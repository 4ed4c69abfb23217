//! Web search: validate the request, ask the provider (or the offline corpus), then keep only
//! http(s) results on allowed domains, without duplicates, up to `max_results`.

use std::collections::HashSet;
use std::sync::Arc;

use antwort_common::search_api::{WebSearchRequest, WebSearchResponse, WebSearchResult};

use super::config::{WebSearchConfig, WebSearchMode};
use super::error::{Result, SearchError};
use super::offline::OfflineCorpus;
use super::providers::Provider;

/// Index memory for the offline corpus: tantivy's minimum is plenty for a local corpus.
const CORPUS_INDEX_MEMORY: usize = super::index::MIN_WRITER_MEMORY;

/// The web-search service; cheap to clone.
#[derive(Clone)]
pub struct WebSearch {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebSearchConfig,
    backend: Backend,
}

enum Backend {
    Online(Provider),
    /// Offline mode holds no HTTP client at all, so it cannot reach the network by mistake.
    Offline(Box<OfflineCorpus>),
}

impl WebSearch {
    /// Validates the config, resolves API keys and loads the offline corpus; every problem is
    /// reported. Blocks while loading the corpus (startup only).
    pub fn new(config: WebSearchConfig) -> Result<Self> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(SearchError::Config(problems));
        }
        let backend = match (config.mode, &config.provider, &config.offline_corpus) {
            (WebSearchMode::Offline, _, Some(path)) => {
                Backend::Offline(Box::new(OfflineCorpus::load(path, CORPUS_INDEX_MEMORY)?))
            }
            (WebSearchMode::Online, Some(provider), _) => {
                Backend::Online(Provider::new(provider.clone(), &config)?)
            }
            _ => return Err(SearchError::Config(vec!["web_search: unreachable mode".to_owned()])),
        };
        Ok(Self { inner: Arc::new(Inner { config, backend }) })
    }

    pub fn config(&self) -> &WebSearchConfig {
        &self.inner.config
    }

    pub async fn search(&self, request: WebSearchRequest) -> Result<WebSearchResponse> {
        let config = &self.inner.config;
        let query = request.query.trim().to_owned();
        if query.is_empty() {
            return Err(SearchError::invalid("empty_query", "query must not be empty"));
        }
        if query.chars().count() > config.max_query_chars {
            return Err(SearchError::invalid(
                "query_too_long",
                format!("query is longer than {} characters", config.max_query_chars),
            ));
        }
        let max_results = match request.max_results {
            None => config.default_max_results,
            Some(n) if n == 0 || n > config.max_results_limit => {
                return Err(SearchError::invalid(
                    "invalid_max_results",
                    format!("max_results must be between 1 and {}", config.max_results_limit),
                ));
            }
            Some(n) => n,
        };
        let allowed = match &request.allowed_domains {
            None => Vec::new(),
            Some(domains) => normalize_domains(domains, config.max_allowed_domains)?,
        };

        let (provider, found) = match &self.inner.backend {
            Backend::Online(provider) => {
                let fetch = config.fetch_results.max(max_results);
                (provider.name(), provider.search(&query, fetch, &allowed).await?)
            }
            Backend::Offline(_) => {
                let this = self.clone();
                let found = tokio::task::spawn_blocking(move || match &this.inner.backend {
                    Backend::Offline(corpus) => corpus.search(&query),
                    Backend::Online(_) => Ok(Vec::new()),
                })
                .await
                .unwrap_or_else(|join| {
                    Err(SearchError::Internal(format!("corpus task: {join}")))
                })?;
                ("offline", found)
            }
        };

        let mut seen = HashSet::new();
        let results: Vec<WebSearchResult> = found
            .into_iter()
            .filter(|r| url_allowed(&r.url, &allowed) && seen.insert(r.url.clone()))
            .take(max_results as usize)
            .collect();
        Ok(WebSearchResponse { provider: provider.to_owned(), results })
    }
}

impl std::fmt::Debug for WebSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSearch").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// Lower-cased bare host names (`example.com`, `docs.example.com`); a trailing dot is dropped.
fn normalize_domains(domains: &[String], max: usize) -> Result<Vec<String>> {
    if domains.is_empty() {
        return Err(SearchError::invalid(
            "invalid_allowed_domains",
            "allowed_domains must not be empty (omit it to allow every domain)",
        ));
    }
    if domains.len() > max {
        return Err(SearchError::invalid(
            "invalid_allowed_domains",
            format!("allowed_domains has {} entries; at most {max} are allowed", domains.len()),
        ));
    }
    domains
        .iter()
        .map(|raw| {
            let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if valid {
                Ok(domain)
            } else {
                Err(SearchError::invalid(
                    "invalid_allowed_domains",
                    format!(
                        "allowed_domains entry {raw:?} is not a domain name (write e.g. \
                         \"example.com\": no scheme, port, path or wildcard)"
                    ),
                ))
            }
        })
        .collect()
}

/// An http(s) URL whose host is, or is a subdomain of, one of `allowed` (any host when empty).
fn url_allowed(url: &str, allowed: &[String]) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else { return false };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.is_empty()
        || allowed.iter().any(|domain| {
            host == *domain
                || (host.len() > domain.len()
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_matching() {
        let allowed = normalize_domains(&["Example.COM.".into(), "docs.rs".into()], 10)
            .expect("valid domains");
        assert_eq!(allowed, ["example.com", "docs.rs"]);
        for ok in [
            "https://example.com/a",
            "http://www.example.com",
            "https://a.b.example.com:8443/x?y",
            "https://EXAMPLE.com./",
            "https://docs.rs/tantivy",
        ] {
            assert!(url_allowed(ok, &allowed), "{ok} should pass");
        }
        for bad in [
            "https://notexample.com/",
            "https://example.com.evil.net/",
            "https://example.org/",
            "ftp://example.com/file",
            "javascript:alert(1)",
            "not a url",
            "https://rs/",
        ] {
            assert!(!url_allowed(bad, &allowed), "{bad} should be dropped");
        }
        assert!(url_allowed("https://anything.net/", &[]));
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in
            ["https://example.com", "example.com/path", "*.example.com", "", "a..b", "ex ample.com"]
        {
            let refused = normalize_domains(&[bad.to_owned()], 10);
            assert!(
                matches!(
                    refused,
                    Err(SearchError::InvalidRequest { code: "invalid_allowed_domains", .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(normalize_domains(&[], 10).is_err());
        assert!(normalize_domains(&["a.com".into(), "b.com".into()], 1).is_err());
    }
}
