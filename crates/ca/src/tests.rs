//! CA tests: roots and leafs checked by openssl, every CSR refusal, cross-signing, state.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, SanType};
use serde_json::json;
use trellis_identity::TrustDomain;

use crate::{
    leaf_key_and_csr, validate_agent_csr, validate_csr, BuiltinProvider, CaConfig, CaError,
    CaProvider, CertInfo,
};

mod allowlist;
mod hsm;

const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

fn td() -> TrustDomain {
    TrustDomain::for_cluster(CLUSTER).unwrap()
}

fn web_uri() -> String {
    format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/web")
}

fn config(extra: serde_json::Value) -> CaConfig {
    CaConfig::parse("consul", extra.as_object().unwrap(), false).unwrap()
}

/// `openssl verify` with `root` trusted and `untrusted` as the offered chain.
fn openssl_verify(dir: &Path, root: &str, untrusted: &[&str], leaf: &str) -> Result<(), String> {
    openssl_verify_for(dir, root, untrusted, leaf, "sslclient")
}

/// `openssl verify` for one purpose (`sslclient`, `sslserver`).
fn openssl_verify_for(
    dir: &Path,
    root: &str,
    untrusted: &[&str],
    leaf: &str,
    purpose: &str,
) -> Result<(), String> {
    std::fs::write(dir.join("root.pem"), root).unwrap();
    std::fs::write(dir.join("chain.pem"), untrusted.concat()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(dir.join("root.pem"));
    if !untrusted.is_empty() {
        cmd.arg("-untrusted").arg(dir.join("chain.pem"));
    }
    cmd.arg("-purpose").arg(purpose).arg(dir.join("leaf.pem"));
    let out = cmd.output().expect("openssl runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn sign_web(ca: &dyn CaProvider) -> (String, String) {
    sign_web_in(ca, &td())
}

/// Signs a leaf for `web` in `td` from a fresh agent key and CSR: (cert, key) PEM.
fn sign_web_in(ca: &dyn CaProvider, td: &TrustDomain) -> (String, String) {
    let uri = format!("spiffe://{}/ns/default/dc/dc1/svc/web", td.as_str());
    let leaf = leaf_key_and_csr(&uri).unwrap();
    let csr = validate_csr(&leaf.csr_pem, td, "dc1").unwrap();
    let issued = ca.sign_leaf(&csr, Duration::from_secs(72 * 3600)).unwrap();
    (issued.cert_pem, leaf.private_key_pem)
}

/// `openssl x509 -text` of a certificate.
fn openssl_text(dir: &Path, cert: &str) -> String {
    let path = dir.join("text.pem");
    std::fs::write(&path, cert).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What every provider must do, checked with openssl: its root; a leaf that verifies, for
/// both sides of mTLS, with Consul's fields; an intermediate (path length 0) that openssl
/// accepts as an issuer; and a cross-signed certificate that carries another root's leafs
/// to holders of this root.
fn conformance(provider: &dyn CaProvider, td: &TrustDomain) {
    let name = provider.name();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let root = provider.root().root_pem.clone();
    let signing_uri = format!("spiffe://{}", td.as_str());
    let web = format!("{signing_uri}/ns/default/dc/dc1/svc/web");
    let root_info = CertInfo::from_pem(&root).unwrap();
    assert_eq!(
        root_info.uris,
        std::slice::from_ref(&signing_uri),
        "{name}: root URI"
    );
    assert!(
        openssl_text(dir, &root).contains("CA:TRUE"),
        "{name}: root is a CA"
    );

    // Leaf: verifies as client and server, and carries Consul's fields.
    let (leaf, _) = sign_web_in(provider, td);
    for purpose in ["sslclient", "sslserver"] {
        openssl_verify_for(dir, &root, &[], &leaf, purpose)
            .unwrap_or_else(|e| panic!("{name}: leaf ({purpose}): {e}"));
    }
    let text = openssl_text(dir, &leaf);
    for needle in [
        format!("URI:{web}"),
        "TLS Web Server Authentication, TLS Web Client Authentication".into(),
        "CA:FALSE".into(),
        "Digital Signature, Key Encipherment, Data Encipherment, Key Agreement".into(),
    ] {
        assert!(
            text.contains(&needle),
            "{name}: leaf lacks {needle:?}:\n{text}"
        );
    }

    // Intermediate for a secondary: CA with path length 0 that openssl accepts as an issuer.
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(
        rcgen::DnType::CommonName,
        "sec-dc2.consul.ca.11111111.consul",
    );
    p.subject_alt_names = vec![uri(&signing_uri)];
    let csr = p.serialize_request(&inter_key).unwrap().pem().unwrap();
    let inter = provider
        .sign_intermediate(&csr, Duration::from_secs(24 * 3600))
        .unwrap();
    let text = openssl_text(dir, &inter);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{name}: {text}");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&inter, inter_key).unwrap();
    let issue = |is_ca: IsCa, issuer: &rcgen::Issuer<'_, KeyPair>| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "sub");
        p.subject_alt_names = vec![uri(&web)];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.is_ca = is_ca;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key, p)
    };
    let (leaf2, _, _) = issue(IsCa::ExplicitNoCa, &issuer);
    openssl_verify(dir, &root, &[&inter], &leaf2)
        .unwrap_or_else(|e| panic!("{name}: leaf under the intermediate: {e}"));
    assert!(openssl_verify(dir, &root, &[], &leaf2).is_err());
    // Path length 0: a CA below the intermediate is not accepted.
    let (sub, sub_key, sub_params) = issue(IsCa::Ca(BasicConstraints::Unconstrained), &issuer);
    let sub_issuer = rcgen::Issuer::new(sub_params, sub_key);
    let (leaf3, _, _) = issue(IsCa::ExplicitNoCa, &sub_issuer);
    let err = openssl_verify(dir, &root, &[&inter, &sub], &leaf3).unwrap_err();
    assert!(err.contains("path length"), "{name}: {err}");
    // An intermediate CSR for another trust domain is refused.
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![uri("spiffe://99999999-2222-3333-4444-555555555555.consul")];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    assert!(matches!(
        provider.sign_intermediate(&csr, Duration::from_secs(24 * 3600)),
        Err(CaError::InvalidCsr(_))
    ));

    // Cross-signing: holders of this root accept another root's leafs through the cross cert.
    let other = BuiltinProvider::generate(td, &CaConfig::default_consul()).unwrap();
    let cross = provider.cross_sign(&other.root().root_pem).unwrap();
    let (other_leaf, _) = sign_web_in(&other, td);
    openssl_verify(dir, &root, &[&cross], &other_leaf)
        .unwrap_or_else(|e| panic!("{name}: cross-signed chain: {e}"));
    assert!(openssl_verify(dir, &root, &[], &other_leaf).is_err());
    assert_eq!(
        CertInfo::from_pem(&cross).unwrap().subject_key_id,
        CertInfo::from_pem(&other.root().root_pem)
            .unwrap()
            .subject_key_id,
        "{name}: the cross-signed cert keeps the other root's key ID"
    );
}

#[test]
fn builtin_provider_conforms() {
    for (ty, bits) in [("ec", 256), ("ec", 384), ("rsa", 2048)] {
        let ca = BuiltinProvider::generate(
            &td(),
            &config(json!({"PrivateKeyType": ty, "PrivateKeyBits": bits})),
        )
        .unwrap();
        conformance(&ca, &td());
    }
}

#[test]
fn leafs_from_every_key_type_pass_openssl_verify() {
    let dir = tempfile::tempdir().unwrap();
    for (ty, bits) in [("ec", 256), ("ec", 384), ("rsa", 2048)] {
        let ca = BuiltinProvider::generate(
            &td(),
            &config(json!({"PrivateKeyType": ty, "PrivateKeyBits": bits})),
        )
        .unwrap();
        let root = ca.root().root_pem.clone();
        let root_info = CertInfo::from_pem(&root).unwrap();
        assert_eq!(
            (root_info.key_type.as_str(), root_info.key_bits),
            (ty, bits),
            "root key"
        );
        assert_eq!(root_info.uris, [format!("spiffe://{CLUSTER}.consul")]);
        assert_eq!(
            root_info.subject_key_id.split(':').count(),
            32,
            "Consul key IDs are SHA-256"
        );
        let (leaf, key) = sign_web(&ca);
        openssl_verify(dir.path(), &root, &[], &leaf)
            .unwrap_or_else(|e| panic!("{ty}/{bits}: {e}"));
        assert!(
            key.starts_with("-----BEGIN EC PRIVATE KEY-----"),
            "SEC1 leaf key"
        );
        let info = CertInfo::from_pem(&leaf).unwrap();
        assert_eq!(info.uris, [web_uri()]);
        assert_eq!(info.key_type, "ec", "leaf keys are always EC P-256");
        // The server-auth purpose passes too (the same leaf serves both sides of mTLS).
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg({
                std::fs::write(dir.path().join("l.pem"), &leaf).unwrap();
                dir.path().join("l.pem")
            })
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
            "{text}"
        );
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(
            text.contains("Digital Signature, Key Encipherment, Data Encipherment, Key Agreement"),
            "{text}"
        );
    }
}

