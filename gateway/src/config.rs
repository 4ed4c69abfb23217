//! The gateway's configuration: the YAML schema ([`RawConfig`], every field documented, unknown
//! fields rejected), and its validated form ([`Config`]) with no leftover options to check later.
//!
//! Sources, later ones winning: the YAML file (`--config`), `ANTWORT_*` environment variables
//! (`ANTWORT_LISTEN`, `ANTWORT_BACKEND_URL`, `ANTWORT_LIMITS__MAX_BODY_BYTES`, ...; see
//! `antwort_common::config`), then command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use antwort_common::telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

use crate::provider::chat_completions::BackendSettings;

/// The YAML file as written by an operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Address to serve the API on.
    pub listen: String,
    /// Quick start: an OpenAI-compatible base URL (e.g. `http://localhost:8000/v1`) that serves
    /// every model name not listed under `models`. Becomes the backend named `default`.
    pub backend_url: Option<String>,
    /// API key for `backend_url`.
    pub backend_api_key: Option<String>,
    /// Named backends.
    pub backends: BTreeMap<String, RawBackend>,
    /// Model name (as clients send it) -> backend and the backend's own name for the model.
    pub models: Vec<RawModel>,
    /// Backend serving models not listed in `models` (`default` when `backend_url` is set).
    pub default_backend: Option<String>,
    pub limits: RawLimits,
    pub auth: RawAuth,
    pub telemetry: TelemetryConfig,
    pub store: RawStore,
    /// WebSocket mode on `/v1/responses`.
    pub websocket: crate::api::websocket::WebSocketSettings,
    /// Background mode: the worker pool, leases, polling.
    pub background: crate::worker::BackgroundSettings,
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace_period_secs: f64,
    /// A streamed response silent this long (a tool running, a slow model) gets an SSE comment
    /// (`: keep-alive`), so proxies and clients do not time the connection out.
    pub sse_keep_alive_secs: f64,
    /// Server-side tools (`code_interpreter`) and the tool loop. Serialized as `null`: only
    /// the key matters there (it tells `ANTWORT_TOOLS__*` overrides that `tools` exists).
    #[serde(serialize_with = "serialize_as_null")]
    pub tools: RawTools,
}

fn serialize_as_null<T, S: serde::Serializer>(_: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_none()
}

/// The `tools` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTools {
    /// Model calls per response in the tool loop; a model still calling server-side tools after
    /// this many turns ends the response `incomplete` (`max_tool_turns`).
    pub max_turns: u32,
    /// Where code_interpreter sandboxes come from; unset: requests with a `code_interpreter`
    /// tool are refused (400).
    pub code_interpreter: Option<crate::tools::code_interpreter::config::CodeInterpreterConfig>,
}

impl Default for RawTools {
    fn default() -> Self {
        Self { max_turns: 10, code_interpreter: None }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_string(),
            backend_url: None,
            backend_api_key: None,
            backends: BTreeMap::new(),
            models: Vec::new(),
            default_backend: None,
            limits: RawLimits::default(),
            auth: RawAuth::default(),
            telemetry: TelemetryConfig::default(),
            store: RawStore::default(),
            websocket: Default::default(),
            background: Default::default(),
            shutdown_grace_period_secs: 30.0,
            sse_keep_alive_secs: 15.0,
            tools: RawTools::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// OpenAI-compatible base URL ending in `/v1`.
    pub url: String,
    /// `vllm`, `litellm`, `ollama` or `openai`: informational today, all speak Chat Completions.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The key itself, or...
    #[serde(default)]
    pub api_key: Option<String>,
    /// ...the name of an environment variable holding it.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Extra attempts before the first byte (connect failure, timeout, 500/502/503/504).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_kind() -> String {
    "vllm".to_string()
}

fn default_max_retries() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub connect_secs: f64,
    /// Streaming: until the backend's response headers.
    pub first_byte_secs: f64,
    /// Non-streaming: the whole answer.
    pub request_secs: f64,
    /// Streaming: longest silence between chunks.
    pub idle_secs: f64,
    /// First retry delay; doubles on each further retry.
    pub retry_backoff_secs: f64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            connect_secs: 5.0,
            first_byte_secs: 60.0,
            request_secs: 600.0,
            idle_secs: 120.0,
            retry_backoff_secs: 0.2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub backend: String,
    /// The backend's name for the model; defaults to `name`.
    #[serde(default)]
    pub upstream_model: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request body accepted (413 above). Input text is capped at 10 MiB by the spec;
    /// images and files as data URLs need room beyond that.
    pub max_body_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self { max_body_bytes: 64 * 1024 * 1024 }
    }
}

