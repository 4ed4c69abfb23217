//! A small in-memory tantivy index of text passages, ranked with BM25. Each passage belongs to a
//! `key` (a file id, or the offline corpus) and has an `ordinal` within it (chunk number, corpus
//! entry); callers keep the passages' text and metadata themselves and look hits up by those two.
//!
//! Every method blocks (tantivy does I/O-like work and commits): call them from
//! `spawn_blocking`.

use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::error::{Result, SearchError};

/// English stemming ("indexing" finds "indexed"), lower-casing, and tokens split on anything
/// that is not alphanumeric, so `parse_config` in code is found by "parse config".
const TOKENIZER: &str = "en_stem";

/// tantivy's smallest writer budget (`MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
pub(crate) const MIN_WRITER_MEMORY: usize = 15_000_000;

pub(crate) struct TextIndex {
    index: Index,
    /// One writer per index (tantivy's rule); the lock also orders add/remove/commit.
    writer: Mutex<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    key: Field,
    ordinal: Field,
    text: Field,
}

/// One ranked passage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    pub key: String,
    pub ordinal: u64,
    pub score: f32,
}

impl TextIndex {
    /// An empty index whose writer buffers up to `memory_bytes` (at least tantivy's minimum).
    pub(crate) fn new(memory_bytes: usize) -> Result<Self> {
        let mut schema = Schema::builder();
        let key = schema.add_text_field("key", STRING | STORED);
        let ordinal = schema.add_u64_field("ordinal", INDEXED | STORED);
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let text = schema.add_text_field("text", text_options);
        let index = Index::create_in_ram(schema.build());
        // One indexing thread: the agent shares a small CPU budget with user code.
        let writer = index.writer_with_num_threads(1, memory_bytes)?;
        // Manual reloads right after each commit: a query never sees a half-applied upload.
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, writer: Mutex::new(writer), reader, key, ordinal, text })
    }

    /// Adds `passages` under `key` and commits; on failure nothing of them stays.
    pub(crate) fn add<'a>(
        &self,
        key: &str,
        passages: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> Result<()> {
        let mut writer = self.lock_writer()?;
        let added = (|| {
            for (ordinal, text) in passages {
                let mut doc = TantivyDocument::default();
                doc.add_text(self.key, key);
                doc.add_u64(self.ordinal, ordinal);
                doc.add_text(self.text, text);
                writer.add_document(doc)?;
            }
            writer.commit()
        })();
        if let Err(err) = added {
            if let Err(rollback) = writer.rollback() {
                tracing::error!(error = %rollback, "search index rollback failed");
            }
            return Err(err.into());
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Removes every passage under `key` and commits.
    pub(crate) fn remove(&self, key: &str) -> Result<()> {
        let mut writer = self.lock_writer()?;
        writer.delete_term(Term::from_field_text(self.key, key));
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The best `limit` passages for the words of `query` (any word may match; BM25 ranks),
    /// only under `keys` when given. A query without indexable words matches nothing.
    pub(crate) fn search(
        &self,
        query: &str,
        keys: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let terms = self.query_terms(query)?;
        if terms.is_empty() || limit == 0 || keys.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let words: Box<dyn Query> = Box::new(BooleanQuery::new_multiterms_query(terms));
        let query: Box<dyn Query> = match keys {
            None => words,
            Some(keys) => {
                let allowed = keys
                    .iter()
                    .map(|key| {
                        let term = Term::from_field_text(self.key, key);
                        let q: Box<dyn Query> =
                            Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                        (Occur::Should, q)
                    })
                    .collect();
                // The key clause only filters: a zero boost keeps it out of the score.
                let filter: Box<dyn Query> = Box::new(tantivy::query::BoostQuery::new(
                    Box::new(BooleanQuery::new(allowed)),
                    0.0,
                ));
                Box::new(BooleanQuery::new(vec![(Occur::Must, words), (Occur::Must, filter)]))
            }
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let key = doc.get_first(self.key).and_then(|v| v.as_str().map(str::to_owned));
            let ordinal = doc.get_first(self.ordinal).and_then(|v| v.as_u64());
            match (key, ordinal) {
                (Some(key), Some(ordinal)) => hits.push(Hit { key, ordinal, score }),
                _ => return Err(SearchError::Internal("indexed passage lacks key".to_owned())),
            }
        }
        Ok(hits)
    }

    /// The query's words as the text field indexes them, without repeats.
    fn query_terms(&self, query: &str) -> Result<Vec<Term>> {
        let mut analyzer = self.index.tokenizer_for_field(self.text)?;
        let mut stream = analyzer.token_stream(query);
        let mut terms: Vec<Term> = Vec::new();
        while stream.advance() {
            let term = Term::from_field_text(self.text, &stream.token().text);
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        Ok(terms)
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>>> {
        self.writer
            .lock()
            .map_err(|_| SearchError::Internal("index writer lock poisoned".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> TextIndex {
        TextIndex::new(MIN_WRITER_MEMORY).expect("index")
    }

    #[test]
    fn ranks_filters_and_removes() {
        let index = index();
        index
            .add("a", [(0, "The cat sat on the mat."), (1, "Dogs chase cats and cats run.")])
            .expect("add a");
        index.add("b", [(0, "Indexing pipelines for search engines.")]).expect("add b");

        let hits = index.search("cats", None, 10).expect("search");
        assert_eq!(hits.len(), 2, "{hits:?}");
        // Two occurrences beat one; stemming matches "cat" to "cats".
        assert_eq!((hits[0].key.as_str(), hits[0].ordinal), ("a", 1));
        assert!(hits[0].score > hits[1].score);

        // Stemming: "indexed" finds "Indexing".
        let hits = index.search("indexed engine", None, 10).expect("search");
        assert_eq!(hits.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(), ["b"]);

        // Filter by key; the filter does not change scores.
        let all = index.search("cats search", None, 10).expect("search");
        let only_b = index.search("cats search", Some(&["b".to_owned()]), 10).expect("search");
        assert_eq!(only_b.len(), 1);
        let b_unfiltered = all.iter().find(|h| h.key == "b").expect("b in all");
        assert!((only_b[0].score - b_unfiltered.score).abs() < 1e-6);

        index.remove("a").expect("remove");
        assert!(index.search("cats", None, 10).expect("search").is_empty());
        assert!(index.search("?!", None, 10).expect("punctuation").is_empty());
    }
}
