//! What a sidecar holds to speak mutual TLS: its leaf, key and the CA roots, parsed once.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use trellis_api::{IndexedCaRoots, IssuedCert};
use trellis_identity::{ServiceId, TrustDomain};

use crate::identity::{check_client_identity, leaf_identity};
use crate::{crypto_provider, TlsError};

/// The trusted CA certificates of one trust domain, as `/v1/agent/connect/ca/roots` lists them.
///
/// Every root certificate is a trust anchor. Every `IntermediateCerts` entry (a secondary
/// datacenter's intermediate, or a new root cross-signed by the old one during a rotation) is
/// *not* trusted by itself: it is offered to path building next to whatever intermediates a
/// peer sends, so that a peer sending only its leaf still chains, while the intermediate's
/// own validity, CA flag and path length are checked as usual. Cheap to clone.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Arc<RootCertStore>,
    intermediates: Arc<[CertificateDer<'static>]>,
}

impl TrustBundle {
    /// Builds a bundle from root and intermediate certificates in PEM (each string may hold
    /// several `CERTIFICATE` blocks). At least one root is required.
    pub fn new(
        trust_domain: TrustDomain,
        roots_pem: &[&str],
        intermediates_pem: &[&str],
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for pem in roots_pem {
            for der in certs_from_pem(pem, "RootCert")? {
                roots.add(der).map_err(|e| TlsError::Root(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let mut intermediates: Vec<CertificateDer<'static>> = Vec::new();
        for pem in intermediates_pem {
            for der in certs_from_pem(pem, "IntermediateCerts")? {
                x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
                    TlsError::Certificate {
                        what: "IntermediateCerts",
                        reason: e.to_string(),
                    }
                })?;
                if !intermediates.contains(&der) {
                    intermediates.push(der);
                }
            }
        }
        Ok(TrustBundle {
            trust_domain,
            roots: Arc::new(roots),
            intermediates: intermediates.into(),
        })
    }

    /// Builds a bundle from the roots response: every root's `RootCert` and each root's
    /// `IntermediateCerts`, in the response's `TrustDomain`.
    pub fn from_ca_roots(roots: &IndexedCaRoots) -> Result<Self, TlsError> {
        if roots.trust_domain.is_empty() {
            return Err(TlsError::NoTrustDomain);
        }
        let trust_domain = TrustDomain::parse(&roots.trust_domain)?;
        let root_pems: Vec<&str> = roots.roots.iter().map(|r| r.root_cert.as_str()).collect();
        let intermediate_pems: Vec<&str> = roots
            .roots
            .iter()
            .flat_map(|r| r.intermediate_certs.iter().flatten())
            .map(String::as_str)
            .collect();
        TrustBundle::new(trust_domain, &root_pems, &intermediate_pems)
    }

    /// The trust domain peers must belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust anchors.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The intermediates offered to path building (deduplicated).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("roots", &self.roots.len())
            .field("intermediates", &self.intermediates.len())
            .finish()
    }
}

/// A service's TLS identity: its leaf chain and private key, ready for rustls, plus the
/// bundle its peers are checked against. Cheap to clone; `Debug` never shows the key.
#[derive(Clone)]
pub struct Credentials {
    certified: Arc<CertifiedKey>,
    identity: ServiceId,
    not_after: i64,
    bundle: TrustBundle,
}

impl Credentials {
    /// Parses a leaf and key.
    ///
    /// `cert_pem` is the leaf followed by any intermediates, as Consul's `CertPEM` is (the leaf
    /// and then the active root's `IntermediateCerts`); the whole chain is presented to peers.
    /// `private_key_pem` may be SEC1 (`EC PRIVATE KEY`, what agents return), PKCS#8 or
    /// PKCS#1. The leaf must carry one URI SAN naming a service of the bundle's trust domain,
    /// and the key must be the one the leaf certifies. Expiry is not checked here; see
    /// [`Credentials::not_after`].
    pub fn new(
        cert_pem: &str,
        private_key_pem: &str,
        bundle: TrustBundle,
    ) -> Result<Self, TlsError> {
        let chain = certs_from_pem(cert_pem, "CertPEM")?;
        let leaf = &chain[0];
        let id = leaf_identity(leaf).map_err(|e| match e {
            TlsError::Certificate { reason, .. } => TlsError::Certificate {
                what: "CertPEM",
                reason,
            },
            other => other,
        })?;
        let identity = check_client_identity(&id, &bundle.trust_domain)?.clone();
        let not_after = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map(|(_, cert)| cert.validity().not_after.timestamp())
            .map_err(|e| TlsError::Certificate {
                what: "CertPEM",
                reason: e.to_string(),
            })?;

        // The decoder's error is not passed on: it could quote the key's PEM.
        let key_der = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
            .map_err(|_| TlsError::PrivateKeyPem)?;
        let key = crypto_provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|_| TlsError::UnsupportedKey)?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch)
            }
            Err(e) => return Err(TlsError::Rustls(e)),
        }
        Ok(Credentials {
            certified: Arc::new(certified),
            identity,
            not_after,
            bundle,
        })
    }

    /// Builds credentials from a leaf as the agent's leaf endpoint returns it and the roots
    /// response.
    pub fn from_issued(cert: &IssuedCert, roots: &IndexedCaRoots) -> Result<Self, TlsError> {
        Credentials::new(
            &cert.cert_pem,
            &cert.private_key_pem,
            TrustBundle::from_ca_roots(roots)?,
        )
    }

    /// The service this leaf identifies.
    pub fn identity(&self) -> &ServiceId {
        &self.identity
    }

    /// The leaf's `notAfter`, in Unix seconds (for expiry metrics and renewal checks).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The bundle peers are verified against.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The chain presented to peers: the leaf first, then the intermediates from `CertPEM`.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity.to_string())
            .field("not_after", &self.not_after)
            .field("chain", &self.certified.cert.len())
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

/// Every `CERTIFICATE` block of `pem`, at least one.
fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}
