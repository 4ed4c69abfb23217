//! API keys (config, environment, mounted secret file; hashed), scopes, per-principal rate
//! limits, open probes, the refusal to start without authentication, and `hash-key`: against a
//! real gateway in-process and the real binary.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use antwort_gateway::auth::{Auth, Principal, Scopes};
use antwort_gateway::config::{RawApiKey, RawConfig};
use antwort_scripted_backend::ScriptedBackend;
use serde_json::{Value, json};
use sha2::Digest;
use support::{Gateway, assert_error_envelope, client, quick_config};

fn sha256_hex(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn key_entry(yaml: &str) -> RawApiKey {
    serde_yaml_ng::from_str(yaml).expect("key entry parses")
}

async fn create(gateway: &Gateway, key: Option<&str>) -> reqwest::Response {
    let mut request =
        client().post(gateway.responses_url()).json(&json!({"model": "m", "input": "hi"}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("sent")
}

async fn list_models(gateway: &Gateway, key: &str) -> reqwest::Response {
    client().get(format!("{}/v1/models", gateway.url)).bearer_auth(key).send().await.expect("sent")
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    headers
}

const ALICE: &str = "sk-alice-0123456789abcdef";
const READER: &str = "sk-reader-0123456789abcdef";
const ADMIN: &str = "sk-admin-0123456789abcdef";
const LEGACY: &str = "sk-legacy-0123456789abcdef";

fn keyed_config(backend: &ScriptedBackend) -> RawConfig {
    let mut raw = quick_config(backend);
    raw.auth.api_keys = vec![
        key_entry(&format!("{{key: {ALICE}, tenant: acme, user: alice}}")),
        key_entry(&format!(
            "{{sha256: {}, tenant: acme, user: reader, scopes: [read]}}",
            sha256_hex(READER)
        )),
        key_entry(&format!(
            "{{key: {ADMIN}, tenant: acme, user: root, scopes: [read, write, admin]}}"
        )),
        LEGACY.into(),
    ];
    raw
}

#[tokio::test]
async fn keys_map_to_their_principals() {
    let backend = ScriptedBackend::start().await;
    let config = keyed_config(&backend).validate().expect("valid");
    let shown = format!("{config:?}");
    for key in [ALICE, ADMIN, LEGACY] {
        assert!(!shown.contains(key), "the validated config holds a plaintext key: {shown}");
    }
    let auth = Auth::new(&config.auth).expect("auth");
    let post = http::Method::POST;
    let get = http::Method::GET;
    let principal = |tenant: &str, user: &str, scopes| Principal {
        tenant: tenant.into(),
        user: user.into(),
        scopes,
    };
    assert_eq!(
        auth.check(&post, &bearer(ALICE)).await.expect("alice"),
        principal("acme", "alice", Scopes::READ_WRITE)
    );
    assert_eq!(
        auth.check(&get, &bearer(READER)).await.expect("reader"),
        principal("acme", "reader", Scopes { read: true, write: false, admin: false })
    );
    assert_eq!(
        auth.check(&post, &bearer(ADMIN)).await.expect("admin"),
        principal("acme", "root", Scopes::ALL)
    );
    let legacy = auth.check(&post, &bearer(LEGACY)).await.expect("legacy form");
    assert_eq!(legacy.tenant, "default");
    assert_eq!(legacy.user, format!("key-{}", &sha256_hex(LEGACY)[..8]));
    assert_eq!(legacy.scopes, Scopes::READ_WRITE);
    // A key differing in its last character, a prefix, and one with a suffix are all unknown.
    for wrong in
        ["sk-alice-0123456789abcdeF", "sk-alice-0123456789abcde", "sk-alice-0123456789abcdefg"]
    {
        let err = auth.check(&post, &bearer(wrong)).await.expect_err("wrong key");
        assert_eq!(err.code(), "invalid_api_key");
    }
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_and_scopes_are_403() {
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start_with(keyed_config(&backend)).await;

    for key in [None, Some("sk-nobody-0123456789abcdef")] {
        let response = create(&gateway, key).await;
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(response.headers().get("www-authenticate").expect("challenge"), "Bearer");
        assert_error_envelope(&response.json().await.expect("json"), 401, "invalid_api_key");
    }
    let basic = client()
        .post(gateway.responses_url())
        .basic_auth("alice", Some(ALICE))
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), 401, "only Bearer credentials count");

    assert_eq!(create(&gateway, Some(ALICE)).await.status(), 200);
    assert_eq!(create(&gateway, Some(LEGACY)).await.status(), 200);
    assert_eq!(list_models(&gateway, READER).await.status(), 200, "read may GET");
    let denied = create(&gateway, Some(READER)).await;
    assert_eq!(denied.status(), 403, "read may not POST");
    let body: Value = denied.json().await.expect("json");
    assert_error_envelope(&body, 403, "permission_denied");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(backend.requests().len(), 2, "the refused requests never reached the model");

    // Probes and scrapes need no credentials.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = client().get(format!("{}{path}", gateway.url)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path} stays open");
    }
}

#[tokio::test]
async fn keys_from_the_environment() {
    let backend = ScriptedBackend::start().await;
    let key = "sk-from-env-0123456789abcdef";
    // What `antwort-gateway` does with its process environment, with this one instead.
    let env = [
        ("ANTWORT_BACKEND_URL".to_string(), backend.base_url()),
        (
            "ANTWORT_AUTH__API_KEYS".to_string(),
            format!("[{{sha256: {}, tenant: envco, user: bot, scopes: [read]}}]", sha256_hex(key)),
        ),
        ("ANTWORT_AUTH__RATE_LIMIT__REQUESTS_PER_MINUTE".to_string(), "600".to_string()),
    ];
    let raw: RawConfig = antwort_common::config::load(None, env).expect("env config loads");
    let config = raw.clone().validate().expect("valid");
    let auth = Auth::new(&config.auth).expect("auth");
    let principal = auth.check(&http::Method::GET, &bearer(key)).await.expect("env key");
    assert_eq!((principal.tenant.as_str(), principal.user.as_str()), ("envco", "bot"));

    let gateway = Gateway::start_with(raw).await;
    assert_eq!(list_models(&gateway, key).await.status(), 200);
    assert_eq!(create(&gateway, Some(key)).await.status(), 403, "read-only");
    assert_eq!(create(&gateway, None).await.status(), 401);
}

#[tokio::test]
async fn keys_from_a_mounted_secret_file() {
    let backend = ScriptedBackend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dir.path().join("keys.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- key: sk-file-yaml-0123456789abcdef\n  tenant: fileco\n  user: yaml\n- sha256: {}\n  tenant: fileco\n  user: hashed\n",
            sha256_hex("sk-file-hashed-0123456789ab")
        ),
    )
    .expect("write");
    let json_file = dir.path().join("keys.json");
    std::fs::write(
        &json_file,
        json!([{"key": "sk-file-json-0123456789abcdef", "tenant": "fileco", "user": "json", "scopes": ["read", "write"]}])
            .to_string(),
    )
    .expect("write");

    for (path, key) in [
        (&yaml, "sk-file-yaml-0123456789abcdef"),
        (&yaml, "sk-file-hashed-0123456789ab"),
        (&json_file, "sk-file-json-0123456789abcdef"),
    ] {
        let mut raw = quick_config(&backend);
        raw.auth.api_keys_file = Some(path.clone());
        let gateway = Gateway::start_with(raw).await;
        assert_eq!(create(&gateway, Some(key)).await.status(), 200, "{key} from {path:?}");
        assert_eq!(create(&gateway, Some("sk-not-in-file-0123456789")).await.status(), 401);
        gateway.stop().await;
    }

    // A missing or malformed file is a config error naming the field; its content is not shown.
    let mut raw = quick_config(&backend);
    raw.auth.api_keys_file = Some(dir.path().join("absent.yaml"));
    let err = raw.validate().expect_err("missing file").to_string();
    assert!(err.contains("auth.api_keys_file"), "{err}");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "- {key: sk-secret-in-broken-file-0123, user: [oops]}\n")
        .expect("write");
    let mut raw = quick_config(&backend);
    raw.auth.api_keys_file = Some(broken);
    let err = raw.validate().expect_err("malformed file").to_string();
    assert!(err.contains("auth.api_keys_file") && err.contains("line 1"), "{err}");
    assert!(!err.contains("sk-secret-in-broken-file"), "the key leaked into: {err}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_then_recover() {
    let backend = ScriptedBackend::start().await;
    let mut raw = keyed_config(&backend);
    // One request per second, two back to back; the admin key is exempt.
    raw.auth.rate_limit.requests_per_minute = 60;
    raw.auth.rate_limit.burst = Some(2);
    raw.auth.api_keys[2] = key_entry(&format!(
        "{{key: {ADMIN}, tenant: acme, user: root, scopes: [read, write], rate_limit_per_minute: 0}}"
    ));
    let gateway = Gateway::start_with(raw).await;

    assert_eq!(list_models(&gateway, ALICE).await.status(), 200);
    assert_eq!(list_models(&gateway, ALICE).await.status(), 200);
    let limited = list_models(&gateway, ALICE).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert_eq!(retry_after, 1);
    let body: Value = limited.json().await.expect("json");
    assert_error_envelope(&body, 429, "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Other principals have their own budget; the exempt key has none.
    assert_eq!(list_models(&gateway, READER).await.status(), 200);
    for _ in 0..10 {
        assert_eq!(list_models(&gateway, ADMIN).await.status(), 200);
    }
    // After Retry-After, alice may go on.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    assert_eq!(list_models(&gateway, ALICE).await.status(), 200);
    // And the limit still holds: at most a burst of two more before the next 429.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(list_models(&gateway, ALICE).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "limited again: {statuses:?}");
}

#[tokio::test]
async fn development_mode_is_explicit_and_anonymous() {
    let backend = ScriptedBackend::start().await;
    let raw = quick_config(&backend);
    let err = raw.clone().validate().expect_err("no authenticator").to_string();
    assert!(err.contains("auth: no authenticator configured"), "{err}");
    // The harness starts such a config in `mode: none`: any credential, or none, is anonymous.
    let gateway = Gateway::start_with(raw).await;
    assert_eq!(create(&gateway, None).await.status(), 200);
    assert_eq!(create(&gateway, Some("whatever")).await.status(), 200);
}

// === the real binary ===

fn gateway_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_antwort-gateway"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ANTWORT_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_refuses_to_start_without_authentication() {
    let out = gateway_binary()
        .args(["--listen", "127.0.0.1:0", "--backend-url", "http://127.0.0.1:9/v1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64), "a config error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth: no authenticator configured"), "{stderr}");
    assert!(stderr.contains("ANTWORT_AUTH__MODE=none"), "the way out is named: {stderr}");

    let out = gateway_binary()
        .args(["--backend-url", "http://127.0.0.1:9/v1", "--check-config"])
        .env("ANTWORT_AUTH__MODE", "none")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hash_key_prints_the_digest_of_stdin() {
    let mut child = gateway_binary()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child.stdin.take().expect("stdin").write_all(b"sk-operator-0123456789abcdef\n").expect("write");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha256_hex("sk-operator-0123456789abcdef")
    );

    let mut child = gateway_binary()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child.stdin.take().expect("stdin").write_all(b"short\n").expect("write");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(64), "short keys are refused");
}

/// The binary with a plaintext key in its config file, logging at trace level, answering a
/// right and a wrong key: neither key appears in anything it writes.
#[tokio::test]
async fn keys_never_reach_the_logs() {
    let backend = ScriptedBackend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    let right = "sk-logged-never-0123456789abcdef";
    let wrong = "sk-wrong-never-logged-0123456789";
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\nbackend_url: {}\nauth:\n  api_keys:\n    - {{key: {right}, tenant: t, user: u}}\ntelemetry:\n  log_format: json\n",
            backend.base_url()
        ),
    )
    .expect("write");
    let mut child = Child(
        gateway_binary()
            .args(["--config", path.to_str().expect("utf8")])
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut addr_tx = Some(addr_tx);
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("log line");
            if let Ok(entry) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = entry["addr"].as_str()
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
        .await
        .expect("the gateway says where it listens")
        .expect("address");
    let url = format!("http://{addr}/v1/responses");
    let body = json!({"model": "m", "input": "hi"});
    for (key, status) in [(right, 200), (wrong, 401)] {
        let response = client().post(&url).bearer_auth(key).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), status);
    }
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || child.0.wait()).await.expect("join");
    assert!(exit.expect("wait").success());
    let logs = reader.await.expect("reader");
    let mut errors = String::new();
    stderr.read_to_string(&mut errors).expect("stderr");
    assert!(logs.contains("antwort-gateway listening"), "trace logs were captured: {logs}");
    for key in [right, wrong] {
        assert!(!logs.contains(key) && !errors.contains(key), "{key} was logged");
    }
}
