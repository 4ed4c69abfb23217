//! The manager's configuration: one YAML file plus `ANTWORT_*` overrides
//! (`ANTWORT_CLAIMS__WAIT_MS=5000`), loaded by `antwort_common::config`, then validated with every
//! problem named by its field path.
//!
//! ```yaml
//! server:
//!   listen: 0.0.0.0:8443          # the claim API (mTLS)
//!   admin_listen: 0.0.0.0:9090    # /healthz /readyz /metrics (plain HTTP)
//!   allowed_callers: [spiffe://antwort.local/ns/antwort/sa/gateway]
//! identity: { source: files, dir: /var/run/secrets/spiffe.io }   # optional with `kind: local`
//! claims: { wait_ms: 10000, default_ttl_secs: 600, max_ttl_secs: 3600, retry_after_secs: 2 }
//! reconcile: { interval_ms: 2000, warm_up_deadline_ms: 180000, reset_deadline_ms: 60000 }
//! runtime:
//!   kind: local                   # or `kubernetes`: namespace, agent_port, trust_domain,
//!                                 # service_account, sandbox_identity, lease_name, lease_duration_secs
//!   trust_domain: antwort.local
//!   ca_dir: /var/lib/antwort/ca
//!   pools:
//!     - name: python
//!       kind: python
//!       minReady: 2
//!       maxPods: 8
//!       recyclePolicy: reset
//!       allowedCallers: [spiffe://antwort.local/ns/antwort/sa/gateway]
//! ```

use std::net::SocketAddr;
use std::path::Path;

use antwort_common::identity::IdentityConfig;
use serde::{Deserialize, Serialize};

use crate::manager::{ClaimSettings, ReconcileSettings};
use crate::runtime::kube::KubeConfig;
use crate::runtime::local::LocalConfig;

/// The whole configuration tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Where our SVID comes from. Optional with the local runtime: the manager then mints its own
    /// (`spiffe://<trust_domain>/ns/local/sa/pool-manager`) from the development CA.
    #[serde(serialize_with = "serialize_as_null")]
    pub identity: Option<IdentityConfig>,
    pub claims: ClaimSettings,
    pub reconcile: ReconcileSettings,
    pub runtime: RuntimeConfig,
}

/// Listeners, callers, shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The claim API (mTLS).
    pub listen: SocketAddr,
    /// Plain HTTP with `/healthz`, `/readyz`, `/metrics` only (probes and Prometheus have no SVID).
    pub admin_listen: SocketAddr,
    /// SPIFFE IDs allowed to call the claim API (the gateway); nobody else completes a handshake.
    pub allowed_callers: Vec<String>,
    /// How long in-flight requests may take after SIGTERM, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// How long to wait for the first SVID at start, in milliseconds.
    pub identity_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8443".parse().expect("a static address"),
            admin_listen: "0.0.0.0:9090".parse().expect("a static address"),
            allowed_callers: Vec::new(),
            shutdown_grace_ms: 10_000,
            identity_timeout_ms: 30_000,
        }
    }
}

/// Where sandboxes live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RuntimeConfig {
    /// Pods of `SandboxPool`s in a cluster.
    Kubernetes(KubeConfig),
    /// Agent processes on this machine.
    Local(LocalConfig),
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig::Kubernetes(KubeConfig::default())
    }
}

impl Config {
    /// Reads `file` (if any) and `env` overrides, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> crate::Result<Config> {
        let config: Config = antwort_common::config::load(file, env)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// `ANTWORT_*` variables of `env` the loader ignores because their first segment names no
    /// section of this config (meant for another binary, or misspelt): worth a warning.
    pub fn ignored_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let known = serde_yaml_ng::to_value(Config::default()).expect("the default serializes");
        let mut ignored: Vec<String> = env
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                name.strip_prefix("ANTWORT_").is_some_and(|rest| {
                    let section = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                    known.get(section.as_str()).is_none()
                })
            })
            .collect();
        ignored.sort();
        ignored
    }

    /// Every problem, each naming its field.
    pub fn validate(&self) -> crate::Result<()> {
        let mut problems = Vec::new();
        if self.server.allowed_callers.is_empty() {
            problems
                .push("server.allowed_callers: name at least one caller (the gateway)".to_owned());
        }
        for (index, id) in self.server.allowed_callers.iter().enumerate() {
            if antwort_common::identity::SpiffeId::new(id).is_err() {
                problems
                    .push(format!("server.allowed_callers[{index}]: {id:?} is not a SPIFFE ID"));
            }
        }
        let claims = &self.claims;
        for (field, value) in [
            ("claims.default_ttl_secs", claims.default_ttl_secs),
            ("claims.max_ttl_secs", claims.max_ttl_secs),
            ("claims.max_session_key_bytes", claims.max_session_key_bytes as u64),
            ("claims.max_body_bytes", claims.max_body_bytes as u64),
            ("reconcile.interval_ms", self.reconcile.interval_ms),
            ("reconcile.warm_up_deadline_ms", self.reconcile.warm_up_deadline_ms),
            ("reconcile.reset_deadline_ms", self.reconcile.reset_deadline_ms),
            ("reconcile.agent_timeout_ms", self.reconcile.agent_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("{field}: must be at least 1"));
            }
        }
        if claims.default_ttl_secs > claims.max_ttl_secs {
            problems.push("claims.default_ttl_secs: exceeds claims.max_ttl_secs".to_owned());
        }
        match &self.runtime {
            RuntimeConfig::Local(local) => problems.extend(local.problems()),
            RuntimeConfig::Kubernetes(kube) => {
                if self.identity.is_none() {
                    problems.push("identity: required with runtime.kind kubernetes".to_owned());
                }
                if kube.namespace.is_empty() {
                    problems.push("runtime.namespace: must not be empty".to_owned());
                }
                if antwort_common::identity::TrustDomain::new(&kube.trust_domain).is_err() {
                    problems.push(format!(
                        "runtime.trust_domain: {:?} is not a trust domain",
                        kube.trust_domain
                    ));
                }
                if kube.lease_duration_secs == 0 {
                    problems.push("runtime.lease_duration_secs: must be at least 1".to_owned());
                }
                if kube.lease_name.is_empty() {
                    problems.push("runtime.lease_name: must not be empty".to_owned());
                }
                if kube.service_account.is_empty() {
                    problems.push("runtime.service_account: must not be empty".to_owned());
                }
                match &kube.sandbox_identity {
                    Some(identity) => {
                        problems.extend(identity.problems("runtime.sandbox_identity"))
                    }
                    None => problems.push(
                        "runtime.sandbox_identity: required with runtime.kind kubernetes \
                         (mode spire, csi or files: how sandbox pods get their SVID)"
                            .to_owned(),
                    ),
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(crate::Error::Config(problems.join("; "))) }
    }
}