#[test]
fn leaf_validity_is_backdated_one_minute_and_lasts_the_ttl() {
    let ca = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let leaf = leaf_key_and_csr(&web_uri()).unwrap();
    let csr = validate_csr(&leaf.csr_pem, &td(), "dc1").unwrap();
    let issued = ca.sign_leaf(&csr, Duration::from_secs(3600)).unwrap();
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let (after, before) = (parse(&issued.valid_after), parse(&issued.valid_before));
    assert_eq!((before - after).whole_seconds(), 3600);
    let backdate = (time::OffsetDateTime::now_utc() - after).whole_seconds();
    assert!((59..=65).contains(&backdate), "{backdate}");
    // Serials are random: two leafs for the same key differ.
    let again = ca.sign_leaf(&csr, Duration::from_secs(3600)).unwrap();
    assert_ne!(issued.serial_hex, again.serial_hex);
}

fn csr_with(sans: Vec<SanType>, ca: bool) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

#[test]
fn every_bad_csr_is_refused_with_its_reason() {
    let other_td = "spiffe://99999999-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web";
    let tampered = {
        let good = leaf_key_and_csr(&web_uri()).unwrap().csr_pem;
        let mut der = pem::parse(&good).unwrap().into_contents();
        let last = der.len() - 3;
        der[last] ^= 0xff;
        crate::cert::der_to_pem("CERTIFICATE REQUEST", &der)
    };
    let cases: Vec<(String, &str)> = vec![
        ("not a pem".into(), "invalid CSR"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            "invalid CSR",
        ),
        (csr_with(vec![], false), "invalid number of URIs"),
        (
            csr_with(vec![uri(&web_uri()), uri(&web_uri())], false),
            "invalid number of URIs",
        ),
        (
            csr_with(
                vec![
                    uri(&web_uri()),
                    SanType::Rfc822Name("a@b.c".to_string().try_into().unwrap()),
                ],
                false,
            ),
            "does not allow specifying email addresses",
        ),
        (
            csr_with(vec![uri("https://example.com/x")], false),
            "spiffe",
        ),
        (
            csr_with(vec![uri(&format!("spiffe://{CLUSTER}.consul"))], false),
            "must be a service, mesh-gateway, or agent ID",
        ),
        (
            csr_with(
                vec![uri(&format!(
                    "spiffe://{CLUSTER}.consul/ns/default/dc/dc2/svc/web"
                ))],
                false,
            ),
            "different datacenter: dc2, we are dc1",
        ),
        (
            csr_with(vec![uri(other_td)], false),
            "different trust domain",
        ),
        (
            csr_with(vec![uri(&web_uri())], true),
            "must not request a CA",
        ),
        (tampered, "CSR signature or contents invalid"),
        (
            csr_with(
                vec![uri(&format!(
                    "spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/*"
                ))],
                false,
            ),
            "has the wildcard \"*\" as its service",
        ),
        (
            csr_with(
                vec![uri(&format!(
                    "spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/%2A"
                ))],
                false,
            ),
            "has the wildcard \"*\" as its service",
        ),
        (
            csr_with(
                vec![uri(&format!(
                    "spiffe://{CLUSTER}.consul/ns/*/dc/dc1/svc/web"
                ))],
                false,
            ),
            "has the wildcard \"*\" as its namespace",
        ),
        (
            csr_with(
                vec![uri(&format!(
                    "spiffe://{CLUSTER}.consul/ap/*/ns/default/dc/dc1/svc/web"
                ))],
                false,
            ),
            "has the wildcard \"*\" as its admin partition",
        ),
    ];
    for (pem, needle) in cases {
        match validate_csr(&pem, &td(), "dc1") {
            Err(CaError::InvalidCsr(msg)) => {
                assert!(msg.contains(needle), "{needle:?} not in {msg:?}")
            }
            other => panic!("{needle}: expected a refusal, got {other:?}"),
        }
    }
    assert!(validate_csr(&leaf_key_and_csr(&web_uri()).unwrap().csr_pem, &td(), "dc1").is_ok());
}

