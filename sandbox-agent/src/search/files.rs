//! File search: the store of uploaded files (their extracted text and chunk ranges) plus the
//! passage index over their chunks. Upload: extract -> chunk -> reserve in the store -> index;
//! query: index -> hits -> chunk text and offsets from the store.
//!
//! Invariant: a hit is only returned for a file that is in the store, so a file being deleted or
//! half-uploaded never shows up half.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use antwort_common::search_api::{
    FileDeleted, FileObject, FileSearchHit, FileSearchRequest, FileSearchResponse, TextOffsets,
};

use super::chunk::chunk;
use super::config::FileSearchConfig;
use super::error::{Result, SearchError};
use super::extract::{extract_text, kind_of};
use super::index::TextIndex;

/// The file-search service; cheap to clone (shared state).
#[derive(Clone)]
pub struct FileSearch {
    inner: Arc<Inner>,
}

struct Inner {
    config: FileSearchConfig,
    index: TextIndex,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    files: HashMap<String, StoredFile>,
    /// Sum of `text.len()` over `files`, checked against `max_total_text_bytes`.
    text_bytes: u64,
}

struct StoredFile {
    object: FileObject,
    text: Arc<str>,
    chunks: Vec<Range<usize>>,
}

impl FileSearch {
    /// An empty store; fails on an invalid config, listing every problem.
    pub fn new(config: FileSearchConfig) -> Result<Self> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(SearchError::Config(problems));
        }
        let index = TextIndex::new(config.index_memory_bytes)?;
        Ok(Self { inner: Arc::new(Inner { config, index, store: Mutex::default() }) })
    }

    pub fn config(&self) -> &FileSearchConfig {
        &self.inner.config
    }

    /// Extracts, chunks and indexes one file. Nothing changes when it fails.
    pub async fn upload(&self, filename: &str, bytes: Vec<u8>) -> Result<FileObject> {
        let config = &self.inner.config;
        check_filename(filename)?;
        if bytes.len() as u64 > config.max_file_bytes {
            return Err(SearchError::FileTooLarge { limit: config.max_file_bytes });
        }
        let kind = kind_of(filename)?;
        let size = bytes.len() as u64;
        let timeout = Duration::from_millis(config.extract_timeout_ms);
        let text: Arc<str> = extract_text(kind, bytes, timeout).await?.into();
        let chunks = chunk(&text, &config.chunking);

        let object = FileObject {
            id: format!("file-{}", uuid::Uuid::now_v7().simple()),
            filename: filename.to_owned(),
            kind,
            bytes: size,
            text_bytes: text.len() as u64,
            chunks: chunks.len() as u64,
            created_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        self.reserve(&object, text.clone(), chunks.clone())?;

        let this = self.clone();
        let id = object.id.clone();
        let indexed = tokio::task::spawn_blocking(move || {
            let passages = chunks.iter().enumerate().map(|(i, r)| (i as u64, &text[r.clone()]));
            this.inner.index.add(&id, passages)
        })
        .await
        .unwrap_or_else(|join| Err(SearchError::Internal(format!("index task: {join}"))));
        if let Err(err) = indexed {
            self.release(&object.id);
            return Err(err);
        }
        tracing::info!(id = %object.id, filename, chunks = object.chunks, "file indexed");
        Ok(object)
    }

    /// Every file, oldest first.
    pub fn list(&self) -> Result<Vec<FileObject>> {
        let store = self.store()?;
        let mut files: Vec<FileObject> = store.files.values().map(|f| f.object.clone()).collect();
        files.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(files)
    }

    pub fn get(&self, id: &str) -> Result<FileObject> {
        self.store()?
            .files
            .get(id)
            .map(|f| f.object.clone())
            .ok_or_else(|| SearchError::FileNotFound(id.to_owned()))
    }

    /// The extracted text that hit offsets index into.
    pub fn text(&self, id: &str) -> Result<Arc<str>> {
        self.store()?
            .files
            .get(id)
            .map(|f| f.text.clone())
            .ok_or_else(|| SearchError::FileNotFound(id.to_owned()))
    }

    /// Removes a file from results at once and from the index before returning.
    pub async fn delete(&self, id: &str) -> Result<FileDeleted> {
        if self.release(id).is_none() {
            return Err(SearchError::FileNotFound(id.to_owned()));
        }
        let this = self.clone();
        let key = id.to_owned();
        tokio::task::spawn_blocking(move || this.inner.index.remove(&key))
            .await
            .unwrap_or_else(|join| Err(SearchError::Internal(format!("index task: {join}"))))?;
        tracing::info!(id, "file deleted");
        Ok(FileDeleted { id: id.to_owned(), deleted: true })
    }

    /// Ranked chunks for a query.
    pub async fn query(&self, request: FileSearchRequest) -> Result<FileSearchResponse> {
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
        let limit = match request.max_results {
            None => config.default_max_results,
            Some(n) if n == 0 || n > config.max_results_limit => {
                return Err(SearchError::invalid(
                    "invalid_max_results",
                    format!("max_results must be between 1 and {}", config.max_results_limit),
                ));
            }
            Some(n) => n,
        } as usize;
        if let Some(ids) = &request.file_ids {
            let store = self.store()?;
            if let Some(missing) = ids.iter().find(|id| !store.files.contains_key(*id)) {
                return Err(SearchError::FileNotFound(missing.clone()));
            }
        }

        let this = self.clone();
        let file_ids = request.file_ids;
        let hits = tokio::task::spawn_blocking(move || {
            this.inner.index.search(&query, file_ids.as_deref(), limit)
        })
        .await
        .unwrap_or_else(|join| Err(SearchError::Internal(format!("search task: {join}"))))?;

        let store = self.store()?;
        let data = hits
            .into_iter()
            .filter_map(|hit| {
                // A file deleted since the search ran is skipped, not half-shown.
                let file = store.files.get(&hit.key)?;
                let range = file.chunks.get(usize::try_from(hit.ordinal).ok()?)?.clone();
                Some(FileSearchHit {
                    file_id: hit.key,
                    filename: file.object.filename.clone(),
                    score: hit.score,
                    text: file.text[range.clone()].to_owned(),
                    offsets: TextOffsets { start: range.start as u64, end: range.end as u64 },
                })
            })
            .collect();
        Ok(FileSearchResponse { data })
    }

    /// Puts a file in the store if the store-wide limits allow it.
    fn reserve(
        &self,
        object: &FileObject,
        text: Arc<str>,
        chunks: Vec<Range<usize>>,
    ) -> Result<()> {
        let config = &self.inner.config;
        let mut store = self.store()?;
        if store.files.len() >= config.max_files {
            return Err(SearchError::StoreFull(format!(
                "the file store already holds its limit of {} files; delete some first",
                config.max_files
            )));
        }
        if store.text_bytes + object.text_bytes > config.max_total_text_bytes {
            return Err(SearchError::StoreFull(format!(
                "this file's {} bytes of text would exceed the store's limit of {} bytes \
                 ({} in use); delete some files first",
                object.text_bytes, config.max_total_text_bytes, store.text_bytes
            )));
        }
        store.text_bytes += object.text_bytes;
        store.files.insert(object.id.clone(), StoredFile { object: object.clone(), text, chunks });
        Ok(())
    }

    fn release(&self, id: &str) -> Option<StoredFile> {
        // A poisoned lock is reported by the next store() call; release is best effort.
        let mut store = self.inner.store.lock().ok()?;
        let file = store.files.remove(id)?;
        store.text_bytes -= file.object.text_bytes;
        Some(file)
    }

    fn store(&self) -> Result<MutexGuard<'_, Store>> {
        self.inner
            .store
            .lock()
            .map_err(|_| SearchError::Internal("file store lock poisoned".to_owned()))
    }
}

