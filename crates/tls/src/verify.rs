//! The two peer verifiers: WebPKI chain validation first, then the SPIFFE identity.

use std::borrow::Cow;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{check_client_identity, leaf_identity};
use crate::{crypto_provider, ExpectedService, TlsError, TrustBundle};

/// Verifies the clients of a public (inbound) listener.
///
/// Wraps rustls' [`WebPkiClientVerifier`] over every root of the bundle, which checks the chain,
/// validity dates and the clientAuth EKU; the bundle's intermediates are offered to path
/// building along with the client's. Then the leaf's single URI SAN must be a service SPIFFE
/// ID of the bundle's trust domain, or the handshake fails with
/// [`CertificateError::ApplicationVerificationFailure`] (alert `access_denied`). A client
/// certificate is mandatory. Authorizing the service (intentions) is left to the caller, after
/// the handshake, with [`crate::peer_service`].
#[derive(Debug)]
pub struct ServiceClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    bundle: TrustBundle,
}

impl ServiceClientVerifier {
    /// A verifier for clients of `bundle`'s trust domain.
    pub fn new(bundle: &TrustBundle) -> Result<Self, TlsError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(bundle.roots().clone(), crypto_provider())
                .build()
                .map_err(|e| TlsError::Root(e.to_string()))?;
        Ok(ServiceClientVerifier {
            inner,
            bundle: bundle.clone(),
        })
    }
}

impl ClientCertVerifier for ServiceClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let all = with_bundle(intermediates, &self.bundle);
        self.inner
            .verify_client_cert(end_entity, &all, now)
            .inspect_err(|e| tracing::debug!(error = %e, "client certificate chain refused"))?;
        let id = leaf_identity(end_entity).map_err(refuse)?;
        check_client_identity(&id, self.bundle.trust_domain()).map_err(refuse)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies an upstream (the server side of an outbound connection).
///
/// The chain is checked against every root of the bundle with
/// [`verify_server_cert_signed_by_trust_anchor`] (validity dates and the serverAuth EKU, but no
/// host name: the SNI name is for routing only), with the bundle's intermediates offered along
/// with the server's. Then the leaf's single URI SAN must match the [`ExpectedService`] (see its
/// documentation for how), or the handshake fails with
/// [`CertificateError::ApplicationVerificationFailure`].
#[derive(Debug)]
pub struct UpstreamVerifier {
    bundle: TrustBundle,
    expected: ExpectedService,
    algorithms: WebPkiSupportedAlgorithms,
}

impl UpstreamVerifier {
    /// A verifier accepting only `expected`, chained to `bundle`.
    pub fn new(bundle: &TrustBundle, expected: ExpectedService) -> Self {
        UpstreamVerifier {
            bundle: bundle.clone(),
            expected,
            algorithms: crypto_provider().signature_verification_algorithms,
        }
    }

    /// The identity this verifier accepts.
    pub fn expected(&self) -> &ExpectedService {
        &self.expected
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let all = with_bundle(intermediates, &self.bundle);
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            self.bundle.roots(),
            &all,
            now,
            self.algorithms.all,
        )
        .inspect_err(|e| tracing::debug!(error = %e, "upstream certificate chain refused"))?;
        let id = leaf_identity(end_entity).map_err(refuse)?;
        self.expected.check(&id).map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
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

/// The peer's intermediates followed by the bundle's, borrowing all of them.
fn with_bundle<'a>(
    peer: &'a [CertificateDer<'a>],
    bundle: &'a TrustBundle,
) -> Cow<'a, [CertificateDer<'a>]> {
    if bundle.intermediates().is_empty() {
        return Cow::Borrowed(peer);
    }
    Cow::Owned(
        peer.iter()
            .chain(bundle.intermediates())
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect(),
    )
}

/// Turns an identity refusal into the rustls error sent to the peer, logging the reason (which
/// the alert cannot carry).
fn refuse(e: TlsError) -> rustls::Error {
    let error = match e {
        TlsError::Certificate { .. } => CertificateError::BadEncoding,
        _ => CertificateError::ApplicationVerificationFailure,
    };
    tracing::warn!(error = %e, "peer identity refused");
    rustls::Error::InvalidCertificate(error)
}