/// A client agent's auto-encrypt CSR: signed for the agent ID in this CA's trust domain
/// (the placeholder `unknown` replaced), refused for another datacenter, trust domain or
/// partition, or for anything but an agent ID; the ordinary leaf path never signs an agent ID.
#[test]
fn agent_csrs_are_signed_only_through_their_own_path() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = leaf_key_and_csr("spiffe://unknown/agent/client/dc/dc1/id/node-a").unwrap();
    let csr = validate_agent_csr(&placeholder.csr_pem, &td(), "dc1").unwrap();
    let want = format!("spiffe://{CLUSTER}.consul/agent/client/dc/dc1/id/node-a");
    assert_eq!(csr.uri, want);
    let ca = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let issued = ca.sign_leaf(&csr, Duration::from_secs(3600)).unwrap();
    assert_eq!(
        CertInfo::from_pem(&issued.cert_pem).unwrap().uris,
        vec![want.clone()]
    );
    let root = ca.root().root_pem.clone();
    openssl_verify(dir.path(), &root, &[], &issued.cert_pem).unwrap();
    // The real trust domain is accepted as well.
    let own = leaf_key_and_csr(&want).unwrap();
    assert_eq!(
        validate_agent_csr(&own.csr_pem, &td(), "dc1").unwrap().uri,
        want
    );
    for (uri, needle) in [
        (
            "spiffe://unknown/agent/client/dc/dc2/id/node-a",
            "different datacenter",
        ),
        (
            "spiffe://99999999-2222-3333-4444-555555555555.consul/agent/client/dc/dc1/id/node-a",
            "different trust domain",
        ),
        (
            "spiffe://unknown/ap/team/agent/client/dc/dc1/id/node-a",
            "partition",
        ),
        (&web_uri(), "must be a client agent ID"),
    ] {
        let pem = leaf_key_and_csr(uri).unwrap().csr_pem;
        match validate_agent_csr(&pem, &td(), "dc1") {
            Err(CaError::InvalidCsr(msg)) => assert!(msg.contains(needle), "{uri}: {msg}"),
            other => panic!("{uri}: expected a refusal, got {other:?}"),
        }
    }
    match validate_csr(&own.csr_pem, &td(), "dc1") {
        Err(CaError::InvalidCsr(msg)) => assert!(msg.contains("must be a service"), "{msg}"),
        other => panic!("an agent ID through the leaf path: {other:?}"),
    }
}

