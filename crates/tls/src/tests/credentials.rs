//! Parsing credentials and bundles: what is accepted, and clear errors for the rest.

use trellis_api::{CaRoot, IndexedCaRoots, IssuedCert};

use super::*;
use crate::TlsError;

fn roots_response(ca: &TestCa) -> IndexedCaRoots {
    IndexedCaRoots {
        active_root_id: "id".into(),
        trust_domain: td().to_string(),
        roots: vec![CaRoot {
            root_cert: ca.root_pem().to_string(),
            active: true,
            ..CaRoot::default()
        }],
    }
}

/// The base64 body of a PEM, which must never appear in errors or debug output.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn credentials_from_the_agent_shapes() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("web");
    let issued = IssuedCert {
        cert_pem: cert.clone(),
        private_key_pem: key.clone(),
        service: "web".into(),
        service_uri: service_uri("web"),
        ..IssuedCert::default()
    };
    let creds = Credentials::from_issued(&issued, &roots_response(&ca)).unwrap();
    assert_eq!(creds.identity(), &service("web"));
    assert_eq!(creds.bundle().trust_domain(), &td());
    assert_eq!(creds.bundle().roots().len(), 1);
    assert_eq!(creds.chain().len(), 1);
    let in_72h = time::OffsetDateTime::now_utc().unix_timestamp() + 72 * 3600;
    assert!(
        (creds.not_after() - in_72h).abs() < 120,
        "{}",
        creds.not_after()
    );
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"), "SEC1");
}

#[test]
fn credentials_accept_pkcs8_and_an_appended_chain() {
    let ca = TestCa::new();
    let (cert, key) = ca.custom_leaf(&[&service_uri("web")]);
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let with_chain = format!("{cert}{}", ca.root_pem());
    let creds = Credentials::new(&with_chain, &key, ca.bundle()).unwrap();
    assert_eq!(creds.chain().len(), 2);
}

#[test]
fn debug_and_errors_never_show_the_key() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("web");
    let body = pem_body(&key);
    let creds = Credentials::new(&cert, &key, ca.bundle()).unwrap();
    let debug = format!("{creds:?}");
    assert!(!debug.contains(&body[..40]), "{debug}");
    assert!(debug.contains("web"), "{debug}");

    // A corrupted key: the error is fixed text.
    let broken = key.replacen(&body[10..20], "!!!!!!!!!!", 1);
    let err = Credentials::new(&cert, &broken, ca.bundle()).unwrap_err();
    assert_eq!(err, TlsError::PrivateKeyPem);
    assert!(!err.to_string().contains(&body[..20]));
    assert!(!format!("{err:?}").contains(&body[..20]));
}

#[test]
fn credentials_errors() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("web");
    let (_, other_key) = ca.leaf("web");
    let bundle = || ca.bundle();

    assert_eq!(
        Credentials::new(&cert, &other_key, bundle()).unwrap_err(),
        TlsError::KeyMismatch
    );
    assert_eq!(
        Credentials::new(&cert, "", bundle()).unwrap_err(),
        TlsError::PrivateKeyPem
    );
    assert_eq!(
        Credentials::new("", &key, bundle()).unwrap_err(),
        TlsError::NoCertificate { what: "CertPEM" }
    );
    assert!(matches!(
        Credentials::new(
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            &key,
            bundle()
        ),
        Err(TlsError::CertificatePem {
            what: "CertPEM",
            ..
        })
    ));
    assert!(matches!(
        Credentials::new(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
            bundle()
        ),
        Err(TlsError::Certificate {
            what: "CertPEM",
            ..
        })
    ));

    // The leaf must be a service of the bundle's trust domain.
    let (gateway, gateway_key) =
        ca.sign(&SpiffeId::mesh_gateway(td(), "dc1").to_string(), LEAF_TTL);
    assert!(matches!(
        Credentials::new(&gateway, &gateway_key, bundle()),
        Err(TlsError::NotAService(_))
    ));
    let other_td = TrustDomain::parse("other.consul").unwrap();
    let foreign_bundle = TrustBundle::new(other_td, &[ca.root_pem()], &[]).unwrap();
    assert!(matches!(
        Credentials::new(&cert, &key, foreign_bundle),
        Err(TlsError::WrongTrustDomain { .. })
    ));
}

#[test]
fn bundle_errors() {
    let ca = TestCa::new();
    let mut roots = roots_response(&ca);
    roots.trust_domain.clear();
    assert_eq!(
        TrustBundle::from_ca_roots(&roots).unwrap_err(),
        TlsError::NoTrustDomain
    );
    let mut roots = roots_response(&ca);
    roots.roots.clear();
    assert_eq!(
        TrustBundle::from_ca_roots(&roots).unwrap_err(),
        TlsError::NoRoots
    );
    let mut roots = roots_response(&ca);
    roots.trust_domain = "not a domain".into();
    assert!(matches!(
        TrustBundle::from_ca_roots(&roots),
        Err(TlsError::Identity(_))
    ));
    let mut roots = roots_response(&ca);
    roots.roots[0].root_cert =
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
    assert!(matches!(
        TrustBundle::from_ca_roots(&roots),
        Err(TlsError::Root(_))
    ));
    let mut roots = roots_response(&ca);
    roots.roots[0].intermediate_certs = Some(vec!["garbage".into()]);
    assert_eq!(
        TrustBundle::from_ca_roots(&roots).unwrap_err(),
        TlsError::NoCertificate {
            what: "IntermediateCerts"
        }
    );
}

#[test]
fn bundle_collects_every_root_and_intermediate_once() {
    let old = TestCa::new();
    let new = TestCa::new();
    let cross = old.provider.cross_sign(new.root_pem()).unwrap();
    let roots = IndexedCaRoots {
        active_root_id: String::new(),
        trust_domain: td().to_string(),
        roots: vec![
            CaRoot {
                root_cert: old.root_pem().to_string(),
                ..CaRoot::default()
            },
            CaRoot {
                root_cert: new.root_pem().to_string(),
                intermediate_certs: Some(vec![cross.clone(), cross]),
                active: true,
                ..CaRoot::default()
            },
        ],
    };
    let bundle = TrustBundle::from_ca_roots(&roots).unwrap();
    assert_eq!(bundle.roots().len(), 2);
    assert_eq!(bundle.intermediates().len(), 1);
    let debug = format!("{bundle:?}");
    assert!(debug.contains("roots: 2"), "{debug}");
}
