//! `antwort-pool-manager`: keeps pools of warm, hardened sandboxes (agents that passed a real
//! warm-up execution over mTLS) and hands them to the gateway through a claim API.
//!
//! # Layout
//!
//! - [`config`]: the YAML config (+ `ANTWORT_*` overrides): server, identity, claims, reconcile,
//!   runtime (`kubernetes` or `local` with its pools).
//! - [`server`]: startup and drain: identity -> runtime -> leadership -> listeners -> tasks.
//! - [`api`]: the HTTP edge: claim API (mTLS) and admin routes; errors -> envelope, once.
//! - [`claim`]: claim, renew, release, pool statuses, as conditional updates of sandbox marks.
//! - [`reconcile`]: the leader's loop: delete unusable -> recycle ended claims -> warm up / reset
//!   -> create what `minReady` lacks within `maxPods` -> publish status.
//! - [`state`]: pure classification of a sandbox (ready, claimed, expired, ...) and pool counts.
//! - [`agent`]: mTLS calls to agents (warm-up execution, reset), each agent authorized by its ID.
//! - [`leader`]: leader election with a `coordination.k8s.io/v1` Lease.
//! - [`manager`]: what all of the above share ([`Manager`]), plus claim/reconcile settings.
//! - [`runtime`]: the boundary: [`runtime::Runtime`], implemented by [`runtime::kube`] (pods of
//!   `SandboxPool`s) and [`runtime::local`] (agent processes on loopback).
//! - [`crd`]: the `SandboxPool` resource and its generated CRD manifest (`deploy/crd/`).
//! - [`pod`]: a pool's hardened pod, and marks stored as pod labels/annotations.
//! - [`sandbox_identity`]: how a pod's agent gets its SVID (SPIRE, cert-manager CSI, a Secret).
//! - [`metrics`]: Prometheus metrics. [`error`]: the crate's one error type.
//!
//! Data flows: gateway -> [`api`] -> [`claim`] -> [`runtime`] (conditional update); runtime
//! events -> [`reconcile`] -> [`agent`] / [`runtime`]. **Invariant:** no state that matters lives
//! in memory: claims and readiness are marks on the sandboxes, so every replica serves claims and a
//! restarted manager adopts what it finds. Only the leader creates, warms, resets or deletes
//! (a release with the `destroy` policy deletes its sandbox from whichever replica serves it).

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod claim;
pub mod config;
pub mod crd;
pub mod error;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod pod;
pub mod reconcile;
pub mod runtime;
pub mod sandbox_identity;
pub mod server;
pub mod state;

pub use config::Config;
pub use crd::{SandboxPool, SandboxPoolSpec, SandboxPoolStatus};
pub use error::{Error, Result};
pub use manager::Manager;