#[test]
fn cross_signed_root_lets_old_root_holders_accept_new_leafs() {
    let dir = tempfile::tempdir().unwrap();
    let old = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let new = BuiltinProvider::generate(
        &td(),
        &config(json!({"PrivateKeyType": "rsa", "PrivateKeyBits": 2048})),
    )
    .unwrap();
    let cross = old.cross_sign(&new.root().root_pem).unwrap();
    let (new_leaf, _) = sign_web(&new);
    let (old_leaf, _) = sign_web(&old);
    // A peer that holds only the old root accepts a new leaf through the cross-signed cert.
    openssl_verify(dir.path(), &old.root().root_pem, &[&cross], &new_leaf).unwrap();
    // Without it, it does not.
    assert!(openssl_verify(dir.path(), &old.root().root_pem, &[], &new_leaf).is_err());
    // A peer that holds only the new root does not accept old leafs; the bundle carries both.
    assert!(openssl_verify(dir.path(), &new.root().root_pem, &[], &old_leaf).is_err());
    let bundle = format!("{}{}", old.root().root_pem, new.root().root_pem);
    openssl_verify(dir.path(), &bundle, &[], &old_leaf).unwrap();
    openssl_verify(dir.path(), &bundle, &[&cross], &new_leaf).unwrap();
    let cross_info = CertInfo::from_pem(&cross).unwrap();
    let new_info = CertInfo::from_pem(&new.root().root_pem).unwrap();
    assert_eq!(cross_info.subject_key_id, new_info.subject_key_id);
}

