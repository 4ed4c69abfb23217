//! [`Identity`]: one coherent snapshot of our SVID and the trust bundles, already converted into
//! what rustls needs, so a handshake never parses PEM or keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use rustls::sign::CertifiedKey;
use spiffe::{SpiffeId, TrustDomain};

use super::error::{Error, Result};

/// Our X.509-SVID (certificate chain and key) plus the CA certificates of every trust domain we
/// accept peers from. Immutable: a rotation publishes a new `Identity`.
pub struct Identity {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
    /// Trust anchors per trust domain; a peer is only checked against the anchors of the trust
    /// domain its own SPIFFE ID names, so one domain's CA can never vouch for another's IDs.
    trust: HashMap<TrustDomain, Arc<[TrustAnchor<'static>]>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("not_after", &self.not_after)
            .field("trust_domains", &self.trust.keys().map(|td| td.to_string()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds an identity from DER: the SVID chain (leaf first), its private key (PKCS#8, PKCS#1
    /// or SEC1), and the CA certificates of each trusted trust domain. The bundle of our own
    /// trust domain must be among `bundles`.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundles: impl IntoIterator<Item = (TrustDomain, Vec<CertificateDer<'static>>)>,
    ) -> Result<Self> {
        let leaf = cert_chain
            .first()
            .ok_or_else(|| Error::Material("the SVID certificate chain is empty".into()))?;
        let spiffe_id = validate_svid(&cert_chain, &key)?;
        let not_after = not_after(leaf)?;
        let certified_key = CertifiedKey::from_der(cert_chain.clone(), key, &provider())
            .map_err(|e| Error::Material(format!("SVID key: {e}")))?;

        let mut trust = HashMap::new();
        for (trust_domain, cas) in bundles {
            let anchors = cas
                .iter()
                .map(|ca| {
                    webpki::anchor_from_trusted_cert(ca).map(|a| a.to_owned()).map_err(|e| {
                        Error::Material(format!(
                            "bundle of {trust_domain}: bad CA certificate: {e}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if anchors.is_empty() {
                return Err(Error::Material(format!("bundle of {trust_domain} is empty")));
            }
            trust.insert(trust_domain, Arc::from(anchors));
        }
        let own_domain = spiffe_id.trust_domain();
        let Some(own_anchors) = trust.get(own_domain) else {
            return Err(Error::Material(format!(
                "no trust bundle for our own trust domain {own_domain}"
            )));
        };
        // An SVID that does not chain to its own bundle (or has expired) is still published:
        // peers will refuse it with a precise alert, and a newer one may be on its way. Saying so
        // here turns a puzzling handshake failure into one clear log line.
        if let Err(e) =
            verify_chain(leaf, &cert_chain[1..], own_anchors, UnixTime::now(), Usage::Server)
        {
            tracing::warn!(spiffe_id = %spiffe_id, error = %e, "our SVID does not verify against our own bundle");
        }

        Ok(Self { spiffe_id, not_after, certified_key: Arc::new(certified_key), trust })
    }

    /// Builds an identity from PEM text: the SVID chain (leaf first), its private key, and the CA
    /// certificates of our own trust domain (the layout of cert-manager's csi-driver-spiffe and of
    /// the development CA).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8], bundle_pem: &[u8]) -> Result<Self> {
        let cert_chain = parse_certs(cert_chain_pem, "SVID certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| Error::Material(format!("SVID key: {e}")))?;
        let bundle = parse_certs(bundle_pem, "bundle")?;
        let leaf = cert_chain
            .first()
            .ok_or_else(|| Error::Material("no certificate in the SVID file".into()))?;
        let trust_domain = spiffe::cert::spiffe_id_from_der(leaf)
            .map_err(|e| Error::Material(format!("SVID: {e}")))?
            .trust_domain()
            .clone();
        Self::from_der(cert_chain, key, [(trust_domain, bundle)])
    }

    /// Converts the Workload API's view (our default SVID and the bundle set, federated bundles
    /// included).
    pub(crate) fn from_x509_context(context: &spiffe::X509Context) -> Result<Self> {
        let svid = context
            .default_svid()
            .ok_or_else(|| Error::Material("the Workload API returned no SVID".into()))?;
        let chain =
            svid.cert_chain().iter().map(|c| CertificateDer::from(c.as_bytes().to_vec())).collect();
        let key = PrivateKeyDer::try_from(svid.private_key().as_bytes().to_vec())
            .map_err(|e| Error::Material(format!("SVID key: {e}")))?;
        let bundles = context.bundle_set().iter().map(|(td, bundle)| {
            let cas = bundle
                .authorities()
                .iter()
                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                .collect();
            (td.clone(), cas)
        });
        Self::from_der(chain, key, bundles)
    }

    /// The SPIFFE ID our SVID carries.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// When our SVID expires. A source replaces it well before (SPIRE at half its lifetime,
    /// cert-manager at two thirds); an SVID close to this instant means rotation is stuck.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Our certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// The trust domains whose peers can be verified.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.trust.keys()
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// Verifies a peer's chain and returns the SPIFFE ID it proves. Authorization (is this ID
    /// allowed?) is the caller's next step.
    pub(crate) fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<SpiffeId, rustls::Error> {
        let spiffe_id = spiffe::cert::spiffe_id_from_der(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(PeerIdError(e.to_string())),
            )))
        })?;
        let Some(anchors) = self.trust.get(spiffe_id.trust_domain()) else {
            return Err(rustls::CertificateError::UnknownIssuer.into());
        };
        verify_chain(end_entity, intermediates, anchors, now, usage).map_err(pki_error)?;
        Ok(spiffe_id)
    }
}

/// Which end of the connection a verified certificate must be good for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Usage {
    Server,
    Client,
}

/// The peer's certificate carries no usable SPIFFE ID.
#[derive(Debug)]
struct PeerIdError(String);

impl fmt::Display for PeerIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer certificate has no valid SPIFFE ID: {}", self.0)
    }
}

impl std::error::Error for PeerIdError {}

/// The only crypto provider antwort uses.
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The provider's signature algorithms, built once (they are consulted at every handshake).
pub(crate) fn algorithms() -> &'static WebPkiSupportedAlgorithms {
    static ALGORITHMS: LazyLock<WebPkiSupportedAlgorithms> =
        LazyLock::new(|| provider().signature_verification_algorithms);
    &ALGORITHMS
}

fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    now: UnixTime,
    usage: Usage,
) -> std::result::Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    let usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    // SPIFFE authenticates the URI SAN, not a DNS name, so no name check here (the caller
    // extracts the SPIFFE ID and authorizes it). Revocation is out of scope: SVIDs are short-lived.
    cert.verify_for_usage(algorithms().all, anchors, intermediates, now, usage, None, None)
        .map(|_| ())
}

/// The SVID's own rules (one `spiffe://` URI SAN with a path, leaf not a CA, signing keys of
/// intermediates) are checked by the `spiffe` crate when the key is PKCS#8 (SPIRE and our dev CA);
/// other key encodings get the SPIFFE ID check only, and the chain is checked by the peer anyway.
fn validate_svid(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<SpiffeId> {
    if let PrivateKeyDer::Pkcs8(pkcs8) = key {
        let concatenated: Vec<u8> = chain.iter().flat_map(|c| c.iter().copied()).collect();
        let svid = spiffe::X509Svid::parse_from_der(&concatenated, pkcs8.secret_pkcs8_der())
            .map_err(|e| Error::Material(format!("not an X.509-SVID: {e}")))?;
        return Ok(svid.spiffe_id().clone());
    }
    spiffe::cert::spiffe_id_from_der(&chain[0])
        .map_err(|e| Error::Material(format!("not an X.509-SVID: {e}")))
}

fn not_after(leaf: &CertificateDer<'_>) -> Result<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| Error::Material(format!("SVID certificate: {e}")))?;
    let seconds = cert.validity().not_after.timestamp();
    // Before 1970 cannot be a real SVID's expiry; clamp instead of failing on it.
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Material(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Material(format!("{what}: no PEM certificate found")));
    }
    Ok(certs)
}

/// rustls keeps its own mapping private; this is the part that matters for SVIDs.
fn pki_error(error: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    let e = match error {
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            C::BadEncoding
        }
        webpki::Error::CertExpired { .. } | webpki::Error::InvalidCertValidity => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        webpki::Error::CertRevoked => C::Revoked,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(e)
}
