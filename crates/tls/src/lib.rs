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
//! * [`rpc`] — TLS on the server port (Consul's `tls { internal_rpc }`): the operator's CA,
//!   certificate and key read from files, the server port's server configuration and the
//!   client configuration servers and client agents dial it with (`server.<dc>.<domain>`
//!   checked with `verify_server_hostname`).
//!
//! Verification of the mesh's peers wraps rustls' WebPKI checks (chain, validity, key usage)
//! and then checks the SPIFFE ID in the leaf's URI SAN; host names are never checked there.
//! All cryptography comes from the aws-lc-rs provider passed explicitly ([`crypto_provider`]),
//! so nothing depends on a process-wide default provider.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod config;
mod credentials;
mod error;
mod identity;
pub mod rpc;
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

/// Which cipher suites and key exchange groups the mesh's TLS offers, most preferred first.
///
/// An empty list keeps the provider's default (TLS 1.3 suites, then TLS 1.2 ECDHE AEAD
/// suites; the X25519MLKEM768 hybrid first among the groups). Names are IANA's
/// (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) or rustls'
/// (`TLS13_AES_128_GCM_SHA256`), and the groups' (`X25519MLKEM768`, `X25519`, `secp256r1`,
/// `secp384r1`), matched without regard to case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CryptoPolicy {
    /// Cipher suites, most preferred first; empty for the default.
    pub cipher_suites: Vec<String>,
    /// Key exchange groups, most preferred first; empty for the default.
    pub kx_groups: Vec<String>,
}

static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();

/// Builds the provider `policy` describes, without installing it.
pub fn provider_for(policy: &CryptoPolicy) -> Result<CryptoProvider, TlsError> {
    use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, ALL_KX_GROUPS};
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !policy.cipher_suites.is_empty() {
        provider.cipher_suites = policy
            .cipher_suites
            .iter()
            .map(|want| {
                ALL_CIPHER_SUITES
                    .iter()
                    .find(|s| {
                        s.suite().as_str().is_some_and(|name| {
                            name.eq_ignore_ascii_case(want)
                                || name
                                    .replacen("TLS13_", "TLS_", 1)
                                    .eq_ignore_ascii_case(want)
                        })
                    })
                    .copied()
                    .ok_or_else(|| TlsError::UnknownCipherSuite(want.clone()))
            })
            .collect::<Result<_, _>>()?;
    }
    if !policy.kx_groups.is_empty() {
        provider.kx_groups = policy
            .kx_groups
            .iter()
            .map(|want| {
                ALL_KX_GROUPS
                    .iter()
                    .find(|g| {
                        g.name()
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(want))
                    })
                    .copied()
                    .ok_or_else(|| TlsError::UnknownKxGroup(want.clone()))
            })
            .collect::<Result<_, _>>()?;
    }
    if !provider.cipher_suites.iter().any(|s| s.tls13().is_some()) {
        return Err(TlsError::NoTls13CipherSuite);
    }
    Ok(provider)
}

/// Installs `policy` for every configuration this process builds from now on. Call it once,
/// before any configuration is built; it fails if the provider is already in use or a name
/// is unknown.
pub fn set_crypto_policy(policy: &CryptoPolicy) -> Result<(), TlsError> {
    let provider = Arc::new(provider_for(policy)?);
    PROVIDER
        .set(provider)
        .map_err(|_| TlsError::PolicyAlreadySet)
}

/// The crypto provider every configuration of this crate uses: aws-lc-rs with its default
/// cipher suites (TLS 1.3 suites, and TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 only)
/// and key exchange groups, unless [`set_crypto_policy`] chose others. Built once and shared.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
