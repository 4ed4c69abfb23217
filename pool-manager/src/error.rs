//! The crate's one error type.

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
