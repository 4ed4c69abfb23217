//! JWT bearer tokens from an OIDC issuer: a real issuer (discovery document + JWKS) served by
//! axum on port 0, tokens minted here with the committed test keys (tests/data/auth), checked by
//! a real gateway over HTTP and by `auth::Auth` directly for the exact principal.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use antwort_gateway::auth::{Auth, Principal, Scopes};
use antwort_gateway::config::{RawConfig, RawOidc};
use antwort_scripted_backend::ScriptedBackend;
use axum::extract::State;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Gateway, assert_error_envelope, client, quick_config};

const RSA_A: &[u8] = include_bytes!("data/auth/rsa-a.pem");
const RSA_A_PUBLIC: &[u8] = include_bytes!("data/auth/rsa-a.pub.pem");
const RSA_B: &[u8] = include_bytes!("data/auth/rsa-b.pem");
const EC_A: &[u8] = include_bytes!("data/auth/ec-a.pem");

fn rsa(pem: &[u8]) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem).expect("test RSA key")
}

fn ec(pem: &[u8]) -> EncodingKey {
    EncodingKey::from_ec_pem(pem).expect("test EC key")
}

/// The public JWK of `key`, as an issuer publishes it.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK");
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).expect("JWK serializes")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn mint(alg: Algorithm, key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let header = Header { kid: Some(kid.to_string()), ..Header::new(alg) };
    jsonwebtoken::encode(&header, claims, key).expect("token signs")
}

/// A local OIDC issuer: `/.well-known/openid-configuration` and `/jwks`, counting fetches.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_fetches: Arc<AtomicUsize>,
    /// While set, `/jwks` answers 503.
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct IssuerState {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = IssuerState {
            url: url.clone(),
            jwks: Arc::new(Mutex::new(keys)),
            jwks_fetches: Arc::default(),
            discovery_fetches: Arc::default(),
            failing: Arc::default(),
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(|State(s): State<IssuerState>| async move {
                    s.discovery_fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "issuer": s.url,
                        "jwks_uri": format!("{}/jwks", s.url),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(|State(s): State<IssuerState>| async move {
                    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    if s.failing.load(Ordering::SeqCst) {
                        return axum::response::IntoResponse::into_response(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                        );
                    }
                    let keys = s.jwks.lock().expect("jwks").clone();
                    axum::response::IntoResponse::into_response(axum::Json(json!({ "keys": keys })))
                }),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("issuer serves");
        });
        Self {
            url,
            jwks: state.jwks,
            jwks_fetches: state.jwks_fetches,
            discovery_fetches: state.discovery_fetches,
            failing: state.failing,
            task,
        }
    }

    /// Claims a well-behaved token of this issuer carries.
    fn claims(&self) -> Value {
        json!({
            "iss": self.url,
            "aud": "antwort",
            "sub": "alice",
            "tenant": "acme",
            "scope": "openid read write",
            "iat": now(),
            "exp": now() + 300,
        })
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn standard_keys() -> Vec<Value> {
    vec![jwk(&rsa(RSA_A), Algorithm::RS256, "rsa-a"), jwk(&ec(EC_A), Algorithm::ES256, "ec-a")]
}

fn oidc(yaml: &str) -> RawOidc {
    serde_yaml_ng::from_str(yaml).expect("oidc test config parses")
}

fn config_for(backend: &ScriptedBackend, issuer: RawOidc) -> RawConfig {
    let mut raw = quick_config(backend);
    raw.auth.oidc = vec![issuer];
    raw
}

fn default_oidc(issuer: &Issuer) -> RawOidc {
    oidc(&format!(
        "{{issuer: '{}', audience: [antwort], leeway_secs: 5, jwks_min_refresh_interval_secs: 0.2}}",
        issuer.url
    ))
}

async fn create(gateway: &Gateway, token: &str) -> reqwest::Response {
    client()
        .post(gateway.responses_url())
        .bearer_auth(token)
        .json(&json!({"model": "m", "input": "hello"}))
        .send()
        .await
        .expect("sent")
}

/// Asserts a 401 `invalid_token` with its challenge, and returns the message.
async fn assert_invalid_token(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some(r#"Bearer error="invalid_token""#)
    );
    let body: Value = response.json().await.expect("json");
    assert_error_envelope(&body, 401, "invalid_token");
    body["error"]["message"].as_str().expect("message").to_string()
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    headers
}

#[tokio::test]
async fn rs256_and_es256_tokens_give_the_principal_of_their_claims() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let raw = config_for(&backend, default_oidc(&issuer));
    let config = raw.clone().validate().expect("valid");
    let auth = Auth::new(&config.auth).expect("auth");

    let rs = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());
    let principal = auth.check(&http::Method::POST, &bearer(&rs)).await.expect("RS256 accepted");
    assert_eq!(
        principal,
        Principal {
            tenant: "acme".into(),
            user: "alice".into(),
            scopes: Scopes { read: true, write: true, admin: false }
        }
    );
    // `scp` as an array, `aud` as an array, admin granted.
    let mut claims = issuer.claims();
    claims["sub"] = json!("bob");
    claims["tenant"] = json!("globex");
    claims["aud"] = json!(["other-service", "antwort"]);
    claims.as_object_mut().expect("object").remove("scope");
    claims["scp"] = json!(["read", "admin"]);
    let es = mint(Algorithm::ES256, &ec(EC_A), "ec-a", &claims);
    let principal = auth.check(&http::Method::GET, &bearer(&es)).await.expect("ES256 accepted");
    assert_eq!(
        principal,
        Principal {
            tenant: "globex".into(),
            user: "bob".into(),
            scopes: Scopes { read: true, write: false, admin: true }
        }
    );

    // One discovery and one JWKS fetch served both tokens.
    assert_eq!(issuer.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);

    // Over HTTP: the RS256 token creates; the read-only ES256 token may list but not create.
    let gateway = Gateway::start_with(raw).await;
    assert_eq!(create(&gateway, &rs).await.status(), 200);
    let models = client()
        .get(format!("{}/v1/models", gateway.url))
        .bearer_auth(&es)
        .send()
        .await
        .expect("sent");
    assert_eq!(models.status(), 200);
    let denied = create(&gateway, &es).await;
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.expect("json");
    assert_error_envelope(&body, 403, "permission_denied");
    assert!(body["error"]["message"].as_str().expect("message").contains("'write' scope"));
    // The gateway (a second `Auth`) fetched once more and cached the keys for every token.
    assert_eq!(issuer.discovery_fetches.load(Ordering::SeqCst), 2);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2, "JWKS cached across tokens");
}

