//! Real handshakes: what is accepted, what is refused and how.

use rustls::version::{TLS12, TLS13};
use rustls::{CertificateError, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_identity::SpiffeId;

use super::*;
use crate::{client_config, server_config};

const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// A server for `db` (trusting only `ca`) offering h2 and http/1.1.
async fn db_server(
    ca: &TestCa,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<ServerEvent>,
    Credentials,
) {
    let creds = ca.credentials("db");
    let config = server_config(&creds, &[H2, HTTP11]).unwrap();
    let (addr, rx) = echo_server(move || config.clone()).await;
    (addr, rx, creds)
}

fn expect_db() -> ExpectedService {
    ExpectedService::new(service("db"))
}

fn is_application_failure(e: &io::Error) -> bool {
    matches!(
        rustls_error(e),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    )
}

#[tokio::test]
async fn mutual_tls_between_two_services() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let web = ca.credentials("web");
    let expected = expect_db();
    let config = client_config(&web, &expected, &[H2]).unwrap();

    let client = dial_and_ping(addr, config, expected.server_name().unwrap())
        .await
        .unwrap();
    assert_eq!(client.peer, Some(SpiffeId::Service(service("db"))));
    assert_eq!(client.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(client.alpn.as_deref(), Some(H2));

    let server = expect_accepted(&mut rx).await;
    assert_eq!(server.peer, Some(SpiffeId::Service(service("web"))));
    assert_eq!(server.alpn.as_deref(), Some(H2));
    // Consul's SNI for the upstream.
    assert_eq!(
        server.sni.as_deref(),
        Some(format!("db.default.dc1.internal.{CLUSTER}.consul").as_str())
    );
    assert!(matches!(next_event(&mut rx).await, ServerEvent::Read(d) if d == b"ping"));
}

#[tokio::test]
async fn peer_service_reads_the_verified_caller() {
    let ca = TestCa::new();
    let db = ca.credentials("db");
    let web = ca.credentials("web");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(&db, &[]).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        crate::peer_service(tls.get_ref().1)
    });
    let config = client_config(&web, &expect_db(), &[]).unwrap();
    let (tls, _) = dial(addr, config, any_name()).await.unwrap();
    assert_eq!(crate::peer_service(tls.get_ref().1), Some(service("db")));
    assert_eq!(server.await.unwrap(), Some(service("web")));
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let config = raw_client(&ca.bundle(), expect_db(), None, &[&TLS13]);
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut rx).await;
    assert_eq!(
        rustls_error(&e),
        Some(&rustls::Error::NoCertificatesPresented),
        "{e}"
    );
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let ca = TestCa::new();
    // Same trust domain, different key: only the chain tells them apart.
    let other = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let (cert, key) = other.leaf("web");
    // The client trusts both CAs, so only the server's verdict matters.
    let bundle = TrustBundle::new(td(), &[ca.root_pem(), other.root_pem()], &[]).unwrap();
    let web = Credentials::new(&cert, &key, bundle).unwrap();
    let config = client_config(&web, &expect_db(), &[]).unwrap();
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut rx).await;
    assert_eq!(
        rustls_error(&e),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )),
        "{e}"
    );
}

#[tokio::test]
async fn client_with_a_non_service_identity_is_refused() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let td = td();
    let leafs = [
        // Issued by the CA's own signing path: a mesh gateway is a valid leaf, not a service.
        ca.sign(
            &SpiffeId::mesh_gateway(td.clone(), "dc1").to_string(),
            LEAF_TTL,
        ),
        // Signed with the CA key directly: a client agent ID.
        ca.custom_leaf(&[&SpiffeId::agent(td.clone(), "dc1", "node-1").to_string()]),
        // A service of another trust domain, signed by our CA.
        ca.custom_leaf(&[
            "spiffe://22222222-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web",
        ]),
        // No URI SAN at all, and two URI SANs.
        ca.custom_leaf(&[]),
        ca.custom_leaf(&[&service_uri("web"), &service_uri("admin")]),
    ];
    for (cert, key) in &leafs {
        let config = raw_client(&ca.bundle(), expect_db(), Some((cert, key)), &[&TLS13]);
        assert!(dial_and_ping(addr, config, any_name()).await.is_err());
        let e = expect_refused(&mut rx).await;
        assert!(is_application_failure(&e), "{e}");
    }
}

