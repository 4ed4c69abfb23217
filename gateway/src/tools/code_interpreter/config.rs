//! The `tools.code_interpreter` config section.

use std::time::Duration;

use antwort_common::identity::{IdentityConfig, PeerPolicy};
use serde::Deserialize;

use crate::openresponses::code_interpreter::Naming;

/// Where sandboxes come from and the limits of one execution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeInterpreterConfig {
    /// The gateway's own SVID source for the pool manager and the agents.
    pub identity: IdentityConfig,
    /// The pool manager to claim sandboxes from (production). Exactly one of `pool_manager`
    /// and `agent` is set.
    #[serde(default)]
    pub pool_manager: Option<PoolManagerConfig>,
    /// One agent used directly, every container a session on it: for a developer's machine
    /// or a test without a pool manager.
    #[serde(default)]
    pub agent: Option<StaticAgentConfig>,
    /// SPIFFE IDs an agent may present (exact, or trust domain + path prefix). The claim names
    /// the one agent to expect; a claim naming an ID outside this policy is refused.
    pub agent_spiffe_ids: PeerPolicy,
    /// The pool to claim from.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Pools by the `memory_limit` a request or container asks for (`1g`, `4g`, `16g`, `64g`),
    /// e.g. `{4g: python-4g}`. Empty: `pool` serves every memory_limit. Otherwise a memory_limit
    /// missing here is refused (400), and a request without one gets `pool`.
    #[serde(default)]
    pub pools_by_memory_limit: std::collections::BTreeMap<String, String>,
    /// Wall-clock limit of one execution (sent to the agent, which stops the code).
    #[serde(default = "default_exec_timeout_ms")]
    pub exec_timeout_ms: u64,
    /// Limit of the claim / session requests (not executions).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `logs` beyond this many bytes are cut (`output_truncated`).
    #[serde(default = "default_max_logs_bytes")]
    pub max_logs_bytes: usize,
    /// Images beyond this many per call are dropped (`output_truncated`).
    #[serde(default = "default_max_images")]
    pub max_images: usize,
    /// A container unused this long expires and its claim is released (OpenAI: 20 minutes).
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// How often the claim of a container the gateway keeps is renewed at the pool manager,
    /// used or not, in seconds. Keep it well below the pools' `idleTimeoutSeconds`, which then
    /// only ends sandboxes whose gateway went away.
    #[serde(default = "default_claim_renew_secs")]
    pub claim_renew_secs: u64,
    /// Largest file the containers API accepts in one upload (`POST /v1/containers/{id}/files`);
    /// bigger ones get 413. The agent enforces its own limit too.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// OpenAI type names (default) or `antwort:`-prefixed ones (strict OpenResponses).
    #[serde(default)]
    pub naming: Naming,
    /// Emit the `response.antwort:code_interpreter_call_output.delta` extension event.
    #[serde(default)]
    pub stream_output: bool,
}

/// One sandbox agent, reached without a pool manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAgentConfig {
    /// The agent's API, `https://...`.
    pub url: String,
    /// The SPIFFE ID the agent must present (also checked against `agent_spiffe_ids`).
    pub spiffe_id: String,
}

/// How to reach the pool manager's claim API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolManagerConfig {
    /// Base URL, `https://...`.
    pub url: String,
    /// The SPIFFE ID the pool manager must present.
    pub spiffe_id: String,
}

fn default_pool() -> String {
    "python".into()
}
fn default_exec_timeout_ms() -> u64 {
    60_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_logs_bytes() -> usize {
    64 * 1024
}
fn default_max_images() -> usize {
    8
}
fn default_claim_renew_secs() -> u64 {
    60
}
fn default_idle_timeout_secs() -> u64 {
    20 * 60
}
fn default_max_upload_bytes() -> u64 {
    100 << 20
}

/// The limits the executor needs, without the connection settings (tests build these directly).
#[derive(Debug, Clone)]
pub struct Limits {
    pub exec_timeout: Duration,
    pub request_timeout: Duration,
    pub max_logs_bytes: usize,
    pub max_images: usize,
    pub idle_timeout: Duration,
    pub claim_renew: Duration,
    pub max_upload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            exec_timeout: Duration::from_millis(default_exec_timeout_ms()),
            request_timeout: Duration::from_millis(default_request_timeout_ms()),
            max_logs_bytes: default_max_logs_bytes(),
            max_images: default_max_images(),
            idle_timeout: Duration::from_secs(default_idle_timeout_secs()),
            claim_renew: Duration::from_secs(default_claim_renew_secs()),
            max_upload_bytes: default_max_upload_bytes(),
        }
    }
}

