//! Upload bytes -> searchable text. The type is decided by the file name's extension and checked
//! against the content (a `.pdf` must start with `%PDF-`, text must be UTF-8 without NUL bytes).

use std::time::Duration;

use antwort_common::search_api::FileKind;

use super::error::{Result, SearchError};

/// Extensions indexed as UTF-8 text: prose, markup, data, and source code.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "text",
    "md",
    "markdown",
    "rst",
    "adoc",
    "org",
    "tex",
    "csv",
    "tsv",
    "log",
    "json",
    "jsonl",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "xml",
    "html",
    "htm",
    "css",
    "rs",
    "py",
    "pyi",
    "js",
    "mjs",
    "cjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "c",
    "h",
    "cc",
    "cpp",
    "cxx",
    "hpp",
    "hh",
    "cs",
    "rb",
    "php",
    "pl",
    "pm",
    "lua",
    "r",
    "jl",
    "swift",
    "m",
    "mm",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "sql",
    "proto",
    "graphql",
    "tf",
    "hcl",
    "nix",
    "ex",
    "exs",
    "erl",
    "hs",
    "ml",
    "mli",
    "clj",
    "dart",
    "vue",
    "svelte",
    "zig",
    "v",
    "sv",
    "vhd",
    "dockerfile",
    "makefile",
    "cmake",
    "gradle",
    "ipynb",
];

/// Whole file names (no extension) that are text.
const TEXT_FILENAMES: &[&str] =
    &["dockerfile", "makefile", "readme", "license", "changelog", "containerfile"];

/// What [`kind_of`] decided for a file name.
pub(crate) fn kind_of(filename: &str) -> Result<FileKind> {
    let lower = filename.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map(|(_, ext)| ext);
    match extension {
        Some("pdf") => Ok(FileKind::Pdf),
        Some(ext) if TEXT_EXTENSIONS.contains(&ext) => Ok(FileKind::Text),
        None if TEXT_FILENAMES.contains(&lower.as_str()) => Ok(FileKind::Text),
        _ => Err(SearchError::UnsupportedMediaType(format!(
            "cannot index {filename:?}: supported are PDF (.pdf) and UTF-8 text such as .txt, \
             .md, .json, .yaml, .csv, .html and source code (.rs, .py, .js, .ts, .go, .java, \
             .c, ...)"
        ))),
    }
}

/// The text of `bytes`, which `kind_of(filename)` said are `kind`. PDF parsing runs on a
/// blocking thread under `timeout`; a PDF the parser panics on is refused, not fatal.
pub(crate) async fn extract_text(
    kind: FileKind,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<String> {
    let text = match kind {
        FileKind::Text => {
            if bytes.contains(&0) {
                return Err(SearchError::Unreadable(
                    "file contains NUL bytes: binary content cannot be indexed as text".to_owned(),
                ));
            }
            let text = String::from_utf8(bytes).map_err(|err| {
                SearchError::Unreadable(format!(
                    "file is not valid UTF-8 (first bad byte at offset {})",
                    err.utf8_error().valid_up_to()
                ))
            })?;
            // A byte-order mark is not content; offsets index the text after it.
            match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_owned(),
                None => text,
            }
        }
        FileKind::Pdf => {
            if !bytes.starts_with(b"%PDF-") {
                return Err(SearchError::Unreadable(
                    "file is named .pdf but does not start with %PDF-".to_owned(),
                ));
            }
            // pdf-extract panics on some malformed input; the blocking task turns that into a
            // JoinError. A runaway parse cannot be killed, only abandoned at the timeout.
            let task =
                tokio::task::spawn_blocking(move || pdf_extract::extract_text_from_mem(&bytes));
            match tokio::time::timeout(timeout, task).await {
                Err(_) => {
                    return Err(SearchError::Unreadable(format!(
                        "PDF text extraction took longer than {} ms",
                        timeout.as_millis()
                    )));
                }
                Ok(Err(join)) if join.is_panic() => {
                    tracing::warn!("PDF parser panicked on an upload");
                    return Err(SearchError::Unreadable(
                        "PDF could not be parsed (malformed or unsupported structure)".to_owned(),
                    ));
                }
                Ok(Err(join)) => return Err(SearchError::Internal(format!("PDF task: {join}"))),
                Ok(Ok(Err(err))) => {
                    return Err(SearchError::Unreadable(format!("PDF could not be parsed: {err}")));
                }
                Ok(Ok(Ok(text))) => text,
            }
        }
    };
    if text.trim().is_empty() {
        return Err(SearchError::Unreadable(match kind {
            FileKind::Pdf => {
                "PDF has no extractable text (scanned images are not OCRed)".to_owned()
            }
            FileKind::Text => "file is empty".to_owned(),
        }));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn kinds_by_name() {
        assert_eq!(kind_of("notes.MD").expect("md"), FileKind::Text);
        assert_eq!(kind_of("main.rs").expect("rs"), FileKind::Text);
        assert_eq!(kind_of("Dockerfile").expect("dockerfile"), FileKind::Text);
        assert_eq!(kind_of("paper.pdf").expect("pdf"), FileKind::Pdf);
        assert!(matches!(kind_of("photo.png"), Err(SearchError::UnsupportedMediaType(_))));
        assert!(matches!(kind_of("noextension"), Err(SearchError::UnsupportedMediaType(_))));
    }

    #[tokio::test]
    async fn text_must_be_utf8_without_nul() {
        let text = extract_text(FileKind::Text, "\u{feff}héllo".into(), T).await.expect("utf8");
        assert_eq!(text, "héllo");
        let bad = extract_text(FileKind::Text, vec![b'a', 0xff, b'b'], T).await;
        assert!(matches!(bad, Err(SearchError::Unreadable(m)) if m.contains("offset 1")));
        let nul = extract_text(FileKind::Text, b"a\0b".to_vec(), T).await;
        assert!(matches!(nul, Err(SearchError::Unreadable(_))));
        let blank = extract_text(FileKind::Text, b" \n ".to_vec(), T).await;
        assert!(matches!(blank, Err(SearchError::Unreadable(m)) if m == "file is empty"));
    }

    #[tokio::test]
    async fn broken_pdfs_are_refused() {
        let not_pdf = extract_text(FileKind::Pdf, b"hello".to_vec(), T).await;
        assert!(matches!(not_pdf, Err(SearchError::Unreadable(m)) if m.contains("%PDF-")));
        let truncated = extract_text(FileKind::Pdf, b"%PDF-1.5\n1 0 obj <<".to_vec(), T).await;
        assert!(matches!(truncated, Err(SearchError::Unreadable(_))), "{truncated:?}");
    }
}
