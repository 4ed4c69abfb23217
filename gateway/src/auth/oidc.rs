//! JWT bearer tokens from trusted OIDC issuers. A token is routed to its issuer by its
//! (unverified) `iss`, then verified against that issuer's JWKS: signature (RS256 or ES256, the
//! algorithm fixed by the key, never by the token), `iss`, `aud`, `exp`, `nbf`. The principal
//! comes from configurable claims.
//!
//! Keys: the JWKS (from `jwks_url`, or discovered through
//! `{issuer}/.well-known/openid-configuration`) is fetched on first use and cached for
//! `jwks_cache_ttl`. A token naming an unknown `kid` triggers a refetch (that is how key
//! rotation is picked up), at most once per `jwks_min_refresh_interval` so that a stream of
//! forged `kid`s cannot turn the gateway against the issuer. When a refetch fails, the keys
//! already known stay in use.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use base64::Engine as _;
use futures::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::config::OidcSettings;
use super::{Authenticated, Authenticator, Principal, Scopes};
use crate::error::Error;

/// Largest discovery document or JWKS accepted from an issuer.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

pub struct Oidc {
    issuers: Vec<Issuer>,
}

impl Oidc {
    pub fn new(settings: Vec<OidcSettings>) -> Result<Self, Error> {
        let issuers = settings.into_iter().map(Issuer::new).collect::<Result<_, _>>()?;
        Ok(Self { issuers })
    }
}

impl Authenticator for Oidc {
    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Option<Result<Authenticated, Error>>> {
        Box::pin(async move {
            let payload = jwt_payload(credential)?;
            let Some(iss) = payload.get("iss").and_then(Value::as_str) else {
                return Some(Err(Error::InvalidToken("The token has no `iss` claim.".into())));
            };
            let Some(issuer) = self.issuers.iter().find(|i| i.settings.issuer == iss) else {
                return Some(Err(Error::InvalidToken(format!(
                    "The token's issuer '{iss}' is not trusted here."
                ))));
            };
            Some(issuer.verify(credential).await)
        })
    }
}

/// The decoded payload when `token` has the shape of a JWT (three base64url segments, a JSON
/// header naming an `alg`); `None` for anything else, which is then not ours to judge.
fn jwt_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if parts.next().is_some() || !b64url(header) || !b64url(payload) || !b64url(signature) {
        return None;
    }
    let decode = |s: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    decode(header)?.get("alg")?.as_str()?;
    // A JWT-shaped token with an unreadable payload is still a token, just a bad one.
    Some(decode(payload).unwrap_or(Value::Null))
}

struct Issuer {
    settings: OidcSettings,
    http: reqwest::Client,
    // Read on every request, replaced whole on refresh; never held across an await.
    keys: RwLock<Arc<KeySet>>,
    /// Serializes refetches, so that many requests with an unknown `kid` cause one fetch.
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<SigningKey>,
    fetched_at: Option<Instant>,
}

struct SigningKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    /// `jwks_uri` from discovery, remembered once found.
    discovered_jwks_url: Option<String>,
}

