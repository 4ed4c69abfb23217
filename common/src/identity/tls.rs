//! rustls server and client configurations from an [`IdentitySource`](super::IdentitySource)
//! and a [`PeerPolicy`]: TLS 1.3 only, client certificates required, `ring` only, no session
//! resumption.
//!
//! Everything is looked up per handshake from the source's latest [`Identity`], so a rotated SVID
//! or bundle is used by the next handshake without rebuilding anything. Until the first SVID
//! arrives every handshake fails (closed, not open).
//!
//! Why our own verifiers: SPIFFE authenticates the URI SAN, not the DNS name rustls' stock
//! verifiers check, and a peer must chain to the bundle of the trust domain its own ID names.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use spiffe::SpiffeId;
use tokio::sync::watch;

use super::error::Result;
use super::material::{Identity, Usage, algorithms, provider};
use super::policy::PeerPolicy;
use super::source::SharedSource;

/// A server configuration presenting our SVID and requiring a client SVID that `peers` allows.
pub fn server_config(source: SharedSource, peers: PeerPolicy) -> Result<ServerConfig> {
    let current = Current::new(source);
    let verifier = PeerVerifier { current: current.clone(), peers, usage: Usage::Client };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(current));
    // Resumption would skip the client-certificate check on reconnects: every connection is
    // authenticated against the current bundle and policy instead.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client configuration presenting our SVID and accepting only servers whose SVID `servers`
/// allows. The server name (DNS or IP) the caller dials is not checked: SVIDs carry SPIFFE IDs.
pub fn client_config(source: SharedSource, servers: PeerPolicy) -> Result<ClientConfig> {
    let current = Current::new(source);
    let verifier = PeerVerifier { current: current.clone(), peers: servers, usage: Usage::Server };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(current));
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The SPIFFE ID in a peer's leaf certificate (after a handshake our verifiers accepted).
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    spiffe::cert::spiffe_id_from_der(leaf).ok()
}

// === impl Current ===

/// The latest identity of a source, read at each handshake. Holds the source so its background
/// task lives as long as any configuration built from it.
#[derive(Clone)]
struct Current {
    _source: SharedSource,
    identities: watch::Receiver<Option<Arc<Identity>>>,
}

impl Current {
    fn new(source: SharedSource) -> Self {
        let identities = source.subscribe();
        Self { _source: source, identities }
    }

    fn get(&self) -> Option<Arc<Identity>> {
        self.identities.borrow().clone()
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current").field("identity", &self.get()).finish()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get().map(|identity| identity.certified_key().clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get().map(|identity| identity.certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// === impl PeerVerifier ===

/// Verifies the peer's chain against the bundle of its trust domain, then authorizes its SPIFFE
/// ID against the policy. Used on both ends; `usage` says which EKU the peer needs.
#[derive(Debug)]
struct PeerVerifier {
    current: Current,
    peers: PeerPolicy,
    usage: Usage,
}

impl PeerVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, rustls::Error> {
        let Some(identity) = self.current.get() else {
            return Err(rustls::Error::General("no SVID yet: cannot verify peers".into()));
        };
        let peer =
            identity.verify_peer(end_entity, intermediates, now, self.usage).inspect_err(|e| {
                tracing::debug!(error = %e, "peer certificate refused");
            })?;
        if !self.peers.allows(&peer) {
            // Info, not debug: a refused but valid SVID is usually a policy that needs an entry.
            tracing::info!(peer = %peer, allowed = %self.peers, "peer SPIFFE ID not authorized");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(peer)
    }

    fn algorithms() -> &'static WebPkiSupportedAlgorithms {
        algorithms()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, Self::algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, Self::algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::algorithms().supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, Self::algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, Self::algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::algorithms().supported_schemes()
    }
}
