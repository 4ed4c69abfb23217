//! The crate's one error type, mapped to HTTP (the common error envelope) once, in [`crate::api`].

/// Why the manager could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed; the reconcile is retried.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The `SandboxPool` CRD is not installed (or not readable) in the cluster.
    #[error("the SandboxPool CRD is not queryable (install deploy/crd/sandboxpool.yaml): {0}")]
    CrdNotInstalled(#[source] kube::Error),
    /// The kubeconfig or in-cluster configuration could not be loaded.
    #[error("kubernetes client configuration: {0}")]
    ClientConfig(String),
    /// The configuration is unusable; every problem, each naming its field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Workload identity (SVIDs, mTLS) failed.
    #[error("identity: {0}")]
    Identity(#[from] antwort_common::identity::Error),
    /// A local sandbox process could not be started or stopped.
    #[error("local sandbox: {0}")]
    Local(String),
    /// A sandbox's agent did not answer as it should (warm-up, reset).
    #[error("agent {endpoint}: {message}")]
    Agent { endpoint: String, message: String },
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such pool (404).
    #[error("no pool named {0:?}")]
    PoolNotFound(String),
    /// No live claim with this id (404).
    #[error("no live claim {0:?}")]
    ClaimNotFound(String),
    /// The pool has no ready sandbox and is at `maxPods` (429).
    #[error("pool {0:?} is drained and at maxPods")]
    PoolExhausted(String),
    /// No sandbox became ready within the claim deadline (503).
    #[error("pool {0:?} had no ready sandbox within the claim deadline")]
    PoolStarting(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Something that should not happen (500).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The label of the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) | Error::CrdNotInstalled(_) | Error::ClientConfig(_) => "kubernetes",
            Error::Config(_) => "config",
            Error::Identity(_) => "identity",
            Error::Local(_) | Error::Io(_) => "local",
            Error::Agent { .. } => "agent",
            Error::BadRequest(_) => "bad_request",
            Error::PoolNotFound(_) => "pool_not_found",
            Error::ClaimNotFound(_) => "claim_not_found",
            Error::PoolExhausted(_) => "pool_exhausted",
            Error::PoolStarting(_) => "pool_starting",
            Error::Internal(_) => "internal",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
