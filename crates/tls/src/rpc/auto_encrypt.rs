//! Auto-encrypt on the server port: the client certificate verifier servers use (the operator
//! CA, or an agent certificate of the Connect CA) and the client certificate resolver client
//! agents dial with (the file identity, or the one signed by the servers, swapped on renewal).

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use trellis_identity::{SpiffeId, TrustDomain, DEFAULT_PARTITION};

use super::{AgentIdentity, RpcTlsError};
use crate::{crypto_provider, leaf_identity};

/// The Connect CA roots a server trusts agent certificates of, with their trust domain.
#[derive(Debug)]
pub(super) struct ConnectTrust {
    pub(super) trust_domain: TrustDomain,
    pub(super) verifier: Arc<dyn ClientCertVerifier>,
}

impl ConnectTrust {
    pub(super) fn new(
        trust_domain: TrustDomain,
        roots: RootCertStore,
    ) -> Result<ConnectTrust, RpcTlsError> {
        Ok(ConnectTrust {
            trust_domain,
            verifier: client_verifier(Arc::new(roots))?,
        })
    }

    /// The agent `end_entity` is, if it chains to these roots (with `intermediates`) and
    /// carries an agent SPIFFE ID of this trust domain and `datacenter`; why not otherwise.
    pub(super) fn agent(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        datacenter: &str,
        now: UnixTime,
    ) -> Result<AgentIdentity, Refusal> {
        self.verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(Refusal::Chain)?;
        self.agent_identity(end_entity, datacenter)
            .map_err(Refusal::Identity)
    }

    /// The agent identity in `end_entity`'s URI SAN, checked against this trust domain and
    /// `datacenter` (the chain is not looked at).
    fn agent_identity(
        &self,
        end_entity: &CertificateDer<'_>,
        datacenter: &str,
    ) -> Result<AgentIdentity, String> {
        let id = leaf_identity(end_entity).map_err(|e| e.to_string())?;
        let SpiffeId::Agent {
            trust_domain,
            partition,
            datacenter: dc,
            node,
        } = &id
        else {
            return Err(format!("{id} is not a client agent's identity"));
        };
        if trust_domain != &self.trust_domain {
            return Err(format!(
                "{id} is not of the trust domain {}",
                self.trust_domain
            ));
        }
        if !dc.eq_ignore_ascii_case(datacenter) {
            return Err(format!("{id} is not of the datacenter {datacenter}"));
        }
        if partition != DEFAULT_PARTITION {
            return Err(format!("{id} is not of the default partition"));
        }
        Ok(AgentIdentity {
            node: node.clone(),
            datacenter: dc.clone(),
        })
    }
}

/// Why a certificate is not an agent's of the Connect CA.
#[derive(Debug)]
pub(super) enum Refusal {
    /// It does not chain to the Connect roots (or is expired, or not for client auth).
    Chain(rustls::Error),
    /// It chains, but its identity is not an agent of this trust domain and datacenter.
    Identity(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Chain(e) => write!(f, "not of the Connect CA: {e}"),
            Refusal::Identity(reason) => f.write_str(reason),
        }
    }
}

/// The current Connect trust, swapped by [`super::RpcTls::set_connect_roots`] and read by every
/// handshake.
pub(super) type SharedConnect = Arc<RwLock<Option<Arc<ConnectTrust>>>>;

/// rustls' WebPKI client verifier for `roots` (chain, validity, the clientAuth EKU).
pub(super) fn client_verifier(
    roots: Arc<RootCertStore>,
) -> Result<Arc<dyn ClientCertVerifier>, RpcTlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, crypto_provider())
        .build()
        .map_err(|e| RpcTlsError::Rustls(rustls::Error::General(e.to_string())))
}

/// The server port's client verifier: a chain to the operator CA, or — with
/// `auto_encrypt.allow_tls` — a client agent's certificate of the Connect CA (its SPIFFE ID an
/// agent of the trust domain and this datacenter). Anything else presented is refused at the
/// handshake. A certificate is mandatory only with `verify_incoming` and without `allow_tls`.
#[derive(Debug)]
pub(super) struct ServerPortClientVerifier {
    pub(super) operator: Option<Arc<dyn ClientCertVerifier>>,
    /// `Some` only with `allow_tls`.
    pub(super) connect: Option<SharedConnect>,
    pub(super) datacenter: String,
    pub(super) mandatory: bool,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ServerPortClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// The operator CA's subjects; none with `allow_tls`, so that a client picks whichever
    /// certificate it has (the hints could not name the Connect roots, which change).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match (&self.connect, &self.operator) {
            (None, Some(operator)) => operator.root_hint_subjects(),
            _ => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let operator = match &self.operator {
            Some(operator) => match operator.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => return Ok(verified),
                Err(e) => Some(e),
            },
            None => None,
        };
        let connect = self.connect.as_ref().and_then(|c| c.read().clone());
        let refusal = match connect {
            Some(trust) => match trust.agent(end_entity, intermediates, &self.datacenter, now) {
                Ok(agent) => {
                    tracing::debug!(node = %agent.node, "server port: auto-encrypt agent certificate");
                    return Ok(ClientCertVerified::assertion());
                }
                Err(refusal) => Some(refusal),
            },
            None => None,
        };
        match (operator, refusal) {
            (_, Some(Refusal::Identity(reason))) => {
                tracing::warn!(%reason, "server port: Connect CA certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            (Some(e), connect) => {
                match connect {
                    Some(connect) => {
                        tracing::warn!(error = %e, %connect, "server port: client certificate refused")
                    }
                    None => tracing::warn!(error = %e, "server port: client certificate refused"),
                }
                Err(e)
            }
            (None, Some(Refusal::Chain(e))) => {
                tracing::warn!(error = %e, "server port: client certificate refused");
                Err(e)
            }
            (None, None) => {
                tracing::warn!(
                    "server port: client certificate refused: no CA to verify it against"
                );
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate a client of the server port presents: the file identity (`cert_file`,
/// `key_file`) if configured, else the one auto-encrypt set last, else none. `Debug` shows
/// neither key.
pub(super) struct ClientIdentity {
    pub(super) file: Option<Arc<CertifiedKey>>,
    pub(super) signed: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ClientIdentity {
    pub(super) fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.file.clone().or_else(|| self.signed.read().clone())
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("file", &self.file.is_some())
            .field("signed", &self.signed.read().is_some())
            .finish()
    }
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    /// Always: an identity may be set after the configuration is built, and rustls keeps
    /// what TLS 1.2 client authentication needs only when this says so.
    fn has_certs(&self) -> bool {
        true
    }
}
