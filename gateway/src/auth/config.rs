//! The `auth` section of the gateway's YAML ([`RawAuth`]) and its validated form
//! ([`AuthConfig`]). API keys are hashed here, while the config is validated: the validated form
//! holds SHA-256 digests only, never a plaintext key.
//!
//! ```yaml
//! auth:
//!   mode: required          # required (default) | none (local development only)
//!   api_keys:               # also ANTWORT_AUTH__API_KEYS='[{sha256: ..., tenant: acme, user: ci}]'
//!     - sk-legacy-plain-key-0001      # a bare key: tenant `default`, user `key-<8 hex of its hash>`, read+write
//!     - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//!       tenant: acme
//!       user: alice
//!       scopes: [read, write]         # default [read, write]; `admin` sees the whole tenant
//!       rate_limit_per_minute: 600    # optional; overrides auth.rate_limit for this key (0: none)
//!     - key: sk-plaintext-is-hashed-on-load   # `key` or `sha256`, not both
//!       tenant: acme
//!       user: batch
//!   api_keys_file: /var/run/secrets/antwort/api-keys.yaml  # same list, YAML or JSON; read at start
//!   oidc:
//!     - issuer: https://id.example.com/realms/antwort   # must equal the token's `iss`
//!       audience: [antwort]          # required; the token's `aud` must contain one of these
//!       jwks_url: null               # default: discovered via {issuer}/.well-known/openid-configuration
//!       user_claim: sub
//!       tenant_claim: tenant         # claim name, or a dotted path into nested claims
//!       default_tenant: null         # tenant when the claim is absent (else the token is refused)
//!       scopes_claim: null           # default: `scope` (space-separated), then `scp` (array or string)
//!       scope_prefix: ""             # e.g. "antwort:" to read `antwort:read`
//!       default_scopes: []           # scopes when the token carries none of ours
//!       algorithms: [RS256, ES256]
//!       leeway_secs: 30              # clock skew allowed on exp and nbf
//!       jwks_cache_ttl_secs: 600
//!       jwks_min_refresh_interval_secs: 10   # an unknown `kid` refetches the JWKS at most this often
//!       fetch_timeout_secs: 10
//!       rate_limit_per_minute: null  # optional override for this issuer's principals
//!   rate_limit:
//!     requests_per_minute: 0         # per principal (tenant, user); 0 = unlimited
//!     burst: null                    # requests allowed at once; default requests_per_minute
//!     max_tracked_principals: 100000 # memory bound of the limiter
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Scopes;

/// `auth` as written by an operator.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// `required` (the default): every request outside the probes needs a credential that one
    /// of the authenticators below accepts, and at least one must be configured. `none`: no
    /// authentication at all; every caller is [`super::Principal::anonymous`]. For local
    /// development only, and only when no authenticator is configured.
    pub mode: AuthMode,
    /// Static API keys, each mapped to a tenant, user and scopes.
    pub api_keys: Vec<RawApiKey>,
    /// A mounted secret holding more keys in the same list format (YAML or JSON).
    pub api_keys_file: Option<PathBuf>,
    /// Trusted OIDC issuers whose JWT bearer tokens are accepted.
    pub oidc: Vec<RawOidc>,
    pub rate_limit: RawRateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Required,
    None,
}

impl RawAuth {
    /// True when no authenticator is configured at all (the gateway then refuses to start
    /// unless `mode: none` says that is intended).
    pub fn is_unconfigured(&self) -> bool {
        self.api_keys.is_empty() && self.api_keys_file.is_none() && self.oidc.is_empty()
    }

    /// Local development: no authentication, said explicitly.
    pub fn development() -> Self {
        Self { mode: AuthMode::None, ..Self::default() }
    }
}

/// One API key: a bare key string (the original form), or an entry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawApiKey {
    Plain(String),
    Entry(RawApiKeyEntry),
}

impl From<&str> for RawApiKey {
    fn from(key: &str) -> Self {
        Self::Plain(key.to_string())
    }
}

