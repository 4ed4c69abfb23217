//! A small blocking JSON client for tests that talk to a local listener: reqwest on a
//! current-thread runtime of its own per request (the tests using it are synchronous).

use std::time::Duration;

use serde_json::Value;

/// How long one exchange may take (a code_interpreter turn included).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {} {}", self.status, self.body))
    }
}

/// `method http://addr/path` with an optional JSON body; `Err` when the exchange fails.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // reqwest is built without a default TLS provider; ring, as everywhere in antwort.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            reqwest::Client::builder().timeout(TIMEOUT).build().map_err(std::io::Error::other)?;
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
        let mut request = client.request(method, format!("http://{addr}{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(std::io::Error::other)?;
        Ok(Answer { status, body })
    })
}

/// [`request`] that panics when the exchange itself fails.
pub fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Answer {
    request(addr, method, path, body)
        .unwrap_or_else(|error| panic!("{method} http://{addr}{path}: {error}"))
}