#[tokio::test]
async fn tokens_failing_a_claim_check_are_401_invalid_token() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start_with(config_for(&backend, default_oidc(&issuer))).await;
    let key = rsa(RSA_A);
    let good = mint(Algorithm::RS256, &key, "rsa-a", &issuer.claims());
    assert_eq!(create(&gateway, &good).await.status(), 200, "the baseline token works");

    let with = |field: &str, value: Value| {
        let mut claims = issuer.claims();
        claims[field] = value;
        mint(Algorithm::RS256, &key, "rsa-a", &claims)
    };
    let without = |field: &str| {
        let mut claims = issuer.claims();
        claims.as_object_mut().expect("object").remove(field);
        mint(Algorithm::RS256, &key, "rsa-a", &claims)
    };
    let cases = [
        ("wrong iss", with("iss", json!("http://127.0.0.1:1/evil")), "not trusted"),
        ("wrong aud", with("aud", json!("another-service")), "aud"),
        ("expired", with("exp", json!(now() - 60)), "expired"),
        ("nbf in the future", with("nbf", json!(now() + 120)), "not valid yet"),
        ("no exp", without("exp"), "'exp'"),
        ("no aud", without("aud"), "'aud'"),
        ("no tenant", without("tenant"), "'tenant'"),
        ("no sub", without("sub"), "'sub'"),
    ];
    for (name, token, needle) in cases {
        let message = assert_invalid_token(create(&gateway, &token).await).await;
        assert!(message.contains(needle), "{name}: `{message}` lacks `{needle}`");
    }
    // Within the leeway (5 s here), a just-expired token still works; clocks drift.
    let just_expired = with("exp", json!(now() - 2));
    assert_eq!(create(&gateway, &just_expired).await.status(), 200);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start_with(config_for(&backend, default_oidc(&issuer))).await;
    let claims = issuer.claims();

    // Signed by another key under the trusted key's kid.
    let wrong_key = mint(Algorithm::RS256, &rsa(RSA_B), "rsa-a", &claims);
    let message = assert_invalid_token(create(&gateway, &wrong_key).await).await;
    assert!(message.contains("signature"), "{message}");

    // A valid signature with one byte of the payload changed.
    let good = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &claims);
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(tampered_claims.to_string()), parts[2]);
    assert_invalid_token(create(&gateway, &tampered).await).await;

    // alg: none, no signature.
    let unsigned = format!(
        "{}.{}.",
        b64.encode(json!({"alg": "none", "typ": "JWT", "kid": "rsa-a"}).to_string()),
        b64.encode(claims.to_string())
    );
    assert_invalid_token(create(&gateway, &unsigned).await).await;

    // HS256 "signed" with the RSA public key as the HMAC secret (key confusion).
    let confused =
        mint(Algorithm::HS256, &EncodingKey::from_secret(RSA_A_PUBLIC), "rsa-a", &claims);
    let message = assert_invalid_token(create(&gateway, &confused).await).await;
    assert!(message.contains("HS256"), "{message}");

    // An ES256 header on the RSA key's kid: the key fixes the algorithm, not the token.
    let mixed = mint(Algorithm::ES256, &ec(EC_A), "rsa-a", &claims);
    assert_invalid_token(create(&gateway, &mixed).await).await;

    // A JWT-looking string with garbage inside.
    assert_invalid_token(create(&gateway, "eyJhbGciOiJSUzI1NiJ9.e30.AAAA").await).await;
}

