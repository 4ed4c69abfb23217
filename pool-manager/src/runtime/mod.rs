//! The runtime boundary: where sandboxes live. Two implementations: [`kube::KubeRuntime`] (pods in
//! a Kubernetes cluster, the production runtime) and [`local::LocalRuntime`] (agent processes on
//! loopback, the one-machine stack and most tests).
//!
//! Everything above this boundary (claims, reconcile, warm-up) works on [`Pool`]s and
//! [`Sandbox`]es and writes only [`Marks`], always with [`Runtime::update_marks`], a conditional
//! update on the sandbox's version: two manager replicas can never both win the same sandbox.

pub mod kube;
pub mod local;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::crd::{SandboxPool, SandboxPoolSpec, SandboxPoolStatus};
use crate::error::Result;

/// A pool as the runtime declares it (a `SandboxPool` resource, or an entry of the local config).
#[derive(Debug, Clone)]
pub struct Pool {
    /// The name callers claim by.
    pub name: String,
    pub spec: SandboxPoolSpec,
    /// The resource behind it, on Kubernetes (owner references, generation, previous status).
    pub resource: Option<Arc<SandboxPool>>,
}

impl Pool {
    /// The status last written for this pool, if any.
    pub fn previous_status(&self) -> Option<&SandboxPoolStatus> {
        self.resource.as_ref().and_then(|resource| resource.status.as_ref())
    }
}

/// One sandbox (a pod, or a local agent process) as the runtime sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub name: String,
    pub pool: String,
    /// Opaque version for conditional updates (a resourceVersion, a counter).
    pub version: String,
    /// Unix seconds.
    pub created_at: u64,
    pub phase: Phase,
    pub marks: Marks,
}

/// What the runtime says about the sandbox's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not running yet (scheduling, pulling, spawning).
    Pending,
    /// Running and reachable: where the agent listens and who it says it is.
    Running { endpoint: String, spiffe_id: String },
    /// Exited or crashed; never coming back.
    Failed(String),
    /// Being deleted.
    Terminating,
}

/// What the manager writes on a sandbox (labels and annotations on a pod): the only state there
/// is, so any replica, or a restarted manager, reads it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub lifecycle: Lifecycle,
    /// Unix milliseconds when the sandbox passed its (last) warm-up.
    pub ready_at: Option<u64>,
    /// Unix seconds when the sandbox was released for a reset.
    pub resetting_since: Option<u64>,
    pub claim: Option<ClaimMarks>,
}

/// Where a sandbox is in its life, as the manager decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lifecycle {
    /// Created; its agent has not answered a warm-up execution yet.
    #[default]
    Starting,
    /// Warmed up and unclaimed.
    Ready,
    /// Handed out; [`Marks::claim`] says to whom.
    Claimed,
    /// Released under the `reset` policy: to be cleaned, warmed up again and returned.
    Resetting,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Ready => "ready",
            Lifecycle::Claimed => "claimed",
            Lifecycle::Resetting => "resetting",
        }
    }

    pub fn parse(value: &str) -> Option<Lifecycle> {
        Some(match value {
            "starting" | "warm" => Lifecycle::Starting,
            "ready" => Lifecycle::Ready,
            "claimed" => Lifecycle::Claimed,
            "resetting" => Lifecycle::Resetting,
            _ => return None,
        })
    }
}

/// Who holds a claimed sandbox, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMarks {
    pub id: String,
    pub session_key: String,
    /// Unix milliseconds; orders racing claims of one session key (the earliest wins).
    pub claimed_at_ms: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds of the claim or its last renew; the pool's idle timeout counts from here.
    pub last_used: u64,
}

/// Where sandboxes live. Implementations must make [`Runtime::update_marks`] atomic.
pub trait Runtime: Send + Sync + 'static {
    /// Every pool this manager serves.
    fn pools(&self) -> impl Future<Output = Result<Vec<Pool>>> + Send;

    /// One pool by name, `None` when it does not exist.
    fn pool(&self, name: &str) -> impl Future<Output = Result<Option<Pool>>> + Send;

    /// The pool's sandboxes, read fresh (never a stale cache: claims decide on it).
    fn sandboxes(&self, pool: &Pool) -> impl Future<Output = Result<Vec<Sandbox>>> + Send;

    /// The sandbox holding claim `claim_id`, with its pool.
    fn find_claim(
        &self,
        claim_id: &str,
    ) -> impl Future<Output = Result<Option<(Pool, Sandbox)>>> + Send;

    /// Starts one new sandbox for `pool` (in [`Lifecycle::Starting`]).
    fn create(&self, pool: &Pool) -> impl Future<Output = Result<()>> + Send;

    /// Deletes a sandbox; one already gone is not an error.
    fn delete(&self, pool: &Pool, sandbox: &Sandbox) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the sandbox's marks if its version is still `sandbox.version`: the updated sandbox,
    /// or `None` when someone else changed (or deleted) it first.
    fn update_marks(
        &self,
        pool: &Pool,
        sandbox: &Sandbox,
        marks: &Marks,
    ) -> impl Future<Output = Result<Option<Sandbox>>> + Send;

    /// Publishes the pool's status where operators look (the status subresource).
    fn write_status(
        &self,
        pool: &Pool,
        status: SandboxPoolStatus,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Beats `pulse` whenever sandboxes change (pod events, process exits), so the reconcile loop
    /// and waiting claims look again without polling hard. Runs until dropped.
    fn watch(&self, pulse: Pulse) -> impl Future<Output = ()> + Send;

    /// Stops what this runtime started itself (local agent processes); pods stay.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// A counter beaten when something changed; waiters subscribe and wake on the next beat.
#[derive(Debug, Clone)]
pub struct Pulse(Arc<watch::Sender<u64>>);

impl Pulse {
    pub fn new() -> Pulse {
        Pulse(Arc::new(watch::channel(0).0))
    }

    pub fn beat(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse::new()
    }
}
