//! The server port's TLS with certificates made here by rcgen, as `trellis tls` makes them:
//! a CA, a server certificate naming `server.dc1.consul`, a client certificate, and a second
//! CA. Handshakes run over an in-memory duplex stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{AgentIdentity, Caller, RpcTls, RpcTlsConfig, RpcTlsError};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A leaf of `ca` with these DNS names (and 127.0.0.1), serverAuth and clientAuth: (cert, key).
fn leaf(ca: &Ca, dns: &[&str]) -> (String, String) {
    let mut p =
        CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    p.distinguished_name.push(DnType::CommonName, dns[0]);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes a leaf's cert and key; returns their paths.
    fn pair(&self, name: &str, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
        (
            self.put(&format!("{name}.pem"), cert),
            self.put(&format!("{name}-key.pem"), key),
        )
    }
}

fn config(ca: Option<&Path>, pair: Option<&(PathBuf, PathBuf)>) -> RpcTlsConfig {
    RpcTlsConfig {
        ca_file: ca.map(Path::to_path_buf),
        cert_file: pair.map(|p| p.0.clone()),
        key_file: pair.map(|p| p.1.clone()),
        verify_incoming: true,
        verify_outgoing: true,
        verify_server_hostname: true,
        datacenter: "dc1".into(),
        domain: "consul".into(),
        ..Default::default()
    }
}

/// One handshake: the server's outcome and the client's. On success, the negotiated ALPN.
async fn handshake(
    server: &RpcTls,
    client: &RpcTls,
) -> (Result<Option<Vec<u8>>, String>, Result<(), String>) {
    let (served, dialled) = exchange(server, client).await;
    (served.map(|(alpn, _)| alpn), dialled)
}

/// One handshake: the server's outcome (the ALPN and who the caller is) and the client's.
async fn exchange(
    server: &RpcTls,
    client: &RpcTls,
) -> (
    Result<(Option<Vec<u8>>, Caller), String>,
    Result<(), String>,
) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let acceptor = TlsAcceptor::from(server.server_config().expect("server config"));
    let connector = TlsConnector::from(client.client_config().expect("client config"));
    let serve = async move {
        match acceptor.accept(a).await {
            Ok(mut tls) => {
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let caller = server.caller(tls.get_ref().1.peer_certificates());
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                tls.write_all(&buf).await.map_err(|e| e.to_string())?;
                tls.flush().await.map_err(|e| e.to_string())?;
                Ok((alpn, caller))
            }
            Err(e) => Err(e.to_string()),
        }
    };
    // The address dialled: an IP, which no certificate's DNS name is checked against.
    let dial = async move {
        let name = ServerName::try_from("10.1.2.3").unwrap();
        let mut tls = connector
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        Ok(())
    };
    tokio::join!(serve, dial)
}

struct Setup {
    files: Files,
    ca: Ca,
    ca_file: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn setup() -> Setup {
    let files = Files::new();
    let ca = ca("Consul Agent CA 1");
    let ca_file = files.put("consul-agent-ca.pem", &ca.pem);
    let server = files.pair(
        "dc1-server-consul-0",
        &leaf(&ca, &["server.dc1.consul", "localhost"]),
    );
    let client = files.pair(
        "dc1-client-consul-0",
        &leaf(&ca, &["client.dc1.consul", "localhost"]),
    );
    Setup {
        files,
        ca,
        ca_file,
        server,
        client,
    }
}

#[tokio::test]
async fn server_and_client_certificates_of_one_ca_agree() {
    let s = setup();
    let server = RpcTls::load(&config(Some(&s.ca_file), Some(&s.server))).unwrap();
    let client = RpcTls::load(&config(Some(&s.ca_file), Some(&s.client))).unwrap();
    let (served, dialled) = handshake(&server, &client).await;
    assert_eq!(dialled, Ok(()));
    assert_eq!(served, Ok(Some(b"h2".to_vec())), "h2 by ALPN");
    // Servers dial each other with their own certificate as the client's.
    let (served, dialled) = handshake(&server, &server).await;
    assert_eq!((served.is_ok(), dialled), (true, Ok(())));
}

#[tokio::test]
async fn verify_incoming_requires_a_client_certificate_of_the_ca() {
    let s = setup();
    let server = RpcTls::load(&config(Some(&s.ca_file), Some(&s.server))).unwrap();
    let anonymous = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        ..config(Some(&s.ca_file), None)
    })
    .unwrap();
    let (served, _) = handshake(&server, &anonymous).await;
    assert!(served.is_err(), "no certificate: refused");

    let other = ca("Another CA");
    let stranger = s
        .files
        .pair("stranger", &leaf(&other, &["client.dc1.consul"]));
    let stranger = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        ..config(Some(&s.ca_file), Some(&stranger))
    })
    .unwrap();
    let (served, dialled) = handshake(&server, &stranger).await;
    assert!(served.is_err(), "another CA's client: refused");
    assert!(dialled.is_err());

    // Without verify_incoming no certificate is asked for.
    let lenient = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        ..config(Some(&s.ca_file), Some(&s.server))
    })
    .unwrap();
    let (served, dialled) = handshake(&lenient, &anonymous).await;
    assert_eq!((served.is_ok(), dialled), (true, Ok(())));
}