impl Issuer {
    fn new(settings: OidcSettings) -> Result<Self, Error> {
        // reqwest is built without a bundled crypto provider; ring is the one we ship (also
        // when `Auth` is built outside `crate::build`).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.fetch_timeout)
            .timeout(settings.fetch_timeout)
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client for OIDC: {e}")))?;
        Ok(Self {
            settings,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        })
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    async fn verify(&self, token: &str) -> Result<Authenticated, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Error::InvalidToken(
                "The token's header is invalid or names an unsupported algorithm.".into(),
            )
        })?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(Error::InvalidToken(format!(
                "Tokens signed with {:?} are not accepted.",
                header.alg
            )));
        }
        let mut keys = self.current_keys();
        let stale = keys.fetched_at.is_none_or(|at| at.elapsed() >= self.settings.jwks_cache_ttl);
        if stale {
            keys = self.refresh().await?;
        }
        if !keys.has_key_for(&header) && !stale {
            // Perhaps the issuer rotated its keys.
            keys = self.refresh().await?;
        }
        let candidates: Vec<&SigningKey> = keys.matching(&header).collect();
        if candidates.is_empty() {
            return Err(Error::InvalidToken(match &header.kid {
                Some(kid) => format!("No {:?} signing key with kid '{kid}' is known.", header.alg),
                None => format!("No {:?} signing key is known.", header.alg),
            }));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut last_error = None;
        for candidate in candidates {
            match jsonwebtoken::decode::<Value>(token, &candidate.key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) => {
                    let bad_signature =
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    last_error = Some(e);
                    if !bad_signature {
                        break;
                    }
                }
            }
        }
        Err(token_error(last_error.expect("at least one candidate was tried")))
    }

    /// Refetches the JWKS unless that was tried within the minimum interval; returns the keys
    /// to use. Fails only when no key at all is known.
    async fn refresh(&self) -> Result<Arc<KeySet>, Error> {
        let mut state = self.refresh.lock().await;
        let recently = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.settings.jwks_min_refresh_interval);
        if !recently {
            state.last_attempt = Some(Instant::now());
            match self.fetch(&mut state).await {
                Ok(keys) => {
                    tracing::info!(issuer = %self.settings.issuer, keys = keys.len(), "fetched the issuer's signing keys");
                    let set = Arc::new(KeySet { keys, fetched_at: Some(Instant::now()) });
                    *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        set.clone();
                    return Ok(set);
                }
                Err(message) => {
                    tracing::warn!(issuer = %self.settings.issuer, %message, "cannot fetch the issuer's signing keys");
                }
            }
        }
        let keys = self.current_keys();
        if keys.fetched_at.is_none() {
            return Err(Error::AuthUnavailable(format!(
                "The signing keys of issuer '{}' cannot be fetched right now.",
                self.settings.issuer
            )));
        }
        Ok(keys)
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<Vec<SigningKey>, String> {
        let jwks_url = match (&self.settings.jwks_url, &state.discovered_jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                state.discovered_jwks_url = Some(url.clone());
                url
            }
        };
        let body = self.get(&jwks_url).await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("{jwks_url}: not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
                continue;
            }
            // The algorithm follows from the key; a key is never used with another one. Keys
            // of other kinds (symmetric ones above all) are ignored.
            let by_type = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Some(Algorithm::ES256)
                }
                _ => None,
            };
            let declared = jwk.common.key_algorithm.map(|a| match a {
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                _ => None,
            });
            let algorithm = match (by_type, declared) {
                (Some(by_type), None) => by_type,
                (Some(by_type), Some(Some(declared))) if declared == by_type => by_type,
                _ => continue,
            };
            if !self.settings.algorithms.contains(&algorithm) {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(SigningKey { kid: jwk.common.key_id.clone(), algorithm, key }),
                Err(e) => {
                    tracing::warn!(issuer = %self.settings.issuer, kid = ?jwk.common.key_id, %e, "skipping an unusable JWK")
                }
            }
        }
        Ok(keys)
    }

    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let document: Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name the same issuer.
        if document.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(format!("{url}: the document names another issuer"));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| format!("{url}: no http(s) jwks_uri"))?;
        Ok(jwks_uri.to_string())
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn principal(&self, claims: &Value) -> Result<Authenticated, Error> {
        let settings = &self.settings;
        let user = claim(claims, &settings.user_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::InvalidToken(format!(
                    "The token lacks the '{}' claim naming the user.",
                    settings.user_claim
                ))
            })?;
        let tenant = claim(claims, &settings.tenant_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or(settings.default_tenant.as_deref())
            .ok_or_else(|| {
                Error::InvalidToken(format!(
                    "The token lacks the '{}' claim naming the tenant.",
                    settings.tenant_claim
                ))
            })?;
        let names: Vec<&str> = match &settings.scopes_claim {
            Some(name) => claim_strings(claim(claims, name)),
            None => {
                let scope = claim_strings(claims.get("scope"));
                if scope.is_empty() { claim_strings(claims.get("scp")) } else { scope }
            }
        };
        let mut scopes = Scopes::default();
        for name in names {
            match name.strip_prefix(settings.scope_prefix.as_str()) {
                Some("read") => scopes.read = true,
                Some("write") => scopes.write = true,
                Some("admin") => scopes.admin = true,
                _ => {}
            }
        }
        if scopes == Scopes::default() {
            scopes = settings.default_scopes;
        }
        Ok(Authenticated {
            principal: Principal { tenant: tenant.to_string(), user: user.to_string(), scopes },
            quota: settings.quota,
        })
    }
}

impl KeySet {
    fn matching<'a>(
        &'a self,
        header: &'a jsonwebtoken::Header,
    ) -> impl Iterator<Item = &'a SigningKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.algorithm == header.alg && (header.kid.is_none() || k.kid == header.kid)
        })
    }

    fn has_key_for(&self, header: &jsonwebtoken::Header) -> bool {
        self.matching(header).next().is_some()
    }
}

/// A claim by exact name (URL-like names contain dots), else by dotted path into nested objects.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    name.split('.').try_fold(claims, |node, segment| node.get(segment))
}

/// A space-separated string or an array of strings.
fn claim_strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn token_error(error: jsonwebtoken::errors::Error) -> Error {
    use jsonwebtoken::errors::ErrorKind;
    let message = match error.kind() {
        ErrorKind::ExpiredSignature => "The token has expired.".to_string(),
        ErrorKind::ImmatureSignature => "The token is not valid yet (nbf).".to_string(),
        ErrorKind::InvalidIssuer => "The token's issuer is not accepted.".to_string(),
        ErrorKind::InvalidAudience => "The token is not meant for this service (aud).".to_string(),
        ErrorKind::InvalidSignature => "The token's signature does not verify.".to_string(),
        ErrorKind::MissingRequiredClaim(claim) => format!("The token lacks the '{claim}' claim."),
        ErrorKind::InvalidAlgorithm => "The token's algorithm does not match its key.".to_string(),
        _ => format!("The token is invalid: {error}."),
    };
    Error::InvalidToken(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_by_name_or_path() {
        let claims = json!({"https://example.com/tenant": "acme", "org": {"id": "o1"}, "sub": "u"});
        assert_eq!(claim(&claims, "https://example.com/tenant"), Some(&json!("acme")));
        assert_eq!(claim(&claims, "org.id"), Some(&json!("o1")));
        assert_eq!(claim(&claims, "org.missing"), None);
        assert_eq!(claim_strings(Some(&json!("read  write"))), ["read", "write"]);
        assert_eq!(claim_strings(Some(&json!(["read", 3, "admin"]))), ["read", "admin"]);
    }

    #[test]
    fn only_jwt_shaped_tokens_are_recognized() {
        assert!(jwt_payload("sk-plain-api-key-0123456789").is_none());
        assert!(jwt_payload("a.b.c.d").is_none());
        assert!(jwt_payload("not.base64!.x").is_none());
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let token = format!("{}.{}.", b64(json!({"alg": "none"})), b64(json!({"iss": "x"})));
        assert_eq!(jwt_payload(&token), Some(json!({"iss": "x"})), "unsigned is still a JWT");
        let no_alg = format!("{}.{}.sig", b64(json!({"typ": "JWT"})), b64(json!({})));
        assert!(jwt_payload(&no_alg).is_none());
    }
}
