//! SPIFFE identities in certificates: reading a leaf's ID, the inbound rule (a service of our
//! trust domain) and the outbound rule (the service we dialled).

use std::fmt;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::CommonState;
use trellis_identity::{
    service_sni, ServiceId, SpiffeId, TrustDomain, DEFAULT_NAMESPACE, DEFAULT_PARTITION,
};
use x509_parser::extensions::GeneralName;

use crate::TlsError;

/// The SPIFFE ID a certificate carries in its URI SAN.
///
/// The certificate must carry exactly one URI SAN, as every Consul and Trellis leaf does;
/// none, several, or one that is not a Connect SPIFFE ID is an error. Only the certificate is
/// read: this says nothing about whether it is trusted.
pub fn leaf_identity(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let invalid = |reason: String| TlsError::Certificate {
        what: "peer",
        reason,
    };
    let (rest, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(invalid("trailing data after the certificate".into()));
    }
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| invalid(e.to_string()))?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => Ok(SpiffeId::parse(uri)?),
        (None, _) => Err(TlsError::UriSanCount(0)),
        (Some(_), Some(_)) => Err(TlsError::UriSanCount(2 + uris.count())),
    }
}

/// The inbound rule: a client must present a *service* identity of `trust_domain`.
///
/// Agent, server, mesh-gateway and signing IDs are refused even when their certificate chains
/// to a trusted root: only sidecars and Connect-native services call a public listener.
pub fn check_client_identity<'a>(
    id: &'a SpiffeId,
    trust_domain: &TrustDomain,
) -> Result<&'a ServiceId, TlsError> {
    let SpiffeId::Service(service) = id else {
        return Err(TlsError::NotAService(id.to_string()));
    };
    if &service.trust_domain != trust_domain {
        return Err(TlsError::WrongTrustDomain {
            id: id.to_string(),
            expected: trust_domain.to_string(),
        });
    }
    Ok(service)
}

/// The verified SPIFFE ID of the peer of a finished handshake, for intentions.
///
/// `None` before the handshake completes or when the peer sent no certificate (which the
/// configurations of this crate never allow to complete). Takes anything that dereferences to
/// [`CommonState`]: a `ServerConnection`, a `ClientConnection`, or the connection inside a
/// `tokio_rustls` stream.
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    leaf_identity(leaf).ok()
}

/// The peer's identity if it is a service ([`peer_identity`] narrowed to [`ServiceId`]).
pub fn peer_service(conn: &CommonState) -> Option<ServiceId> {
    match peer_identity(conn)? {
        SpiffeId::Service(service) => Some(service),
        _ => None,
    }
}

/// The identity an upstream must present: the service dialled.
///
/// # How identities are compared
///
/// Consul's built-in proxy (`connect/tls.go`, `verifyServerCertMatchesURI`) compares the whole
/// URI case-insensitively after overwriting the trust domain with the presented one: partition,
/// namespace, datacenter and service name must match, the trust domain is ignored "since we
/// rely on x509 constraints to limit ability to spoof the trust domain".
///
/// Trellis compares the same segments the same way (ASCII case-insensitively; an empty
/// namespace or partition means `default`) **and also the trust domain**: Trellis roots carry
/// no name constraints, so the reason Consul gives for skipping it does not hold, and the
/// inbound side already requires the bundle's trust domain. Every datacenter of a cluster
/// shares one trust domain, so this costs nothing in normal operation.
///
/// The datacenter is compared unless [`ExpectedService::any_datacenter`] is asked for
/// explicitly (for example when failover may land in any datacenter and the caller does not
/// know which): a certificate for `db` in `dc2` is not accepted for `db` in `dc1` by default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpectedService {
    id: ServiceId,
    any_datacenter: bool,
}

impl ExpectedService {
    /// Expects exactly `id` (up to ASCII case).
    pub fn new(id: ServiceId) -> Self {
        ExpectedService {
            id,
            any_datacenter: false,
        }
    }

    /// Also accepts the same service in any datacenter of the trust domain. Opt-in only.
    pub fn any_datacenter(mut self) -> Self {
        self.any_datacenter = true;
        self
    }

    /// The identity expected (its datacenter is ignored when [`Self::any_datacenter`] is set).
    pub fn id(&self) -> &ServiceId {
        &self.id
    }

    /// Whether any datacenter is accepted.
    pub fn accepts_any_datacenter(&self) -> bool {
        self.any_datacenter
    }

    /// Whether `presented` is the expected service (see the type's documentation).
    pub fn matches(&self, presented: &SpiffeId) -> bool {
        let SpiffeId::Service(got) = presented else {
            return false;
        };
        let want = &self.id;
        got.trust_domain == want.trust_domain
            && same(
                or_default(&got.partition, DEFAULT_PARTITION),
                or_default(&want.partition, DEFAULT_PARTITION),
            )
            && same(
                or_default(&got.namespace, DEFAULT_NAMESPACE),
                or_default(&want.namespace, DEFAULT_NAMESPACE),
            )
            && (self.any_datacenter || same(&got.datacenter, &want.datacenter))
            && same(&got.service, &want.service)
    }

    /// [`Self::matches`], as a result naming both identities on mismatch.
    pub fn check(&self, presented: &SpiffeId) -> Result<(), TlsError> {
        if self.matches(presented) {
            Ok(())
        } else {
            Err(TlsError::UnexpectedPeer {
                presented: presented.to_string(),
                expected: self.to_string(),
            })
        }
    }

    /// The SNI name to dial the upstream with, as Consul builds it ([`service_sni`]):
    /// `<service>.<ns>.<dc>.internal.<td>` in the default partition.
    pub fn server_name(&self) -> Result<ServerName<'static>, TlsError> {
        let id = &self.id;
        let name = service_sni(
            &id.service,
            &id.namespace,
            &id.partition,
            &id.datacenter,
            &id.trust_domain,
        );
        ServerName::try_from(name.clone()).map_err(|e| TlsError::ServerName {
            name,
            reason: e.to_string(),
        })
    }
}

impl From<ServiceId> for ExpectedService {
    fn from(id: ServiceId) -> Self {
        ExpectedService::new(id)
    }
}

impl fmt::Display for ExpectedService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if self.any_datacenter {
            f.write_str(" (any datacenter)")?;
        }
        Ok(())
    }
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}
