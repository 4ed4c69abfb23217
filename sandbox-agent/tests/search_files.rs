//! File search over real HTTP on loopback: realistic documents of several types (markdown, plain
//! text, Rust, Python, and a real PDF written with lopdf), ranking, offsets, the file_ids filter,
//! delete, and every kind of bad input.

use antwort_common::error::ErrorEnvelope;
use antwort_common::search_api::{FileKind, FileList, FileObject, FileSearchResponse};
use antwort_sandbox_agent::search::{FileSearch, FileSearchConfig, file_search_router};
use serde_json::{Value, json};

const DEPLOYMENT_MD: &str = r#"# Deployment guide

This guide explains how to roll out the service on Kubernetes with Helm.

## Rolling updates

Helm upgrades perform a rolling update: new pods start and pass their readiness probe
before old pods are terminated. Set `maxUnavailable: 0` in the Deployment strategy so the
rollout never drops below the desired replica count.

## Rollback

If a release misbehaves, run `helm rollback <release> <revision>` to return to the previous
chart revision. Configuration lives in values.yaml.
"#;

const MEETING_TXT: &str = "Quarterly planning meeting, 14 March\n\n\
Attendees: Dana, Luis, Priya.\n\n\
1. The marketing budget for the third quarter is reduced by ten percent; trade-show spending \
moves to online campaigns.\n\
2. Hiring: two support engineers start in May.\n\
3. Action item: Priya sends the revised budget spreadsheet to finance before Friday.\n";

const LEXER_RS: &str = r#"//! A small lexer that turns source text into tokens.

/// One token of the configuration language.
#[derive(Debug, PartialEq)]
pub enum Token {
    Ident(String),
    Number(i64),
    Equals,
}

/// Splits `input` into tokens; the lexer skips whitespace and comments.
pub fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for word in input.split_whitespace() {
        if word == "=" {
            tokens.push(Token::Equals);
        } else if let Ok(n) = word.parse() {
            tokens.push(Token::Number(n));
        } else {
            tokens.push(Token::Ident(word.to_string()));
        }
    }
    tokens
}
"#;

const INVOICE_PY: &str = r#""""Invoice totals with value-added tax (VAT)."""

from decimal import Decimal

VAT_RATE = Decimal("0.19")


def invoice_total(lines):
    """Sum the net price of every invoice line and add VAT."""
    net = sum(Decimal(line["price"]) * line["quantity"] for line in lines)
    return (net * (1 + VAT_RATE)).quantize(Decimal("0.01"))
"#;

/// Lines of the PDF's text layer (one `Tj` per line).
const PHOTOSYNTHESIS_PDF_LINES: &[&str] = &[
    "Photosynthesis in green plants",
    "Chlorophyll in the chloroplasts absorbs sunlight, mostly red and blue light.",
    "The light reactions split water and release oxygen as a by-product.",
    "The Calvin cycle then fixes carbon dioxide into sugars such as glucose.",
];

/// A real, compressed PDF with a Helvetica text layer.
fn photosynthesis_pdf() -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};

    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut operations = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("TL", vec![16.into()]),
        Operation::new("Td", vec![50.into(), 780.into()]),
    ];
    for line in PHOTOSYNTHESIS_PDF_LINES {
        operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        operations.push(Operation::new("T*", vec![]));
    }
    operations.push(Operation::new("ET", vec![]));
    let content = Content { operations }.encode().expect("encode content");
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    doc.compress();
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("write PDF");
    bytes
}

/// The router on a loopback port; the server lives as long as the test's runtime.
async fn serve(config: FileSearchConfig) -> String {
    let router = file_search_router(FileSearch::new(config).expect("valid config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    format!("http://{addr}")
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn new(config: FileSearchConfig) -> Self {
        // reqwest is built without a bundled crypto provider; ring is the one we link.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { base: serve(config).await, http: reqwest::Client::new() }
    }

    async fn upload(&self, filename: &str, bytes: Vec<u8>) -> reqwest::Response {
        let mut url =
            reqwest::Url::parse(&format!("{}/v1/file_search/files", self.base)).expect("base URL");
        url.query_pairs_mut().append_pair("filename", filename);
        self.http.post(url).body(bytes).send().await.expect("upload request")
    }

    async fn upload_ok(&self, filename: &str, bytes: impl Into<Vec<u8>>) -> FileObject {
        let response = self.upload(filename, bytes.into()).await;
        assert_eq!(response.status(), 201, "upload {filename}");
        response.json().await.expect("file object")
    }

    async fn query(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/file_search/query", self.base))
            .json(&body)
            .send()
            .await
            .expect("query request")
    }

    async fn query_ok(&self, body: Value) -> FileSearchResponse {
        let response = self.query(body.clone()).await;
        assert_eq!(response.status(), 200, "query {body}");
        response.json().await.expect("search response")
    }

    async fn list(&self) -> Vec<FileObject> {
        let response = self
            .http
            .get(format!("{}/v1/file_search/files", self.base))
            .send()
            .await
            .expect("list request");
        assert_eq!(response.status(), 200);
        response.json::<FileList>().await.expect("file list").data
    }

    async fn text(&self, id: &str) -> String {
        let response = self
            .http
            .get(format!("{}/v1/file_search/files/{id}/text", self.base))
            .send()
            .await
            .expect("text request");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text body")
    }
}

/// Asserts the status and the envelope's code, and returns the message.
async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status, "status");
    let envelope: ErrorEnvelope = response.json().await.expect("error envelope");
    assert_eq!(envelope.error.code, code, "{envelope:?}");
    assert!(!envelope.error.message.is_empty());
    envelope.error.message
}

