//! Who is calling: the [`Principal`] every request carries (as a request extension), what it may
//! do, and how it is established.
//!
//! # Layout
//! - [`config`]: the `auth` YAML section and its validation (keys are hashed there).
//! - [`api_keys`]: static keys as SHA-256 digests, compared in constant time.
//! - [`oidc`]: JWT bearer tokens from OIDC issuers, verified against their cached JWKS.
//! - [`rate_limit`]: requests per minute per principal (GCRA), bounded memory.
//!
//! [`Auth::check`] runs for every route except the probes: the `Authorization: Bearer` credential
//! goes down the chain of [`Authenticator`]s (API keys, then OIDC); the first that recognizes it
//! decides. Then the scope the request needs is checked (403), then the principal's rate
//! (429). No credential, or one nobody recognizes, is 401 with `WWW-Authenticate: Bearer`.
//! With `auth.mode: none` (local development, said explicitly) everyone is
//! [`Principal::anonymous`].

pub mod api_keys;
pub mod config;
pub mod oidc;
pub mod rate_limit;

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use http::{HeaderMap, Method, header};

pub use self::config::{AuthConfig, AuthMode, Quota, RawAuth};
use crate::error::Error;

/// The authenticated caller. Every stored object is owned by `(tenant, user)`; handlers read
/// this from the request's extensions and pass it down to the engine and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub scopes: Scopes,
}

/// What a principal may do. `read`: GET (and HEAD). `write`: everything that creates or changes
/// objects (POST, DELETE, a WebSocket upgrade). The two are independent. `admin` sees every
/// object of its tenant (never another tenant's); it grants no method by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes { read: true, write: true, admin: true };
    pub const READ_WRITE: Scopes = Scopes { read: true, write: true, admin: false };
}

impl Principal {
    /// The caller when authentication is configured off (local development only).
    pub fn anonymous() -> Self {
        Self { tenant: "default".into(), user: "anonymous".into(), scopes: Scopes::ALL }
    }
}

/// What an authenticator establishes: the principal, and its own rate quota if it has one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// `None`: the global quota; `Some(None)`: unlimited; `Some(Some(q))`: `q`.
    pub quota: Option<Option<Quota>>,
}

/// One way of recognizing a bearer credential. Returns `None` when the credential is not of its
/// kind (the next authenticator is asked), otherwise the verdict.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Option<Result<Authenticated, Error>>>;
}

/// The configured authentication, scope and rate checks.
pub struct Auth {
    mode: AuthMode,
    chain: Vec<Arc<dyn Authenticator>>,
    default_quota: Option<Quota>,
    limiter: rate_limit::RateLimiter,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Self, Error> {
        let mut chain: Vec<Arc<dyn Authenticator>> = Vec::new();
        if !config.api_keys.is_empty() {
            chain.push(Arc::new(api_keys::ApiKeys::new(config.api_keys.clone())));
        }
        if !config.oidc.is_empty() {
            chain.push(Arc::new(oidc::Oidc::new(config.oidc.clone())?));
        }
        if config.mode == AuthMode::Required && chain.is_empty() {
            return Err(Error::Internal("authentication is required but not configured".into()));
        }
        Ok(Self {
            mode: config.mode,
            chain,
            default_quota: config.default_quota,
            limiter: rate_limit::RateLimiter::new(config.max_tracked_principals),
        })
    }

    /// Authenticates the request, then checks its scope and its rate.
    pub async fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Principal, Error> {
        let authenticated = match self.mode {
            AuthMode::None => Authenticated { principal: Principal::anonymous(), quota: None },
            AuthMode::Required => self.authenticate(headers).await?,
        };
        let principal = authenticated.principal;
        let needed = needed_scope(method, headers);
        let granted = match needed {
            "read" => principal.scopes.read,
            _ => principal.scopes.write,
        };
        if !granted {
            return Err(Error::PermissionDenied(format!(
                "This credential lacks the '{needed}' scope that {method} requests need."
            )));
        }
        let quota = authenticated.quota.unwrap_or(self.default_quota);
        if let Some(quota) = quota {
            // Tenant and user cannot contain the separator unnoticed: NUL never appears in YAML
            // keys or JWT string claims that name real tenants.
            let key = format!("{}\0{}", principal.tenant, principal.user);
            if let Err(wait) = self.limiter.check(&key, quota, Instant::now()) {
                return Err(Error::TooManyRequests {
                    per_minute: quota.per_minute,
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(principal)
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Authenticated, Error> {
        let Some(credential) = bearer(headers) else {
            return Err(Error::Unauthorized(
                "Missing credentials: send 'Authorization: Bearer <API key or token>'.".into(),
            ));
        };
        for authenticator in &self.chain {
            if let Some(verdict) = authenticator.authenticate(credential).await {
                if let Err(err) = &verdict {
                    // The reason only; the credential itself is never logged.
                    tracing::debug!(%err, "credential refused");
                }
                return verdict;
            }
        }
        Err(Error::Unauthorized("Incorrect API key provided.".into()))
    }
}

/// `Authorization: Bearer <credential>` (the scheme is case-insensitive, RFC 9110 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// `read` for requests that only look, `write` for everything else. A WebSocket upgrade is a
/// GET that creates responses, so it needs `write`.
fn needed_scope(method: &Method, headers: &HeaderMap) -> &'static str {
    let upgrade = headers.contains_key(header::UPGRADE);
    if (method == Method::GET || method == Method::HEAD) && !upgrade { "read" } else { "write" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn bearer_credentials_are_extracted() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn scopes_follow_the_method() {
        assert_eq!(needed_scope(&Method::GET, &headers(&[])), "read");
        assert_eq!(needed_scope(&Method::HEAD, &headers(&[])), "read");
        assert_eq!(needed_scope(&Method::POST, &headers(&[])), "write");
        assert_eq!(needed_scope(&Method::DELETE, &headers(&[])), "write");
        assert_eq!(needed_scope(&Method::GET, &headers(&[("upgrade", "websocket")])), "write");
    }
}