fn check_filename(filename: &str) -> Result<()> {
    let problem = if filename.trim().is_empty() {
        "filename must not be empty"
    } else if filename.len() > 255 {
        "filename must be at most 255 bytes"
    } else if filename.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        "filename must not contain path separators or control characters"
    } else {
        return Ok(());
    };
    Err(SearchError::invalid("invalid_filename", problem))
}

impl std::fmt::Debug for FileSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSearch").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::config::{ChunkUnit, ChunkingConfig};

    fn service(config: FileSearchConfig) -> FileSearch {
        FileSearch::new(config).expect("valid config")
    }

    #[tokio::test]
    async fn limits_refuse_and_change_nothing() {
        let search = service(FileSearchConfig {
            max_files: 1,
            max_file_bytes: 100,
            ..FileSearchConfig::default()
        });
        let first = search.upload("a.txt", b"apples and pears".to_vec()).await.expect("first");
        let too_many = search.upload("b.txt", b"bananas".to_vec()).await;
        assert!(matches!(too_many, Err(SearchError::StoreFull(_))), "{too_many:?}");
        let too_big = search.upload("c.txt", vec![b'a'; 101]).await;
        assert!(matches!(too_big, Err(SearchError::FileTooLarge { limit: 100 })));
        let listed = search.list().expect("list");
        assert_eq!(listed, vec![first.clone()]);
        assert!(search.query(req("bananas")).await.expect("query").data.is_empty());

        search.delete(&first.id).await.expect("delete");
        assert!(search.list().expect("list").is_empty());
        assert!(matches!(search.delete(&first.id).await, Err(SearchError::FileNotFound(_))));
        search.upload("b.txt", b"bananas".to_vec()).await.expect("room again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_uploads_respect_max_files() {
        let search = service(FileSearchConfig { max_files: 5, ..FileSearchConfig::default() });
        let uploads: Vec<_> = (0..20)
            .map(|i| {
                let search = search.clone();
                tokio::spawn(async move {
                    let body = format!("document number {i} about parallel uploads");
                    search.upload(&format!("doc-{i}.txt"), body.into_bytes()).await
                })
            })
            .collect();
        let mut stored = 0;
        for upload in uploads {
            match upload.await.expect("upload task") {
                Ok(_) => stored += 1,
                Err(SearchError::StoreFull(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(stored, 5);
        assert_eq!(search.list().expect("list").len(), 5);
        let hits = search
            .query(FileSearchRequest { max_results: Some(50), ..req("parallel uploads") })
            .await
            .expect("query")
            .data;
        assert_eq!(hits.len(), 5, "every stored file is indexed, no other");
    }

    #[tokio::test]
    async fn total_text_limit() {
        let search =
            service(FileSearchConfig { max_total_text_bytes: 10, ..FileSearchConfig::default() });
        search.upload("a.txt", b"12345678".to_vec()).await.expect("fits");
        let over = search.upload("b.txt", b"abc".to_vec()).await;
        assert!(matches!(over, Err(SearchError::StoreFull(m)) if m.contains("10 bytes")));
    }

    #[tokio::test]
    async fn hits_carry_offsets_into_the_text() {
        let search = service(FileSearchConfig {
            chunking: ChunkingConfig { unit: ChunkUnit::Words, size: 4, overlap: 1 },
            ..FileSearchConfig::default()
        });
        let text = "Rust is fast. Python is friendly. Zebras are striped animals of Africa.";
        let file = search.upload("z.md", text.as_bytes().to_vec()).await.expect("upload");
        let hits = search.query(req("zebra stripes")).await.expect("query").data;
        assert!(!hits.is_empty());
        let best = &hits[0];
        assert_eq!(best.file_id, file.id);
        let (start, end) = (best.offsets.start as usize, best.offsets.end as usize);
        assert_eq!(&text[start..end], best.text);
        assert!(best.text.contains("Zebras"), "{best:?}");
    }

    #[tokio::test]
    async fn bad_queries_are_refused() {
        let search = service(FileSearchConfig::default());
        let cases = [
            (req("   "), "empty_query"),
            (FileSearchRequest { max_results: Some(0), ..req("x") }, "invalid_max_results"),
            (FileSearchRequest { max_results: Some(51), ..req("x") }, "invalid_max_results"),
            (req(&"x".repeat(2001)), "query_too_long"),
        ];
        for (request, want) in cases {
            match search.query(request).await {
                Err(SearchError::InvalidRequest { code, .. }) => assert_eq!(code, want),
                other => panic!("expected {want}, got {other:?}"),
            }
        }
        let unknown = FileSearchRequest { file_ids: Some(vec!["file-nope".into()]), ..req("x") };
        assert!(
            matches!(search.query(unknown).await, Err(SearchError::FileNotFound(id)) if id == "file-nope")
        );
        for name in ["", "../etc/passwd.txt", "a\nb.txt"] {
            let refused = search.upload(name, b"text".to_vec()).await;
            assert!(matches!(
                refused,
                Err(SearchError::InvalidRequest { code: "invalid_filename", .. })
            ));
        }
    }

    fn req(query: &str) -> FileSearchRequest {
        FileSearchRequest { query: query.to_owned(), max_results: None, file_ids: None }
    }
}
