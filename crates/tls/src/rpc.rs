//! TLS on the server port (Consul's `tls { internal_rpc { … } }`): the operator's CA bundle,
//! this agent's certificate and key, read from files, and the rustls configurations for
//! serving the server port and for dialling it.
//!
//! Unlike the mesh's mutual TLS ([`crate::server_config`], [`crate::client_config`]) nothing
//! here looks at SPIFFE IDs: servers are recognised by the DNS name `server.<dc>.<domain>`
//! when `verify_server_hostname` is set, as Consul's `wrapTLSClient` does, and clients by a
//! chain to the CA when `verify_incoming` is set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, DigitallySignedStruct, InconsistentKeys, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use crate::crypto_provider;

/// Consul's default `tls_min_version` is TLS 1.2; TLS 1.3 is preferred.
const VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// ALPN protocols the server port offers, most preferred first.
pub const SERVER_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// ALPN protocol servers and client agents ask for when dialling the server port.
pub const CLIENT_ALPN: &[&[u8]] = &[b"h2"];

/// The default domain (Consul's `domain`).
pub const DEFAULT_DOMAIN: &str = "consul";

/// Why the server port's TLS settings could not be used. Each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcTlsError {
    /// A file could not be read.
    #[error("cannot read {key} {path}: {source}")]
    Read {
        /// The configuration key (`ca_file`, `cert_file`, `key_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate file is not valid PEM.
    #[error("invalid certificate PEM in {key} {path}: {reason}")]
    CertificatePem {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{key} {path} holds no CERTIFICATE block")]
    NoCertificate {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate cannot be a trust anchor.
    #[error("invalid CA certificate in ca_file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file holds no usable key (the decoder's reason is not shown: it could quote
    /// the key).
    #[error("invalid private key in key_file {path}: expected one PKCS#8, SEC1 (EC PRIVATE KEY) or PKCS#1 key")]
    PrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key decoded but cannot sign for TLS.
    #[error("unusable private key in key_file {path}: the key type is not supported for TLS")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is not the one the certificate certifies.
    #[error("key_file {key} does not match the certificate in cert_file {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A setting needs a file that was not given.
    #[error("{setting} is set but no {missing} was provided")]
    Missing {
        /// The setting that needs it (`verify_incoming`, `verify_outgoing`, ...).
        setting: &'static str,
        /// What is missing (`ca_file`, `cert_file and key_file`).
        missing: &'static str,
    },
    /// Only one of `cert_file` and `key_file` was given.
    #[error("cert_file and key_file must be given together")]
    CertWithoutKey,
    /// `server.<datacenter>.<domain>` is not a valid DNS name.
    #[error("invalid server name {name:?}: check datacenter and domain")]
    ServerName {
        /// The name built.
        name: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server port's TLS settings as configured: file paths and flags (Consul's
/// `tls.internal_rpc`, with `tls.defaults` and the legacy keys already layered in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcTlsConfig {
    /// PEM bundle of the CA certificates peers must chain to.
    pub ca_file: Option<PathBuf>,
    /// This agent's certificate (PEM, leaf first, then any intermediates).
    pub cert_file: Option<PathBuf>,
    /// This agent's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Require clients of the server port to present a certificate chained to the CA.
    pub verify_incoming: bool,
    /// Dial the server port over TLS, verifying the chain to the CA.
    pub verify_outgoing: bool,
    /// Servers must present `server.<datacenter>.<domain>` (implies `verify_outgoing`).
    pub verify_server_hostname: bool,
    /// This agent's datacenter.
    pub datacenter: String,
    /// The domain (`consul` by default).
    pub domain: String,
}

impl RpcTlsConfig {
    /// Whether anything of TLS is configured at all (a file or a flag).
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.verify_incoming
            || self.verify_outgoing
            || self.verify_server_hostname
    }
}

/// Who called the server port, as far as its TLS connection shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No certificate: plaintext, or TLS without a client certificate. Possible only where
    /// the port does not require one (`verify_incoming` off), and then, as in Consul, allowed
    /// what a server is.
    Unverified,
    /// A certificate chained to the CA that does not name the servers of this datacenter,
    /// where `verify_server_hostname` tells servers apart: a client agent (or a server of
    /// another datacenter). Allowed what a client agent does.
    Client,
    /// A server of this datacenter: a certificate naming `server.<dc>.<domain>`, or any
    /// certificate of the CA when `verify_server_hostname` is off.
    Server,
}

/// The server port's TLS, loaded: the CA roots, this agent's certificate and key, and the
/// flags. Build the rustls configurations with [`RpcTls::server_config`] and
/// [`RpcTls::client_config`]. `Debug` never shows the key.
pub struct RpcTls {
    roots: Option<Arc<RootCertStore>>,
    identity: Option<Arc<CertifiedKey>>,
    verify_incoming: bool,
    verify_outgoing: bool,
    server_name: Option<ServerName<'static>>,
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcTls")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .field("identity", &self.identity.is_some())
            .field("verify_incoming", &self.verify_incoming)
            .field("verify_outgoing", &self.verify_outgoing)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl RpcTls {
    /// Reads the files and checks the settings hang together: `verify_incoming` needs a CA
    /// and a certificate and key; `verify_outgoing` and `verify_server_hostname` need a CA;
    /// a certificate needs its key. Both configurations are built here, so a problem shows at
    /// start.
    pub fn load(config: &RpcTlsConfig) -> Result<RpcTls, RpcTlsError> {
        let roots = config.ca_file.as_deref().map(load_roots).transpose()?;
        let identity = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
            (None, None) => None,
            _ => return Err(RpcTlsError::CertWithoutKey),
        };
        let verify_outgoing = config.verify_outgoing || config.verify_server_hostname;
        if config.verify_incoming {
            if roots.is_none() {
                return Err(RpcTlsError::Missing {
                    setting: "verify_incoming",
                    missing: "ca_file",
                });
            }
            if identity.is_none() {
                return Err(RpcTlsError::Missing {
                    setting: "verify_incoming",
                    missing: "cert_file and key_file",
                });
            }
        }
        if verify_outgoing && roots.is_none() {
            return Err(RpcTlsError::Missing {
                setting: if config.verify_server_hostname {
                    "verify_server_hostname"
                } else {
                    "verify_outgoing"
                },
                missing: "ca_file",
            });
        }
        let server_name = if config.verify_server_hostname {
            Some(server_name(&config.datacenter, &config.domain)?)
        } else {
            None
        };
        let mut tls = RpcTls {
            roots,
            identity,
            verify_incoming: config.verify_incoming,
            verify_outgoing,
            server_name,
            server: None,
            client: None,
        };
        tls.server = tls.build_server_config()?;
        tls.client = tls.build_client_config()?;
        Ok(tls)
    }

    /// Whether clients without a certificate chained to the CA are refused.
    pub fn verify_incoming(&self) -> bool {
        self.verify_incoming
    }

    /// Whether the server port is dialled over TLS (`verify_outgoing`, or
    /// `verify_server_hostname`, which implies it).
    pub fn verify_outgoing(&self) -> bool {
        self.verify_outgoing
    }

    /// Who a connection's client is, from the certificate chain it presented (already
    /// verified against the CA by the handshake when `verify_incoming` asked for one).
    pub fn caller(&self, peer: Option<&[CertificateDer<'_>]>) -> Caller {
        let Some(end_entity) = peer.and_then(|chain| chain.first()) else {
            return Caller::Unverified;
        };
        let Some(name) = &self.server_name else {
            return Caller::Server;
        };
        match ParsedCertificate::try_from(end_entity) {
            Ok(cert) if verify_server_name(&cert, name).is_ok() => Caller::Server,
            _ => Caller::Client,
        }
    }

    /// The name servers must present, when `verify_server_hostname` is set.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// The configuration serving the server port over TLS, `None` without a certificate and
    /// key (the port then serves only plaintext). It presents this agent's certificate; with
    /// `verify_incoming` a client certificate chained to the CA is required, otherwise none is
    /// asked for. ALPN: `h2`, `http/1.1`.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.server.clone()
    }

    /// The configuration for dialling the server port, `None` unless outgoing TLS is on
    /// ([`RpcTls::verify_outgoing`]). The server must chain to the CA and, with
    /// `verify_server_hostname`, name `server.<dc>.<domain>` whatever address was dialled;
    /// this agent's certificate (if any) is presented. ALPN: `h2`.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.client.clone()
    }

    fn build_server_config(&self) -> Result<Option<Arc<ServerConfig>>, RpcTlsError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)?;
        let builder = match (&self.roots, self.verify_incoming) {
            (Some(roots), true) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), crypto_provider())
                        .build()
                        .map_err(|e| RpcTlsError::Rustls(rustls::Error::General(e.to_string())))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.clone())));
        config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Arc::new(config)))
    }

    fn build_client_config(&self) -> Result<Option<Arc<ClientConfig>>, RpcTlsError> {
        let (true, Some(roots)) = (self.verify_outgoing, &self.roots) else {
            return Ok(None);
        };
        let verifier = ServerPortVerifier::new(roots.clone(), self.server_name.clone());
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.identity {
            Some(identity) => builder
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = CLIENT_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Arc::new(config)))
    }
}

