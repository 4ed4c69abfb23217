//! The file source: handshakes, peer ID hand-off, client-side authorization, rotation.

use std::time::Duration;

use antwort_common::identity::{
    IdentitySource as _, client_config, mtls_client, mtls_client_builder,
};

use crate::support::*;

#[tokio::test]
async fn handshake_hands_the_peer_id_to_the_handler() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let server = TestServer::start(agent, policy(&[GATEWAY, POOL_MANAGER])).await;

    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    // The server's SVID has no DNS or IP SAN: both an IP and a name must work.
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));
    let by_name = format!("https://localhost:{}/whoami", server.addr.port());
    assert_eq!(get_text(&client, &by_name).await, Ok(GATEWAY.to_owned()));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn client_refuses_a_server_with_another_spiffe_id() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;

    // The gateway expects the pool manager at this address, but an agent answers.
    let client = mtls_client(gateway, policy(&[POOL_MANAGER])).expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("wrong server");
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn client_refuses_plain_http_urls() {
    let pki = Pki::new();
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    // No server needed: the client must refuse before connecting.
    let error = get_text(&client, "http://127.0.0.1:9/whoami").await.expect_err("http refused");
    assert!(error.contains("scheme"), "{error}");
}

#[tokio::test]
async fn server_rotation_reaches_new_handshakes_while_old_connections_keep_working() {
    let pki = Pki::new();
    let agent_dir = pki.folder("agent");
    let first = pki.ca.mint(AGENT).expect("mint");
    let agent = file_source_for(&first, &agent_dir).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;
    let tls = || client_config(gateway.clone(), policy(&[AGENT])).expect("client config");

    let old_stream = tls_connect(tls(), server.addr).await.expect("first handshake");
    assert_eq!(server_leaf(&old_stream), first.cert_der);
    let mut old_connection = KeepAlive::over(old_stream).await;
    assert_eq!(old_connection.get("/whoami").await, Ok(GATEWAY.to_owned()));

    let second = pki.ca.mint(AGENT).expect("mint");
    second.write_to(&agent_dir).expect("rotate files");
    let rotated = wait_for_server_cert(&server, tls, &second.cert_der).await;
    assert!(rotated, "new handshakes never presented the rotated certificate");

    // The connection made before the rotation is still served.
    assert_eq!(old_connection.get("/whoami").await, Ok(GATEWAY.to_owned()));
}