// Keys must not reach logs through a `{:?}` of the config.
impl std::fmt::Debug for RawApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Entry(entry) => entry.fmt(f),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyEntry {
    /// The key in plaintext (hashed on load), or...
    #[serde(default)]
    pub key: Option<String>,
    /// ...its SHA-256 as 64 hex digits (`antwort-gateway hash-key < key.txt`).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub user: String,
    #[serde(default = "default_key_scopes")]
    pub scopes: Vec<String>,
    /// Overrides `auth.rate_limit.requests_per_minute` for this key; 0 means unlimited.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// Overrides the burst for this key; defaults to its requests per minute.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
}

impl std::fmt::Debug for RawApiKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawApiKeyEntry")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("sha256", &self.sha256)
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("scopes", &self.scopes)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .finish()
    }
}

fn default_tenant() -> String {
    "default".to_string()
}

fn default_key_scopes() -> Vec<String> {
    vec!["read".to_string(), "write".to_string()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub audience: Vec<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default)]
    pub default_tenant: Option<String>,
    #[serde(default)]
    pub scopes_claim: Option<String>,
    #[serde(default)]
    pub scope_prefix: String,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default = "default_jwks_ttl")]
    pub jwks_cache_ttl_secs: f64,
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_interval_secs: f64,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: f64,
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
}

fn default_user_claim() -> String {
    "sub".to_string()
}
fn default_tenant_claim() -> String {
    "tenant".to_string()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_string(), "ES256".to_string()]
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_ttl() -> f64 {
    600.0
}
fn default_min_refresh() -> f64 {
    10.0
}
fn default_fetch_timeout() -> f64 {
    10.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    /// Requests per minute per principal; 0 means unlimited.
    pub requests_per_minute: u32,
    /// Requests allowed back to back before the rate applies; defaults to the per-minute rate.
    pub burst: Option<u32>,
    /// Principals tracked at once; idle ones are forgotten first (losing nothing: an idle
    /// principal's bucket is full anyway).
    pub max_tracked_principals: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self { requests_per_minute: 0, burst: None, max_tracked_principals: 100_000 }
    }
}

// === validated ===

/// The validated `auth` section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub api_keys: Vec<ApiKeyEntry>,
    pub oidc: Vec<OidcSettings>,
    /// The quota of principals without their own; `None`: unlimited.
    pub default_quota: Option<Quota>,
    pub max_tracked_principals: usize,
}

impl AuthConfig {
    /// Local development: nobody is asked for credentials.
    pub fn development() -> Self {
        Self {
            mode: AuthMode::None,
            api_keys: Vec::new(),
            oidc: Vec::new(),
            default_quota: None,
            max_tracked_principals: 100_000,
        }
    }
}

/// Requests per minute and the burst allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    /// `per_minute == 0` means unlimited.
    fn new(per_minute: u32, burst: Option<u32>) -> Option<Self> {
        (per_minute > 0).then(|| Quota { per_minute, burst: burst.unwrap_or(per_minute).max(1) })
    }
}

/// A key as the gateway keeps it: the digest, never the key.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    pub sha256: [u8; 32],
    pub tenant: String,
    pub user: String,
    pub scopes: Scopes,
    /// `Some(None)`: this key is unlimited; `None`: the global quota applies.
    pub quota: Option<Option<Quota>>,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: Vec<String>,
    pub jwks_url: Option<String>,
    pub user_claim: String,
    pub tenant_claim: String,
    pub default_tenant: Option<String>,
    pub scopes_claim: Option<String>,
    pub scope_prefix: String,
    pub default_scopes: Scopes,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway_secs: u64,
    pub jwks_cache_ttl: Duration,
    pub jwks_min_refresh_interval: Duration,
    pub fetch_timeout: Duration,
    pub quota: Option<Option<Quota>>,
}

/// SHA-256 of a key as presented (surrounding whitespace removed, as the middleware does).
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.trim().as_bytes()).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Shortest plaintext key accepted: unsalted SHA-256 is only safe for keys that cannot be
/// guessed, so short (human-chosen) keys are refused.
pub const MIN_KEY_CHARS: usize = 16;

