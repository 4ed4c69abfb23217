//! Web search over real HTTP on loopback against a fake provider that speaks the SearXNG, Brave
//! and Tavily wire formats (and checks their request shapes and keys), plus `allowed_domains`,
//! upstream errors and timeouts, bad input, and offline mode with a listener that records any
//! connection attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antwort_common::error::ErrorEnvelope;
use antwort_common::search_api::WebSearchResponse;
use antwort_sandbox_agent::search::{
    ProviderConfig, Secret, WebSearch, WebSearchConfig, WebSearchMode, web_search_router,
};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

const BRAVE_KEY: &str = "brave-test-key";
const TAVILY_KEY: &str = "tvly-test-key";

/// What the fake provider returns for every ordinary query, in this order.
const RESULTS: &[(&str, &str, &str)] = &[
    (
        "The Rust Programming Language",
        "https://doc.rust-lang.org/book/",
        "The <strong>Rust</strong> book &amp; guide.",
    ),
    ("Rust tips", "https://www.example.com/rust", "Ten tips for Rust."),
    (
        "Announcing Rust 1.95",
        "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/",
        "Release notes.",
    ),
    ("Totally the Rust site", "https://rust-lang.org.evil.test/login", "Enter your password."),
    ("Not Rust", "https://notrust-lang.org/", "Lookalike domain."),
    ("Rust", "https://rust-lang.org/", "A language empowering everyone."),
];

/// One request the fake provider saw: (route, query parameters, headers, JSON body).
type Request = (&'static str, HashMap<String, String>, HeaderMap, Value);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn record(
        &self,
        route: &'static str,
        params: HashMap<String, String>,
        headers: HeaderMap,
        body: Value,
    ) {
        self.0.lock().expect("seen lock").push((route, params, headers, body));
    }
    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.0.lock().expect("seen lock"))
    }
}

/// Special queries make the fake misbehave.
async fn misbehave(query: &str) -> Option<Response> {
    match query {
        "upstream-500" => {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "engine exploded").into_response())
        }
        "upstream-garbage" => Some("<html>not json</html>".into_response()),
        "upstream-huge" => {
            Some(Json(json!({"results": [], "padding": "x".repeat(50_000)})).into_response())
        }
        "upstream-slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(Json(json!({"results": []})).into_response())
        }
        _ => None,
    }
}

async fn searxng(
    State(seen): State<Seen>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    seen.record("searxng", params.clone(), headers, Value::Null);
    if params.get("format").map(String::as_str) != Some("json") {
        // What SearXNG does when the JSON format is not requested/enabled.
        return StatusCode::FORBIDDEN.into_response();
    }
    let query = params.get("q").cloned().unwrap_or_default();
    if let Some(response) = misbehave(&query).await {
        return response;
    }
    let results: Vec<Value> = RESULTS
        .iter()
        .map(|(title, url, snippet)| {
            json!({"title": title, "url": url, "content": snippet, "engine": "duckduckgo",
                   "engines": ["duckduckgo"], "score": 1.0, "category": "general"})
        })
        .collect();
    Json(json!({"query": query, "number_of_results": 0, "results": results,
                "answers": [], "suggestions": [], "unresponsive_engines": []}))
    .into_response()
}

async fn brave(
    State(seen): State<Seen>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    seen.record("brave", params.clone(), headers.clone(), Value::Null);
    if headers.get("x-subscription-token").and_then(|v| v.to_str().ok()) != Some(BRAVE_KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID",
                         "detail": "The provided subscription token is invalid.", "status": 401}})),
        )
            .into_response();
    }
    let query = params.get("q").cloned().unwrap_or_default();
    if let Some(response) = misbehave(&query).await {
        return response;
    }
    let results: Vec<Value> = RESULTS
        .iter()
        .map(|(title, url, snippet)| {
            json!({"type": "search_result", "title": title, "url": url, "description": snippet,
                   "is_source_local": false, "language": "en"})
        })
        .collect();
    Json(json!({"type": "search", "query": {"original": query},
                "web": {"type": "search", "results": results}}))
    .into_response()
}

