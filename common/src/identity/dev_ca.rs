//! A development CA (feature `dev-ca`): mints a trust bundle and X.509-SVIDs for chosen SPIFFE
//! IDs, written in the layout [`super::FileSource`] reads (`tls.crt`, `tls.key`, `ca.crt`). For the
//! local stack (`antwort-dev-ca` binary) and tests; never for production.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{SpiffeId, TrustDomain};

use super::error::{Error, Result};
use super::files::{FilesConfig, write_atomic};
use super::material::Identity;

/// The CA certificate file in a CA folder (also every SVID folder's bundle).
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key file in a CA folder.
pub const CA_KEY_FILE: &str = "ca.key";

/// When an SVID is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From a minute ago (clock skew) until `lifetime` from now.
    pub fn for_next(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self { not_before: now - Duration::from_secs(60), not_after: now + lifetime }
    }

    /// Expired an hour ago: for tests of refusal.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(7200),
            not_after: now - Duration::from_secs(3600),
        }
    }
}

impl Default for Validity {
    /// A day, like SPIRE's default X.509-SVID TTL order of magnitude.
    fn default() -> Self {
        Self::for_next(Duration::from_secs(24 * 3600))
    }
}

/// A self-signed CA for one trust domain.
pub struct DevCa {
    trust_domain: TrustDomain,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain.to_string())
            .finish_non_exhaustive()
    }
}

/// A minted SVID: certificate (leaf only; the CA signs leaves directly), key and bundle.
#[derive(Debug, Clone)]
pub struct DevSvid {
    pub spiffe_id: SpiffeId,
    pub cert_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl DevCa {
    /// A new CA (fresh ECDSA P-256 key) for `trust_domain` (`example.org` or `spiffe://example.org`).
    pub fn new(trust_domain: &str) -> Result<Self> {
        let trust_domain = TrustDomain::new(trust_domain)
            .map_err(|e| Error::Config(format!("invalid trust domain {trust_domain:?}: {e}")))?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = ca_params(&trust_domain)?;
        let validity = Validity::for_next(Duration::from_secs(10 * 365 * 24 * 3600));
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let key_pem = key.serialize_pem();
        Ok(Self { trust_domain, cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA in `dir` (`ca.crt`, `ca.key`), created there if absent, so repeated runs of the
    /// local stack keep one bundle.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.exists() {
            let ca = Self::new(trust_domain)?;
            ca.save(dir)?;
            return Ok(ca);
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| Error::File { path: path.into(), source })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(rcgen_error)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rcgen_error)?;
        let cert_der = cert_from_pem(&cert_pem)?;
        let id = spiffe::cert::spiffe_id_from_der(&cert_der)
            .map_err(|e| Error::Material(format!("{}: {e}", cert_path.display())))?;
        let wanted = TrustDomain::new(trust_domain)
            .map_err(|e| Error::Config(format!("invalid trust domain {trust_domain:?}: {e}")))?;
        if *id.trust_domain() != wanted {
            return Err(Error::Config(format!(
                "{} is the CA of {}, not of {wanted}",
                cert_path.display(),
                id.trust_domain()
            )));
        }
        Ok(Self { trust_domain: wanted, cert_pem, key_pem, issuer })
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`, creating it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        create_dir(dir)?;
        write(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write(&dir.join(CA_KEY_FILE), self.key_pem.as_bytes(), 0o600)
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle (the CA certificate) as PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Mints an SVID for `spiffe_id`, valid for a day.
    pub fn mint(&self, spiffe_id: &str) -> Result<DevSvid> {
        self.mint_with(spiffe_id, Validity::default())
    }

    /// Mints an SVID for `spiffe_id` with the given validity (e.g. [`Validity::expired`]). The
    /// ID must be in this CA's trust domain.
    pub fn mint_with(&self, spiffe_id: &str, validity: Validity) -> Result<DevSvid> {
        let id = SpiffeId::new(spiffe_id)
            .map_err(|e| Error::Config(format!("invalid SPIFFE ID {spiffe_id:?}: {e}")))?;
        if !id.is_member_of(&self.trust_domain) {
            return Err(Error::Config(format!(
                "{id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, id.path());
        params.subject_alt_names = vec![SanType::URI(
            id.to_string().try_into().map_err(|e| Error::Config(format!("{id}: {e}")))?,
        )];
        // An X.509-SVID leaf must say it is not a CA (a missing extension is refused too).
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(DevSvid {
            spiffe_id: id,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            bundle_pem: self.cert_pem.clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// Mints an SVID for `spiffe_id` and writes it into `dir` (see [`DevSvid::write_to`]).
    pub fn write_svid(&self, spiffe_id: &str, dir: &Path) -> Result<FilesConfig> {
        self.mint(spiffe_id)?.write_to(dir)
    }
}

impl DevSvid {
    /// Writes `tls.crt`, `tls.key` (mode 0600) and `ca.crt` into `dir` (created if needed), each
    /// atomically, and returns the [`FilesConfig`] that reads them. Writing again over an existing
    /// folder is a rotation.
    pub fn write_to(&self, dir: &Path) -> Result<FilesConfig> {
        let config = FilesConfig::in_dir(dir);
        let [cert, key, bundle] = config.paths();
        create_dir(dir)?;
        // Bundle first, key before certificate: a reader between two writes sees either the old
        // pair or a mismatch it rejects, never a new certificate with the old key accepted.
        write(&bundle, self.bundle_pem.as_bytes(), 0o644)?;
        write(&key, self.key_pem.as_bytes(), 0o600)?;
        write(&cert, self.cert_pem.as_bytes(), 0o644)?;
        Ok(config)
    }

    /// The private key as PKCS#8 DER (what the Workload API sends).
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The bundle as DER.
    pub fn bundle_der(&self) -> Result<CertificateDer<'static>> {
        cert_from_pem(&self.bundle_pem)
    }

    /// This SVID as an [`Identity`] trusting only its own trust domain.
    pub fn identity(&self) -> Result<Identity> {
        Identity::from_pem(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            self.bundle_pem.as_bytes(),
        )
    }
}

fn ca_params(trust_domain: &TrustDomain) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "antwort development CA");
    params.distinguished_name.push(DnType::CommonName, trust_domain.as_str());
    // SPIFFE CA certificates carry the trust domain's ID as URI SAN.
    let td_id = format!("spiffe://{}", trust_domain.as_str());
    params.subject_alt_names = vec![SanType::URI(
        td_id.clone().try_into().map_err(|e| Error::Config(format!("{td_id}: {e}")))?,
    )];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Material(format!("CA certificate: {e}")))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::File { path: dir.into(), source })
}

fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    write_atomic(path, contents, mode).map_err(|source| Error::File { path: path.into(), source })
}

fn rcgen_error(error: rcgen::Error) -> Error {
    Error::Material(format!("certificate generation: {error}"))
}