fn parse_scopes(path: &str, names: &[String], errors: &mut Vec<String>) -> Scopes {
    let mut scopes = Scopes::default();
    for name in names {
        match name.as_str() {
            "read" => scopes.read = true,
            "write" => scopes.write = true,
            "admin" => scopes.admin = true,
            other => errors.push(format!("{path}: unknown scope `{other}` (read, write, admin)")),
        }
    }
    scopes
}

fn positive_secs(path: &str, value: f64, errors: &mut Vec<String>) -> Duration {
    if value.is_finite() && value >= 0.0 {
        Duration::from_secs_f64(value)
    } else {
        errors.push(format!("{path}: must be a non-negative number of seconds, got {value}"));
        Duration::ZERO
    }
}

impl RawAuth {
    /// Checks the section, reads the key file, hashes plaintext keys. Problems are appended to
    /// `errors`, each with its field path.
    pub fn validate(self, errors: &mut Vec<String>) -> AuthConfig {
        let default_quota = Quota::new(self.rate_limit.requests_per_minute, self.rate_limit.burst);
        if self.rate_limit.max_tracked_principals == 0 {
            errors.push("auth.rate_limit.max_tracked_principals: must be at least 1".to_string());
        }
        if self.rate_limit.burst == Some(0) {
            errors.push("auth.rate_limit.burst: must be at least 1".to_string());
        }
        match self.mode {
            AuthMode::None if !self.is_unconfigured() => errors.push(
                "auth.mode: `none` turns authentication off; remove api_keys, api_keys_file and oidc, or use mode: required"
                    .to_string(),
            ),
            AuthMode::Required if self.is_unconfigured() => errors.push(
                "auth: no authenticator configured; set auth.api_keys, auth.api_keys_file or auth.oidc (or auth.mode: none, ANTWORT_AUTH__MODE=none, for local development only)"
                    .to_string(),
            ),
            _ => {}
        }
        let mut api_keys = Vec::new();
        for (i, key) in self.api_keys.into_iter().enumerate() {
            if let Some(entry) = api_key_entry(&format!("auth.api_keys[{i}]"), key, errors) {
                api_keys.push(entry);
            }
        }
        if let Some(path) = &self.api_keys_file {
            let field = format!("auth.api_keys_file ({})", path.display());
            match std::fs::read_to_string(path) {
                Err(e) => errors.push(format!("{field}: cannot read: {e}")),
                Ok(text) => match serde_yaml_ng::from_str::<Vec<RawApiKey>>(&text) {
                    // The parser's message may quote the file, which holds keys: only the
                    // position is shown.
                    Err(e) => errors.push(format!(
                        "{field}: not a YAML/JSON list of keys (strings or {{key|sha256, tenant, user, scopes}}){}",
                        e.location()
                            .map(|l| format!(" near line {} column {}", l.line(), l.column()))
                            .unwrap_or_default()
                    )),
                    Ok(keys) => {
                        for (i, key) in keys.into_iter().enumerate() {
                            if let Some(entry) = api_key_entry(&format!("{field}[{i}]"), key, errors)
                            {
                                api_keys.push(entry);
                            }
                        }
                    }
                },
            }
        }
        for (i, entry) in api_keys.iter().enumerate() {
            if api_keys[..i].iter().any(|other| other.sha256 == entry.sha256) {
                errors.push(format!(
                    "auth.api_keys: the key of {}/{} is listed twice",
                    entry.tenant, entry.user
                ));
            }
        }
        let mut oidc = Vec::new();
        for (i, raw) in self.oidc.into_iter().enumerate() {
            oidc.push(raw.validate(&format!("auth.oidc[{i}]"), errors));
        }
        AuthConfig {
            mode: self.mode,
            api_keys,
            oidc,
            default_quota,
            max_tracked_principals: self.rate_limit.max_tracked_principals.max(1),
        }
    }
}

