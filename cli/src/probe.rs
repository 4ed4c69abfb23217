//! Readiness checks over plain HTTP/1.0 (the admin and API listeners on loopback): enough for a
//! status line and a small body, without an HTTP client dependency.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A probe's answer may take this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies beyond this are cut (`/metrics` of one pool is a few KiB).
const MAX_BODY: u64 = 1 << 20;

/// `GET http://addr/path`: the status code and body, or why there is none.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_BODY).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|error| format!("GET {path}: {error}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
    Ok((status, body.to_owned()))
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