#[tokio::test]
async fn verify_server_hostname_requires_the_datacenters_server_name() {
    let s = setup();
    let client = RpcTls::load(&config(Some(&s.ca_file), Some(&s.client))).unwrap();
    // A valid certificate of the CA, but a client's: not a server.
    let as_server = RpcTls::load(&config(Some(&s.ca_file), Some(&s.client))).unwrap();
    let (_, dialled) = handshake(&as_server, &client).await;
    let err = dialled.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    // Another datacenter's server.
    let dc2 = s.files.pair("dc2", &leaf(&s.ca, &["server.dc2.consul"]));
    let dc2 = RpcTls::load(&config(Some(&s.ca_file), Some(&dc2))).unwrap();
    let (_, dialled) = handshake(&dc2, &client).await;
    assert!(
        dialled.is_err(),
        "server.dc2.consul is not server.dc1.consul"
    );

    // With verify_outgoing alone, the chain is enough.
    let chain_only = RpcTls::load(&RpcTlsConfig {
        verify_server_hostname: false,
        ..config(Some(&s.ca_file), Some(&s.client))
    })
    .unwrap();
    assert!(chain_only.server_name().is_none());
    let (_, dialled) = handshake(&dc2, &chain_only).await;
    assert_eq!(dialled, Ok(()));
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused() {
    let s = setup();
    let other = ca("Another CA");
    let other_file = s.files.put("other-ca.pem", &other.pem);
    let impostor = s
        .files
        .pair("impostor", &leaf(&other, &["server.dc1.consul"]));
    let impostor = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        ..config(Some(&other_file), Some(&impostor))
    })
    .unwrap();
    let chain_only = RpcTls::load(&RpcTlsConfig {
        verify_server_hostname: false,
        ..config(Some(&s.ca_file), Some(&s.client))
    })
    .unwrap();
    let (_, dialled) = handshake(&impostor, &chain_only).await;
    assert!(dialled.unwrap_err().contains("UnknownIssuer"));
}

#[test]
fn settings_that_need_files_name_what_is_missing() {
    let s = setup();
    let err = RpcTls::load(&config(None, Some(&s.server))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "verify_incoming is set but no ca_file was provided"
    );
    let err = RpcTls::load(&config(Some(&s.ca_file), None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "verify_incoming is set but no cert_file and key_file was provided"
    );
    let err = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        ..config(None, Some(&s.server))
    })
    .unwrap_err();
    assert!(matches!(
        err,
        RpcTlsError::Missing {
            setting: "verify_server_hostname",
            missing: "ca_file"
        }
    ));
    let err = RpcTls::load(&RpcTlsConfig {
        key_file: None,
        ..config(Some(&s.ca_file), Some(&s.server))
    })
    .unwrap_err();
    assert!(matches!(err, RpcTlsError::CertWithoutKey));

    // Nothing outgoing without verify_outgoing: the port is dialled in plaintext.
    let serve_only = RpcTls::load(&RpcTlsConfig {
        verify_incoming: false,
        verify_outgoing: false,
        verify_server_hostname: false,
        ..config(None, Some(&s.server))
    })
    .unwrap();
    assert!(serve_only.client_config().is_none());
    assert!(serve_only.server_config().is_some());
}

