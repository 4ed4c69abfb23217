//! Shared pieces: a dev PKI in a temp dir, an mTLS test server whose handler counts its calls,
//! and raw TLS/HTTP clients for handshake-level assertions. Every network wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use antwort_common::identity::dev_ca::{DevCa, DevSvid};
use antwort_common::identity::{
    FileSource, FilesConfig, MtlsServer, PeerPolicy, PeerSpiffeId, SharedSource, wait_ready,
};
use axum::Extension;
use axum::routing::get;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub const TD: &str = "antwort.test";
pub const GATEWAY: &str = "spiffe://antwort.test/ns/antwort/sa/gateway";
pub const POOL_MANAGER: &str = "spiffe://antwort.test/ns/antwort/sa/pool-manager";
pub const AGENT: &str = "spiffe://antwort.test/ns/antwort-sandboxes/sa/sandbox-agent";
pub const INTRUDER: &str = "spiffe://antwort.test/ns/elsewhere/sa/intruder";

/// The bound on every network wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long the `/slow` handler takes: long enough to shut down while it runs.
pub const SLOW: Duration = Duration::from_millis(500);
/// File sources in tests re-read quickly so rotation tests are fast.
pub const POLL: Duration = Duration::from_millis(50);

/// A development PKI: the main trust domain's CA and a temp dir for SVID folders.
pub struct Pki {
    pub ca: DevCa,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self { ca: DevCa::new(TD).expect("dev CA"), dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Mints an SVID for `id` into folder `name` and starts a file source on it.
    pub async fn file_source(&self, name: &str, id: &str) -> SharedSource {
        let svid = self.ca.mint(id).expect("mint SVID");
        file_source_for(&svid, &self.folder(name)).await
    }
}

/// Writes `svid` into `dir` and starts a (fast-polling) file source on it, ready.
pub async fn file_source_for(svid: &DevSvid, dir: &Path) -> SharedSource {
    let config = svid.write_to(dir).expect("write SVID files").with_poll_interval(POLL);
    start_files(config).await
}

pub async fn start_files(config: FilesConfig) -> SharedSource {
    let source: SharedSource = FileSource::start(config).expect("start file source");
    wait_ready(source.as_ref(), WAIT).await.expect("file source ready");
    source
}

pub fn policy(ids: &[&str]) -> PeerPolicy {
    PeerPolicy::exact(ids).expect("valid policy")
}

/// An mTLS server whose `/whoami` handler answers the peer's SPIFFE ID and counts its calls.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<antwort_common::identity::Result<()>>,
}

impl TestServer {
    pub async fn start(source: SharedSource, peers: PeerPolicy) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let slow_counter = hits.clone();
        let router = axum::Router::new()
            .route(
                "/whoami",
                get(move |Extension(peer): Extension<PeerSpiffeId>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { peer.to_string() }
                }),
            )
            .route(
                "/slow",
                get(move || {
                    slow_counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(SLOW).await;
                        "done"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = MtlsServer::new(source, peers).expect("server config");
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            server.serve(listener, router, async move { stop.cancelled().await }).await
        });
        Self { addr, hits, shutdown, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// GET `url` with `client`, bounded; the body on 200, or the error text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = tokio::time::timeout(WAIT, client.get(url).send())
        .await
        .expect("request did not finish in time")
        .map_err(|e| error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    tokio::time::timeout(WAIT, response.text())
        .await
        .expect("body did not arrive in time")
        .map_err(|e| error_chain(&e))
}

pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A TLS connection made with `config` (bounded), for looking at the server's certificate.
pub async fn tls_connect(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(Arc::new(config));
    let tcp =
        tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.expect("connect in time")?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time")
}

/// The leaf certificate the server presented on `stream`.
pub fn server_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("server certificates")[0].clone().into_owned()
}

/// An HTTP/1.1 keep-alive connection over an established TLS stream.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    _task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    pub async fn over(stream: TlsStream<TcpStream>) -> Self {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) =
            tokio::time::timeout(WAIT, hyper::client::conn::http1::handshake(io))
                .await
                .expect("HTTP handshake in time")
                .expect("HTTP handshake");
        let task = tokio::spawn(async move {
            let _closed = connection.await;
        });
        Self { sender, _task: task }
    }

    /// GET `path` on this same connection; the body text.
    pub async fn get(&mut self, path: &str) -> Result<String, String> {
        let request = http::Request::get(path)
            .header(http::header::HOST, "antwort")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let exchange = async {
            self.sender.ready().await.map_err(|e| error_chain(&e))?;
            let response = self.sender.send_request(request).await.map_err(|e| error_chain(&e))?;
            let body = response.into_body().collect().await.map_err(|e| error_chain(&e))?;
            String::from_utf8(body.to_bytes().to_vec()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(WAIT, exchange).await.expect("keep-alive request in time")
    }
}