impl CodeInterpreterConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            exec_timeout: Duration::from_millis(self.exec_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_logs_bytes: self.max_logs_bytes,
            max_images: self.max_images,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            claim_renew: Duration::from_secs(self.claim_renew_secs),
            max_upload_bytes: self.max_upload_bytes,
        }
    }

    /// Field-path errors for values serde accepts but the executor cannot use.
    pub fn validate(&self) -> Result<(), String> {
        let p = "tools.code_interpreter";
        let (section, url, spiffe_id) = match (&self.pool_manager, &self.agent) {
            (Some(pm), None) => ("pool_manager", &pm.url, &pm.spiffe_id),
            (None, Some(agent)) => ("agent", &agent.url, &agent.spiffe_id),
            _ => return Err(format!("`{p}`: set exactly one of `pool_manager` and `agent`")),
        };
        if !url.starts_with("https://") {
            return Err(format!("`{p}.{section}.url`: must be an https:// URL (mTLS)"));
        }
        antwort_common::identity::SpiffeId::new(spiffe_id)
            .map_err(|e| format!("`{p}.{section}.spiffe_id`: {e}"))?;
        if self.agent_spiffe_ids.is_empty() {
            return Err(format!("`{p}.agent_spiffe_ids`: name at least one rule"));
        }
        if self.pool.is_empty() {
            return Err(format!("`{p}.pool`: must not be empty"));
        }
        for (limit, pool) in &self.pools_by_memory_limit {
            if !crate::openresponses::code_interpreter::MEMORY_LIMITS.contains(&limit.as_str()) {
                return Err(format!(
                    "`{p}.pools_by_memory_limit.{limit}`: not a memory_limit clients can send ({})",
                    crate::openresponses::code_interpreter::MEMORY_LIMITS.join(", ")
                ));
            }
            if pool.is_empty() {
                return Err(format!("`{p}.pools_by_memory_limit.{limit}`: name a pool"));
            }
        }
        if self.agent.is_some() && !self.pools_by_memory_limit.is_empty() {
            return Err(format!(
                "`{p}.pools_by_memory_limit`: needs `pool_manager` (one static `agent` has no pools)"
            ));
        }
        for (name, value) in [
            ("exec_timeout_ms", self.exec_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("claim_renew_secs", self.claim_renew_secs),
            ("max_logs_bytes", self.max_logs_bytes as u64),
            ("max_upload_bytes", self.max_upload_bytes),
        ] {
            if value == 0 {
                return Err(format!("`{p}.{name}`: must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> CodeInterpreterConfig {
        let yaml = format!(
            "identity: {{source: files, dir: /svid}}\n\
             pool_manager: {{url: 'https://pm:8443', spiffe_id: 'spiffe://td/pm'}}\n\
             agent_spiffe_ids: [{{trust_domain: td, path_prefix: /}}]\n{extra}"
        );
        serde_yaml_ng::from_str(&yaml).expect("parses")
    }

    #[test]
    fn pools_by_memory_limit_are_checked() {
        config("pools_by_memory_limit: {1g: python, 4g: python-4g}\n").validate().expect("valid");
        let err = config("pools_by_memory_limit: {2g: python}\n").validate().expect_err("2g");
        assert!(
            err.contains("pools_by_memory_limit.2g") && err.contains("1g, 4g, 16g, 64g"),
            "{err}"
        );
        let err = config("pools_by_memory_limit: {4g: ''}\n").validate().expect_err("empty pool");
        assert!(err.contains("pools_by_memory_limit.4g`: name a pool"), "{err}");
        let mut static_agent = config("pools_by_memory_limit: {4g: big}\n");
        static_agent.pool_manager = None;
        static_agent.agent = Some(StaticAgentConfig {
            url: "https://agent:9443".into(),
            spiffe_id: "spiffe://td/agent".into(),
        });
        let err = static_agent.validate().expect_err("no pools without a pool manager");
        assert!(err.contains("needs `pool_manager`"), "{err}");
    }
}
