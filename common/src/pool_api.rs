//! Wire types of the pool manager's claim API, shared by the pool manager (server) and the gateway
//! (its only allowed caller). HTTPS with SPIFFE mTLS; every error is an
//! [`crate::error::ErrorEnvelope`].
//!
//! Routes (JSON):
//! - `POST   /v1/claims` [`ClaimRequest`] -> 200 [`Claim`]. The same `session_key` while its claim
//!   is live returns that claim again (`reused: true`). Errors: 404 `pool_not_found`,
//!   429 `pool_exhausted` (drained and at `maxPods`; `Retry-After` in seconds), 503
//!   `pool_starting` (no pod became ready within the manager's claim deadline; `Retry-After`),
//!   400 `invalid_request`.
//! - `POST   /v1/claims/{claim_id}/renew` [`RenewRequest`] (body optional) -> 200 [`Claim`];
//!   404 `claim_not_found` once the claim expired or was released.
//! - `DELETE /v1/claims/{claim_id}` -> 204: the sandbox is destroyed or reset, as its pool's
//!   recycle policy says; 404 `claim_not_found`.
//! - `GET    /v1/pools` -> [`PoolList`].
//!
//! Error codes are in [`codes`].

use serde::{Deserialize, Serialize};

/// Path of the claim routes.
pub const CLAIMS_PATH: &str = "/v1/claims";
/// Path of the pool listing.
pub const POOLS_PATH: &str = "/v1/pools";

/// The `code` values of the claim API's error envelopes.
pub mod codes {
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const POOL_NOT_FOUND: &str = "pool_not_found";
    pub const POOL_EXHAUSTED: &str = "pool_exhausted";
    pub const POOL_STARTING: &str = "pool_starting";
    pub const CLAIM_NOT_FOUND: &str = "claim_not_found";
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    pub const INTERNAL: &str = "internal_error";
}

/// `POST /v1/claims`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The pool's name (a `SandboxPool` in Kubernetes, a `pools[].name` locally).
    pub pool: String,
    /// The caller's key for the sandbox (the gateway's container or response chain): while a
    /// claim with this key is live in this pool, claiming again returns it.
    pub session_key: String,
    /// How long the claim lives without a renew, in seconds; the manager's default when absent,
    /// capped by its maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A live claim on one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    /// Opaque; names the claim in renew and release.
    pub claim_id: String,
    pub pool: String,
    /// Base URL of the sandbox agent's mTLS API, e.g. `https://10.1.2.3:8443`.
    pub agent_endpoint: String,
    /// The SPIFFE ID the agent presents: authorize the agent's server certificate against it.
    pub agent_spiffe_id: String,
    /// When the claim ends unless renewed, in Unix seconds.
    pub expires_at: u64,
    /// True when an existing claim with the same `session_key` was returned.
    #[serde(default)]
    pub reused: bool,
}

/// `POST /v1/claims/{claim_id}/renew`. Every field is optional; an empty body is `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The new lifetime from now, in seconds; the manager's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// `GET /v1/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolList {
    pub pools: Vec<PoolStatus>,
}

/// One pool's live status: pods by state, as the manager counts them now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolStatus {
    pub name: String,
    /// `python`, `file-search` or `web-search`.
    pub kind: String,
    pub min_ready: u32,
    pub max_pods: u32,
    /// Warm, warmed up, claimable now.
    pub ready: u32,
    pub claimed: u32,
    /// Created, not (yet) through their warm-up; includes pods being reset.
    pub starting: u32,
    /// Failed, expired or being deleted.
    pub failed: u32,
}
