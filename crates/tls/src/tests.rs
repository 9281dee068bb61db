//! Tests with real certificates from the built-in CA and real handshakes over loopback TCP.
//!
//! Fixtures here: a test CA (the `trellis-ca` built-in provider, plus its key loaded into
//! rcgen to issue certificates the provider would refuse), an echo server that reports every
//! handshake, and a dialler.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{client, TlsAcceptor, TlsConnector};
use trellis_ca::{leaf_key_and_csr, validate_csr, BuiltinProvider, CaConfig, CaProvider};
use trellis_identity::{ServiceId, SpiffeId, TrustDomain};

use crate::{
    crypto_provider, peer_identity, Credentials, ExpectedService, TrustBundle, UpstreamVerifier,
};

mod credentials;
mod handshake;
mod rotation;
mod state;
mod verifier;

const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";
const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
const WAIT: Duration = Duration::from_secs(10);

fn td() -> TrustDomain {
    TrustDomain::for_cluster(CLUSTER).unwrap()
}

fn service(name: &str) -> ServiceId {
    ServiceId::new(td(), "dc1", name)
}

fn service_uri(name: &str) -> String {
    service(name).to_string()
}

/// A CA of the test trust domain: the built-in provider, and its key as an rcgen issuer.
struct TestCa {
    provider: BuiltinProvider,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let provider = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
        let key = KeyPair::from_pem(&provider.root().state["PrivateKey"]).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&provider.root().root_pem, key).unwrap();
        TestCa { provider, issuer }
    }

    fn root_pem(&self) -> &str {
        &self.provider.root().root_pem
    }

    /// A bundle trusting only this CA.
    fn bundle(&self) -> TrustBundle {
        TrustBundle::new(td(), &[self.root_pem()], &[]).unwrap()
    }

    /// A leaf for any ID the CA's CSR validation accepts, through the real signing path with
    /// `ttl` (a zero TTL gives a leaf that expired a minute ago): (cert, key) PEM.
    fn sign(&self, uri: &str, ttl: Duration) -> (String, String) {
        let leaf = leaf_key_and_csr(uri).unwrap();
        let csr = validate_csr(&leaf.csr_pem, &td(), "dc1").unwrap();
        let issued = self.provider.sign_leaf(&csr, ttl).unwrap();
        (issued.cert_pem, leaf.private_key_pem)
    }

    /// A service leaf (the CA's normal output).
    fn leaf(&self, name: &str) -> (String, String) {
        self.sign(&service_uri(name), LEAF_TTL)
    }

    /// Credentials for `name` trusting only this CA.
    fn credentials(&self, name: &str) -> Credentials {
        let (cert, key) = self.leaf(name);
        Credentials::new(&cert, &key, self.bundle()).unwrap()
    }

    /// A leaf signed with this CA's key that the provider would refuse to issue: the given
    /// URI SANs, leaf key usages, valid for a day (PKCS#8 key).
    fn custom_leaf(&self, uris: &[&str]) -> (String, String) {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::days(1);
        p.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn rand_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] = 0x01;
    serial
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A client configuration built by hand around [`UpstreamVerifier`], for clients that
/// [`crate::client_config`] would not build: another TLS version, no certificate, or a
/// certificate [`Credentials`] refuses.
fn raw_client(
    bundle: &TrustBundle,
    expected: ExpectedService,
    cert_and_key: Option<(&str, &str)>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(UpstreamVerifier::new(bundle, expected));
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match cert_and_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                chain(cert),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// What one side saw of a completed handshake.
#[derive(Debug)]
struct Handshake {
    peer: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    sni: Option<String>,
}

/// The rustls error inside an I/O error from tokio-rustls.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// An echo server taking its configuration from `config` at every accept, as the proxy's
/// listener does. Each handshake's outcome is reported on the receiver; a connection is only
/// read from (echoed) after its handshake succeeded, and everything read is reported too.
async fn echo_server(
    config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<ServerEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = TlsAcceptor::from(config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(ServerEvent::Refused(e));
                        return;
                    }
                };
                let conn = tls.get_ref().1;
                let _ = tx.send(ServerEvent::Accepted(Handshake {
                    peer: peer_identity(conn),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    version: conn.protocol_version(),
                    sni: conn.server_name().map(str::to_owned),
                }));
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = tx.send(ServerEvent::Read(buf[..n].to_vec()));
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// What the echo server reports.
#[derive(Debug)]
enum ServerEvent {
    /// A handshake failed; nothing was read from the connection.
    Refused(io::Error),
    /// A handshake succeeded.
    Accepted(Handshake),
    /// Application data read (and echoed) on an accepted connection.
    Read(Vec<u8>),
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<ServerEvent>) -> ServerEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the server reports in time")
        .expect("the server is running")
}