/// The identity section is only read, never written back; `null` keeps `identity` a known
/// top-level key for `ANTWORT_IDENTITY__*` overrides.
fn serialize_as_null<T, S: serde::Serializer>(_: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> crate::Result<Config> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("manager.yaml");
        std::fs::write(&path, yaml).expect("write the config");
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn local_pools_take_the_crd_spec_fields() {
        let config = load(
            "server:\n  allowed_callers: [spiffe://td/gw]\n\
             runtime:\n  kind: local\n  trust_domain: td\n  pools:\n\
             \x20   - name: python\n      kind: python\n      minReady: 2\n      maxPods: 3\n      recyclePolicy: reset\n",
            &[("ANTWORT_CLAIMS__WAIT_MS", "1234")],
        )
        .expect("a valid config");
        assert_eq!(config.claims.wait_ms, 1234);
        let RuntimeConfig::Local(local) = &config.runtime else { panic!("local: {config:?}") };
        assert_eq!(local.pools[0].name, "python");
        assert_eq!(local.pools[0].spec.min_ready, 2);
        assert_eq!(local.pools[0].spec.recycle_policy, crate::crd::RecyclePolicy::Reset);
        assert_eq!(local.pools[0].spec.idle_timeout_seconds, 600, "defaults as in the CRD");
    }

    /// The chart configures the manager with environment variables only.
    #[test]
    fn kubernetes_runtime_from_the_environment() {
        let env = [
            ("ANTWORT_SERVER__ALLOWED_CALLERS", r#"["spiffe://td/ns/a/sa/gateway"]"#),
            ("ANTWORT_IDENTITY__SOURCE", "files"),
            ("ANTWORT_IDENTITY__DIR", "/var/run/secrets/spiffe.io"),
            ("ANTWORT_RUNTIME__KIND", "kubernetes"),
            ("ANTWORT_RUNTIME__NAMESPACE", "a-sandboxes"),
            ("ANTWORT_RUNTIME__TRUST_DOMAIN", "td"),
            ("ANTWORT_RUNTIME__SERVICE_ACCOUNT", "a-sandbox"),
            ("ANTWORT_RUNTIME__SANDBOX_IDENTITY__MODE", "files"),
            ("ANTWORT_RUNTIME__SANDBOX_IDENTITY__SECRET_NAME", "a-sandbox-svid"),
        ];
        let config = load("", &env).expect("a valid config");
        let RuntimeConfig::Kubernetes(kube) = &config.runtime else { panic!("{config:?}") };
        assert_eq!(kube.service_account, "a-sandbox");
        assert_eq!(
            kube.sandbox_identity,
            Some(crate::sandbox_identity::SandboxIdentity::Files {
                secret_name: "a-sandbox-svid".to_owned()
            })
        );
        let pairs = |vars: &[(&str, &str)]| -> Vec<(String, String)> {
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(Config::ignored_env(pairs(&env)).is_empty());
        assert_eq!(
            Config::ignored_env(pairs(&[("ANTWORT_POOL_NAMESPACE", "x"), ("HOME", "/")])),
            ["ANTWORT_POOL_NAMESPACE"]
        );
        let error = load("", &env[..7]).expect_err("no sandbox identity").to_string();
        assert!(error.contains("runtime.sandbox_identity: required"), "{error}");
        let mut typo = env.to_vec();
        typo[8] = ("ANTWORT_RUNTIME__SANDBOX_IDENTITY__SECRET", "x");
        let error = load("", &typo).expect_err("unknown field").to_string();
        assert!(error.contains("unknown field `secret`"), "{error}");
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let error = load(
            "claims:\n  default_ttl_secs: 0\n\
             runtime:\n  kind: local\n  pools:\n    - name: Py\n      kind: python\n      minReady: 5\n      maxPods: 1\n",
            &[],
        )
        .expect_err("invalid")
        .to_string();
        for field in [
            "server.allowed_callers",
            "claims.default_ttl_secs",
            "runtime.pools[0].name",
            "runtime.pools[0].minReady",
        ] {
            assert!(error.contains(field), "{field} in {error}");
        }
        let error = load("runtime:\n  kind: kubernetes\n  namespce: x\n", &[]).expect_err("typo");
        assert!(error.to_string().contains("namespce"), "{error}");
        let error =
            load("server:\n  allowed_callers: [spiffe://td/gw]\n", &[]).expect_err("no identity");
        assert!(error.to_string().contains("identity: required"), "{error}");
    }
}
