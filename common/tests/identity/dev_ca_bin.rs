//! The `antwort-dev-ca` binary: the folders it writes are what the file source reads, a second
//! run keeps the CA, and `--expired` mints SVIDs that servers refuse.

use std::path::Path;
use std::process::Command;

use antwort_common::identity::{FilesConfig, mtls_client};

use crate::support::*;

fn dev_ca(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_antwort-dev-ca"))
        .arg("--dir")
        .arg(dir)
        .args(["--trust-domain", TD])
        .args(args)
        .output()
        .expect("run antwort-dev-ca");
    assert!(
        output.status.success(),
        "antwort-dev-ca failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn minted_folders_serve_mtls_and_the_ca_is_kept_across_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent_svid = format!("agent={AGENT}");
    let gateway_svid = format!("gateway={GATEWAY}");
    dev_ca(dir.path(), &["--svid", &agent_svid]);
    let bundle = std::fs::read(dir.path().join("ca.crt")).expect("bundle written");
    // A second run adds an SVID signed by the same CA.
    dev_ca(dir.path(), &["--svid", &gateway_svid]);
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).expect("bundle"), bundle);
    assert_eq!(std::fs::read(dir.path().join("gateway/ca.crt")).expect("bundle copy"), bundle);

    let agent = start_files(FilesConfig::in_dir(dir.path().join("agent"))).await;
    let gateway = start_files(FilesConfig::in_dir(dir.path().join("gateway"))).await;
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    assert_eq!(get_text(&client, &server.url("/whoami")).await, Ok(GATEWAY.to_owned()));
}

#[tokio::test]
async fn expired_flag_mints_svids_that_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent_svid = format!("agent={AGENT}");
    let gateway_svid = format!("gateway={GATEWAY}");
    dev_ca(dir.path(), &["--svid", &agent_svid]);
    dev_ca(dir.path(), &["--expired", "--svid", &gateway_svid]);

    let agent = start_files(FilesConfig::in_dir(dir.path().join("agent"))).await;
    let gateway = start_files(FilesConfig::in_dir(dir.path().join("gateway"))).await;
    let server = TestServer::start(agent, policy(&[GATEWAY])).await;
    let client = mtls_client(gateway, policy(&[AGENT])).expect("client");
    let error = get_text(&client, &server.url("/whoami")).await.expect_err("expired");
    assert!(error.contains("CertificateExpired"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[test]
fn rejects_bad_arguments_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [
        vec!["--svid", "no-equals-sign"],
        vec!["--svid", "x=spiffe://other.test/ns/a"],
        vec!["--svid", "../escape=spiffe://antwort.test/ns/a"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_antwort-dev-ca"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--trust-domain", TD])
            .args(&args)
            .output()
            .expect("run antwort-dev-ca");
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(!output.stderr.is_empty(), "{args:?}: no message");
    }
}