#[tokio::test]
async fn unknown_kid_then_rotation_is_picked_up() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let gateway = Gateway::start_with(config_for(&backend, default_oidc(&issuer))).await;
    let rotated = rsa(RSA_B);
    let token = mint(Algorithm::RS256, &rotated, "rsa-b", &issuer.claims());
    let message = assert_invalid_token(create(&gateway, &token).await).await;
    assert!(message.contains("rsa-b"), "{message}");

    // The issuer rotates: the new key appears in its JWKS.
    issuer.jwks.lock().expect("jwks").push(jwk(&rotated, Algorithm::RS256, "rsa-b"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(create(&gateway, &token).await.status(), 200, "the new kid was fetched");
    // And the old key keeps working while it is still published.
    let old = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());
    assert_eq!(create(&gateway, &old).await.status(), 200);
    // Once the issuer drops it and the cache refreshes, the old key stops working.
    issuer.jwks.lock().expect("jwks").retain(|k| k["kid"] != "rsa-a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unknown = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a2", &issuer.claims());
    assert_invalid_token(create(&gateway, &unknown).await).await; // triggers the refetch
    assert_invalid_token(create(&gateway, &old).await).await;
}

#[tokio::test]
async fn unknown_kids_cannot_hammer_the_issuer() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let raw = config_for(
        &backend,
        oidc(&format!(
            "{{issuer: '{}', audience: [antwort], jwks_url: '{}/jwks', jwks_min_refresh_interval_secs: 60}}",
            issuer.url, issuer.url
        )),
    );
    let gateway = Gateway::start_with(raw).await;
    let good = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());
    assert_eq!(create(&gateway, &good).await.status(), 200);
    for i in 0..20 {
        let forged = mint(Algorithm::RS256, &rsa(RSA_B), &format!("forged-{i}"), &issuer.claims());
        assert_invalid_token(create(&gateway, &forged).await).await;
    }
    assert_eq!(
        issuer.jwks_fetches.load(Ordering::SeqCst),
        1,
        "refetches are limited to one per jwks_min_refresh_interval"
    );
    assert_eq!(issuer.discovery_fetches.load(Ordering::SeqCst), 0, "jwks_url skips discovery");
}

