//! A CA root rotation as the servers run it: a new root, cross-signed by the old one, listed
//! next to it until the old root is removed. Peers on either root keep talking throughout.

use rustls::CertificateError;
use trellis_api::{CaRoot, IndexedCaRoots, IssuedCert};

use super::*;
use crate::TlsState;

fn roots(entries: &[(&str, Option<&str>)]) -> IndexedCaRoots {
    IndexedCaRoots {
        active_root_id: String::new(),
        trust_domain: td().to_string(),
        roots: entries
            .iter()
            .map(|(root, intermediate)| CaRoot {
                root_cert: root.to_string(),
                intermediate_certs: intermediate.map(|i| vec![i.to_string()]),
                ..CaRoot::default()
            })
            .collect(),
    }
}

fn issued(cert_pem: String, key_pem: &str) -> IssuedCert {
    IssuedCert {
        cert_pem,
        private_key_pem: key_pem.to_string(),
        ..IssuedCert::default()
    }
}

/// A server following `state`, as the proxy's listener does.
async fn serve(state: &Arc<TlsState>) -> (SocketAddr, mpsc::UnboundedReceiver<ServerEvent>) {
    let state = state.clone();
    echo_server(move || state.current().server_config().clone()).await
}

/// `from` dials `to_addr` expecting `to`; both sides must see each other.
async fn check_pair(
    from: &TlsState,
    from_name: &str,
    to_addr: SocketAddr,
    to_events: &mut mpsc::UnboundedReceiver<ServerEvent>,
    to_name: &str,
) {
    let expected = ExpectedService::new(service(to_name));
    let config = from.current().client_config(&expected, &[]).unwrap();
    let client = dial_and_ping(to_addr, config, expected.server_name().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{from_name} -> {to_name}: {e}"));
    assert_eq!(client.peer, Some(SpiffeId::Service(service(to_name))));
    let server = expect_accepted(to_events).await;
    assert_eq!(server.peer, Some(SpiffeId::Service(service(from_name))));
    assert!(matches!(next_event(to_events).await, ServerEvent::Read(_)));
}

#[tokio::test]
async fn root_rotation_keeps_old_and_new_leafs_talking() {
    let old = TestCa::new();
    let new = TestCa::new();
    // What the leader does on rotation: the new root, cross-signed by the old key, becomes the
    // new active root's IntermediateCerts and so is appended to every leaf it signs.
    let cross = old.provider.cross_sign(new.root_pem()).unwrap();
    let old_only = roots(&[(old.root_pem(), None)]);
    let both = roots(&[(old.root_pem(), None), (new.root_pem(), Some(&cross))]);
    let new_only = roots(&[(new.root_pem(), None)]);

    // web: leaf under the old root, and so far only the old root.
    let (web_old, web_old_key) = old.leaf("web");
    let web = Arc::new(
        TlsState::new(
            Credentials::from_issued(&issued(web_old.clone(), &web_old_key), &old_only).unwrap(),
            &[],
        )
        .unwrap(),
    );
    // db: renewed after the rotation: new-root leaf plus the cross-signed root, both roots.
    let (db_new, db_new_key) = new.leaf("db");
    let db = Arc::new(
        TlsState::new(
            Credentials::from_issued(&issued(format!("{db_new}{cross}"), &db_new_key), &both)
                .unwrap(),
            &[],
        )
        .unwrap(),
    );
    let (web_addr, mut web_events) = serve(&web).await;
    let (db_addr, mut db_events) = serve(&db).await;

    // The cross-signed certificate is what lets a peer knowing only the old root accept a
    // new-root leaf.
    {
        use rustls::client::danger::ServerCertVerifier;
        let web_view = UpstreamVerifier::new(
            &TrustBundle::from_ca_roots(&old_only).unwrap(),
            ExpectedService::new(service("db")),
        );
        let now = rustls::pki_types::UnixTime::now();
        let leaf = der(&db_new);
        let verify = |intermediates: &[CertificateDer<'_>]| {
            web_view
                .verify_server_cert(&leaf, intermediates, &any_name(), &[], now)
                .err()
        };
        assert_eq!(
            verify(&[]),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        assert_eq!(verify(&[der(&cross)]), None);
        // Intermediates listed in the bundle are offered to path building too, so a peer
        // sending its bare leaf still chains.
        let with_cross = UpstreamVerifier::new(
            &TrustBundle::new(td(), &[old.root_pem()], &[&cross]).unwrap(),
            ExpectedService::new(service("db")),
        );
        assert!(with_cross
            .verify_server_cert(&leaf, &[], &any_name(), &[], now)
            .is_ok());
        let inbound = crate::ServiceClientVerifier::new(
            &TrustBundle::new(td(), &[old.root_pem()], &[&cross]).unwrap(),
        )
        .unwrap();
        let (api_new, _) = new.leaf("api");
        assert!(
            rustls::server::danger::ClientCertVerifier::verify_client_cert(
                &inbound,
                &der(&api_new),
                &[],
                now
            )
            .is_ok()
        );
    }

    // 1. web does not know the new root yet, but db's chain reaches the old root through the
    //    cross-signed certificate; db trusts both roots.
    check_pair(&web, "web", db_addr, &mut db_events, "db").await;
    check_pair(&db, "db", web_addr, &mut web_events, "web").await;

    // 2. web's agent sees the new roots; its leaf is still the old one.
    let creds = Credentials::from_issued(&issued(web_old, &web_old_key), &both).unwrap();
    assert_eq!(web.update(creds).unwrap(), 1);
    check_pair(&web, "web", db_addr, &mut db_events, "db").await;
    check_pair(&db, "db", web_addr, &mut web_events, "web").await;

    // 3. web's leaf is re-issued under the new root.
    let (web_new, web_new_key) = new.leaf("web");
    let creds = Credentials::from_issued(&issued(format!("{web_new}{cross}"), &web_new_key), &both)
        .unwrap();
    assert_eq!(web.update(creds).unwrap(), 2);
    check_pair(&web, "web", db_addr, &mut db_events, "db").await;
    check_pair(&db, "db", web_addr, &mut web_events, "web").await;

    // 4. The old root is pruned; leafs no longer carry the cross-signed certificate.
    let creds = Credentials::from_issued(&issued(db_new, &db_new_key), &new_only).unwrap();
    assert_eq!(db.update(creds).unwrap(), 1);
    let creds = Credentials::from_issued(&issued(web_new, &web_new_key), &new_only).unwrap();
    assert_eq!(web.update(creds).unwrap(), 3);
    check_pair(&web, "web", db_addr, &mut db_events, "db").await;
    check_pair(&db, "db", web_addr, &mut web_events, "web").await;

    // A peer still holding an old-root leaf is now refused.
    let (api_old, api_old_key) = old.leaf("api");
    let api = Credentials::from_issued(&issued(api_old, &api_old_key), &both).unwrap();
    let config = crate::client_config(&api, &ExpectedService::new(service("db")), &[]).unwrap();
    assert!(dial_and_ping(db_addr, config, any_name()).await.is_err());
    let e = expect_refused(&mut db_events).await;
    assert_eq!(
        rustls_error(&e),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );
}
