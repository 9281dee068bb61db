//! The signing core every provider shares: certificate templates and signing with any key
//! that rcgen can sign with (a key pair in memory, or a key held by an HSM).

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey,
    SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use trellis_identity::TrustDomain;

use crate::cert::{der_to_pem, key_id, pem_to_der, uri_sans, CertInfo};
use crate::provider::{IssuedLeaf, RootMaterial};
use crate::{CaError, ValidatedCsr};

/// Lifetime of a cross-signed certificate: longer than any leaf signed before a rotation.
const CROSS_SIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Clock-drift allowance on `NotBefore`.
const BACKDATE: Duration = Duration::from_secs(60);

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the length is stable
    SerialNumber::from_slice(&bytes)
}

fn offset(now: OffsetDateTime, d: Duration, forward: bool) -> OffsetDateTime {
    let d = time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    if forward {
        now.saturating_add(d)
    } else {
        now.saturating_sub(d)
    }
}

fn short_random() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Sets what every certificate a CA issues shares: validity from one minute ago for `ttl`, a
/// random serial, the issuer's key ID as AKI, and `subject_key_id` as SKI.
fn stamp_issued(p: &mut CertificateParams, ttl: Duration, subject_key_id: Vec<u8>) {
    p.not_before = offset(OffsetDateTime::now_utc(), BACKDATE, false);
    p.not_after = offset(p.not_before, ttl, true);
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::PreSpecified(subject_key_id);
}

/// Makes a self-signed root for `trust_domain` with `key`, valid for `ttl` (PEM).
pub(crate) fn self_signed_root(
    trust_domain: &TrustDomain,
    key: &impl SigningKey,
    ttl: Duration,
) -> Result<String, CaError> {
    let spki = key.subject_public_key_info();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    let cluster8: String = trust_domain.cluster_id().chars().take(8).collect();
    p.distinguished_name.push(
        DnType::CommonName,
        format!("pri-{}.consul.ca.{cluster8}.consul", short_random()),
    );
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{}", trust_domain.as_str()).try_into()?,
    )];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now;
    p.not_after = offset(now, ttl, true);
    p.serial_number = Some(random_serial());
    p.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&spki));
    let cert = p.self_signed(key)?;
    Ok(der_to_pem("CERTIFICATE", cert.der()))
}

/// A CA that signs with `K`: the root it holds and an issuer over its key.
pub(crate) struct KeyedCa<K> {
    pub(crate) material: RootMaterial,
    issuer: Issuer<'static, K>,
}

impl<K: SigningKey> KeyedCa<K> {
    /// Pairs a key with its root certificate (PEM), checking that they match.
    pub(crate) fn load(
        key: K,
        root_pem: &str,
        state: BTreeMap<String, String>,
    ) -> Result<KeyedCa<K>, CaError> {
        let root_der = pem_to_der(root_pem, "CERTIFICATE")?;
        let root_pem = der_to_pem("CERTIFICATE", &root_der);
        let (_, parsed) = x509_parser::parse_x509_certificate(&root_der)
            .map_err(|e| CaError::InvalidConfig(format!("invalid root certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::InvalidConfig(
                "the private key does not match the root certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&root_der.clone().into(), key)
            .map_err(|e| CaError::InvalidConfig(format!("root certificate cannot sign: {e}")))?;
        Ok(KeyedCa {
            material: RootMaterial {
                root_pem,
                intermediates: Vec::new(),
                state,
            },
            issuer,
        })
    }

    fn leaf_params(csr: &ValidatedCsr, ttl: Duration) -> Result<CertificateParams, CaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        let mut sans = vec![SanType::URI(csr.uri.clone().try_into()?)];
        for dns in &csr.dns_sans {
            sans.push(SanType::DnsName(dns.clone().try_into()?));
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::DataEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        stamp_issued(&mut p, ttl, csr.key_id.clone());
        Ok(p)
    }

    /// Signs a validated leaf CSR for `ttl`.
    pub(crate) fn sign_leaf(
        &self,
        csr: &ValidatedCsr,
        ttl: Duration,
    ) -> Result<IssuedLeaf, CaError> {
        let params = Self::leaf_params(csr, ttl)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = CertInfo::from_der(cert.der())?;
        Ok(IssuedLeaf {
            cert_pem: der_to_pem("CERTIFICATE", cert.der()),
            serial_hex: info.serial_hex,
            valid_after: info.not_before,
            valid_before: info.not_after,
        })
    }

    /// Signs an intermediate CSR (PEM) for `ttl` (path length 0).
    pub(crate) fn sign_intermediate(
        &self,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<String, CaError> {
        let req = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::InvalidCsr(format!("invalid intermediate CSR: {e}")))?;
        let root_uri = CertInfo::from_pem(&self.material.root_pem)?.uris;
        let mut p = CertificateParams::default();
        p.distinguished_name = req.params.distinguished_name.clone();
        let uris: Vec<String> = req
            .params
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::URI(u) => Some(u.as_str().to_string()),
                _ => None,
            })
            .collect();
        if uris.len() != 1 || !root_uri.contains(&uris[0]) {
            return Err(CaError::InvalidCsr(
                "intermediate CSR must carry this trust domain's signing URI".into(),
            ));
        }
        p.subject_alt_names = req.params.subject_alt_names.clone();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        stamp_issued(
            &mut p,
            ttl,
            key_id(&req.public_key.subject_public_key_info()),
        );
        let cert = p.signed_by(&req.public_key, &self.issuer)?;
        Ok(der_to_pem("CERTIFICATE", cert.der()))
    }

    /// Cross-signs another root's key with this CA's key.
    pub(crate) fn cross_sign(&self, other_root_pem: &str) -> Result<String, CaError> {
        let der = pem_to_der(other_root_pem, "CERTIFICATE")?;
        let (_, other) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Crypto(format!("invalid root to cross-sign: {e}")))?;
        let public = SubjectPublicKeyInfo::from_der(other.public_key().raw)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = other
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = uri_sans(&other)
            .into_iter()
            .filter_map(|u| u.try_into().ok().map(SanType::URI))
            .collect();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Keep the other root's key identifier so chains built through either copy agree.
        stamp_issued(
            &mut p,
            CROSS_SIGN_TTL + BACKDATE,
            key_id(other.public_key().raw),
        );
        let cert = p.signed_by(&public, &self.issuer)?;
        Ok(der_to_pem("CERTIFICATE", cert.der()))
    }
}
