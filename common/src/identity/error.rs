//! The one error type of the identity library.

use std::path::PathBuf;

/// What can go wrong while loading an identity, building a TLS configuration or serving.
///
/// Handshake refusals are not errors of this type: they surface as TLS alerts to the peer and as a
/// `debug` log line on the server, because a refused peer is normal traffic, not a fault of ours.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is unusable (a malformed SPIFFE ID, an empty path, ...).
    #[error("invalid identity configuration: {0}")]
    Config(String),

    /// A certificate, key or bundle file (or its folder) could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The SVID or bundle content is not acceptable (not PEM, not an X.509-SVID, key mismatch).
    #[error("invalid SVID material: {0}")]
    Material(String),

    /// The SPIFFE Workload API source could not be created or closed.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),

    /// No SVID arrived within the allowed time.
    #[error("no SVID after {0:?}")]
    NotReady(std::time::Duration),

    /// rustls refused the configuration we built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),

    /// Accepting connections failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with the identity [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