#[tokio::test]
async fn the_jwks_is_refetched_after_its_ttl() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let raw = config_for(
        &backend,
        oidc(&format!(
            "{{issuer: '{}', audience: [antwort], jwks_cache_ttl_secs: 0.3, jwks_min_refresh_interval_secs: 0}}",
            issuer.url
        )),
    );
    let gateway = Gateway::start_with(raw).await;
    let good = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());
    assert_eq!(create(&gateway, &good).await.status(), 200);
    assert_eq!(create(&gateway, &good).await.status(), 200);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(create(&gateway, &good).await.status(), 200);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
    assert_eq!(issuer.discovery_fetches.load(Ordering::SeqCst), 1, "jwks_uri is remembered");
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_and_the_gateway_recovers() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let token = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());

    // Nothing listens at the JWKS URL.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let raw = config_for(
        &backend,
        oidc(&format!(
            "{{issuer: '{}', audience: [antwort], jwks_url: 'http://{closed}/jwks', fetch_timeout_secs: 2}}",
            issuer.url
        )),
    );
    let gateway = Gateway::start_with(raw).await;
    let response = create(&gateway, &token).await;
    assert_eq!(response.status(), 503);
    assert_error_envelope(&response.json().await.expect("json"), 503, "auth_unavailable");
    gateway.stop().await;

    // The issuer answers 503 for a while, then recovers; so does the gateway, by itself.
    issuer.failing.store(true, Ordering::SeqCst);
    let raw = config_for(
        &backend,
        oidc(&format!(
            "{{issuer: '{}', audience: [antwort], jwks_min_refresh_interval_secs: 0.2}}",
            issuer.url
        )),
    );
    let gateway = Gateway::start_with(raw).await;
    assert_eq!(create(&gateway, &token).await.status(), 503);
    issuer.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(create(&gateway, &token).await.status(), 200);
    // Once keys are known, an issuer outage does not lock anyone out.
    issuer.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unknown = mint(Algorithm::RS256, &rsa(RSA_B), "rsa-b", &issuer.claims());
    assert_invalid_token(create(&gateway, &unknown).await).await;
    assert_eq!(create(&gateway, &token).await.status(), 200, "cached keys stay in use");
}

#[tokio::test]
async fn scopes_with_a_prefix_and_defaults_and_tenant_paths() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let raw = config_for(
        &backend,
        oidc(&format!(
            "{{issuer: '{}', audience: [antwort], tenant_claim: org.id, user_claim: email, scopes_claim: permissions, scope_prefix: 'antwort:', default_scopes: [read]}}",
            issuer.url
        )),
    );
    let config = raw.validate().expect("valid");
    let auth = Auth::new(&config.auth).expect("auth");
    let mut claims = issuer.claims();
    claims["org"] = json!({"id": "initech"});
    claims["email"] = json!("peter@initech.example");
    claims["permissions"] = json!(["antwort:write", "read", "antwort:admin"]);
    let token = mint(Algorithm::ES256, &ec(EC_A), "ec-a", &claims);
    let principal = auth.check(&http::Method::POST, &bearer(&token)).await.expect("accepted");
    assert_eq!(principal.tenant, "initech");
    assert_eq!(principal.user, "peter@initech.example");
    assert_eq!(
        principal.scopes,
        Scopes { read: false, write: true, admin: true },
        "only prefixed scopes count"
    );
    claims["permissions"] = json!([]);
    let token = mint(Algorithm::ES256, &ec(EC_A), "ec-a", &claims);
    let principal = auth.check(&http::Method::GET, &bearer(&token)).await.expect("read default");
    assert_eq!(principal.scopes, Scopes { read: true, write: false, admin: false });
    let err = auth.check(&http::Method::POST, &bearer(&token)).await.expect_err("no write");
    assert_eq!(err.code(), "permission_denied");
}

#[tokio::test]
async fn api_keys_and_tokens_work_side_by_side() {
    let issuer = Issuer::start(standard_keys()).await;
    let backend = ScriptedBackend::start().await;
    let mut raw = config_for(&backend, default_oidc(&issuer));
    raw.auth.api_keys = vec![
        serde_yaml_ng::from_str("{key: sk-side-by-side-0123456789, tenant: acme, user: ci}")
            .expect("key entry"),
    ];
    let gateway = Gateway::start_with(raw).await;
    let token = mint(Algorithm::RS256, &rsa(RSA_A), "rsa-a", &issuer.claims());
    assert_eq!(create(&gateway, &token).await.status(), 200);
    assert_eq!(create(&gateway, "sk-side-by-side-0123456789").await.status(), 200);
    let wrong = create(&gateway, "sk-side-by-side-wrong-0000").await;
    assert_eq!(wrong.status(), 401);
    assert_error_envelope(&wrong.json().await.expect("json"), 401, "invalid_api_key");
}