#[test]
fn bad_files_are_named() {
    let s = setup();
    let missing = s.files.dir.path().join("nope.pem");
    let err = RpcTls::load(&config(Some(&missing), Some(&s.server))).unwrap_err();
    assert!(matches!(err, RpcTlsError::Read { key: "ca_file", .. }));
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let junk = s.files.put("junk.pem", "not a certificate");
    let err = RpcTls::load(&config(Some(&junk), Some(&s.server))).unwrap_err();
    assert!(
        matches!(err, RpcTlsError::NoCertificate { key: "ca_file", .. }),
        "{err}"
    );
    let err = RpcTls::load(&config(
        Some(&s.ca_file),
        Some(&(s.server.0.clone(), junk.clone())),
    ))
    .unwrap_err();
    assert!(matches!(err, RpcTlsError::PrivateKey { .. }), "{err}");
    assert!(err.to_string().contains("junk.pem"));

    // The client's key with the server's certificate.
    let err = RpcTls::load(&config(
        Some(&s.ca_file),
        Some(&(s.server.0.clone(), s.client.1.clone())),
    ))
    .unwrap_err();
    assert!(matches!(err, RpcTlsError::KeyMismatch { .. }), "{err}");
}

#[test]
fn server_names_follow_datacenter_and_domain() {
    let name = |dc, domain| {
        super::server_name(dc, domain)
            .unwrap()
            .to_str()
            .into_owned()
    };
    assert_eq!(name("dc1", "consul"), "server.dc1.consul");
    assert_eq!(name("east", "example.com."), "server.east.example.com");
    assert_eq!(name("dc1", ""), "server.dc1.consul");
}

#[test]
fn rustls_version_has_the_name_checks() {
    // Guard for the verifier: the functions it calls are rustls' own.
    let _ = Arc::new(super::ServerPortVerifier::new(
        Arc::new(rustls::RootCertStore::empty()),
        None,
    ));
}