fn api_key_entry(path: &str, key: RawApiKey, errors: &mut Vec<String>) -> Option<ApiKeyEntry> {
    let entry = match key {
        RawApiKey::Plain(key) => {
            if key.trim().chars().count() < MIN_KEY_CHARS {
                errors.push(format!("{path}: keys must be at least {MIN_KEY_CHARS} characters"));
                return None;
            }
            let sha256 = hash_key(&key);
            // Stable across reordering and reveals nothing usable about the key.
            let user = format!("key-{}", &to_hex(&sha256)[..8]);
            return Some(ApiKeyEntry {
                sha256,
                tenant: default_tenant(),
                user,
                scopes: Scopes::READ_WRITE,
                quota: None,
            });
        }
        RawApiKey::Entry(entry) => entry,
    };
    let sha256 = match (&entry.key, &entry.sha256) {
        (Some(_), Some(_)) => {
            errors.push(format!("{path}: set key or sha256, not both"));
            None
        }
        (None, None) => {
            errors.push(format!("{path}: set key (plaintext) or sha256 (its hex digest)"));
            None
        }
        (Some(key), None) => {
            if key.trim().chars().count() < MIN_KEY_CHARS {
                errors.push(format!("{path}.key: must be at least {MIN_KEY_CHARS} characters"));
                None
            } else {
                Some(hash_key(key))
            }
        }
        (None, Some(hex)) => {
            let parsed = from_hex(hex);
            if parsed.is_none() {
                errors.push(format!("{path}.sha256: must be 64 hex digits"));
            }
            parsed
        }
    };
    if entry.tenant.is_empty() {
        errors.push(format!("{path}.tenant: must not be empty"));
    }
    if entry.user.is_empty() {
        errors.push(format!("{path}.user: must not be empty"));
    }
    if entry.rate_limit_burst == Some(0) {
        errors.push(format!("{path}.rate_limit_burst: must be at least 1"));
    }
    let scopes = parse_scopes(&format!("{path}.scopes"), &entry.scopes, errors);
    let quota = match (entry.rate_limit_per_minute, entry.rate_limit_burst) {
        (None, None) => None,
        (Some(per_minute), burst) => Some(Quota::new(per_minute, burst)),
        (None, Some(_)) => {
            errors.push(format!("{path}.rate_limit_burst: needs rate_limit_per_minute"));
            None
        }
    };
    Some(ApiKeyEntry { sha256: sha256?, tenant: entry.tenant, user: entry.user, scopes, quota })
}

