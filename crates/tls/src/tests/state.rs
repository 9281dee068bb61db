//! The swappable snapshot: caching, updates, and connections outliving an update.

use rustls::CertificateError;

use super::*;
use crate::{TlsState, MAX_CACHED_CLIENT_CONFIGS};

#[test]
fn client_configs_are_cached_per_upstream_and_alpn() {
    let ca = TestCa::new();
    let state = TlsState::new(ca.credentials("web"), &[b"h2"]).unwrap();
    let snapshot = state.current();
    let db = ExpectedService::new(service("db"));
    let a = snapshot.client_config(&db, &[b"h2"]).unwrap();
    let b = snapshot.client_config(&db, &[b"h2"]).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let h1 = snapshot.client_config(&db, &[b"http/1.1"]).unwrap();
    assert!(!Arc::ptr_eq(&a, &h1));
    assert_eq!(h1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let any_dc = snapshot
        .client_config(&db.clone().any_datacenter(), &[b"h2"])
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &any_dc));
    let api = snapshot
        .client_config(&ExpectedService::new(service("api")), &[b"h2"])
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &api));
    assert_eq!(
        snapshot.server_config().alpn_protocols,
        vec![b"h2".to_vec()]
    );
    assert!(format!("{snapshot:?}").contains("cached_client_configs: 4"));
}

#[test]
fn the_client_cache_is_bounded() {
    let ca = TestCa::new();
    let state = TlsState::new(ca.credentials("web"), &[]).unwrap();
    let snapshot = state.current();
    for i in 0..MAX_CACHED_CLIENT_CONFIGS {
        let expected = ExpectedService::new(service(&format!("svc-{i}")));
        snapshot.client_config(&expected, &[]).unwrap();
    }
    let extra = ExpectedService::new(service("one-too-many"));
    let a = snapshot.client_config(&extra, &[]).unwrap();
    let b = snapshot.client_config(&extra, &[]).unwrap();
    assert!(!Arc::ptr_eq(&a, &b), "built, not cached");
    let first = ExpectedService::new(service("svc-0"));
    let a = snapshot.client_config(&first, &[]).unwrap();
    let b = snapshot.client_config(&first, &[]).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "earlier entries stay cached");
}

#[tokio::test]
async fn update_swaps_the_whole_snapshot() {
    let ca = TestCa::new();
    let first = ca.credentials("web");
    let state = TlsState::new(first.clone(), &[]).unwrap();
    let mut rx = state.subscribe();
    let before = state.current();
    assert_eq!(before.generation(), 0);
    assert_eq!(before.identity(), &service("web"));
    assert_eq!(state.not_after(), first.not_after());
    let db = ExpectedService::new(service("db"));
    let cached = before.client_config(&db, &[]).unwrap();

    let (cert, key) = ca.sign(&service_uri("web"), Duration::from_secs(3600));
    let renewed = Credentials::new(&cert, &key, ca.bundle()).unwrap();
    assert_eq!(state.update(renewed.clone()).unwrap(), 1);

    tokio::time::timeout(WAIT, rx.changed())
        .await
        .unwrap()
        .unwrap();
    let after = state.current();
    assert_eq!(after.generation(), 1);
    assert_eq!(rx.borrow().generation(), 1);
    assert_eq!(state.not_after(), renewed.not_after());
    assert_ne!(after.not_after(), before.not_after());
    assert!(!Arc::ptr_eq(before.server_config(), after.server_config()));
    // The new snapshot starts with its own cache.
    assert!(!Arc::ptr_eq(
        &cached,
        &after.client_config(&db, &[]).unwrap()
    ));
    // The old snapshot is still whole for whoever holds it.
    assert_eq!(before.generation(), 0);
    assert!(Arc::ptr_eq(
        &cached,
        &before.client_config(&db, &[]).unwrap()
    ));
}

#[tokio::test]
async fn established_connections_outlive_an_update() {
    let ca = TestCa::new();
    let db = Arc::new(TlsState::new(ca.credentials("db"), &[]).unwrap());
    let server_state = db.clone();
    let (addr, mut events) =
        echo_server(move || server_state.current().server_config().clone()).await;
    let web = ca.credentials("web");
    let expected = ExpectedService::new(service("db"));
    let config = crate::client_config(&web, &expected, &[]).unwrap();
    let (mut conn, _) = dial(addr, config.clone(), any_name()).await.unwrap();
    ping(&mut conn).await.unwrap();
    expect_accepted(&mut events).await;
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::Read(_)
    ));

    // db moves to another CA and trusts only it: new handshakes from web fail...
    let other = TestCa::new();
    let (cert, key) = other.leaf("db");
    db.update(Credentials::new(&cert, &key, other.bundle()).unwrap())
        .unwrap();
    // (web trusts both CAs, so the refusal is db's.)
    let (web_cert, web_key) = ca.leaf("web");
    let both = TrustBundle::new(td(), &[ca.root_pem(), other.root_pem()], &[]).unwrap();
    let web2 = Credentials::new(&web_cert, &web_key, both).unwrap();
    let config2 = crate::client_config(&web2, &expected, &[]).unwrap();
    assert!(dial_and_ping(addr, config2, any_name()).await.is_err());
    let e = expect_refused(&mut events).await;
    assert_eq!(
        rustls_error(&e),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );

    // ...while the connection made before the update carries on.
    ping(&mut conn).await.unwrap();
    assert!(matches!(next_event(&mut events).await, ServerEvent::Read(d) if d == b"ping"));
}