/// The next event must be a refused handshake, and nothing may have been read before it.
async fn expect_refused(rx: &mut mpsc::UnboundedReceiver<ServerEvent>) -> io::Error {
    match next_event(rx).await {
        ServerEvent::Refused(e) => {
            assert!(rx.try_recv().is_err(), "nothing follows a refusal");
            e
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

async fn expect_accepted(rx: &mut mpsc::UnboundedReceiver<ServerEvent>) -> Handshake {
    match next_event(rx).await {
        ServerEvent::Accepted(h) => h,
        other => panic!("expected an accepted handshake, got {other:?}"),
    }
}

/// Connects and completes the client side of the handshake.
async fn dial(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<(client::TlsStream<TcpStream>, Handshake)> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    let conn = tls.get_ref().1;
    let handshake = Handshake {
        peer: peer_identity(conn),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn.protocol_version(),
        sni: None,
    };
    Ok((tls, handshake))
}

/// Sends `ping` and expects it echoed.
async fn ping(tls: &mut client::TlsStream<TcpStream>) -> io::Result<()> {
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(&buf, b"ping");
    Ok(())
}

/// Dials and pings; the first error of either.
async fn dial_and_ping(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<Handshake> {
    let (mut tls, handshake) = dial(addr, config, name).await?;
    ping(&mut tls).await?;
    Ok(handshake)
}

fn any_name() -> ServerName<'static> {
    ServerName::try_from("upstream.invalid").unwrap()
}

#[test]
fn crypto_policy_names_suites_and_groups_in_order() {
    use crate::{provider_for, CryptoPolicy};
    let default = provider_for(&CryptoPolicy::default()).unwrap();
    assert_eq!(
        default.cipher_suites.len(),
        rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .len()
    );
    let p = provider_for(&CryptoPolicy {
        cipher_suites: vec![
            "TLS_AES_128_GCM_SHA256".into(),
            "tls13_aes_256_gcm_sha384".into(),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        ],
        kx_groups: vec!["x25519".into(), "secp256r1".into()],
    })
    .unwrap();
    let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        [
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ]
    );
    let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
    );
}

#[test]
fn crypto_policy_refuses_unknown_names_and_no_tls13() {
    use crate::{provider_for, CryptoPolicy, TlsError};
    let err = provider_for(&CryptoPolicy {
        cipher_suites: vec!["TLS_RSA_WITH_RC4_128_MD5".into()],
        ..CryptoPolicy::default()
    })
    .unwrap_err();
    assert_eq!(
        err,
        TlsError::UnknownCipherSuite("TLS_RSA_WITH_RC4_128_MD5".into())
    );
    let err = provider_for(&CryptoPolicy {
        kx_groups: vec!["ffdhe2048".into()],
        ..CryptoPolicy::default()
    })
    .unwrap_err();
    assert_eq!(err, TlsError::UnknownKxGroup("ffdhe2048".into()));
    let err = provider_for(&CryptoPolicy {
        cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
        ..CryptoPolicy::default()
    })
    .unwrap_err();
    assert_eq!(err, TlsError::NoTls13CipherSuite);
}