/// Where responses and conversations are stored (`store:`; env `ANTWORT_STORE__URL`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `sqlite://PATH` (relative) or `sqlite:///ABSOLUTE/PATH`: the embedded engine, the file
    /// and its directory created on first start; `postgres://user:pass@host:port/db`; or
    /// `memory` (nothing survives a restart).
    pub url: String,
    /// Largest number of open database connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection (or for the database to answer a
    /// connect) before it is answered 503 `store_unavailable`.
    pub acquire_timeout_secs: f64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite://antwort-data/antwort.db".to_string(),
            max_connections: 16,
            acquire_timeout_secs: 5.0,
        }
    }
}

/// The `auth` section lives with the code it configures (`auth::config`).
pub use crate::auth::config::{AuthMode, RawApiKey, RawApiKeyEntry, RawAuth, RawOidc};

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backends: Vec<BackendSettings>,
    pub models: Vec<ModelRoute>,
    pub default_backend: Option<String>,
    pub max_body_bytes: usize,
    pub auth: crate::auth::AuthConfig,
    pub telemetry: TelemetryConfig,
    pub store: crate::store::StoreSettings,
    pub websocket: crate::api::websocket::WebSocketSettings,
    pub background: crate::worker::BackgroundSettings,
    pub shutdown_grace_period: Duration,
    pub sse_keep_alive: Duration,
    pub tools: RawTools,
}

#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub name: String,
    pub backend: String,
    pub upstream_model: String,
}

