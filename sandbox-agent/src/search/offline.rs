//! Offline web search: a local corpus of `{title, url, snippet}` entries, loaded once at startup
//! and ranked with the same BM25 index as file search. Never touches the network.

use std::path::Path;

use antwort_common::search_api::WebSearchResult;
use serde::Deserialize;

use super::error::{Result, SearchError};
use super::index::TextIndex;

/// The single key all corpus passages share in the index.
const CORPUS_KEY: &str = "corpus";

pub(crate) struct OfflineCorpus {
    entries: Vec<WebSearchResult>,
    index: TextIndex,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    title: String,
    url: String,
    snippet: String,
}

impl OfflineCorpus {
    /// Reads and indexes the JSON array at `path`. Blocks (startup only).
    pub(crate) fn load(path: &Path, index_memory_bytes: usize) -> Result<Self> {
        let fail = |why: String| {
            SearchError::Config(vec![format!(
                "web_search.offline_corpus ({}): {why}",
                path.display()
            )])
        };
        let bytes = std::fs::read(path).map_err(|err| fail(err.to_string()))?;
        let parsed: Vec<Entry> = serde_json::from_slice(&bytes)
            .map_err(|err| fail(format!("not a JSON array of {{title, url, snippet}}: {err}")))?;
        let mut problems = Vec::new();
        for (i, entry) in parsed.iter().enumerate() {
            match reqwest::Url::parse(&entry.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                }
                _ => problems.push(format!("entry {i}: url {:?} is not an http(s) URL", entry.url)),
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems.join("; ")));
        }
        let entries: Vec<WebSearchResult> = parsed
            .into_iter()
            .map(|e| WebSearchResult { title: e.title, url: e.url, snippet: e.snippet })
            .collect();
        let index = TextIndex::new(index_memory_bytes)?;
        // The URL's words count too: a query for "docs.rs" should find pages on it.
        let texts: Vec<String> =
            entries.iter().map(|e| format!("{}\n{}\n{}", e.title, e.snippet, e.url)).collect();
        index.add(CORPUS_KEY, texts.iter().enumerate().map(|(i, t)| (i as u64, t.as_str())))?;
        tracing::info!(entries = entries.len(), path = %path.display(), "offline web corpus loaded");
        Ok(Self { entries, index })
    }

    /// Every matching entry, best first (callers filter and truncate).
    pub(crate) fn search(&self, query: &str) -> Result<Vec<WebSearchResult>> {
        let hits = self.index.search(query, None, self.entries.len().max(1))?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| self.entries.get(usize::try_from(hit.ordinal).ok()?).cloned())
            .collect())
    }
}