/// `server.<datacenter>.<domain>`, the name every server's certificate carries (a trailing
/// dot of the domain dropped).
pub fn server_name(datacenter: &str, domain: &str) -> Result<ServerName<'static>, RpcTlsError> {
    let domain = domain.trim_end_matches('.');
    let domain = if domain.is_empty() {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let name = format!("server.{datacenter}.{domain}");
    ServerName::try_from(name.clone()).map_err(|_| RpcTlsError::ServerName { name })
}

/// Verifies a server of the server port: the chain must end at the CA; with a name, the leaf
/// must be valid for it (the address dialled plays no part).
#[derive(Debug)]
pub struct ServerPortVerifier {
    roots: Arc<RootCertStore>,
    name: Option<ServerName<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerPortVerifier {
    /// A verifier for servers chained to `roots` and, if given, presenting `name`.
    pub fn new(roots: Arc<RootCertStore>, name: Option<ServerName<'static>>) -> Self {
        ServerPortVerifier {
            roots,
            name,
            algorithms: crypto_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for ServerPortVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )
        .inspect_err(|e| tracing::warn!(error = %e, "server port: server certificate refused"))?;
        if let Some(name) = &self.name {
            verify_server_name(&cert, name).inspect_err(|e| {
                tracing::warn!(error = %e, expected = ?name, "server port: server certificate does not name the servers of this datacenter")
            })?;
        }
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

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, RpcTlsError> {
    std::fs::read(path).map_err(|source| RpcTlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, RpcTlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RpcTlsError::CertificatePem {
            key,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RpcTlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, RpcTlsError> {
    let mut roots = RootCertStore::empty();
    for der in certs("ca_file", path)? {
        roots.add(der).map_err(|e| RpcTlsError::Ca {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn load_identity(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, RpcTlsError> {
    let chain = certs("cert_file", cert)?;
    let key_pem = read("key_file", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| RpcTlsError::PrivateKey {
        path: key.to_path_buf(),
    })?;
    let signing = crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| RpcTlsError::UnsupportedKey {
            path: key.to_path_buf(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(RpcTlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => return Err(RpcTlsError::Rustls(e)),
    }
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests;
