//! The config files `antwort up` writes into the data folder and starts the components with:
//! every listener on loopback (port 0 unless told), every mTLS peer named by SPIFFE ID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::identity::Identities;

/// The pool `code_interpreter` claims from.
pub const POOL: &str = "python";

/// What the pool manager needs besides the identities.
pub struct PoolManagerSettings<'a> {
    pub work_dir: &'a Path,
    pub agent_binary: &'a Path,
    pub min_ready: u32,
    pub max_pods: u32,
    pub sandbox_uid_base: u32,
}

/// The pool manager on its local runtime: claim API (mTLS, the gateway only) and admin
/// listener on loopback ports the OS picks, its SVID from our CA, agents minted by the same CA.
pub fn pool_manager(ids: &Identities, settings: &PoolManagerSettings<'_>) -> Value {
    json!({
        "server": {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "allowed_callers": [ids.gateway_id],
        },
        "identity": {"source": "files", "dir": ids.pool_manager_svid},
        "runtime": {
            "kind": "local",
            "trust_domain": ids.trust_domain,
            "ca_dir": ids.ca_dir,
            "work_dir": settings.work_dir,
            "agent_binary": settings.agent_binary,
            "sandbox_uid_base": settings.sandbox_uid_base,
            "pools": [{
                "name": POOL,
                "kind": "python",
                "minReady": settings.min_ready,
                "maxPods": settings.max_pods,
                "allowedCallers": [ids.gateway_id],
            }],
        },
    })
}

/// What the gateway needs besides the identities.
pub struct GatewaySettings<'a> {
    pub listen: SocketAddr,
    pub backend_url: &'a str,
    pub store_url: &'a str,
    /// `https://ADDR` of the pool manager's claim API.
    pub pool_manager_url: &'a str,
    /// No `ANTWORT_AUTH__*` given: say `auth.mode: none` (the gateway refuses to start
    /// without authentication unless told so).
    pub auth_off: bool,
}

/// The gateway with the embedded store and `code_interpreter` claiming from the pool manager,
/// accepting only agents under the local runtime's SPIFFE path.
pub fn gateway(ids: &Identities, settings: &GatewaySettings<'_>) -> Value {
    let mut config = json!({
        "listen": settings.listen.to_string(),
        "backend_url": settings.backend_url,
        "store": {"url": settings.store_url},
        "tools": {
            "code_interpreter": {
                "identity": {"source": "files", "dir": ids.gateway_svid},
                "pool_manager": {
                    "url": settings.pool_manager_url,
                    "spiffe_id": ids.pool_manager_id,
                },
                "agent_spiffe_ids": [{
                    "trust_domain": ids.trust_domain,
                    "path_prefix": ids.agent_path_prefix,
                }],
                "pool": POOL,
            },
        },
    });
    if settings.auth_off {
        config["auth"] = json!({"mode": "none"});
    }
    config
}

/// Writes `config` as YAML to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, config: &Value) -> Result<PathBuf> {
    let path = dir.join(name);
    let yaml = serde_yaml_ng::to_string(config).expect("a JSON value always serializes as YAML");
    std::fs::write(&path, yaml).map_err(|source| Error::File {
        what: "cannot write",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