#[tokio::test]
async fn self_signed_agent_certificate_is_refused() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(
        SpiffeId::agent(td(), "dc1", "node-1")
            .to_string()
            .try_into()
            .unwrap(),
    )];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.self_signed(&key).unwrap();
    let (cert, key) = (cert.pem(), key.serialize_pem());
    let config = raw_client(&ca.bundle(), expect_db(), Some((&cert, &key)), &[&TLS13]);
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut rx).await;
    assert!(
        matches!(rustls_error(&e), Some(rustls::Error::InvalidCertificate(_))),
        "{e}"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    // A zero TTL from the real signing path: notAfter = notBefore = a minute ago.
    let (cert, key) = ca.sign(&service_uri("web"), Duration::ZERO);
    // Credentials do not refuse an expired leaf (the agent is expected to renew it); peers do.
    let web = Credentials::new(&cert, &key, ca.bundle()).unwrap();
    assert!(web.not_after() < time::OffsetDateTime::now_utc().unix_timestamp());
    let config = client_config(&web, &expect_db(), &[]).unwrap();
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut rx).await;
    assert!(
        matches!(
            rustls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ))
        ),
        "{e}"
    );
}

#[tokio::test]
async fn plaintext_is_refused() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: db\r\n\r\n")
        .await
        .unwrap();
    let e = expect_refused(&mut rx).await;
    assert!(rustls_error(&e).is_some(), "{e}");
    // The server closes after at most an alert; nothing is echoed.
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply)).await;
    assert!(!reply.windows(3).any(|w| w == b"GET"));
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let ca = TestCa::new();
    // The server is `web`; the client dialled `db`.
    let web = ca.credentials("web");
    let config = server_config(&web, &[]).unwrap();
    let (addr, mut rx) = echo_server(move || config.clone()).await;
    let client = ca.credentials("api");
    let config = client_config(&client, &expect_db(), &[]).unwrap();
    let e = dial(addr, config, any_name()).await.unwrap_err();
    assert!(is_application_failure(&e), "{e}");
    // The server saw the client's alert, and no data.
    expect_refused(&mut rx).await;
}

#[tokio::test]
async fn upstream_identity_comparison() {
    let ca = TestCa::new();
    let db = ca.credentials("db");
    let config = server_config(&db, &[]).unwrap();
    let (addr, mut rx) = echo_server(move || config.clone()).await;
    let web = ca.credentials("web");
    let other_td = TrustDomain::parse("22222222-2222-3333-4444-555555555555.consul").unwrap();
    let cases = [
        (ExpectedService::new(service("db")), true),
        // Case-insensitive, as Consul's EqualFold.
        (ExpectedService::new(service("DB")), true),
        (
            ExpectedService::new(ServiceId::new(td(), "DC1", "db").with_namespace("Default")),
            true,
        ),
        // The datacenter counts unless explicitly waived.
        (
            ExpectedService::new(ServiceId::new(td(), "dc2", "db")),
            false,
        ),
        (
            ExpectedService::new(ServiceId::new(td(), "dc2", "db")).any_datacenter(),
            true,
        ),
        // Namespace, partition and trust domain always count.
        (
            ExpectedService::new(service("db").with_namespace("team-a")),
            false,
        ),
        (
            ExpectedService::new(service("db").with_partition("part1")),
            false,
        ),
        (
            ExpectedService::new(ServiceId::new(other_td, "dc1", "db")),
            false,
        ),
    ];
    for (expected, accepted) in cases {
        let config = client_config(&web, &expected, &[]).unwrap();
        let result = dial_and_ping(addr, config, any_name()).await;
        assert_eq!(result.is_ok(), accepted, "{expected}: {result:?}");
        if accepted {
            expect_accepted(&mut rx).await;
            assert!(matches!(next_event(&mut rx).await, ServerEvent::Read(_)));
        } else {
            assert!(is_application_failure(&result.unwrap_err()));
            expect_refused(&mut rx).await;
        }
    }
}

