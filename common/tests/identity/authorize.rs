//! Per-route narrowing with `RequirePeer`, and the peer address handed to handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use antwort_common::identity::{MtlsServer, RequirePeer, client_config, mtls_client};
use axum::extract::ConnectInfo;
use axum::routing::{get, post};

use crate::support::*;

#[tokio::test]
async fn a_route_layer_admits_only_its_own_peers() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let resets = Arc::new(AtomicUsize::new(0));
    let counter = resets.clone();
    let router = axum::Router::new()
        .route(
            "/reset",
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "reset" }
            }),
        )
        .route_layer(RequirePeer::new(policy(&[POOL_MANAGER])))
        .route("/ping", get(|| async { "pong" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = MtlsServer::new(agent, policy(&[GATEWAY, POOL_MANAGER])).expect("server");
    let task = tokio::spawn(server.serve(listener, router, std::future::pending()));

    let gateway = mtls_client(pki.file_source("gateway", GATEWAY).await, policy(&[AGENT]))
        .expect("gateway client");
    let pool = mtls_client(pki.file_source("pool", POOL_MANAGER).await, policy(&[AGENT]))
        .expect("pool client");

    // The gateway reaches the open route but not the narrowed one.
    assert_eq!(get_text(&gateway, &format!("https://{addr}/ping")).await, Ok("pong".to_owned()));
    let refused = tokio::time::timeout(WAIT, gateway.post(format!("https://{addr}/reset")).send())
        .await
        .expect("in time")
        .expect("an HTTP answer");
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.expect("JSON envelope");
    assert_eq!(body["error"]["code"], "peer_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(GATEWAY)), "{body}");
    assert_eq!(resets.load(Ordering::SeqCst), 0, "the handler ran for a refused peer");

    let allowed = tokio::time::timeout(WAIT, pool.post(format!("https://{addr}/reset")).send())
        .await
        .expect("in time")
        .expect("an HTTP answer");
    assert_eq!(allowed.status(), 200);
    assert_eq!(resets.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let pki = Pki::new();
    let agent = pki.file_source("agent", AGENT).await;
    let router = axum::Router::new().route(
        "/addr",
        get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move { remote.to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = MtlsServer::new(agent, policy(&[GATEWAY])).expect("server");
    let task = tokio::spawn(server.serve(listener, router, std::future::pending()));

    let gateway = pki.file_source("gateway", GATEWAY).await;
    let stream = tls_connect(client_config(gateway, policy(&[AGENT])).expect("config"), addr)
        .await
        .expect("tls");
    let local = stream.get_ref().0.local_addr().expect("local addr");
    let mut connection = KeepAlive::over(stream).await;
    assert_eq!(connection.get("/addr").await, Ok(local.to_string()));
    task.abort();
}