#[tokio::test]
async fn client_rotation_reaches_new_connections_of_the_same_reqwest_client() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let client_dir = pki.folder("client");
    let as_gateway = pki.ca.mint(GATEWAY).expect("mint");
    let client_identity = file_source_for(&as_gateway, &client_dir).await;
    let server = TestServer::start(agent, policy(&[GATEWAY, POOL_MANAGER])).await;

    // No pooling, so each request makes a new handshake with whatever SVID is current.
    let client = mtls_client_builder(client_identity, policy(&[AGENT]))
        .expect("builder")
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));

    // Same folder, a different identity: the next handshake must present it.
    pki.ca.mint(POOL_MANAGER).expect("mint").write_to(&client_dir).expect("rotate");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = get_text(&client, &server.url("/whoami")).await.expect("request");
        if seen == POOL_MANAGER {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "client never used the rotated SVID");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn bad_files_keep_the_last_good_identity() {
    let pki = Pki::new();
    let dir = pki.folder("agent");
    let first = pki.ca.mint(AGENT).expect("mint");
    let agent = file_source_for(&first, &dir).await;

    // A half-finished rotation: new certificate, old key.
    let second = pki.ca.mint(AGENT).expect("mint");
    std::fs::write(dir.join("tls.crt"), &second.cert_pem).expect("write cert");
    tokio::time::sleep(POLL * 4).await;
    let current = agent.current().expect("still has an identity");
    assert_eq!(current.cert_chain()[0], first.cert_der, "mismatched pair must not be used");

    // Finishing the rotation is picked up.
    std::fs::write(dir.join("tls.key"), &second.key_pem).expect("write key");
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.current().expect("identity").cert_chain()[0] != second.cert_der {
        assert!(tokio::time::Instant::now() < deadline, "completed rotation never loaded");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn file_source_is_not_ready_until_files_appear() {
    let pki = Pki::new();
    let dir = pki.folder("late");
    let config = antwort_common::identity::FilesConfig::in_dir(&dir).with_poll_interval(POLL);
    let source = antwort_common::identity::FileSource::start(config).expect("start");
    assert!(!source.is_ready());
    let waited =
        antwort_common::identity::wait_ready(source.as_ref(), Duration::from_millis(200)).await;
    assert!(waited.is_err(), "no files, no identity");

    pki.ca.write_svid(AGENT, &dir).expect("write");
    let identity =
        antwort_common::identity::wait_ready(source.as_ref(), WAIT).await.expect("ready");
    assert_eq!(identity.spiffe_id().to_string(), AGENT);
}

/// Handshakes until the server presents `expected` (true) or the wait runs out (false).
pub async fn wait_for_server_cert(
    server: &TestServer,
    tls: impl Fn() -> rustls::ClientConfig,
    expected: &rustls::pki_types::CertificateDer<'static>,
) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let stream = tls_connect(tls(), server.addr).await.expect("handshake");
        if server_leaf(&stream) == *expected {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_then_stops_accepting() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let mut server = TestServer::start(agent, policy(&[GATEWAY])).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");

    let url = server.url("/slow");
    let in_flight = tokio::spawn(async move { get_text(&client, &url).await });
    // Shut down once the slow handler is running.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hits() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown.cancel();

    let answer = tokio::time::timeout(WAIT, in_flight).await.expect("in time").expect("task");
    assert_eq!(answer, Ok("done".to_owned()), "the in-flight request was cut off");
    let served =
        tokio::time::timeout(WAIT, &mut server.task).await.expect("serve returned in time");
    served.expect("serve task").expect("serve result");
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "still accepting after shutdown");
}

/// An mTLS server on the agent's SVID, configured by `configure`, serving [`TestServer`]'s routes.
async fn custom_server(
    pki: &Pki,
    configure: impl FnOnce(antwort_common::identity::MtlsServer) -> antwort_common::identity::MtlsServer,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<antwort_common::identity::Result<()>>) {
    let agent = pki.file_source("agent", AGENT).await;
    let server = configure(
        antwort_common::identity::MtlsServer::new(agent, policy(&[GATEWAY])).expect("server"),
    );
    let router = axum::Router::new().route("/whoami", axum::routing::get(|| async { "hi" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, tokio::spawn(server.serve(listener, router, std::future::pending())))
}

#[tokio::test]
async fn connection_limit_holds_new_connections_until_one_closes() {
    let pki = Pki::new();
    let (addr, task) = custom_server(&pki, |s| s.with_max_connections(1)).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let tls = || client_config(gateway.clone(), policy(&[AGENT])).expect("client config");

    let mut first = KeepAlive::over(tls_connect(tls(), addr).await.expect("first")).await;
    assert_eq!(first.get("/whoami").await, Ok("hi".to_owned()));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls()));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP backlog accepts");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut second = Box::pin(connector.connect(name, tcp));
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(early.is_err(), "a second connection was served beyond the limit");

    drop(first);
    let second = tokio::time::timeout(WAIT, second).await.expect("served once a slot freed");
    let mut second = KeepAlive::over(second.expect("handshake")).await;
    assert_eq!(second.get("/whoami").await, Ok("hi".to_owned()));
    task.abort();
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_header_read_timeout() {
    let pki = Pki::new();
    let (addr, task) =
        custom_server(&pki, |s| s.with_header_read_timeout(Duration::from_secs(1))).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let tls = client_config(gateway, policy(&[AGENT])).expect("client config");
    let mut connection = KeepAlive::over(tls_connect(tls, addr).await.expect("handshake")).await;
    assert_eq!(connection.get("/whoami").await, Ok("hi".to_owned()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(connection.get("/whoami").await.is_err(), "idle connection still open");
    task.abort();
}

#[tokio::test]
async fn identity_reports_its_expiry() {
    use antwort_common::identity::dev_ca::Validity;
    let pki = Pki::new();
    let validity = Validity::for_next(Duration::from_secs(3600));
    let svid = pki.ca.mint_with(AGENT, validity).expect("mint");
    let identity = svid.identity().expect("identity");
    // X.509 times have whole seconds.
    let expected = validity.not_after.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    let reported = identity.not_after().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    assert_eq!(reported.as_secs(), expected.as_secs());
}
