//! Leaf CSR validation, in Consul's order, before anything is signed.

use std::str::FromStr;

use trellis_identity::{can_sign, SpiffeId, TrustDomain, WILDCARD};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::cert::{key_id, pem_to_der};
use crate::CaError;

/// A CSR that passed every check: what it asks for and the key to certify.
pub struct ValidatedCsr {
    /// The SPIFFE ID it asks for.
    pub id: SpiffeId,
    /// The URI SAN as given.
    pub uri: String,
    /// DNS SANs it asks for.
    pub dns_sans: Vec<String>,
    /// The key to certify.
    pub(crate) public_key: rcgen::PublicKey,
    /// Consul key ID (SHA-256 of the SPKI) of that key.
    pub(crate) key_id: Vec<u8>,
}

impl std::fmt::Debug for ValidatedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedCsr")
            .field("uri", &self.uri)
            .field("dns_sans", &self.dns_sans)
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> CaError {
    CaError::InvalidCsr(msg.into())
}

/// Checks a leaf CSR as Consul's server does, in Consul's order: exactly one URI SAN, no
/// email SANs, a service or mesh-gateway SPIFFE ID, this datacenter, no intentions wildcard
/// (`*`) as its service, namespace or partition, this trust domain, no CA request, and finally
/// the CSR's own signature. Any failure names the problem.
pub fn validate_csr(
    csr_pem: &str,
    trust_domain: &TrustDomain,
    datacenter: &str,
) -> Result<ValidatedCsr, CaError> {
    let der =
        pem_to_der(csr_pem, "CERTIFICATE REQUEST").map_err(|e| bad(format!("invalid CSR: {e}")))?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| bad(format!("invalid CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("invalid CSR: trailing data after the request"));
    }
    let mut uris = Vec::new();
    let mut emails = 0;
    let mut dns = Vec::new();
    let mut wants_ca = false;
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::RFC822Name(_) => emails += 1,
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => wants_ca = true,
            _ => {}
        }
    }
    if uris.len() != 1 {
        return Err(bad("CSR SAN contains an invalid number of URIs"));
    }
    if emails > 0 {
        return Err(bad("CSR SAN does not allow specifying email addresses"));
    }
    let uri = uris.remove(0);
    let id = SpiffeId::from_str(&uri).map_err(|e| bad(format!("{e}")))?;
    let (id_dc, id_td) = match &id {
        SpiffeId::Service(s) => (s.datacenter.as_str(), s.trust_domain.as_str()),
        SpiffeId::MeshGateway {
            trust_domain,
            datacenter,
            ..
        } => (datacenter.as_str(), trust_domain.as_str()),
        _ => {
            return Err(bad(
                "SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID",
            ))
        }
    };
    if id_dc != datacenter {
        return Err(bad(format!(
            "SPIFFE ID in CSR from a different datacenter: {id_dc}, we are {datacenter}"
        )));
    }
    // `*` is the intentions wildcard, never a workload: no leaf may carry it.
    if let Some(segment) = id.wildcard_segment() {
        return Err(bad(format!(
            "SPIFFE ID in CSR has the wildcard {WILDCARD:?} as its {segment}: {WILDCARD:?} \
             means every service to intentions, so no certificate is issued for it"
        )));
    }
    if !can_sign(trust_domain, &id) {
        return Err(bad(format!(
            "SPIFFE ID in CSR from a different trust domain: {id_td}, we are {}",
            trust_domain.as_str()
        )));
    }
    if wants_ca {
        return Err(bad("CSR must not request a CA certificate"));
    }
    // Last, as Consul: the CSR must be signed by the key it asks to certify.
    let req = rcgen::CertificateSigningRequestParams::from_der(&der.clone().into())
        .map_err(|e| bad(format!("CSR signature or contents invalid: {e}")))?;
    let key_id = key_id(csr.certification_request_info.subject_pki.raw);
    Ok(ValidatedCsr {
        id,
        uri,
        dns_sans: dns,
        public_key: req.public_key,
        key_id,
    })
}
