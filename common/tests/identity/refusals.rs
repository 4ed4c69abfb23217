//! Every refusal is asserted end to end: the client sees a handshake or connection error and the
//! handler never runs.

use std::sync::Arc;
use std::time::Duration;

use antwort_common::identity::dev_ca::{DevCa, Validity};
use antwort_common::identity::{
    FileSource, FilesConfig, Identity, MtlsServer, SharedSource, StaticSource, TrustDomain,
    mtls_client,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// A server (the agent) that accepts only the gateway.
async fn agent_server(pki: &Pki) -> TestServer {
    let agent = pki.file_source("agent", AGENT).await;
    TestServer::start(agent, policy(&[GATEWAY])).await
}

/// Sends a request as `client_identity` (which trusts the agent) and returns the error text.
async fn refused(server: &TestServer, client_identity: SharedSource) -> String {
    let client = mtls_client(client_identity, policy(&[AGENT])).expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("must be refused");
    assert_eq!(server.hits(), 0, "the handler ran for a refused peer");
    error
}

#[tokio::test]
async fn the_authorized_peer_is_served() {
    // The control for the refusals below: same server, right client.
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));
}

#[tokio::test]
async fn refuses_a_client_without_certificate() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
    .with_no_client_auth();
    let client =
        reqwest::Client::builder().tls_backend_preconfigured(config).build().expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("no certificate");
    assert!(error.contains("CertificateRequired"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn refuses_a_certificate_from_another_trust_domain() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let foreign_ca = DevCa::new("elsewhere.test").expect("foreign CA");
    let foreign = foreign_ca.mint("spiffe://elsewhere.test/ns/antwort/sa/gateway").expect("mint");
    // The client trusts our domain too, so it accepts the server and the refusal is the server's.
    let identity = Identity::from_der(
        vec![foreign.cert_der.clone()],
        foreign.key_der(),
        [
            (
                TrustDomain::new("elsewhere.test").expect("td"),
                vec![foreign.bundle_der().expect("der")],
            ),
            (TrustDomain::new(TD).expect("td"), vec![pki_bundle(&pki)]),
        ],
    )
    .expect("identity");
    let error = refused(&server, StaticSource::new(identity)).await;
    assert!(error.contains("UnknownCA"), "{error}");
}

#[tokio::test]
async fn refuses_a_rogue_ca_claiming_our_trust_domain() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let rogue_ca = DevCa::new(TD).expect("rogue CA");
    let rogue = rogue_ca.mint(GATEWAY).expect("mint");
    let identity = Identity::from_der(
        vec![rogue.cert_der.clone()],
        rogue.key_der(),
        [(TrustDomain::new(TD).expect("td"), vec![pki_bundle(&pki)])],
    )
    .expect("identity");
    let error = refused(&server, StaticSource::new(identity)).await;
    // The rogue CA has our CA's name, so the chain is built to our CA and its signature fails.
    assert!(error.contains("DecryptError"), "{error}");
}

#[tokio::test]
async fn refuses_an_unauthorized_spiffe_id() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let intruder = pki.file_source("intruder", INTRUDER).await;
    let error = refused(&server, intruder).await;
    assert!(error.contains("AccessDenied"), "{error}");
}

#[tokio::test]
async fn refuses_an_expired_svid() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let expired = pki.ca.mint_with(GATEWAY, Validity::expired()).expect("mint");
    let source = file_source_for(&expired, &pki.folder("expired")).await;
    let error = refused(&server, source).await;
    assert!(error.contains("CertificateExpired"), "{error}");
}

#[tokio::test]
async fn refuses_plain_http_on_the_tls_port() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let mut tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(server.addr))
        .await
        .expect("connect in time")
        .expect("connect");
    tcp.write_all(b"GET /whoami HTTP/1.1\r\nHost: agent\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    // The server answers with a TLS alert (or nothing) and closes; never with HTTP.
    // A reset instead of a clean close is fine too: either way nothing but TLS came back.
    let _read =
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {answer:?}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn drops_a_client_that_never_finishes_the_handshake() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = MtlsServer::new(agent, policy(&[GATEWAY]))
        .expect("server")
        .with_handshake_timeout(Duration::from_millis(200));
    let task = tokio::spawn(server.serve(listener, axum::Router::new(), std::future::pending()));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("server closed the silent connection within its handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "expected EOF, got {read:?}");
    task.abort();
}

#[tokio::test]
async fn refuses_tls_1_2() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
    .with_no_client_auth();
    let error = tls_connect(config, server.addr).await.expect_err("TLS 1.2 refused");
    assert!(error.to_string().contains("ProtocolVersion"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_server_without_svid_yet_refuses_everyone() {
    let pki = Pki::new();
    let empty = FilesConfig::in_dir(pki.folder("not-yet")).with_poll_interval(POLL);
    let not_ready: SharedSource = FileSource::start(empty).expect("start");
    let server = TestServer::start(not_ready, policy(&[GATEWAY])).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("fails closed");
    // rustls answers AccessDenied when the resolver has no certificate to present.
    assert!(error.contains("AccessDenied"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_client_without_svid_yet_connects_nowhere() {
    let pki = Pki::new();
    let server = agent_server(&pki).await;
    let empty = FilesConfig::in_dir(pki.folder("not-yet")).with_poll_interval(POLL);
    let not_ready: SharedSource = FileSource::start(empty).expect("start");
    let client = mtls_client(not_ready, policy(&[AGENT])).expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("fails closed");
    assert!(error.contains("no SVID yet"), "{error}");
    assert_eq!(server.hits(), 0);
}

fn pki_bundle(pki: &Pki) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pki.ca.bundle_pem().as_bytes()).expect("bundle PEM")
}

/// Test-only: a client that trusts any server, to isolate the server's refusal.
#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
