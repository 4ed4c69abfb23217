//! Readiness checks over plain HTTP (the admin and API listeners on loopback).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// A probe's answer may take this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One client for every probe (connections to the same listener are reused).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // reqwest is built without a default TLS provider; the probes speak plain HTTP, but the
        // client's TLS setup still wants one (ring, as everywhere in antwort).
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds")
    })
}

/// `GET http://addr/path`: the status code and body, or why there is none.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let response = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .map_err(|error| format!("GET {path}: {error}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|error| format!("GET {path}: {error}"))?;
    Ok((status, body))
}

/// `GET path` answered 200, or the answer as the reason it is not ready.
pub async fn ok(addr: SocketAddr, path: &str) -> Result<(), String> {
    match get(addr, path).await? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("GET {path}: {status} {}", body.trim())),
    }
}

/// The pool's ready sandboxes from the pool manager's `/metrics`
/// (`antwort_pool_sandboxes{pool="python",state="ready"} 2`).
pub fn ready_sandboxes(metrics: &str, pool: &str) -> Option<u32> {
    let pool_label = format!("pool=\"{pool}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("antwort_pool_sandboxes{"))
        .find(|line| line.contains(&pool_label) && line.contains("state=\"ready\""))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_sandboxes_reads_the_pools_ready_gauge() {
        let metrics = "# TYPE antwort_pool_sandboxes gauge\n\
            antwort_pool_sandboxes{pool=\"python\",state=\"claimed\"} 1\n\
            antwort_pool_sandboxes{pool=\"python\",state=\"ready\"} 2\n\
            antwort_pool_sandboxes{pool=\"other\",state=\"ready\"} 5\n";
        assert_eq!(ready_sandboxes(metrics, "python"), Some(2));
        assert_eq!(ready_sandboxes(metrics, "other"), Some(5));
        assert_eq!(ready_sandboxes(metrics, "missing"), None);
        assert_eq!(ready_sandboxes("", "python"), None);
    }
}
