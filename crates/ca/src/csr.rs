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

/// What a CSR asks for, read but not yet checked.
struct Requested {
    der: Vec<u8>,
    uris: Vec<String>,
    emails: usize,
    dns: Vec<String>,
    wants_ca: bool,
}

fn read_csr(csr_pem: &str) -> Result<Requested, CaError> {
    let der =
        pem_to_der(csr_pem, "CERTIFICATE REQUEST").map_err(|e| bad(format!("invalid CSR: {e}")))?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| bad(format!("invalid CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("invalid CSR: trailing data after the request"));
    }
    let mut req = Requested {
        der: Vec::new(),
        uris: Vec::new(),
        emails: 0,
        dns: Vec::new(),
        wants_ca: false,
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => req.uris.push(u.to_string()),
                        GeneralName::RFC822Name(_) => req.emails += 1,
                        GeneralName::DNSName(d) => req.dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => req.wants_ca = true,
            _ => {}
        }
    }
    req.der = der;
    Ok(req)
}

impl Requested {
    /// Consul's first checks: exactly one URI SAN (returned), no email SANs.
    fn one_uri(&mut self) -> Result<String, CaError> {
        if self.uris.len() != 1 {
            return Err(bad("CSR SAN contains an invalid number of URIs"));
        }
        if self.emails > 0 {
            return Err(bad("CSR SAN does not allow specifying email addresses"));
        }
        Ok(self.uris.remove(0))
    }

    /// Consul's last checks: no CA request, and the CSR signed by the key it asks to certify.
    fn finish(self, id: SpiffeId, uri: String) -> Result<ValidatedCsr, CaError> {
        if self.wants_ca {
            return Err(bad("CSR must not request a CA certificate"));
        }
        let req = rcgen::CertificateSigningRequestParams::from_der(&self.der.clone().into())
            .map_err(|e| bad(format!("CSR signature or contents invalid: {e}")))?;
        let (_, csr) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| bad(format!("invalid CSR: {e}")))?;
        let key_id = key_id(csr.certification_request_info.subject_pki.raw);
        Ok(ValidatedCsr {
            id,
            uri,
            dns_sans: self.dns,
            public_key: req.public_key,
            key_id,
        })
    }
}

/// The trust domain a client agent puts in its auto-encrypt CSR before it knows the real one
/// (Consul's placeholder; not a valid trust domain itself, having no dot); the server signs the
/// same ID in its own trust domain.
pub const AGENT_PLACEHOLDER_TRUST_DOMAIN: &str = "unknown";

/// The URI prefix of an agent ID in the placeholder trust domain.
const PLACEHOLDER_PREFIX: &str = "spiffe://unknown/";

/// The SPIFFE ID a client agent asks for in its auto-encrypt CSR:
/// `spiffe://unknown/agent/client/dc/<dc>/id/<node>` (segments escaped as in any ID).
pub fn agent_placeholder_uri(datacenter: &str, node: &str) -> Result<String, CaError> {
    let stand_in = TrustDomain::parse("unknown.invalid").map_err(|e| bad(e.to_string()))?;
    let id = SpiffeId::agent(stand_in, datacenter, node);
    id.validate().map_err(|e| bad(e.to_string()))?;
    let uri = id.to_string();
    let path = uri
        .strip_prefix("spiffe://unknown.invalid/")
        .ok_or_else(|| bad(format!("unexpected agent ID {uri}")))?;
    Ok(format!("{PLACEHOLDER_PREFIX}{path}"))
}

/// Checks a client agent's auto-encrypt CSR: exactly one URI SAN, no email SANs, a client
/// agent's SPIFFE ID (`spiffe://<td>/agent/client/dc/<dc>/id/<node>`, the trust domain this
/// CA's or the placeholder `unknown`) of `datacenter` and the default partition, no CA
/// request, and the CSR's own signature. The certificate is issued for the ID in this CA's
/// trust domain, so the validated ID and URI carry it. (The ordinary leaf path,
/// [`validate_csr`], never accepts an agent ID.)
pub fn validate_agent_csr(
    csr_pem: &str,
    trust_domain: &TrustDomain,
    datacenter: &str,
) -> Result<ValidatedCsr, CaError> {
    let mut req = read_csr(csr_pem)?;
    let asked_uri = req.one_uri()?;
    // The placeholder is no trust domain of its own: read the ID as if in ours.
    let uri = match asked_uri.strip_prefix(PLACEHOLDER_PREFIX) {
        Some(path) => format!("spiffe://{trust_domain}/{path}"),
        None => asked_uri,
    };
    let id = SpiffeId::from_str(&uri).map_err(|e| bad(format!("{e}")))?;
    let SpiffeId::Agent {
        trust_domain: asked,
        partition,
        datacenter: dc,
        node,
    } = id
    else {
        return Err(bad("SPIFFE ID in CSR must be a client agent ID"));
    };
    if dc != datacenter {
        return Err(bad(format!(
            "SPIFFE ID in CSR from a different datacenter: {dc}, we are {datacenter}"
        )));
    }
    if &asked != trust_domain {
        return Err(bad(format!(
            "SPIFFE ID in CSR from a different trust domain: {asked}, we are {trust_domain}"
        )));
    }
    if partition != trellis_identity::DEFAULT_PARTITION {
        return Err(bad(format!(
            "SPIFFE ID in CSR is of the partition {partition}; only the default partition exists"
        )));
    }
    let id = SpiffeId::Agent {
        trust_domain: trust_domain.clone(),
        partition,
        datacenter: dc,
        node,
    };
    let uri = id.to_string();
    req.finish(id, uri)
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
    let mut req = read_csr(csr_pem)?;
    let uri = req.one_uri()?;
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
    req.finish(id, uri)
}
