//! TLS on the server port (Consul's `tls { internal_rpc { … } }`): the operator's CA bundle,
//! this agent's certificate and key, read from files, and the rustls configurations for
//! serving the server port and for dialling it.
//!
//! Servers are recognised by the DNS name `server.<dc>.<domain>` when `verify_server_hostname`
//! is set, as Consul's `wrapTLSClient` does, and clients by a chain to the CA when
//! `verify_incoming` is set. With auto-encrypt (Consul's `auto_encrypt`), servers also accept
//! a client agent's certificate signed by the Connect CA, whose SPIFFE ID names the agent's node
//! ([`Caller::Agent`]); such an agent gets its certificate from the servers at start
//! ([`RpcTls::set_client_identity`]) and dials with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, DigitallySignedStruct, InconsistentKeys, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use crate::crypto_provider;

mod auto_encrypt;

use auto_encrypt::{
    client_verifier, ClientIdentity, ConnectTrust, ServerPortClientVerifier, SharedConnect,
};

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
    /// Certificates or a key handed over at run time (the Connect roots, an auto-encrypt
    /// certificate) could not be used.
    #[error("{what}: {reason}")]
    Runtime {
        /// What was handed over.
        what: &'static str,
        /// Why it cannot be used (never quoting a key).
        reason: String,
    },
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
    /// A server: sign client agents' certificates from the Connect CA and accept them on the
    /// server port (Consul's `auto_encrypt { allow_tls }`).
    pub auto_encrypt_allow_tls: bool,
    /// A client agent: get this agent's certificate from the servers at start instead of
    /// `cert_file` (Consul's `auto_encrypt { tls }`; needs `ca_file`, turns outgoing TLS on).
    pub auto_encrypt_tls: bool,
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
            || self.auto_encrypt_allow_tls
            || self.auto_encrypt_tls
    }
}

/// A client agent as its auto-encrypt certificate names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The agent's node name.
    pub node: String,
    /// Its datacenter (this server's).
    pub datacenter: String,
}

/// Who called the server port, as far as its TLS connection shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No certificate: plaintext, or TLS without a client certificate. Possible only where
    /// the port does not require one (`verify_incoming` off), and then, as in Consul, allowed
    /// what a server is.
    Unverified,
    /// A certificate chained to the CA that does not name the servers of this datacenter,
    /// where `verify_server_hostname` tells servers apart: a client agent (or a server of
    /// another datacenter). Allowed what a client agent does.
    Client,
    /// A client agent presenting the certificate auto-encrypt gave it: signed by the Connect
    /// CA, naming its node. Allowed what a client agent does, for its own node.
    Agent(AgentIdentity),
    /// A server of this datacenter: a certificate naming `server.<dc>.<domain>`, or any
    /// certificate of the CA when `verify_server_hostname` is off.
    Server,
}

/// The server port's TLS, loaded: the CA roots, this agent's certificate and key, and the
/// flags. Build the rustls configurations with [`RpcTls::server_config`] and
/// [`RpcTls::client_config`]. `Debug` never shows the key.
pub struct RpcTls {
    roots: Option<Arc<RootCertStore>>,
    /// The CA bundle's PEM blocks, as auto-encrypt hands them to client agents.
    ca_pems: Vec<String>,
    identity: Option<Arc<CertifiedKey>>,
    verify_incoming: bool,
    verify_outgoing: bool,
    server_name: Option<ServerName<'static>>,
    datacenter: String,
    allow_tls: bool,
    auto_encrypt_tls: bool,
    /// The Connect roots agent certificates are checked against (servers with `allow_tls`).
    connect: SharedConnect,
    /// What this agent presents when dialling: the file identity, or auto-encrypt's.
    client_identity: Arc<ClientIdentity>,
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    /// The same, presenting no certificate (auto-encrypt's requests).
    anonymous: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcTls")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .field("identity", &self.identity.is_some())
            .field("verify_incoming", &self.verify_incoming)
            .field("verify_outgoing", &self.verify_outgoing)
            .field("server_name", &self.server_name)
            .field("allow_tls", &self.allow_tls)
            .field("auto_encrypt_tls", &self.auto_encrypt_tls)
            .field("client_identity", &self.client_identity)
            .finish_non_exhaustive()
    }
}