async fn tavily(State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    seen.record("tavily", HashMap::new(), headers.clone(), body.clone());
    let bearer = format!("Bearer {TAVILY_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": {"error": "Unauthorized: missing or invalid API key."}})),
        )
            .into_response();
    }
    let query = body["query"].as_str().unwrap_or_default().to_owned();
    if let Some(response) = misbehave(&query).await {
        return response;
    }
    let results: Vec<Value> = RESULTS
        .iter()
        .map(|(title, url, snippet)| {
            json!({"title": title, "url": url, "content": snippet, "score": 0.8, "raw_content": null})
        })
        .collect();
    Json(json!({"query": query, "answer": null, "images": [], "results": results,
                "response_time": 0.42}))
    .into_response()
}

/// The fake provider on a loopback port: SearXNG and Tavily share `/search` (GET vs POST).
async fn fake_provider() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/search", get(searxng).post(tavily))
        .route("/res/v1/web/search", get(brave))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fake provider") });
    (format!("http://{addr}"), seen)
}

/// The web-search router on a loopback port.
async fn serve(config: WebSearchConfig) -> String {
    let router = web_search_router(WebSearch::new(config).expect("valid web search config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    format!("http://{addr}")
}

fn online(provider: ProviderConfig) -> WebSearchConfig {
    WebSearchConfig { provider: Some(provider), timeout_ms: 5_000, ..WebSearchConfig::default() }
}

async fn search(base: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/web_search"))
        .json(&body)
        .send()
        .await
        .expect("web search request")
}

async fn search_ok(base: &str, body: Value) -> WebSearchResponse {
    let response = search(base, body.clone()).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.expect("web search response")
}

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    let envelope: ErrorEnvelope = response.json().await.expect("error envelope");
    assert_eq!(envelope.error.code, code, "{envelope:?}");
    envelope.error.message
}

fn urls(response: &WebSearchResponse) -> Vec<&str> {
    response.results.iter().map(|r| r.url.as_str()).collect()
}

const RUST_LANG_ORG: [&str; 3] = [
    "https://doc.rust-lang.org/book/",
    "https://blog.rust-lang.org/2026/04/16/Rust-1.95.0/",
    "https://rust-lang.org/",
];

/// The same checks for every provider: all results in order as plain text, then only the
/// rust-lang.org family with `allowed_domains`, then `max_results`.
async fn check_provider(base: &str, provider: &str) {
    let all = search_ok(base, json!({"query": "rust language", "max_results": 10})).await;
    assert_eq!(all.provider, provider);
    assert_eq!(all.results.len(), RESULTS.len());
    assert_eq!(all.results[0].title, "The Rust Programming Language");
    assert_eq!(all.results[0].snippet, "The Rust book & guide.", "HTML removed");

    let filtered = search_ok(
        base,
        json!({"query": "rust language", "allowed_domains": ["Rust-Lang.org"], "max_results": 10}),
    )
    .await;
    assert_eq!(urls(&filtered), RUST_LANG_ORG);

    let capped = search_ok(
        base,
        json!({"query": "rust", "allowed_domains": ["rust-lang.org"], "max_results": 2}),
    )
    .await;
    assert_eq!(urls(&capped), RUST_LANG_ORG[..2]);
    let default_count = search_ok(base, json!({"query": "rust"})).await;
    assert_eq!(default_count.results.len(), 5, "default_max_results");
}

#[tokio::test]
async fn searxng_request_shape_and_domain_filter() {
    let (fake, seen) = fake_provider().await;
    let base = serve(online(ProviderConfig::Searxng {
        base_url: format!("{fake}/"),
        language: Some("en".into()),
    }))
    .await;
    check_provider(&base, "searxng").await;
    let requests = seen.take();
    assert_eq!(requests.len(), 4);
    let (route, params, _, _) = &requests[0];
    assert_eq!(*route, "searxng");
    assert_eq!(params.get("q").map(String::as_str), Some("rust language"));
    assert_eq!(params.get("format").map(String::as_str), Some("json"));
    assert_eq!(params.get("language").map(String::as_str), Some("en"));
}

#[tokio::test]
async fn brave_request_shape_key_and_domain_filter() {
    let (fake, seen) = fake_provider().await;
    let base = serve(online(ProviderConfig::Brave {
        base_url: fake.clone(),
        api_key: Some(Secret(BRAVE_KEY.into())),
        api_key_env: None,
    }))
    .await;
    check_provider(&base, "brave").await;
    let requests = seen.take();
    let (route, params, headers, _) = &requests[0];
    assert_eq!(*route, "brave");
    assert_eq!(params.get("q").map(String::as_str), Some("rust language"));
    assert_eq!(params.get("count").map(String::as_str), Some("20"), "fetch_results");
    assert_eq!(headers.get("accept").and_then(|v| v.to_str().ok()), Some("application/json"));

    // A wrong key: the provider's 401 becomes a 502 that says so.
    let wrong = serve(online(ProviderConfig::Brave {
        base_url: fake,
        api_key: Some(Secret("wrong".into())),
        api_key_env: None,
    }))
    .await;
    let message =
        expect_error(search(&wrong, json!({"query": "rust"})).await, 502, "upstream_error").await;
    assert!(message.contains("brave") && message.contains("401"), "{message}");
    assert!(message.contains("SUBSCRIPTION_TOKEN_INVALID"), "{message}");
}

#[tokio::test]
async fn tavily_request_shape_key_and_domain_filter() {
    let (fake, seen) = fake_provider().await;
    let base = serve(online(ProviderConfig::Tavily {
        base_url: fake,
        api_key: Some(Secret(TAVILY_KEY.into())),
        api_key_env: None,
        search_depth: "basic".into(),
    }))
    .await;
    check_provider(&base, "tavily").await;
    let requests = seen.take();
    let (route, _, headers, body) = &requests[0];
    assert_eq!(*route, "tavily");
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer tvly-test-key")
    );
    assert_eq!(
        body,
        &json!({"query": "rust language", "max_results": 20, "search_depth": "basic"})
    );
    // allowed_domains is passed on as include_domains (and still enforced locally).
    let (_, _, _, filtered_body) = &requests[1];
    assert_eq!(filtered_body["include_domains"], json!(["rust-lang.org"]));
}

