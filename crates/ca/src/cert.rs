//! Certificate facts and Consul's derived identifiers.

use aws_lc_rs::digest;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::CaError;

/// `aa:bb:cc` lower-case colon-separated hex, Consul's rendering of IDs and serials.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Consul's key ID: SHA-256 over the DER SubjectPublicKeyInfo (32 bytes).
pub fn key_id(spki_der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, spki_der).as_ref().to_vec()
}

/// The facts about a certificate the roots API reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Colon-hex SHA-1 of the DER (Consul's root `ID`).
    pub id: String,
    /// Serial as colon-hex.
    pub serial_hex: String,
    /// Serial as an integer when it fits in 64 bits (Consul's root `SerialNumber`), else its low 64 bits.
    pub serial_u64: u64,
    /// Colon-hex subject key identifier, empty if absent.
    pub subject_key_id: String,
    /// RFC 3339 validity start.
    pub not_before: String,
    /// RFC 3339 validity end.
    pub not_after: String,
    /// Unix seconds of `not_after`.
    pub not_after_unix: i64,
    /// `ec` or `rsa`.
    pub key_type: String,
    /// Curve size or modulus bits.
    pub key_bits: u32,
    /// URI SANs.
    pub uris: Vec<String>,
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl CertInfo {
    /// Reads a PEM certificate.
    pub fn from_pem(pem: &str) -> Result<CertInfo, CaError> {
        let der = pem_to_der(pem, "CERTIFICATE")?;
        CertInfo::from_der(&der)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, CaError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| CaError::Crypto(format!("invalid certificate: {e}")))?;
        let serial = cert.raw_serial();
        let serial_u64 = serial
            .iter()
            .rev()
            .take(8)
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let skid = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(colon_hex(k.0))
                }
                _ => None,
            })
            .unwrap_or_default();
        let (key_type, key_bits) = match cert.public_key().parsed() {
            // key_size is the field size in bits, rounded up to whole bytes (P-521 reads 528).
            Ok(PublicKey::EC(point)) => (
                "ec",
                match point.key_size() {
                    528 => 521,
                    n => n as u32,
                },
            ),
            Ok(PublicKey::RSA(rsa)) => ("rsa", rsa.key_size() as u32),
            _ => ("unknown", 0),
        };
        let uris = uri_sans(&cert);
        Ok(CertInfo {
            id: colon_hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
            serial_hex: colon_hex(serial),
            serial_u64,
            subject_key_id: skid,
            not_before: rfc3339(cert.validity().not_before),
            not_after: rfc3339(cert.validity().not_after),
            not_after_unix: cert.validity().not_after.timestamp(),
            key_type: key_type.to_string(),
            key_bits,
            uris,
        })
    }
}

/// The URI SANs of a certificate.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// Decodes the first PEM block, which must carry `label`.
pub(crate) fn pem_to_der(text: &str, label: &str) -> Result<Vec<u8>, CaError> {
    let block = pem::parse(text).map_err(|e| CaError::Crypto(format!("invalid PEM: {e}")))?;
    if block.tag() != label {
        return Err(CaError::Crypto(format!(
            "expected a {label} PEM block, found {}",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// PEM-encodes DER under `label`, ending with a newline.
pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}
