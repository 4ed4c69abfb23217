//! A small fake SPIFFE Workload API: a tonic server on a Unix socket that implements
//! `FetchX509SVID`, refuses calls without the `workload.spiffe.io: true` header (as SPIRE does),
//! and streams whatever response the test last pushed.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use antwort_common::identity::dev_ca::DevSvid;
use tokio::sync::watch;

/// The Workload API's protobuf messages, hand-written (prost derive, no protoc): the `spiffe`
/// crate keeps its generated types private.
pub mod wire {
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct X509SvidRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct X509SvidResponse {
        #[prost(message, repeated, tag = "1")]
        pub svids: Vec<X509Svid>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub crl: Vec<Vec<u8>>,
        #[prost(map = "string, bytes", tag = "3")]
        pub federated_bundles: std::collections::HashMap<String, Vec<u8>>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct X509Svid {
        #[prost(string, tag = "1")]
        pub spiffe_id: String,
        /// DER certificate chain, leaf first, concatenated.
        #[prost(bytes = "vec", tag = "2")]
        pub x509_svid: Vec<u8>,
        /// DER PKCS#8 private key.
        #[prost(bytes = "vec", tag = "3")]
        pub x509_svid_key: Vec<u8>,
        /// DER CA certificates of the trust domain, concatenated.
        #[prost(bytes = "vec", tag = "4")]
        pub bundle: Vec<u8>,
        #[prost(string, tag = "5")]
        pub hint: String,
    }
}

/// The Workload API response carrying `svid` and its bundle.
pub fn response(svid: &DevSvid) -> wire::X509SvidResponse {
    let key = svid.key_der();
    wire::X509SvidResponse {
        svids: vec![wire::X509Svid {
            spiffe_id: svid.spiffe_id.to_string(),
            x509_svid: svid.cert_der.to_vec(),
            x509_svid_key: key.secret_der().to_vec(),
            bundle: svid.bundle_der().expect("dev CA bundle is PEM").to_vec(),
            hint: String::new(),
        }],
        ..Default::default()
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeWorkloadApi {
    pub endpoint: String,
    updates: watch::Sender<wire::X509SvidResponse>,
    /// Calls refused for a missing security header.
    pub refused_calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWorkloadApi {
    pub async fn start(initial: wire::X509SvidResponse) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the socket");
        let socket: PathBuf = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the Unix socket");
        let (updates, rx) = watch::channel(initial);
        let refused_calls = Arc::new(AtomicUsize::new(0));
        let refused = refused_calls.clone();
        let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let rx = rx.clone();
            let refused = refused.clone();
            async move {
                let path = request.uri().path().to_owned();
                let has_header = request
                    .headers()
                    .get("workload.spiffe.io")
                    .is_some_and(|v| v.as_bytes() == b"true");
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                let response = if path != "/SpiffeWorkloadAPI/FetchX509SVID" {
                    tonic::Status::unimplemented(format!(
                        "fake serves FetchX509SVID only, not {path}"
                    ))
                    .into_http()
                } else if !has_header {
                    refused.fetch_add(1, Ordering::SeqCst);
                    tonic::Status::invalid_argument("security header missing from request")
                        .into_http()
                } else {
                    let handler =
                        tower::service_fn(move |_: tonic::Request<wire::X509SvidRequest>| {
                            let rx = rx.clone();
                            async move {
                                Ok::<_, tonic::Status>(tonic::Response::new(stream_updates(rx)))
                            }
                        });
                    grpc.server_streaming(handler, request).await
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let served =
                tonic::transport::Server::builder().serve_with_incoming(service, incoming).await;
            if let Err(error) = served {
                eprintln!("fake Workload API stopped: {error}");
            }
        });
        Self {
            endpoint: format!("unix://{}", socket.display()),
            updates,
            refused_calls,
            task,
            _dir: dir,
        }
    }

    /// Sends `response` to every connected client (a rotation).
    pub fn push(&self, response: wire::X509SvidResponse) {
        self.updates.send_replace(response);
    }
}

type Updates =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<wire::X509SvidResponse, tonic::Status>> + Send>>;

/// The current response at once, then one per push.
fn stream_updates(mut rx: watch::Receiver<wire::X509SvidResponse>) -> Updates {
    use tokio_stream::StreamExt as _;
    let first = rx.borrow_and_update().clone();
    let rest = tokio_stream::wrappers::WatchStream::from_changes(rx);
    Box::pin(tokio_stream::once(first).chain(rest).map(Ok))
}
