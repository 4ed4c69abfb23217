//! Upstream web-search APIs, each with its real request and response shape:
//! - SearXNG: `GET {base}/search?q=..&format=json[&language=..]` -> `{"results": [{"title", "url", "content"}]}`
//! - Brave: `GET {base}/res/v1/web/search?q=..&count=..`, header `X-Subscription-Token`
//!   -> `{"web": {"results": [{"title", "url", "description"}]}}`
//! - Tavily: `POST {base}/search` `{"query", "max_results", "search_depth", "include_domains"?}`,
//!   header `Authorization: Bearer ..` -> `{"results": [{"title", "url", "content"}]}`
//!
//! Failures are classified here once: a timeout is `UpstreamTimeout` (504), anything else
//! (refused connection, non-2xx status, oversized or malformed body) is `Upstream` (502).

use std::time::Duration;

use antwort_common::search_api::WebSearchResult;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;

use super::config::{ProviderConfig, WebSearchConfig};
use super::error::{Result, SearchError};

/// Brave and Tavily refuse larger pages.
const PROVIDER_PAGE_MAX: u32 = 20;

/// A configured provider with its HTTP client.
pub(crate) struct Provider {
    config: ProviderConfig,
    /// Resolved at startup (Brave, Tavily).
    api_key: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Provider {
    /// `web` must be valid (so the key resolves).
    pub(crate) fn new(provider: ProviderConfig, web: &WebSearchConfig) -> Result<Self> {
        let api_key =
            provider.api_key().transpose().map_err(|why| SearchError::Config(vec![why]))?;
        // reqwest is built without a bundled crypto provider; ring is the only one we link.
        // Installing it is idempotent: an already-installed default wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(web.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(web.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("antwort-sandbox-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| SearchError::Config(vec![format!("web search HTTP client: {err}")]))?;
        Ok(Self {
            config: provider,
            api_key,
            client,
            timeout,
            max_response_bytes: web.max_response_bytes,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.config.name()
    }

    /// Up to `count` results for `query`; `allowed_domains` is passed on where the API takes it
    /// (the caller filters again either way).
    pub(crate) async fn search(
        &self,
        query: &str,
        count: u32,
        allowed_domains: &[String],
    ) -> Result<Vec<WebSearchResult>> {
        let count = count.min(PROVIDER_PAGE_MAX);
        let key = self.api_key.as_deref().unwrap_or_default();
        let request = match &self.config {
            ProviderConfig::Searxng { language, .. } => {
                let mut url = self.endpoint("/search")?;
                url.query_pairs_mut().append_pair("q", query).append_pair("format", "json");
                if let Some(language) = language {
                    url.query_pairs_mut().append_pair("language", language);
                }
                self.client.get(url).header(ACCEPT, "application/json")
            }
            ProviderConfig::Brave { .. } => {
                let mut url = self.endpoint("/res/v1/web/search")?;
                url.query_pairs_mut()
                    .append_pair("q", query)
                    .append_pair("count", &count.to_string());
                self.client
                    .get(url)
                    .header(ACCEPT, "application/json")
                    .header("X-Subscription-Token", key)
            }
            ProviderConfig::Tavily { search_depth, .. } => {
                let mut body = serde_json::json!({
                    "query": query,
                    "max_results": count,
                    "search_depth": search_depth,
                });
                if !allowed_domains.is_empty() {
                    body["include_domains"] = serde_json::json!(allowed_domains);
                }
                self.client
                    .post(self.endpoint("/search")?)
                    .header(AUTHORIZATION, format!("Bearer {key}"))
                    .json(&body)
            }
        };
        let body = self.fetch(request).await?;
        let results = match &self.config {
            ProviderConfig::Searxng { .. } => self
                .parse::<SearxngResponse>(&body)?
                .results
                .into_iter()
                .map(|r| result(r.title, r.url, r.content))
                .collect(),
            ProviderConfig::Brave { .. } => self
                .parse::<BraveResponse>(&body)?
                .web
                .map(|web| web.results)
                .unwrap_or_default()
                .into_iter()
                .map(|r| result(r.title, r.url, r.description))
                .collect(),
            ProviderConfig::Tavily { .. } => self
                .parse::<TavilyResponse>(&body)?
                .results
                .into_iter()
                .map(|r| result(r.title, r.url, r.content))
                .collect(),
        };
        Ok(results)
    }

    fn endpoint(&self, path: &str) -> Result<reqwest::Url> {
        let base = self.config.base_url().trim_end_matches('/');
        reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|err| SearchError::Internal(format!("provider URL {base}{path}: {err}")))
    }

    /// Sends and reads the body, at most `max_response_bytes`; non-2xx is an error.
    async fn fetch(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>> {
        let mut response = request.send().await.map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.transport_error(&err))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                if !status.is_success() {
                    break; // An error page: its start is enough for the message.
                }
                return Err(self.upstream(format!(
                    "response is larger than the limit of {} bytes",
                    self.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(self.upstream(format!("answered {status}: {}", excerpt(&body))));
        }
        Ok(body)
    }

    fn parse<'a, T: Deserialize<'a>>(&self, body: &'a [u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|err| {
            self.upstream(format!("answered with an unexpected body ({err}): {}", excerpt(body)))
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> SearchError {
        if err.is_timeout() {
            return SearchError::UpstreamTimeout {
                provider: self.name(),
                timeout_ms: self.timeout.as_millis() as u64,
            };
        }
        // reqwest's Display hides the cause ("error sending request"); the chain says why.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        // The URL may carry the query; the provider's base URL is enough to find the problem.
        let message = message.replace(err.url().map(|u| u.as_str()).unwrap_or("\u{0}"), "");
        self.upstream(format!("could not be reached at {}: {message}", self.config.base_url()))
    }

    fn upstream(&self, message: String) -> SearchError {
        SearchError::Upstream { provider: self.name(), message }
    }
}

fn result(title: String, url: String, snippet: String) -> WebSearchResult {
    WebSearchResult { title: plain_text(&title), url, snippet: plain_text(&snippet) }
}

/// The first few hundred characters of an upstream body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
    if one_line.trim().is_empty() { "(empty body)".to_owned() } else { one_line.trim().to_owned() }
}

/// Brave and SearXNG highlight matches with HTML (`<strong>`); results are plain text.
fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

// === provider response shapes (only the fields we use) ===

#[derive(Deserialize)]
struct SearxngResponse {
    results: Vec<SearxngResult>,
}

#[derive(Deserialize)]
struct SearxngResult {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct BraveResponse {
    /// Absent when there are no web results.
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveResult>,
}

#[derive(Deserialize)]
struct BraveResult {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct TavilyResponse {
    results: Vec<TavilyResult>,
}

#[derive(Deserialize)]
struct TavilyResult {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_highlights_become_plain_text() {
        assert_eq!(plain_text("The <strong>Rust</strong> Book &amp; more"), "The Rust Book & more");
        assert_eq!(plain_text("a &lt;b&gt; c"), "a <b> c");
        assert_eq!(excerpt(b"line1\nline2"), "line1 line2");
        assert_eq!(excerpt(b""), "(empty body)");
    }
}
