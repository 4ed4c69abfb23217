//! The Workload API source against a fake SPIFFE Workload API on a Unix socket: handshake,
//! readiness, and rotation pushed by the server while connections continue.

use antwort_common::identity::{
    IdentityConfig, WorkloadApiConfig, client_config, mtls_client, wait_ready,
};

use crate::fake_workload_api::{FakeWorkloadApi, response};
use crate::files::wait_for_server_cert;
use crate::support::*;

/// Starts the source through the config path a binary uses, bounded by [`WAIT`] (a bad SVID
/// makes `X509Source` retry forever, so the wait is what turns that into a failure).
async fn workload_source(api: &FakeWorkloadApi) -> antwort_common::identity::SharedSource {
    let config = IdentityConfig::WorkloadApi(WorkloadApiConfig::at(&api.endpoint));
    let source = config.start().expect("start Workload API source");
    wait_ready(source.as_ref(), WAIT).await.expect("first SVID from the Workload API");
    source
}

#[tokio::test]
async fn handshake_with_an_svid_from_the_workload_api() {
    let pki = Pki::new();
    let agent_svid = pki.ca.mint(AGENT).expect("mint");
    let api = FakeWorkloadApi::start(response(&agent_svid)).await;
    let agent = workload_source(&api).await;
    assert_eq!(agent.current().expect("identity").spiffe_id().to_string(), AGENT);
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;

    let gateway = pki.file_source("gateway", GATEWAY).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));
    assert_eq!(api.refused_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn workload_api_client_side_presents_its_svid() {
    let pki = Pki::new();
    let api = FakeWorkloadApi::start(response(&pki.ca.mint(GATEWAY).expect("mint"))).await;
    let gateway = workload_source(&api).await;
    let agent = pki.file_source("agent", AGENT).await;
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));
}

#[tokio::test]
async fn pushed_rotation_reaches_new_handshakes_while_old_connections_keep_working() {
    let pki = Pki::new();
    let first = pki.ca.mint(AGENT).expect("mint");
    let api = FakeWorkloadApi::start(response(&first)).await;
    let agent = workload_source(&api).await;
    let server = TestServer::start(agent.clone(), policy(&[GATEWAY])).await;
    let gateway = pki.file_source("gateway", GATEWAY).await;
    let tls = || client_config(gateway.clone(), policy(&[AGENT])).expect("client config");

    let old_stream = tls_connect(tls(), server.addr).await.expect("first handshake");
    assert_eq!(server_leaf(&old_stream), first.cert_der);
    let mut old_connection = KeepAlive::over(old_stream).await;
    assert_eq!(old_connection.get("/whoami").await, Ok(GATEWAY.to_owned()));

    let second = pki.ca.mint(AGENT).expect("mint");
    assert_ne!(first.cert_der, second.cert_der);
    api.push(response(&second));
    assert!(
        wait_for_server_cert(&server, tls, &second.cert_der).await,
        "new handshakes never presented the pushed SVID"
    );
    assert_eq!(old_connection.get("/whoami").await, Ok(GATEWAY.to_owned()));
}

#[tokio::test]
async fn not_ready_while_the_workload_api_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = format!("unix://{}", dir.path().join("nobody-listens.sock").display());
    let source = IdentityConfig::WorkloadApi(WorkloadApiConfig::at(endpoint))
        .start()
        .expect("a valid endpoint starts even if nobody listens yet");
    assert!(!source.is_ready());
    let waited = wait_ready(source.as_ref(), std::time::Duration::from_millis(300)).await;
    assert!(waited.is_err());
}

#[tokio::test]
async fn unusable_material_is_never_published_and_a_good_push_recovers() {
    let pki = Pki::new();
    let good = pki.ca.mint(AGENT).expect("mint");
    let other = pki.ca.mint(AGENT).expect("mint");
    // A certificate with someone else's key: unusable for TLS.
    let mut bad = response(&good);
    bad.svids[0].x509_svid_key = response(&other).svids[0].x509_svid_key.clone();
    let api = FakeWorkloadApi::start(bad).await;
    let source =
        IdentityConfig::WorkloadApi(WorkloadApiConfig::at(&api.endpoint)).start().expect("start");
    let waited = wait_ready(source.as_ref(), std::time::Duration::from_millis(1500)).await;
    assert!(waited.is_err(), "a mismatched key pair was published");

    api.push(response(&good));
    let identity = wait_ready(source.as_ref(), WAIT).await.expect("recovers with a good SVID");
    assert_eq!(identity.cert_chain()[0], good.cert_der);
}