/// A client agent's auto-encrypt certificate as the Connect CA makes it: the agent SPIFFE ID
/// of `node` in `dc` and trust domain `td`, clientAuth. (cert, key) PEM.
fn agent_leaf(connect: &Ca, td: &str, dc: &str, node: &str) -> (String, String) {
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{td}/agent/client/dc/{dc}/id/{node}")
            .try_into()
            .unwrap(),
    )];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.signed_by(&key, &connect.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

/// A server with `verify_incoming` and auto-encrypt's `allow_tls`, trusting `connect`.
fn allow_tls_server(s: &Setup, connect: &Ca) -> RpcTls {
    let server = RpcTls::load(&RpcTlsConfig {
        auto_encrypt_allow_tls: true,
        ..config(Some(&s.ca_file), Some(&s.server))
    })
    .unwrap();
    server
        .set_connect_roots(TD, std::slice::from_ref(&connect.pem))
        .unwrap();
    server
}

/// A client agent on auto-encrypt: the operator CA to verify servers with, no certificate file.
fn auto_encrypt_client(s: &Setup) -> RpcTls {
    RpcTls::load(&RpcTlsConfig {
        auto_encrypt_tls: true,
        verify_incoming: false,
        verify_outgoing: false,
        ..config(Some(&s.ca_file), None)
    })
    .unwrap()
}

#[tokio::test]
async fn an_auto_encrypt_agent_certificate_names_its_node() {
    let s = setup();
    let connect = ca("Connect CA");
    let server = allow_tls_server(&s, &connect);
    assert!(server.allow_tls());
    let client = auto_encrypt_client(&s);
    assert!(client.auto_encrypt_tls() && client.verify_outgoing());
    assert!(!client.has_client_identity());

    // Before it has a certificate, the agent may connect (to ask for one): unverified.
    let (served, dialled) = exchange(&server, &client).await;
    assert_eq!(dialled, Ok(()));
    assert_eq!(served.unwrap().1, Caller::Unverified);

    let (cert, key) = agent_leaf(&connect, TD, "dc1", "node-a");
    client.set_client_identity(&cert, &key).unwrap();
    assert!(client.has_client_identity());
    let (served, dialled) = exchange(&server, &client).await;
    assert_eq!(dialled, Ok(()));
    assert_eq!(
        served.unwrap().1,
        Caller::Agent(AgentIdentity {
            node: "node-a".into(),
            datacenter: "dc1".into(),
        })
    );

    // The operator CA's certificates keep their meaning beside it.
    let operator_client = RpcTls::load(&config(Some(&s.ca_file), Some(&s.client))).unwrap();
    let (served, _) = exchange(&server, &operator_client).await;
    assert_eq!(served.unwrap().1, Caller::Client);
    let (served, _) = exchange(&server, &server).await;
    assert_eq!(served.unwrap().1, Caller::Server);
}

#[tokio::test]
async fn agent_certificates_of_another_datacenter_trust_domain_or_ca_are_refused() {
    let s = setup();
    let connect = ca("Connect CA");
    let server = allow_tls_server(&s, &connect);
    let other_ca = ca("Another Connect CA");
    for (what, (cert, key)) in [
        (
            "another datacenter",
            agent_leaf(&connect, TD, "dc2", "node-a"),
        ),
        (
            "another trust domain",
            agent_leaf(
                &connect,
                "99999999-2222-3333-4444-555555555555.consul",
                "dc1",
                "node-a",
            ),
        ),
        ("another CA", agent_leaf(&other_ca, TD, "dc1", "node-a")),
    ] {
        let client = auto_encrypt_client(&s);
        client.set_client_identity(&cert, &key).unwrap();
        let (served, _) = exchange(&server, &client).await;
        assert!(served.is_err(), "{what}: accepted");
    }

    // A server without allow_tls (verify_incoming on) takes no Connect certificate at all.
    let strict = RpcTls::load(&config(Some(&s.ca_file), Some(&s.server))).unwrap();
    let client = auto_encrypt_client(&s);
    let (cert, key) = agent_leaf(&connect, TD, "dc1", "node-a");
    client.set_client_identity(&cert, &key).unwrap();
    let (served, _) = exchange(&strict, &client).await;
    assert!(served.is_err(), "no allow_tls: refused");

    // Nor one with allow_tls that has not learned the Connect roots yet.
    let unset = RpcTls::load(&RpcTlsConfig {
        auto_encrypt_allow_tls: true,
        ..config(Some(&s.ca_file), Some(&s.server))
    })
    .unwrap();
    let (served, _) = exchange(&unset, &client).await;
    assert!(served.is_err(), "no Connect roots yet: refused");
}

#[test]
fn auto_encrypt_settings_and_handed_over_material_are_checked() {
    let s = setup();
    let err = RpcTls::load(&RpcTlsConfig {
        auto_encrypt_tls: true,
        ..config(None, None)
    })
    .unwrap_err();
    assert!(err.to_string().contains("auto_encrypt.tls"), "{err}");
    let err = RpcTls::load(&RpcTlsConfig {
        auto_encrypt_allow_tls: true,
        ..config(Some(&s.ca_file), None)
    })
    .unwrap_err();
    assert!(err.to_string().contains("auto_encrypt.allow_tls"), "{err}");

    let client = auto_encrypt_client(&s);
    let connect = ca("Connect CA");
    let (cert, _) = agent_leaf(&connect, TD, "dc1", "node-a");
    let (_, other_key) = agent_leaf(&connect, TD, "dc1", "node-b");
    let err = client.set_client_identity(&cert, &other_key).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let err = client
        .set_client_identity(
            &cert,
            "-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap_err();
    assert!(
        !err.to_string().contains("not a key"),
        "the key is never quoted: {err}"
    );
    assert!(!client.has_client_identity(), "nothing set on a refusal");

    let server = RpcTls::load(&RpcTlsConfig {
        auto_encrypt_allow_tls: true,
        ..config(Some(&s.ca_file), Some(&s.server))
    })
    .unwrap();
    assert!(server.set_connect_roots(TD, &[]).is_err());
    assert!(server
        .set_connect_roots("not a trust domain!", std::slice::from_ref(&connect.pem))
        .is_err());
    // The operator bundle as auto-encrypt hands it over.
    assert_eq!(server.ca_pems().len(), 1);
    assert!(server.ca_pems()[0].starts_with("-----BEGIN CERTIFICATE-----"));
}