impl RpcTls {
    /// Reads the files and checks the settings hang together: `verify_incoming` needs a CA
    /// and a certificate and key; `verify_outgoing` and `verify_server_hostname` need a CA;
    /// a certificate needs its key. Both configurations are built here, so a problem shows at
    /// start.
    pub fn load(config: &RpcTlsConfig) -> Result<RpcTls, RpcTlsError> {
        let loaded = config.ca_file.as_deref().map(load_roots).transpose()?;
        let (roots, ca_pems) = match loaded {
            Some((roots, pems)) => (Some(roots), pems),
            None => (None, Vec::new()),
        };
        let identity = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
            (None, None) => None,
            _ => return Err(RpcTlsError::CertWithoutKey),
        };
        let verify_outgoing =
            config.verify_outgoing || config.verify_server_hostname || config.auto_encrypt_tls;
        if config.auto_encrypt_tls && roots.is_none() {
            return Err(RpcTlsError::Missing {
                setting: "auto_encrypt.tls",
                missing: "ca_file",
            });
        }
        if config.auto_encrypt_allow_tls && identity.is_none() {
            return Err(RpcTlsError::Missing {
                setting: "auto_encrypt.allow_tls",
                missing: "cert_file and key_file",
            });
        }
        if config.verify_incoming {
            if roots.is_none() {
                return Err(RpcTlsError::Missing {
                    setting: "verify_incoming",
                    missing: "ca_file",
                });
            }
            // A client agent on auto-encrypt gets its certificate from the servers.
            if identity.is_none() && !config.auto_encrypt_tls {
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
        let client_identity = Arc::new(ClientIdentity {
            file: identity.clone(),
            signed: RwLock::new(None),
        });
        let mut tls = RpcTls {
            roots,
            ca_pems,
            identity,
            verify_incoming: config.verify_incoming,
            verify_outgoing,
            server_name,
            datacenter: config.datacenter.clone(),
            allow_tls: config.auto_encrypt_allow_tls,
            auto_encrypt_tls: config.auto_encrypt_tls,
            connect: Arc::new(RwLock::new(None)),
            client_identity,
            server: None,
            client: None,
            anonymous: None,
        };
        tls.server = tls.build_server_config()?;
        tls.client = tls.build_client_config(true)?;
        tls.anonymous = tls.build_client_config(false)?;
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

    /// Whether this server signs and accepts client agents' certificates from the Connect
    /// CA (`auto_encrypt.allow_tls`).
    pub fn allow_tls(&self) -> bool {
        self.allow_tls
    }

    /// Whether this client agent gets its certificate from the servers (`auto_encrypt.tls`).
    pub fn auto_encrypt_tls(&self) -> bool {
        self.auto_encrypt_tls
    }

    /// The CA bundle (`ca_file`) as PEM blocks: what auto-encrypt tells client agents to
    /// trust the servers with (Consul's `ManualCARoots`).
    pub fn ca_pems(&self) -> &[String] {
        &self.ca_pems
    }

    /// Sets the Connect CA roots (PEM) of `trust_domain` that client agents' auto-encrypt
    /// certificates must chain to; servers call it at start and whenever the roots change.
    /// Handshakes from then on use them.
    pub fn set_connect_roots(
        &self,
        trust_domain: &str,
        roots_pem: &[String],
    ) -> Result<(), RpcTlsError> {
        let runtime = |reason: String| RpcTlsError::Runtime {
            what: "Connect CA roots",
            reason,
        };
        let trust_domain = trellis_identity::TrustDomain::parse(trust_domain)
            .map_err(|e| runtime(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for pem in roots_pem {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| runtime(e.to_string()))?;
                roots.add(der).map_err(|e| runtime(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(runtime("no root certificate".into()));
        }
        let trust = ConnectTrust::new(trust_domain, roots)?;
        *self.connect.write() = Some(Arc::new(trust));
        Ok(())
    }

    /// Sets the certificate (PEM chain, leaf first) and key (PEM) this agent presents when
    /// dialling the server port, in place of none (a `cert_file` identity stays first):
    /// auto-encrypt's, at start and on each renewal. New connections use it.
    pub fn set_client_identity(&self, chain_pem: &str, key_pem: &str) -> Result<(), RpcTlsError> {
        let runtime = |reason: String| RpcTlsError::Runtime {
            what: "auto-encrypt certificate",
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| runtime(e.to_string()))?;
        if chain.is_empty() {
            return Err(runtime("no certificate".into()));
        }
        // The decoder's reason is not shown: it could quote the key.
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| runtime("the private key is not valid PEM".into()))?;
        let signing = crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|_| runtime("the private key cannot sign for TLS".into()))?;
        let certified = CertifiedKey::new(chain, signing);
        if let Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) =
            certified.keys_match()
        {
            return Err(runtime("the key does not match the certificate".into()));
        }
        *self.client_identity.signed.write() = Some(Arc::new(certified));
        Ok(())
    }

    /// Whether a certificate to present when dialling is set (from a file or auto-encrypt).
    pub fn has_client_identity(&self) -> bool {
        self.client_identity.current().is_some()
    }

    /// Who a connection's client is, from the certificate chain it presented (already
    /// verified by the handshake: against the CA, or with `allow_tls` the Connect roots).
    pub fn caller(&self, peer: Option<&[CertificateDer<'_>]>) -> Caller {
        let Some(end_entity) = peer.and_then(|chain| chain.first()) else {
            return Caller::Unverified;
        };
        let connect = self.connect.read().clone();
        if let (true, Some(trust)) = (self.allow_tls, connect) {
            let intermediates = peer.map_or(&[][..], |chain| &chain[1..]);
            if let Ok(agent) =
                trust.agent(end_entity, intermediates, &self.datacenter, UnixTime::now())
            {
                return Caller::Agent(agent);
            }
        }
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

    /// [`RpcTls::client_config`] presenting no certificate: what auto-encrypt asks for a
    /// certificate with (Consul's TLS-without-client-certificate RPC), so that an expired or
    /// missing one never stands in the way of getting the next.
    pub fn anonymous_client_config(&self) -> Option<Arc<ClientConfig>> {
        self.anonymous.clone()
    }

    fn build_server_config(&self) -> Result<Option<Arc<ServerConfig>>, RpcTlsError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)?;
        let builder = match (&self.roots, self.verify_incoming, self.allow_tls) {
            // Auto-encrypt: a certificate of the CA or a client agent's of the Connect CA; with
            // none a client may still connect, to ask for one (and only for that, when
            // `verify_incoming` is set: the router's rule).
            (roots, _, true) => {
                let verifier = ServerPortClientVerifier {
                    operator: roots.clone().map(client_verifier).transpose()?,
                    connect: Some(self.connect.clone()),
                    datacenter: self.datacenter.clone(),
                    mandatory: false,
                    algorithms: crypto_provider().signature_verification_algorithms,
                };
                builder.with_client_cert_verifier(Arc::new(verifier))
            }
            (Some(roots), true, false) => {
                builder.with_client_cert_verifier(client_verifier(roots.clone())?)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.clone())));
        config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Arc::new(config)))
    }

    fn build_client_config(
        &self,
        with_identity: bool,
    ) -> Result<Option<Arc<ClientConfig>>, RpcTlsError> {
        let (true, Some(roots)) = (self.verify_outgoing, &self.roots) else {
            return Ok(None);
        };
        let verifier = ServerPortVerifier::new(roots.clone(), self.server_name.clone());
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = if with_identity {
            builder.with_client_cert_resolver(self.client_identity.clone())
        } else {
            builder.with_no_client_auth()
        };
        // No session resumption: a resumed session keeps the identity of the one it resumes,
        // so a connection opened after auto-encrypt set a certificate could otherwise carry on
        // as the certificate-less one before it. Server-port connections are long-lived
        // (HTTP/2), so a full handshake each costs nothing that matters.
        config.resumption = rustls::client::Resumption::disabled();
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

fn load_roots(path: &Path) -> Result<(Arc<RootCertStore>, Vec<String>), RpcTlsError> {
    let mut roots = RootCertStore::empty();
    for der in certs("ca_file", path)? {
        roots.add(der).map_err(|e| RpcTlsError::Ca {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    // Already decoded above, so every block here is a well-formed certificate.
    let text = String::from_utf8_lossy(&read("ca_file", path)?).into_owned();
    Ok((Arc::new(roots), pem_blocks(&text)))
}

/// The `CERTIFICATE` blocks of a PEM text, each as its own PEM.
fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    blocks
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