#[tokio::test]
async fn tls12_client_is_accepted() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let (cert, key) = ca.leaf("web");
    let config = raw_client(&ca.bundle(), expect_db(), Some((&cert, &key)), &[&TLS12]);
    let client = dial_and_ping(addr, config, any_name()).await.unwrap();
    assert_eq!(client.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(client.peer, Some(SpiffeId::Service(service("db"))));
    let server = expect_accepted(&mut rx).await;
    assert_eq!(server.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(server.peer, Some(SpiffeId::Service(service("web"))));
}

#[tokio::test]
async fn tls12_client_is_verified_too() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let (cert, key) = ca.custom_leaf(&[&SpiffeId::agent(td(), "dc1", "n").to_string()]);
    let config = raw_client(&ca.bundle(), expect_db(), Some((&cert, &key)), &[&TLS12]);
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    assert!(is_application_failure(&expect_refused(&mut rx).await));
}

#[tokio::test]
async fn alpn_is_negotiated_as_asked() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let web = ca.credentials("web");
    type Offer = &'static [&'static [u8]];
    let cases: [(Offer, Option<&[u8]>); 4] = [
        (&[H2, HTTP11], Some(H2)),
        (&[HTTP11, H2], Some(H2)), // the server's preference wins
        (&[HTTP11], Some(HTTP11)),
        (&[], None),
    ];
    for (offered, negotiated) in cases {
        let config = client_config(&web, &expect_db(), offered).unwrap();
        let client = dial_and_ping(addr, config, any_name()).await.unwrap();
        assert_eq!(client.alpn.as_deref(), negotiated, "{offered:?}");
        let server = expect_accepted(&mut rx).await;
        assert_eq!(server.alpn.as_deref(), negotiated);
        assert!(matches!(next_event(&mut rx).await, ServerEvent::Read(_)));
    }
    // No protocol in common: refused rather than guessed.
    let config = client_config(&web, &expect_db(), &[b"spdy/3"]).unwrap();
    assert!(dial_and_ping(addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut rx).await;
    assert_eq!(
        rustls_error(&e),
        Some(&rustls::Error::NoApplicationProtocol)
    );
}

#[tokio::test]
async fn every_connection_is_fully_verified() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let state = crate::TlsState::new(ca.credentials("web"), &[]).unwrap();
    // The same cached configuration for both connections: nothing is resumed.
    for _ in 0..2 {
        let config = state.current().client_config(&expect_db(), &[H2]).unwrap();
        let (mut tls, _) = dial(addr, config, any_name()).await.unwrap();
        ping(&mut tls).await.unwrap();
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        let server = expect_accepted(&mut rx).await;
        assert_eq!(server.peer, Some(SpiffeId::Service(service("web"))));
        assert!(matches!(next_event(&mut rx).await, ServerEvent::Read(_)));
    }
}

#[tokio::test]
async fn the_server_issues_no_tls13_tickets() {
    let ca = TestCa::new();
    let (addr, mut rx, _) = db_server(&ca).await;
    let (cert, key) = ca.leaf("web");
    // rustls' default client resumes whenever it can; against our server it cannot in TLS 1.3.
    // In TLS 1.2 it can (documented on `server_config`), and the resumed connection still
    // reports the caller's identity.
    for (version, second) in [
        (&TLS13, rustls::HandshakeKind::Full),
        (&TLS12, rustls::HandshakeKind::Resumed),
    ] {
        let config = raw_client(&ca.bundle(), expect_db(), Some((&cert, &key)), &[version]);
        for kind in [rustls::HandshakeKind::Full, second] {
            let (mut tls, _) = dial(addr, config.clone(), any_name()).await.unwrap();
            ping(&mut tls).await.unwrap();
            assert_eq!(tls.get_ref().1.handshake_kind(), Some(kind), "{version:?}");
            let server = expect_accepted(&mut rx).await;
            assert_eq!(server.peer, Some(SpiffeId::Service(service("web"))));
            assert!(matches!(next_event(&mut rx).await, ServerEvent::Read(_)));
        }
    }
}