struct Corpus {
    md: FileObject,
    txt: FileObject,
    rs: FileObject,
    py: FileObject,
    pdf: FileObject,
}

async fn upload_corpus(client: &Client) -> Corpus {
    Corpus {
        md: client.upload_ok("deployment-guide.md", DEPLOYMENT_MD).await,
        txt: client.upload_ok("meeting-notes.txt", MEETING_TXT).await,
        rs: client.upload_ok("lexer.rs", LEXER_RS).await,
        py: client.upload_ok("invoice.py", INVOICE_PY).await,
        pdf: client.upload_ok("photosynthesis.pdf", photosynthesis_pdf()).await,
    }
}

#[tokio::test]
async fn the_right_file_ranks_first_with_offsets_into_its_text() {
    let client = Client::new(FileSearchConfig::default()).await;
    let corpus = upload_corpus(&client).await;
    assert_eq!(corpus.pdf.kind, FileKind::Pdf);
    assert_eq!(corpus.rs.kind, FileKind::Text);
    assert_eq!(client.list().await.len(), 5);

    let cases = [
        ("how does chlorophyll absorb sunlight", &corpus.pdf, "chlorophyll"),
        ("helm rollback to a previous revision", &corpus.md, "rollback"),
        ("marketing budget third quarter", &corpus.txt, "budget"),
        ("tokenize input into tokens lexer", &corpus.rs, "lexer"),
        ("invoice total with VAT", &corpus.py, "VAT"),
    ];
    for (query, expected, word) in cases {
        let hits = client.query_ok(json!({"query": query})).await.data;
        assert!(!hits.is_empty(), "no hits for {query:?}");
        let best = &hits[0];
        assert_eq!(best.file_id, expected.id, "{query:?} ranked {:?} first", best.filename);
        assert_eq!(best.filename, expected.filename);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "not ranked: {hits:?}");

        // The offsets point at exactly the returned text inside the extracted text.
        let text = client.text(&best.file_id).await;
        let (start, end) = (best.offsets.start as usize, best.offsets.end as usize);
        assert_eq!(&text[start..end], best.text, "offsets of {query:?}");
        assert!(best.text.to_lowercase().contains(&word.to_lowercase()), "{best:?}");
    }

    // The PDF's extracted text really is its text layer.
    let pdf_text = client.text(&corpus.pdf.id).await;
    assert!(pdf_text.contains("Calvin cycle"), "{pdf_text:?}");
    // Plain files are indexed verbatim, so offsets also index the uploaded bytes.
    assert_eq!(client.text(&corpus.md.id).await, DEPLOYMENT_MD);
}