impl RawConfig {
    /// Checks everything and reports every problem at once, each with its field path.
    pub fn validate(self) -> Result<Config, antwort_common::config::ConfigError> {
        let mut errors = Vec::new();
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(e) => {
                errors.push(format!(
                    "listen: `{}` is not an address like 127.0.0.1:8080 ({e})",
                    self.listen
                ));
                None
            }
        };
        let mut backends = Vec::new();
        let mut named = self.backends;
        if let Some(url) = &self.backend_url {
            if named.contains_key("default") {
                errors.push(
                    "backend_url: a backend named `default` is already configured".to_string(),
                );
            }
            named.insert(
                "default".to_string(),
                RawBackend {
                    url: url.clone(),
                    kind: default_kind(),
                    api_key: self.backend_api_key.clone(),
                    api_key_env: None,
                    timeouts: RawTimeouts::default(),
                    max_retries: default_max_retries(),
                },
            );
        }
        for (name, backend) in &named {
            let path = if self.backend_url.is_some() && name == "default" {
                "backend_url".to_string()
            } else {
                format!("backends.{name}")
            };
            if !(backend.url.starts_with("http://") || backend.url.starts_with("https://")) {
                errors.push(format!(
                    "{path}: url `{}` must start with http:// or https://",
                    backend.url
                ));
            }
            if !matches!(backend.kind.as_str(), "vllm" | "litellm" | "ollama" | "openai") {
                errors.push(format!(
                    "{path}.kind: `{}` is not one of vllm, litellm, ollama, openai",
                    backend.kind
                ));
            }
            let api_key = match (&backend.api_key, &backend.api_key_env) {
                (Some(_), Some(_)) => {
                    errors.push(format!("{path}: set api_key or api_key_env, not both"));
                    None
                }
                (Some(key), None) => Some(key.clone()),
                (None, Some(var)) => match std::env::var(var) {
                    Ok(key) => Some(key),
                    Err(_) => {
                        errors.push(format!(
                            "{path}.api_key_env: environment variable `{var}` is not set"
                        ));
                        None
                    }
                },
                (None, None) => None,
            };
            let t = &backend.timeouts;
            let mut secs = |field: &str, value: f64| -> Duration {
                if value.is_finite() && value > 0.0 {
                    Duration::from_secs_f64(value)
                } else {
                    errors.push(format!(
                        "{path}.timeouts.{field}: must be a positive number of seconds, got {value}"
                    ));
                    Duration::from_secs(1)
                }
            };
            backends.push(BackendSettings {
                name: name.clone(),
                url: backend.url.clone(),
                api_key,
                connect_timeout: secs("connect_secs", t.connect_secs),
                first_byte_timeout: secs("first_byte_secs", t.first_byte_secs),
                request_timeout: secs("request_secs", t.request_secs),
                idle_timeout: secs("idle_secs", t.idle_secs),
                max_retries: backend.max_retries,
                retry_backoff: secs("retry_backoff_secs", t.retry_backoff_secs),
            });
        }
        if !(self.sse_keep_alive_secs.is_finite() && self.sse_keep_alive_secs > 0.0) {
            errors.push("sse_keep_alive_secs: must be a positive number of seconds".to_string());
        }
        if self.tools.max_turns == 0 {
            errors.push("tools.max_turns: must be at least 1".to_string());
        }
        if let Some(ci) = &self.tools.code_interpreter
            && let Err(e) = ci.validate()
        {
            errors.push(e);
        }
        let mut models = Vec::new();
        for (i, model) in self.models.iter().enumerate() {
            if model.name.is_empty() {
                errors.push(format!("models[{i}].name: must not be empty"));
            }
            if !named.contains_key(&model.backend) {
                errors.push(format!("models[{i}].backend: no backend named `{}`", model.backend));
            }
            if self.models[..i].iter().any(|m| m.name == model.name) {
                errors.push(format!("models[{i}].name: `{}` is listed twice", model.name));
            }
            models.push(ModelRoute {
                name: model.name.clone(),
                backend: model.backend.clone(),
                upstream_model: model.upstream_model.clone().unwrap_or_else(|| model.name.clone()),
            });
        }
        let default_backend = match (&self.default_backend, &self.backend_url) {
            (Some(name), _) => {
                if !named.contains_key(name) {
                    errors.push(format!("default_backend: no backend named `{name}`"));
                }
                Some(name.clone())
            }
            (None, Some(_)) => Some("default".to_string()),
            (None, None) => None,
        };
        if default_backend.is_none() && models.is_empty() {
            errors.push(
                "no model backend configured: set backend_url (--backend-url, ANTWORT_BACKEND_URL) or backends + models"
                    .to_string(),
            );
        }
        if self.limits.max_body_bytes < 1024 {
            errors.push(format!(
                "limits.max_body_bytes: {} is too small (at least 1024)",
                self.limits.max_body_bytes
            ));
        }
        let auth = self.auth.validate(&mut errors);
        if !(self.shutdown_grace_period_secs.is_finite() && self.shutdown_grace_period_secs >= 0.0)
        {
            errors.push("shutdown_grace_period_secs: must be a non-negative number".to_string());
        }
        self.websocket.check(&mut errors);
        self.background.check(&mut errors);
        let store_url = self.store.url.as_str();
        if !(store_url == "memory"
            || store_url.starts_with("sqlite:")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "store.url: `{store_url}` is not `memory`, `sqlite://PATH` or `postgres://...`"
            ));
        }
        if self.store.max_connections == 0 {
            errors.push("store.max_connections: must be at least 1".to_string());
        }
        if !(self.store.acquire_timeout_secs.is_finite() && self.store.acquire_timeout_secs > 0.0) {
            errors.push(
                "store.acquire_timeout_secs: must be a positive number of seconds".to_string(),
            );
        }
        if !errors.is_empty() {
            return Err(antwort_common::config::ConfigError::Invalid(errors));
        }
        Ok(Config {
            listen: listen.expect("no errors means it parsed"),
            backends,
            models,
            default_backend,
            max_body_bytes: self.limits.max_body_bytes,
            auth,
            telemetry: self.telemetry,
            store: crate::store::StoreSettings {
                url: self.store.url,
                max_connections: self.store.max_connections,
                acquire_timeout: Duration::from_secs_f64(self.store.acquire_timeout_secs),
            },
            websocket: self.websocket,
            background: self.background,
            shutdown_grace_period: Duration::from_secs_f64(self.shutdown_grace_period_secs),
            sse_keep_alive: Duration::from_secs_f64(self.sse_keep_alive_secs),
            tools: self.tools,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_start_backend_url_serves_every_model() {
        let raw = RawConfig {
            backend_url: Some("http://127.0.0.1:9/v1".into()),
            auth: RawAuth::development(),
            ..RawConfig::default()
        };
        let config = raw.validate().expect("valid");
        assert_eq!(config.default_backend.as_deref(), Some("default"));
        assert_eq!(config.backends.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml = r#"
listen: "nowhere"
backends:
  vllm: { url: "ftp://x", kind: "tgi", timeouts: { idle_secs: 0 } }
models:
  - { name: m, backend: missing }
limits: { max_body_bytes: 10 }
"#;
        let raw: RawConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        let err = raw.validate().expect_err("invalid").to_string();
        for needle in [
            "listen:",
            "backends.vllm: url",
            "backends.vllm.kind",
            "backends.vllm.timeouts.idle_secs",
            "models[0].backend",
            "limits.max_body_bytes",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in: {err}");
        }
    }

    #[test]
    fn env_overrides_reach_the_tools_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.yaml");
        let yaml = "tools:\n  code_interpreter:\n    identity: {source: files, dir: /svid}\n    \
                    agent: {url: 'https://127.0.0.1:9', spiffe_id: 'spiffe://td/agent'}\n    \
                    agent_spiffe_ids: [{trust_domain: td, path_prefix: /}]\n";
        std::fs::write(&file, yaml).expect("write");
        let env = [
            ("ANTWORT_TOOLS__CODE_INTERPRETER__EXEC_TIMEOUT_MS", "3000"),
            ("ANTWORT_TOOLS__MAX_TURNS", "4"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let raw: RawConfig = antwort_common::config::load(Some(&file), env).expect("loads");
        let ci = raw.tools.code_interpreter.expect("code_interpreter");
        assert_eq!(ci.exec_timeout_ms, 3000);
        assert_eq!(raw.tools.max_turns, 4);
    }

    #[test]
    fn no_backend_at_all_is_an_error() {
        let err = RawConfig::default().validate().expect_err("invalid").to_string();
        assert!(err.contains("backend_url"), "{err}");
    }
}