impl RawOidc {
    fn validate(self, path: &str, errors: &mut Vec<String>) -> OidcSettings {
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            errors.push(format!("{path}.issuer: `{}` must be an http(s) URL", self.issuer));
        }
        if self.audience.is_empty() || self.audience.iter().any(String::is_empty) {
            errors.push(format!(
                "{path}.audience: list the audiences this gateway accepts (tokens for other services must not work here)"
            ));
        }
        if let Some(url) = &self.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            errors.push(format!("{path}.jwks_url: `{url}` must be an http(s) URL"));
        }
        if self.user_claim.is_empty() {
            errors.push(format!("{path}.user_claim: must not be empty"));
        }
        let mut algorithms = Vec::new();
        for name in &self.algorithms {
            match name.as_str() {
                "RS256" => algorithms.push(jsonwebtoken::Algorithm::RS256),
                "ES256" => algorithms.push(jsonwebtoken::Algorithm::ES256),
                other => errors
                    .push(format!("{path}.algorithms: `{other}` is not supported (RS256, ES256)")),
            }
        }
        if self.algorithms.is_empty() {
            errors.push(format!("{path}.algorithms: must not be empty"));
        }
        let default_scopes =
            parse_scopes(&format!("{path}.default_scopes"), &self.default_scopes, errors);
        let fetch_timeout =
            positive_secs(&format!("{path}.fetch_timeout_secs"), self.fetch_timeout_secs, errors);
        if fetch_timeout.is_zero() {
            errors.push(format!("{path}.fetch_timeout_secs: must be positive"));
        }
        OidcSettings {
            issuer: self.issuer,
            audience: self.audience,
            jwks_url: self.jwks_url,
            user_claim: self.user_claim,
            tenant_claim: self.tenant_claim,
            default_tenant: self.default_tenant,
            scopes_claim: self.scopes_claim,
            scope_prefix: self.scope_prefix,
            default_scopes,
            algorithms,
            leeway_secs: self.leeway_secs,
            jwks_cache_ttl: positive_secs(
                &format!("{path}.jwks_cache_ttl_secs"),
                self.jwks_cache_ttl_secs,
                errors,
            ),
            jwks_min_refresh_interval: positive_secs(
                &format!("{path}.jwks_min_refresh_interval_secs"),
                self.jwks_min_refresh_interval_secs,
                errors,
            ),
            fetch_timeout,
            quota: self.rate_limit_per_minute.map(|per_minute| Quota::new(per_minute, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(yaml: &str) -> Result<AuthConfig, String> {
        let raw: RawAuth = serde_yaml_ng::from_str(yaml).expect("parses");
        let mut errors = Vec::new();
        let config = raw.validate(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(errors.join("\n")) }
    }

    #[test]
    fn nothing_configured_is_refused_unless_mode_none() {
        let err = validate("{}").expect_err("refused");
        assert!(err.contains("auth: no authenticator configured"), "{err}");
        let config = validate("mode: none").expect("explicit development mode");
        assert_eq!(config.mode, AuthMode::None);
        let err = validate("mode: none\napi_keys: [sk-0123456789abcdef]").expect_err("ambiguous");
        assert!(err.contains("auth.mode"), "{err}");
    }

    #[test]
    fn keys_are_hashed_and_mapped() {
        let digest = to_hex(&hash_key("sk-hashed-0123456789"));
        let config = validate(&format!(
            r#"
api_keys:
  - sk-legacy-0123456789
  - {{ key: sk-plain-0123456789, tenant: acme, user: alice, scopes: [read] }}
  - {{ sha256: "{digest}", tenant: acme, user: bob, scopes: [read, write, admin], rate_limit_per_minute: 0 }}
"#
        ))
        .expect("valid");
        let [legacy, alice, bob] = &config.api_keys[..] else { panic!("three keys") };
        assert_eq!(legacy.tenant, "default");
        assert_eq!(legacy.user, format!("key-{}", &to_hex(&hash_key("sk-legacy-0123456789"))[..8]));
        assert_eq!(legacy.scopes, Scopes::READ_WRITE);
        assert_eq!(alice.sha256, hash_key("sk-plain-0123456789"));
        assert_eq!(alice.scopes, Scopes { read: true, write: false, admin: false });
        assert_eq!(bob.sha256, hash_key("sk-hashed-0123456789"));
        assert_eq!(bob.scopes, Scopes::ALL);
        assert_eq!(bob.quota, Some(None), "0 is unlimited for this key");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-plain") && !shown.contains("sk-legacy"), "{shown}");
    }

    #[test]
    fn bad_entries_are_reported_with_paths() {
        let err = validate(
            r#"
api_keys:
  - short
  - { key: sk-0123456789abcdef, sha256: "00", user: u }
  - { sha256: "zz", user: u, scopes: [fly] }
  - { key: sk-0123456789abcdef-2, user: "" }
oidc:
  - { issuer: "id.example.com", audience: [], algorithms: [HS256] }
rate_limit: { burst: 0 }
"#,
        )
        .expect_err("invalid");
        for needle in [
            "auth.api_keys[0]: keys must be at least 16",
            "auth.api_keys[1]: set key or sha256, not both",
            "auth.api_keys[2].sha256",
            "auth.api_keys[2].scopes: unknown scope `fly`",
            "auth.api_keys[3].user",
            "auth.oidc[0].issuer",
            "auth.oidc[0].audience",
            "auth.oidc[0].algorithms: `HS256`",
            "auth.rate_limit.burst",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = validate(
            "api_keys:\n  - { key: sk-0123456789abcdef, user: a }\n  - { key: sk-0123456789abcdef, user: b }",
        )
        .expect_err("duplicate");
        assert!(err.contains("listed twice"), "{err}");
    }
}
