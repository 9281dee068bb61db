//! The one error type of the crate.

use trellis_identity::IdError;

/// Why credentials, a configuration or a peer identity were refused.
///
/// No variant ever carries private key material: key problems are reported with fixed
/// messages. `Clone`, so that a failed update can be broadcast to several waiters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input holding certificates could not be decoded.
    #[error("invalid certificate PEM in {what}: {reason}")]
    CertificatePem {
        /// Which input: `CertPEM`, `RootCert`, `IntermediateCerts`.
        what: &'static str,
        /// What the PEM decoder reported.
        reason: String,
    },
    /// A PEM input that must hold certificates holds none.
    #[error("{what} holds no CERTIFICATE block")]
    NoCertificate {
        /// Which input.
        what: &'static str,
    },
    /// A certificate is not valid X.509 DER.
    #[error("invalid certificate in {what}: {reason}")]
    Certificate {
        /// Which input, or `peer` for a certificate received in a handshake.
        what: &'static str,
        /// What the parser reported.
        reason: String,
    },
    /// The private key PEM holds no usable key. The reason is deliberately not shown, as the
    /// decoder's message could quote the input.
    #[error("invalid private key PEM: expected one PKCS#8, SEC1 (EC PRIVATE KEY) or PKCS#1 key")]
    PrivateKeyPem,
    /// The key decoded but the crypto provider cannot sign with it.
    #[error("unusable private key: the key type is not supported for TLS")]
    UnsupportedKey,
    /// The private key is not the one the leaf certificate certifies.
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    /// The roots carry no trust domain (Consul's wording for a CA that is not set up yet).
    #[error("cluster has no CA bootstrapped yet: the CA roots have no trust domain")]
    NoTrustDomain,
    /// The roots bundle holds no root certificate.
    #[error("the CA roots bundle holds no root certificate")]
    NoRoots,
    /// A root certificate cannot be used as a trust anchor.
    #[error("invalid root certificate: {0}")]
    Root(String),
    /// A leaf does not carry exactly one URI SAN (Consul leafs carry one: the SPIFFE ID).
    #[error("the leaf certificate must carry exactly one URI SAN, found {0}")]
    UriSanCount(usize),
    /// A trust domain or the leaf's URI SAN is not a valid SPIFFE ID.
    #[error("invalid SPIFFE ID: {0}")]
    Identity(#[from] IdError),
    /// The leaf's SPIFFE ID is valid but names something other than a service.
    #[error("SPIFFE ID {0} is not a service identity")]
    NotAService(String),
    /// The leaf's SPIFFE ID belongs to another trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The ID found.
        id: String,
        /// The trust domain required.
        expected: String,
    },
    /// An upstream presented a valid certificate for a service other than the one dialled.
    #[error("peer certificate mismatch: got {presented}, want {expected}")]
    UnexpectedPeer {
        /// The ID the peer presented.
        presented: String,
        /// The ID (or pattern) required.
        expected: String,
    },
    /// The upstream's SNI name is not a valid DNS name.
    #[error("invalid TLS server name {name:?}: {reason}")]
    ServerName {
        /// The name built for the upstream.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A cipher suite named in a [`crate::CryptoPolicy`] is not one the provider has.
    #[error("unknown cipher suite {0:?} (e.g. TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)")]
    UnknownCipherSuite(String),
    /// A key exchange group named in a [`crate::CryptoPolicy`] is not one the provider has.
    #[error("unknown key exchange group {0:?} (X25519MLKEM768, X25519, secp256r1, secp384r1)")]
    UnknownKxGroup(String),
    /// A policy left no TLS 1.3 suite, and the mesh always offers TLS 1.3.
    #[error("the cipher suites must include a TLS 1.3 suite")]
    NoTls13CipherSuite,
    /// The crypto policy was set, or the provider used, before this attempt to set it.
    #[error("the TLS crypto policy can only be set once, before any TLS configuration is built")]
    PolicyAlreadySet,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}
