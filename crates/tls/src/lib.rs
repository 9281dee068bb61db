//! Mutual TLS between the services of the mesh.
//!
//! Everything the sidecar needs to terminate and originate Consul-compatible mutual TLS:
//!
//! * [`TrustBundle`] and [`Credentials`] — the CA roots and a service's leaf and key, parsed
//!   once from the PEM the agent serves (`IndexedCaRoots`, `IssuedCert`).
//! * [`server_config`] — the public listener: a client certificate is required, chained to the
//!   bundle, and must name a service of the bundle's trust domain ([`ServiceClientVerifier`]).
//!   [`peer_service`] reads the verified caller after the handshake, for intentions.
//! * [`client_config`] — dialling an upstream: the server must chain to the bundle and present
//!   the expected service's identity ([`UpstreamVerifier`], [`ExpectedService`]); the SNI name
//!   is Consul's ([`ExpectedService::server_name`]).
//! * [`TlsState`] — the current [`TlsSnapshot`] of those configurations, swapped atomically
//!   when the leaf is renewed or the roots rotate.
//!
//! Verification wraps rustls' WebPKI checks (chain, validity, key usage) and then checks the
//! SPIFFE ID in the leaf's URI SAN; host names are never checked. All cryptography comes from
//! the aws-lc-rs provider passed explicitly ([`crypto_provider`]), so nothing depends on a
//! process-wide default provider.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod config;
mod credentials;
mod error;
mod identity;
mod state;
mod verify;

#[cfg(test)]
mod tests;

pub use config::{client_config, server_config};
pub use credentials::{Credentials, TrustBundle};
pub use error::TlsError;
pub use identity::{
    check_client_identity, leaf_identity, peer_identity, peer_service, ExpectedService,
};
pub use state::{TlsSnapshot, TlsState, MAX_CACHED_CLIENT_CONFIGS};
pub use verify::{ServiceClientVerifier, UpstreamVerifier};

/// The crypto provider every configuration of this crate uses: aws-lc-rs with its default
/// cipher suites (TLS 1.3 suites, and TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 only)
/// and key exchange groups. Built once and shared.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
