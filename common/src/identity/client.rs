//! An mTLS `reqwest::Client`: presents our SVID and talks only to servers whose SPIFFE ID the
//! policy allows. The SVID and bundle are looked up per handshake, so rotation needs no rebuild.

use super::error::Result;
use super::policy::PeerPolicy;
use super::source::SharedSource;
use super::tls::client_config;

/// Idle pooled connections are dropped after this, before the server's
/// [`super::server::DEFAULT_HEADER_READ_TIMEOUT`] closes them: reusing a connection the server is
/// closing at that moment would fail a request.
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A `reqwest::ClientBuilder` with our mTLS configuration and `https_only` set (an `http://`
/// URL would bypass mTLS, so it fails instead). Add timeouts and pool settings, then `build()`.
///
/// The server is authenticated by its SPIFFE ID, not by the host name in the URL: dial
/// `https://10.1.2.3:8443/` or `https://agent-7.sandboxes.svc:8443/` alike.
pub fn mtls_client_builder(
    source: SharedSource,
    servers: PeerPolicy,
) -> Result<reqwest::ClientBuilder> {
    let tls = client_config(source, servers)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT))
}

/// [`mtls_client_builder`] with reqwest's defaults.
pub fn mtls_client(source: SharedSource, servers: PeerPolicy) -> Result<reqwest::Client> {
    Ok(mtls_client_builder(source, servers)?.build()?)
}
