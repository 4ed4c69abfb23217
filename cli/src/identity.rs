//! Workload identity for the local stack: one development CA (kept in the data folder, so the
//! bundle survives restarts) minting fresh SVIDs for the gateway and the pool manager at every
//! start. The pool manager mints its agents' SVIDs from the same CA (`runtime.ca_dir`).

use std::path::{Path, PathBuf};

use antwort_common::identity::dev_ca::DevCa;

use crate::error::Result;

/// The SPIFFE IDs and the SVID folders of the stack.
pub struct Identities {
    ca: DevCa,
    pub trust_domain: String,
    pub ca_dir: PathBuf,
    pub gateway_id: String,
    pub gateway_svid: PathBuf,
    pub pool_manager_id: String,
    pub pool_manager_svid: PathBuf,
    /// The path below which the pool manager's local runtime names its sandboxes
    /// (`spiffe://<td>/ns/local-sandboxes/sa/<sandbox>`); the gateway accepts agents there only.
    pub agent_path_prefix: &'static str,
}

/// Loads or creates the CA in `dir/ca` and writes the SVIDs into `dir/{gateway,pool-manager}`.
pub fn mint(dir: &Path, trust_domain: &str) -> Result<Identities> {
    let ca_dir = dir.join("ca");
    let ca = DevCa::load_or_create(&ca_dir, trust_domain)?;
    let gateway_id = format!("spiffe://{trust_domain}/ns/antwort/sa/gateway");
    let pool_manager_id = format!("spiffe://{trust_domain}/ns/antwort/sa/pool-manager");
    let gateway_svid = dir.join("gateway");
    let pool_manager_svid = dir.join("pool-manager");
    ca.write_svid(&gateway_id, &gateway_svid)?;
    ca.write_svid(&pool_manager_id, &pool_manager_svid)?;
    Ok(Identities {
        ca,
        trust_domain: trust_domain.to_owned(),
        ca_dir,
        gateway_id,
        gateway_svid,
        pool_manager_id,
        pool_manager_svid,
        agent_path_prefix: "/ns/local-sandboxes/",
    })
}

/// SVIDs are minted for a day; renewing at half-life keeps a long-running stack valid (the
/// components re-read their SVID folders).
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

impl Identities {
    /// Writes fresh SVIDs over the old ones (a rotation for the file sources reading them).
    pub fn renew(&self) -> Result<()> {
        self.ca.write_svid(&self.gateway_id, &self.gateway_svid)?;
        self.ca.write_svid(&self.pool_manager_id, &self.pool_manager_svid)?;
        Ok(())
    }
}