#[tokio::test]
async fn file_ids_filter_and_delete() {
    let client = Client::new(FileSearchConfig::default()).await;
    let corpus = upload_corpus(&client).await;

    // "configuration" occurs in the markdown guide and in the Rust lexer.
    let all = client.query_ok(json!({"query": "configuration", "max_results": 10})).await.data;
    let mut files: Vec<&str> = all.iter().map(|h| h.file_id.as_str()).collect();
    files.dedup();
    assert!(files.contains(&corpus.md.id.as_str()) && files.contains(&corpus.rs.id.as_str()));

    let only_rs =
        client.query_ok(json!({"query": "configuration", "file_ids": [corpus.rs.id]})).await.data;
    assert!(!only_rs.is_empty());
    assert!(only_rs.iter().all(|h| h.file_id == corpus.rs.id), "{only_rs:?}");

    let one = client.query_ok(json!({"query": "configuration", "max_results": 1})).await.data;
    assert_eq!(one.len(), 1);

    // Delete the guide: gone from results, the listing and lookups; the rest stay.
    let deleted = client
        .http
        .delete(format!("{}/v1/file_search/files/{}", client.base, corpus.md.id))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.expect("json"),
        json!({"id": corpus.md.id, "deleted": true})
    );
    let after = client.query_ok(json!({"query": "configuration helm rollback"})).await.data;
    assert!(after.iter().all(|h| h.file_id != corpus.md.id), "{after:?}");
    assert!(after.iter().any(|h| h.file_id == corpus.rs.id));
    let listed: Vec<String> = client.list().await.into_iter().map(|f| f.id).collect();
    assert_eq!(listed.len(), 4);
    assert!(!listed.contains(&corpus.md.id));
    let gone = client
        .http
        .get(format!("{}/v1/file_search/files/{}", client.base, corpus.md.id))
        .send()
        .await
        .expect("get");
    expect_error(gone, 404, "file_not_found").await;
    let stale_filter = client.query(json!({"query": "helm", "file_ids": [corpus.md.id]})).await;
    expect_error(stale_filter, 404, "file_not_found").await;
    let again = client
        .http
        .delete(format!("{}/v1/file_search/files/{}", client.base, corpus.md.id))
        .send()
        .await
        .expect("delete again");
    expect_error(again, 404, "file_not_found").await;
    let _ = (corpus.txt, corpus.py, corpus.pdf);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let client = Client::new(FileSearchConfig {
        max_file_bytes: 64 * 1024,
        max_request_bytes: 1024,
        ..FileSearchConfig::default()
    })
    .await;
    let kept = client.upload_ok("meeting-notes.txt", MEETING_TXT).await;

    // Oversized upload: 413 whether or not Content-Length announces it.
    let big = client.upload("big.txt", vec![b'a'; 100 * 1024]).await;
    let message = expect_error(big, 413, "file_too_large").await;
    assert!(message.contains("65536"), "{message}");
    let streamed = client
        .http
        .post(format!("{}/v1/file_search/files?filename=big.txt", client.base))
        .body(reqwest::Body::wrap_stream(futures_chunks(100, 1024)))
        .send()
        .await
        .expect("streamed upload");
    expect_error(streamed, 413, "file_too_large").await;

    let png = client.upload("diagram.png", b"\x89PNG\r\n\x1a\n....".to_vec()).await;
    let message = expect_error(png, 415, "unsupported_media_type").await;
    assert!(message.contains("diagram.png") && message.contains(".pdf"), "{message}");

    let fake_pdf = client.upload("report.pdf", b"%PDF-1.7\n%garbage".to_vec()).await;
    expect_error(fake_pdf, 422, "unreadable_file").await;
    let latin1 = client.upload("notes.txt", b"caf\xe9".to_vec()).await;
    expect_error(latin1, 422, "unreadable_file").await;
    let empty = client.upload("empty.md", Vec::new()).await;
    expect_error(empty, 422, "unreadable_file").await;

    let no_name = client
        .http
        .post(format!("{}/v1/file_search/files", client.base))
        .body("text")
        .send()
        .await
        .expect("upload without filename");
    expect_error(no_name, 400, "invalid_filename").await;

    expect_error(client.query(json!({"query": "  "})).await, 400, "empty_query").await;
    expect_error(client.query(json!({"qeury": "budget"})).await, 400, "invalid_json").await;
    expect_error(
        client.query(json!({"query": "budget", "max_results": 0})).await,
        400,
        "invalid_max_results",
    )
    .await;
    expect_error(
        client.query(json!({"query": "budget", "file_ids": ["file-unknown"]})).await,
        404,
        "file_not_found",
    )
    .await;
    let malformed = client
        .http
        .post(format!("{}/v1/file_search/query", client.base))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .expect("malformed");
    expect_error(malformed, 400, "invalid_json").await;
    let not_json = client
        .http
        .post(format!("{}/v1/file_search/query", client.base))
        .header("content-type", "text/plain")
        .body("budget")
        .send()
        .await
        .expect("text/plain");
    expect_error(not_json, 415, "unsupported_media_type").await;
    let huge_query = client.query(json!({"query": "x".repeat(2048)})).await;
    expect_error(huge_query, 413, "request_too_large").await;

    // Nothing changed: the one good file is still there and still found.
    assert_eq!(client.list().await, vec![kept.clone()]);
    let hits = client.query_ok(json!({"query": "budget spreadsheet"})).await.data;
    assert_eq!(hits[0].file_id, kept.id);
    // A query of punctuation only has no searchable words: no hits, not an error.
    assert!(client.query_ok(json!({"query": "?!"})).await.data.is_empty());
}

/// `count` chunks of `size` bytes as a body stream without a Content-Length.
fn futures_chunks(
    count: usize,
    size: usize,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter((0..count).map(move |_| Ok(vec![b'a'; size])))
}