#[test]
fn provider_state_round_trips_and_supplied_roots_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let again = BuiltinProvider::from_state(&ca.root().state).unwrap();
    assert_eq!(again.root(), ca.root());
    let (leaf, _) = sign_web(&again);
    openssl_verify(dir.path(), &ca.root().root_pem, &[], &leaf).unwrap();
    assert!(
        !format!("{:?}", ca.root()).contains("PRIVATE KEY"),
        "Debug must not print the key"
    );

    // An operator-supplied key and root are used as they are.
    let supplied = config(json!({
        "PrivateKey": ca.root().state["PrivateKey"],
        "RootCert": ca.root().root_pem,
    }));
    let same = BuiltinProvider::generate(&td(), &supplied).unwrap();
    assert_eq!(same.root().root_pem, ca.root().root_pem);
    // A root for another trust domain, or a key that does not match, is refused.
    let other = TrustDomain::for_cluster("99999999-2222-3333-4444-555555555555").unwrap();
    assert!(matches!(
        BuiltinProvider::generate(&other, &supplied),
        Err(CaError::InvalidConfig(_))
    ));
    let stranger = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let mismatched = config(
        json!({"PrivateKey": stranger.root().state["PrivateKey"], "RootCert": ca.root().root_pem}),
    );
    let err = BuiltinProvider::generate(&td(), &mismatched)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
}

/// A garbage operator-supplied key or root is the request's fault: `InvalidConfig` (a 400),
/// never `Crypto` (a 500).
#[test]
fn bad_supplied_key_or_root_pem_is_an_invalid_config() {
    let ca = BuiltinProvider::generate(&td(), &CaConfig::default_consul()).unwrap();
    let key = ca.root().state["PrivateKey"].clone();
    let root = ca.root().root_pem.clone();
    let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let key_as_root = key.clone();
    for (k, r, needle) in [
        ("garbage", "garbage", "invalid RootCert"),
        (key.as_str(), "garbage", "invalid RootCert"),
        (key.as_str(), garbage_cert, "invalid RootCert"),
        (key.as_str(), key_as_root.as_str(), "invalid RootCert"),
        ("garbage", root.as_str(), "invalid CA private key"),
        (root.as_str(), root.as_str(), "invalid CA private key"),
    ] {
        let supplied = config(json!({"PrivateKey": k, "RootCert": r}));
        match BuiltinProvider::generate(&td(), &supplied) {
            Err(CaError::InvalidConfig(m)) => {
                assert!(m.contains(needle), "{needle:?} not in {m:?}");
                assert!(!m.contains("-----BEGIN"), "no key material in {m:?}");
            }
            Err(e) => panic!("{needle}: expected InvalidConfig, got {e:?}"),
            Ok(_) => panic!("{needle}: accepted"),
        }
    }
}
