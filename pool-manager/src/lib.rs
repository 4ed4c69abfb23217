//! `antwort-pool-manager`: keeps pools of warm, hardened sandbox pods, declared as `SandboxPool`
//! custom resources, on Kubernetes.
//!
//! # Layout
//!
//! - [`crd`]: the `SandboxPool` resource (spec the operator writes, status the manager writes) and
//!   the generated CRD manifest (`deploy/crd/sandboxpool.yaml`).
//! - [`pod`]: one sandbox pod: rendered hardened from its pool, classified from what the cluster
//!   says about it (labels, annotations, status), plus the warm-up hook.
//! - [`reconcile`]: the kube-rs controller: pool and pod events -> list the pool's pods -> delete
//!   unusable ones -> create what `minReady` lacks within `maxPods` -> write the status.
//! - [`error`]: the crate's one error type.
//!
//! Data flows one way: API server events -> [`reconcile`] -> [`pod`] -> API server writes. No
//! state lives in memory across passes, so a restarted manager adopts the pods it finds.
//!
//! Not here yet: the claim API (mTLS, used by the gateway), warm-up executions over mTLS (see
//! [`pod::warmup_passed`]), idle-timeout and recycle handling of claimed pods, leader election,
//! and the local-process runtime.

#![forbid(unsafe_code)]

pub mod crd;
pub mod error;
pub mod pod;
pub mod reconcile;

pub use crd::{SandboxPool, SandboxPoolSpec, SandboxPoolStatus};
pub use error::{Error, Result};
pub use reconcile::{ManagerConfig, run};
