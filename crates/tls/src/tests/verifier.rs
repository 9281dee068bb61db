//! The verifiers and identity rules called directly, with chosen `now` values.

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use trellis_identity::SpiffeId;

use super::*;
use crate::{check_client_identity, leaf_identity, ServiceClientVerifier, TlsError};

fn at(unix: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(unix as u64))
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn invalid(e: CertificateError) -> rustls::Error {
    rustls::Error::InvalidCertificate(e)
}

#[test]
fn client_verifier_accepts_a_service_and_refuses_the_rest() {
    let ca = TestCa::new();
    let verifier = ServiceClientVerifier::new(&ca.bundle()).unwrap();
    assert!(verifier.client_auth_mandatory());
    assert!(verifier.offer_client_auth());

    let (web, _) = ca.leaf("web");
    assert!(verifier.verify_client_cert(&der(&web), &[], now()).is_ok());

    let refused = [
        ca.custom_leaf(&[&SpiffeId::agent(td(), "dc1", "node-1").to_string()]),
        ca.custom_leaf(&[&SpiffeId::server(td(), "dc1").to_string()]),
        ca.custom_leaf(&[&SpiffeId::signing(td()).to_string()]),
        ca.custom_leaf(&["spiffe://example.org/workload"]),
        ca.custom_leaf(&[
            "spiffe://22222222-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web",
        ]),
        ca.custom_leaf(&[]),
        ca.custom_leaf(&[&service_uri("web"), &service_uri("web")]),
    ];
    for (cert, _) in &refused {
        assert_eq!(
            verifier.verify_client_cert(&der(cert), &[], now()).err(),
            Some(invalid(CertificateError::ApplicationVerificationFailure)),
        );
    }
}

#[test]
fn client_verifier_checks_expiry_against_now() {
    let ca = TestCa::new();
    let verifier = ServiceClientVerifier::new(&ca.bundle()).unwrap();
    let (cert, key) = ca.leaf("web");
    let not_after = Credentials::new(&cert, &key, ca.bundle())
        .unwrap()
        .not_after();
    let leaf = der(&cert);
    assert!(verifier
        .verify_client_cert(&leaf, &[], at(not_after - 1))
        .is_ok());
    let err = verifier
        .verify_client_cert(&leaf, &[], at(not_after + 1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
    let err = verifier
        .verify_client_cert(&leaf, &[], at(not_after - 4 * 24 * 3600))
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn client_verifier_refuses_another_ca() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let verifier = ServiceClientVerifier::new(&ca.bundle()).unwrap();
    let (cert, _) = other.leaf("web");
    assert_eq!(
        verifier.verify_client_cert(&der(&cert), &[], now()).err(),
        Some(invalid(CertificateError::UnknownIssuer))
    );
}

#[test]
fn upstream_verifier_checks_chain_then_identity() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let verifier = UpstreamVerifier::new(&ca.bundle(), ExpectedService::new(service("db")));
    let name = any_name();
    let verify =
        |cert: &str, now: UnixTime| verifier.verify_server_cert(&der(cert), &[], &name, &[], now);
    let (db, db_key) = ca.leaf("db");
    assert!(verify(&db, now()).is_ok());
    // No host name check: any server name is fine.
    assert!(verifier
        .verify_server_cert(
            &der(&db),
            &[],
            &ServerName::try_from("10.0.0.1").unwrap(),
            &[],
            now()
        )
        .is_ok());
    let (web, _) = ca.leaf("web");
    assert_eq!(
        verify(&web, now()).err(),
        Some(invalid(CertificateError::ApplicationVerificationFailure))
    );
    let (foreign_db, _) = other.leaf("db");
    assert_eq!(
        verify(&foreign_db, now()).err(),
        Some(invalid(CertificateError::UnknownIssuer))
    );
    let not_after = Credentials::new(&db, &db_key, ca.bundle())
        .unwrap()
        .not_after();
    assert!(matches!(
        verify(&db, at(not_after + 1)).err(),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ))
    ));
}

#[test]
fn leaf_identity_requires_one_uri() {
    let ca = TestCa::new();
    let (web, _) = ca.leaf("web");
    assert_eq!(
        leaf_identity(&der(&web)).unwrap(),
        SpiffeId::Service(service("web"))
    );
    let (none, _) = ca.custom_leaf(&[]);
    assert_eq!(leaf_identity(&der(&none)), Err(TlsError::UriSanCount(0)));
    let uris = [service_uri("a"), service_uri("b"), service_uri("c")];
    let (three, _) = ca.custom_leaf(&[&uris[0], &uris[1], &uris[2]]);
    assert_eq!(leaf_identity(&der(&three)), Err(TlsError::UriSanCount(3)));
    let (not_spiffe, _) = ca.custom_leaf(&["https://example.com/"]);
    assert!(matches!(
        leaf_identity(&der(&not_spiffe)),
        Err(TlsError::Identity(_))
    ));
    assert!(matches!(
        leaf_identity(&CertificateDer::from(&b"not a certificate"[..])),
        Err(TlsError::Certificate { .. })
    ));
}

#[test]
fn client_identity_rule() {
    let web = SpiffeId::Service(service("web"));
    assert_eq!(check_client_identity(&web, &td()).unwrap(), &service("web"));
    let gateway = SpiffeId::mesh_gateway(td(), "dc1");
    assert!(matches!(
        check_client_identity(&gateway, &td()),
        Err(TlsError::NotAService(_))
    ));
    let other = TrustDomain::parse("other.consul").unwrap();
    let err = check_client_identity(&web, &other).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("SPIFFE ID {web} is not in trust domain other.consul")
    );
}

#[test]
fn expected_service_matching_and_sni() {
    let expected = ExpectedService::new(service("db"));
    assert!(expected.matches(&SpiffeId::Service(service("db"))));
    assert!(expected.matches(&SpiffeId::Service(service("Db"))));
    assert!(!expected.matches(&SpiffeId::Service(ServiceId::new(td(), "dc2", "db"))));
    assert!(!expected.matches(&SpiffeId::mesh_gateway(td(), "dc1")));
    assert!(expected
        .clone()
        .any_datacenter()
        .matches(&SpiffeId::Service(ServiceId::new(td(), "dc2", "db"))));
    // A hand-built ID with empty namespace and partition means `default`.
    let mut bare = service("db");
    bare.namespace.clear();
    bare.partition.clear();
    assert!(ExpectedService::new(bare).matches(&SpiffeId::Service(service("db"))));

    let err = expected
        .check(&SpiffeId::Service(service("web")))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "peer certificate mismatch: got {}, want {}",
            service("web"),
            service("db")
        )
    );

    assert_eq!(
        expected.server_name().unwrap().to_str(),
        format!("db.default.dc1.internal.{CLUSTER}.consul")
    );
    let partitioned = ExpectedService::new(service("db").with_partition("part1"));
    assert_eq!(
        partitioned.server_name().unwrap().to_str(),
        format!("db.default.part1.dc1.internal-v1.{CLUSTER}.consul")
    );
    let bad = ExpectedService::new(service("my db"));
    assert!(matches!(
        bad.server_name(),
        Err(TlsError::ServerName { .. })
    ));
}
