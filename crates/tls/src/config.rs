//! rustls configurations for both directions of a sidecar.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::sign::SingleCertAndKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use crate::{
    crypto_provider, Credentials, ExpectedService, ServiceClientVerifier, TlsError,
    UpstreamVerifier,
};

/// TLS 1.3 first, TLS 1.2 for older peers (Consul's proxies set a TLS 1.2 minimum). Both use
/// only the provider's AEAD suites with ECDHE, as Consul's built-in proxy does.
const VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

/// The configuration of a public (inbound) listener: presents the credentials' chain, requires
/// a client certificate and accepts only services of the bundle's trust domain (see
/// [`ServiceClientVerifier`]). `alpn` lists the protocols offered, most preferred first; a
/// client offering ALPN with none in common is refused, as rustls does.
///
/// No TLS 1.3 tickets are issued, so TLS 1.3 clients never resume: rustls does not re-check a
/// client certificate (its expiry included) when resuming, and without resumption every
/// connection is verified in full against the current roots. TLS 1.2 clients may still resume
/// through rustls' default in-memory cache (256 entries), which belongs to this configuration
/// and so is dropped with it on every update of [`crate::TlsState`].
pub fn server_config(
    credentials: &Credentials,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = ServiceClientVerifier::new(credentials.bundle())?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            credentials.certified_key().clone(),
        )));
    config.alpn_protocols = alpn_list(alpn);
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration for dialling one upstream: presents the credentials' chain and accepts
/// only a server chained to the bundle whose identity is `expected` (see [`UpstreamVerifier`]).
///
/// The server name given to rustls is free: no host name is checked. Use
/// [`ExpectedService::server_name`] for Consul's SNI, which mesh gateways route on. Resumption
/// is off: every connection verifies the upstream in full.
pub fn client_config(
    credentials: &Credentials,
    expected: &ExpectedService,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = UpstreamVerifier::new(credentials.bundle(), expected.clone());
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            credentials.certified_key().clone(),
        )));
    config.alpn_protocols = alpn_list(alpn);
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}