#[tokio::test]
async fn upstream_errors_are_502_and_timeouts_504() {
    let (fake, _seen) = fake_provider().await;
    let base = serve(WebSearchConfig {
        timeout_ms: 1_000,
        ..online(ProviderConfig::Searxng { base_url: fake.clone(), language: None })
    })
    .await;

    let message =
        expect_error(search(&base, json!({"query": "upstream-500"})).await, 502, "upstream_error")
            .await;
    assert!(
        message.contains("searxng")
            && message.contains("500")
            && message.contains("engine exploded"),
        "{message}"
    );
    let message = expect_error(
        search(&base, json!({"query": "upstream-garbage"})).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(message.contains("unexpected body"), "{message}");

    let started = Instant::now();
    let message = expect_error(
        search(&base, json!({"query": "upstream-slow"})).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(message.contains("1000 ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(4), "the timeout did not cut the wait");

    // A body over max_response_bytes is refused, not buffered.
    let small = serve(WebSearchConfig {
        max_response_bytes: 10_000,
        ..online(ProviderConfig::Searxng { base_url: fake.clone(), language: None })
    })
    .await;
    let message = expect_error(
        search(&small, json!({"query": "upstream-huge"})).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(message.contains("larger than the limit of 10000 bytes"), "{message}");

    // Nothing listening: a refused connection is a 502.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let base = serve(online(ProviderConfig::Searxng { base_url: dead, language: None })).await;
    let message =
        expect_error(search(&base, json!({"query": "rust"})).await, 502, "upstream_error").await;
    assert!(message.contains("could not be reached"), "{message}");
}

#[tokio::test]
async fn bad_requests_are_400_and_never_reach_the_provider() {
    let (fake, seen) = fake_provider().await;
    let base = serve(online(ProviderConfig::Searxng { base_url: fake, language: None })).await;
    let cases = [
        (json!({"query": " "}), 400, "empty_query"),
        (json!({"query": "rust", "max_results": 0}), 400, "invalid_max_results"),
        (json!({"query": "rust", "max_results": 21}), 400, "invalid_max_results"),
        (
            json!({"query": "rust", "allowed_domains": ["https://rust-lang.org"]}),
            400,
            "invalid_allowed_domains",
        ),
        (json!({"query": "rust", "allowed_domains": []}), 400, "invalid_allowed_domains"),
        (json!({"query": "rust", "unknown": true}), 400, "invalid_json"),
        (json!({"max_results": 3}), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        expect_error(search(&base, body).await, status, code).await;
    }
    assert!(seen.take().is_empty(), "a bad request reached the provider");
}

/// Accepts and counts TCP connections (then drops them).
async fn recording_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind recorder");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn offline_mode_answers_from_the_corpus_without_any_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus.json");
    std::fs::write(
        &corpus,
        serde_json::to_vec(&json!([
            {"title": "Understanding ownership", "url": "https://doc.rust-lang.org/book/ch04-00-understanding-ownership.html",
             "snippet": "Ownership and the borrow checker make memory safety guarantees without a garbage collector."},
            {"title": "Python garbage collection", "url": "https://docs.python.org/3/library/gc.html",
             "snippet": "The gc module provides an interface to the optional garbage collector."},
            {"title": "Borrow checker errors explained", "url": "https://blog.example.com/borrowck",
             "snippet": "Common borrow checker errors and how to fix them."},
            {"title": "Baking bread", "url": "https://bread.example.org/",
             "snippet": "Flour, water, salt and time."}
        ]))
        .expect("corpus json"),
    )
    .expect("write corpus");

    let (recorder, connections) = recording_listener().await;
    let provider = ProviderConfig::Searxng { base_url: recorder, language: None };

    // Control: online, the same provider URL is contacted (so the recorder can see attempts).
    let online_base = serve(online(provider.clone())).await;
    expect_error(
        search(&online_base, json!({"query": "borrow checker"})).await,
        502,
        "upstream_error",
    )
    .await;
    let control = connections.load(Ordering::SeqCst);
    assert!(control >= 1, "the recorder saw no connection from online mode");

    let base = serve(WebSearchConfig {
        mode: WebSearchMode::Offline,
        provider: Some(provider),
        offline_corpus: Some(corpus),
        ..WebSearchConfig::default()
    })
    .await;
    let found = search_ok(&base, json!({"query": "borrow checker", "max_results": 10})).await;
    assert_eq!(found.provider, "offline");
    assert_eq!(
        urls(&found),
        [
            "https://blog.example.com/borrowck",
            "https://doc.rust-lang.org/book/ch04-00-understanding-ownership.html"
        ]
    );
    let filtered =
        search_ok(&base, json!({"query": "garbage collector", "allowed_domains": ["python.org"]}))
            .await;
    assert_eq!(urls(&filtered), ["https://docs.python.org/3/library/gc.html"]);
    assert!(search_ok(&base, json!({"query": "quantum chromodynamics"})).await.results.is_empty());

    // Give any stray connection time to land, then check none did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), control, "offline mode opened a connection");
}

#[test]
fn offline_mode_refuses_a_broken_corpus_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus.json");
    std::fs::write(&corpus, r#"[{"title": "x", "url": "not a url", "snippet": "y"}]"#)
        .expect("write");
    let config = WebSearchConfig {
        mode: WebSearchMode::Offline,
        offline_corpus: Some(corpus),
        ..WebSearchConfig::default()
    };
    let err = WebSearch::new(config).expect_err("broken corpus accepted");
    assert!(err.to_string().contains("entry 0"), "{err}");
    let missing = WebSearchConfig {
        mode: WebSearchMode::Offline,
        offline_corpus: Some(dir.path().join("missing.json")),
        ..WebSearchConfig::default()
    };
    assert!(WebSearch::new(missing).is_err());
}
