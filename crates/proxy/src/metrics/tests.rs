use std::io;
use std::time::Duration;

use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use super::*;

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn value(m: &Metrics, series: &str) -> f64 {
    let text = m.render();
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn every_series_is_there_from_the_start_at_zero() {
    let text = Metrics::new().render();
    for series in [
        r#"trellis_proxy_connections_accepted_total{direction="inbound"}"#,
        r#"trellis_proxy_connections_closed_total{direction="outbound"}"#,
        r#"trellis_proxy_connections_open{direction="inbound"}"#,
        r#"trellis_proxy_connections_rejected_total{direction="outbound"}"#,
        r#"trellis_proxy_tls_handshake_failures_total{direction="inbound",reason="no_certificate"}"#,
        r#"trellis_proxy_tls_handshake_failures_total{direction="outbound",reason="other"}"#,
        r#"trellis_proxy_authz_decisions_total{layer="l4",decision="allow"}"#,
        r#"trellis_proxy_authz_decisions_total{layer="l7",decision="deny"}"#,
        r#"trellis_proxy_http_requests_total{status_class="1xx"}"#,
        r#"trellis_proxy_http_requests_total{status_class="5xx"}"#,
        r#"trellis_proxy_http_request_duration_seconds_count"#,
        r#"trellis_proxy_http_request_duration_seconds_bucket{le="0.0005"}"#,
        r#"trellis_proxy_http_request_duration_seconds_bucket{le="+Inf"}"#,
        r#"trellis_proxy_connection_bytes_total{direction="inbound",way="rx"}"#,
        r#"trellis_proxy_connection_bytes_total{direction="outbound",way="tx"}"#,
        r#"trellis_proxy_leaf_cert_expiry_timestamp_seconds"#,
        r#"trellis_proxy_leaf_cert_expires_in_seconds"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
    // 2 directions × 11 reasons, no more.
    let reasons = text
        .lines()
        .filter(|l| l.starts_with("trellis_proxy_tls_handshake_failures_total{"))
        .count();
    assert_eq!(reasons, 22);
    // OpenMetrics: typed, described, with units where there is one, and terminated.
    for meta in [
        "# TYPE trellis_proxy_connections_accepted counter",
        "# TYPE trellis_proxy_connections_open gauge",
        "# TYPE trellis_proxy_http_request_duration_seconds histogram",
        "# UNIT trellis_proxy_http_request_duration_seconds seconds",
        "# TYPE trellis_proxy_connection_bytes counter",
        "# UNIT trellis_proxy_connection_bytes bytes",
        "# HELP trellis_proxy_authz_decisions Intentions decisions",
    ] {
        assert!(text.contains(meta), "{meta} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // No upstream configured: no upstream series.
    assert!(!text.contains("trellis_proxy_upstream_dial_failures_total{"));
}

#[test]
fn counts_land_on_their_series() {
    let m = Metrics::new();
    {
        let _a = m.inbound().open();
        let _b = m.inbound().open();
        let _c = m.outbound().open();
        assert_eq!(
            value(&m, r#"trellis_proxy_connections_open{direction="inbound"}"#),
            2.0
        );
    }
    assert_eq!(
        value(&m, r#"trellis_proxy_connections_open{direction="inbound"}"#),
        0.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_connections_accepted_total{direction="inbound"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_connections_closed_total{direction="outbound"}"#
        ),
        1.0
    );
    m.outbound().rejected();
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_connections_rejected_total{direction="outbound"}"#
        ),
        1.0
    );

    m.decision(Layer::L4, true);
    m.decision(Layer::L4, false);
    m.decision(Layer::L4, false);
    m.decision(Layer::L7, true);
    for (series, want) in [
        (r#"{layer="l4",decision="allow"}"#, 1.0),
        (r#"{layer="l4",decision="deny"}"#, 2.0),
        (r#"{layer="l7",decision="allow"}"#, 1.0),
        (r#"{layer="l7",decision="deny"}"#, 0.0),
    ] {
        assert_eq!(
            value(&m, &format!("trellis_proxy_authz_decisions_total{series}")),
            want,
            "{series}"
        );
    }

    m.http_response(200, Duration::from_millis(3));
    m.http_response(204, Duration::from_millis(30));
    m.http_response(403, Duration::from_micros(100));
    m.http_response(999, Duration::from_secs(120));
    for (class, want) in [("2xx", 2.0), ("4xx", 1.0), ("5xx", 1.0), ("3xx", 0.0)] {
        assert_eq!(
            value(
                &m,
                &format!(r#"trellis_proxy_http_requests_total{{status_class="{class}"}}"#)
            ),
            want,
            "{class}"
        );
    }
    let h = "trellis_proxy_http_request_duration_seconds";
    assert_eq!(value(&m, &format!("{h}_count")), 4.0);
    assert_eq!(value(&m, &format!(r#"{h}_bucket{{le="0.0005"}}"#)), 1.0);
    assert_eq!(value(&m, &format!(r#"{h}_bucket{{le="0.005"}}"#)), 2.0);
    assert_eq!(value(&m, &format!(r#"{h}_bucket{{le="60.0"}}"#)), 3.0);
    assert_eq!(value(&m, &format!(r#"{h}_bucket{{le="+Inf"}}"#)), 4.0);

    m.inbound().bytes(10, 0);
    m.inbound().bytes(5, 7);
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_connection_bytes_total{direction="inbound",way="rx"}"#
        ),
        15.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_connection_bytes_total{direction="inbound",way="tx"}"#
        ),
        7.0
    );

    m.inbound()
        .handshake_failed(HandshakeFailure::UnknownIssuer);
    m.outbound().handshake_failed(HandshakeFailure::Timeout);
    m.outbound().handshake_failed(HandshakeFailure::Timeout);
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_tls_handshake_failures_total{direction="inbound",reason="unknown_issuer"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_tls_handshake_failures_total{direction="outbound",reason="timeout"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_tls_handshake_failures_total{direction="inbound",reason="timeout"}"#
        ),
        0.0
    );

    let db = m.upstream_dial_failures("db");
    db.inc();
    m.upstream_dial_failures("db").inc();
    let _cache = m.upstream_dial_failures("cache");
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_upstream_dial_failures_total{upstream="db"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"trellis_proxy_upstream_dial_failures_total{upstream="cache"}"#
        ),
        0.0
    );
}

#[test]
fn the_leaf_expiry_and_the_time_left() {
    let m = Metrics::new();
    let in_a_day = unix_now() + 86_400;
    m.set_leaf_expiry(in_a_day);
    assert_eq!(
        value(&m, "trellis_proxy_leaf_cert_expiry_timestamp_seconds"),
        in_a_day as f64
    );
    let left = value(&m, "trellis_proxy_leaf_cert_expires_in_seconds");
    assert!((86_390.0..=86_400.0).contains(&left), "{left}");
    // An expired leaf shows a negative time left.
    m.set_leaf_expiry(unix_now() - 60);
    let left = value(&m, "trellis_proxy_leaf_cert_expires_in_seconds");
    assert!((-70.0..=-60.0).contains(&left), "{left}");
}

/// A rustls error as tokio-rustls hands it back from a failed handshake.
fn wrapped(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[test]
fn handshake_errors_map_to_bounded_reasons() {
    use HandshakeFailure as F;
    let cases = [
        (
            wrapped(rustls::Error::NoCertificatesPresented),
            F::NoCertificate,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            F::UnknownIssuer,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            F::BadIdentity,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            F::Expired,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            )),
            F::NotYetValid,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
            F::BadCertificate,
        ),
        (
            wrapped(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            )),
            F::BadCertificate,
        ),
        (
            wrapped(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            F::PeerAlert,
        ),
        (
            wrapped(rustls::Error::AlertReceived(
                AlertDescription::CertificateExpired,
            )),
            F::PeerAlert,
        ),
        (
            wrapped(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            F::Protocol,
        ),
        (
            wrapped(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoCipherSuitesInCommon,
            )),
            F::Protocol,
        ),
        (wrapped(rustls::Error::DecryptError), F::Protocol),
        (
            wrapped(rustls::Error::General("something".into())),
            F::Other,
        ),
        // tokio-rustls' own words for a peer gone mid-handshake.
        (
            io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
            F::Eof,
        ),
        (io::ErrorKind::ConnectionReset.into(), F::Eof),
        (io::ErrorKind::TimedOut.into(), F::Timeout),
        (io::ErrorKind::PermissionDenied.into(), F::Other),
    ];
    for (error, want) in cases {
        assert_eq!(HandshakeFailure::from_io(&error), want, "{error:?}");
    }
    // Wrapped with another kind, the rustls error still decides.
    let other_kind = io::Error::other(rustls::Error::NoCertificatesPresented);
    assert_eq!(HandshakeFailure::from_io(&other_kind), F::NoCertificate);
    assert!(F::Eof.is_noise() && F::Protocol.is_noise() && F::Timeout.is_noise());
    assert!(!F::NoCertificate.is_noise() && !F::UnknownIssuer.is_noise());
}

#[test]
fn reasons_index_their_own_label() {
    // `reason as usize` picks the counter: the order of `ALL` must be the declaration order.
    for (i, r) in HandshakeFailure::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r:?}");
    }
    let m = Metrics::new();
    for r in HandshakeFailure::ALL {
        m.inbound().handshake_failed(r);
        assert_eq!(
            value(
                &m,
                &format!(
                    r#"trellis_proxy_tls_handshake_failures_total{{direction="inbound",reason="{}"}}"#,
                    r.as_str()
                )
            ),
            1.0,
            "{r:?}"
        );
    }
}

#[test]
fn the_metrics_endpoint() {
    let m = Metrics::new();
    m.decision(Layer::L4, false);
    let get = Request::get("/metrics").body(()).unwrap();
    let r = answer(&get, &m);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], CONTENT_TYPE_OPENMETRICS);
    let body = r.into_body();
    let body = futures_lite_collect(body);
    assert!(
        body.contains(r#"trellis_proxy_authz_decisions_total{layer="l4",decision="deny"} 1"#),
        "{body}"
    );
    let post = Request::builder()
        .method(Method::POST)
        .uri("/metrics")
        .body(())
        .unwrap();
    let r = answer(&post, &m);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    let other = Request::get("/").body(()).unwrap();
    assert_eq!(answer(&other, &m).status(), StatusCode::NOT_FOUND);
}

/// The whole of a `Full` body, read without a runtime.
fn futures_lite_collect(body: Full<Bytes>) -> String {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The listener answers a real scrape over HTTP/1.1 and stops when asked.
#[tokio::test]
async fn the_metrics_listener_serves_scrapes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Arc::new(Metrics::new());
    m.set_leaf_expiry(unix_now() + 3600);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, m.clone(), stop_rx));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        got.contains("content-type: application/openmetrics-text"),
        "{got}"
    );
    assert!(
        got.contains("trellis_proxy_leaf_cert_expires_in_seconds 3"),
        "{got}"
    );
    assert!(got.ends_with("# EOF\n"), "{got}");
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the listener stops")
        .unwrap();
}
