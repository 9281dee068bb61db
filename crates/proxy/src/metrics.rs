//! The proxy's Prometheus metrics, served as OpenMetrics text on `GET /metrics` of
//! `--metrics-addr`.
//!
//! Every series is named `trellis_proxy_*` and labelled from small fixed sets (a direction, a
//! layer, a decision, a reason, a status class) or, for upstream dial failures, the configured
//! upstream names; never a peer address, a path or anything else a client controls. Each label
//! set is resolved once, when [`Metrics::new`] runs (or when an upstream starts), and the hot
//! path only bumps the atomic counters it holds.
//!
//! | Series | Labels | What |
//! |---|---|---|
//! | `trellis_proxy_connections_accepted_total` | `direction` | connections accepted and served |
//! | `trellis_proxy_connections_closed_total` | `direction` | those connections, closed |
//! | `trellis_proxy_connections_open` | `direction` | open now |
//! | `trellis_proxy_connections_rejected_total` | `direction` | refused at `--max-connections` |
//! | `trellis_proxy_tls_handshake_failures_total` | `direction`, `reason` | see [`HandshakeFailure`] |
//! | `trellis_proxy_authz_decisions_total` | `layer`, `decision` | intentions decisions |
//! | `trellis_proxy_http_requests_total` | `status_class` | inbound L7 responses |
//! | `trellis_proxy_http_request_duration_seconds` | | inbound L7, until response headers |
//! | `trellis_proxy_connection_bytes_total` | `direction`, `way` | `rx` from / `tx` to the accepted connection's peer |
//! | `trellis_proxy_upstream_dial_failures_total` | `upstream` | failed dials of an instance |
//! | `trellis_proxy_leaf_cert_expiry_timestamp_seconds` | | the leaf's notAfter |
//! | `trellis_proxy_leaf_cert_expires_in_seconds` | | until then, at scrape time |

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls::{self, CertificateError};

/// The prefix of every series.
pub const PREFIX: &str = "trellis_proxy";
/// The content type of the answer to `GET /metrics`.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Bucket bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Scrape connections served at once.
const MAX_SCRAPES: usize = 16;
/// The longest a scraper may take to send its request's headers.
const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener a connection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The public mutual-TLS listener.
    Inbound,
    /// An upstream listener.
    Outbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Where an authorization was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Once per connection (`tcp` services).
    L4,
    /// Once per HTTP request.
    L7,
}

/// Why a TLS handshake failed: a bounded label value read from the rustls error.
///
/// In TLS 1.3 a client finishes its side of the handshake before the server has checked the
/// client's certificate, so an upstream refusing this proxy's leaf shows on the first read
/// rather than here; a public listener sees every refusal of a client in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client sent no certificate (the public listener requires one).
    NoCertificate,
    /// The peer's chain does not end in the trust bundle.
    UnknownIssuer,
    /// The chain is good but the SPIFFE ID is not the one wanted (not a service of the trust
    /// domain, or not the expected upstream service).
    BadIdentity,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// Any other problem with the peer's certificate (encoding, signature, key usage, …).
    BadCertificate,
    /// The peer refused the handshake with an alert (typically it did not accept this
    /// proxy's certificate).
    PeerAlert,
    /// The peer does not speak TLS as this proxy does (no common version or cipher suite,
    /// unexpected or malformed messages, plain text).
    Protocol,
    /// The peer closed or reset the connection before the handshake completed (a TCP health
    /// check does this).
    Eof,
    /// The handshake took longer than the handshake timeout.
    Timeout,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 11] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::UnknownIssuer,
        HandshakeFailure::BadIdentity,
        HandshakeFailure::Expired,
        HandshakeFailure::NotYetValid,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Protocol,
        HandshakeFailure::Eof,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::UnknownIssuer => "unknown_issuer",
            HandshakeFailure::BadIdentity => "bad_identity",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NotYetValid => "not_yet_valid",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason for an error from `tokio_rustls`' `accept` or `connect` (a rustls error
    /// wrapped in an I/O error, or the socket's own error).
    pub fn from_io(e: &io::Error) -> HandshakeFailure {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return HandshakeFailure::from_rustls(tls);
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeFailure::Eof,
            io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
            io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
            _ => HandshakeFailure::Other,
        }
    }

    /// The reason for a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> HandshakeFailure {
        use rustls::Error as E;
        match e {
            E::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => HandshakeFailure::UnknownIssuer,
                CertificateError::ApplicationVerificationFailure
                | CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => HandshakeFailure::BadIdentity,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    HandshakeFailure::NotYetValid
                }
                _ => HandshakeFailure::BadCertificate,
            },
            E::AlertReceived(_) => HandshakeFailure::PeerAlert,
            E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::InvalidMessage(_)
            | E::PeerIncompatible(_)
            | E::PeerMisbehaved(_)
            | E::PeerSentOversizedRecord
            | E::DecryptError
            | E::NoApplicationProtocol
            | E::UnsupportedNameType
            | E::InvalidEncryptedClientHello(_) => HandshakeFailure::Protocol,
            _ => HandshakeFailure::Other,
        }
    }

    /// Failures a misbehaving client, a port scan or a TCP health check makes, as opposed to a
    /// refused identity: logged at debug rather than info.
    pub fn is_noise(self) -> bool {
        matches!(
            self,
            HandshakeFailure::Protocol | HandshakeFailure::Eof | HandshakeFailure::Timeout
        )
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];
type UpstreamLabels = [(&'static str, String); 1];

/// One direction's series, resolved.
#[derive(Debug)]
pub struct DirectionMetrics {
    accepted: Counter,
    closed: Counter,
    open: Gauge,
    rejected: Counter,
    rx_bytes: Counter,
    tx_bytes: Counter,
    handshake_failures: [Counter; HandshakeFailure::ALL.len()],
}

/// A connection counted open; counted closed when dropped.
#[derive(Debug)]
#[must_use = "the connection is counted closed when this is dropped"]
pub struct OpenConnection<'a>(&'a DirectionMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.closed.inc();
        self.0.open.dec();
    }
}

impl DirectionMetrics {
    /// Counts a connection accepted and open until the returned guard drops.
    pub fn open(&self) -> OpenConnection<'_> {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self)
    }

    /// Counts a connection refused because the connection limit was reached.
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures[reason as usize].inc();
    }

    /// Counts bytes received from (`rx`) and sent to (`tx`) the accepted connection's peer.
    pub fn bytes(&self, rx: u64, tx: u64) {
        if rx > 0 {
            self.rx_bytes.inc_by(rx);
        }
        if tx > 0 {
            self.tx_bytes.inc_by(tx);
        }
    }
}

/// Allowed and denied counters of one layer.
#[derive(Debug)]
struct Decisions {
    allow: Counter,
    deny: Counter,
}

/// The registry and every resolved series.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    inbound: DirectionMetrics,
    outbound: DirectionMetrics,
    l4: Decisions,
    l7: Decisions,
    /// By status class, `1xx` first.
    http_requests: [Counter; 5],
    http_duration: Histogram,
    dial_failures: Family<UpstreamLabels, Counter>,
    leaf_expiry: Gauge,
    leaf_expires_in: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every series registered and every fixed label set created (so a
    /// scrape shows zeros rather than nothing).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let accepted = Family::<Labels<1>, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted and served, by listener",
            accepted.clone(),
        );
        let closed = Family::<Labels<1>, Counter>::default();
        registry.register(
            "connections_closed",
            "Served connections closed, by listener",
            closed.clone(),
        );
        let open = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by listener",
            open.clone(),
        );
        let rejected = Family::<Labels<1>, Counter>::default();
        registry.register(
            "connections_rejected",
            "Connections refused because the connection limit was reached, by listener",
            rejected.clone(),
        );
        let handshakes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes, by listener (inbound: clients of the public listener; outbound: instances dialled) and reason",
            handshakes.clone(),
        );
        let bytes = Family::<Labels<2>, Counter>::default();
        registry.register_with_unit(
            "connection",
            "Bytes received from (rx) and sent to (tx) the peer of an accepted connection (inbound: inside TLS), by listener",
            Unit::Bytes,
            bytes.clone(),
        );
        let decisions = Family::<Labels<2>, Counter>::default();
        registry.register(
            "authz_decisions",
            "Intentions decisions, per connection (l4) or per HTTP request (l7)",
            decisions.clone(),
        );
        let requests = Family::<Labels<1>, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests on the public listener, by response status class (denials and the proxy's own answers included)",
            requests.clone(),
        );
        let http_duration = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "http_request_duration",
            "Time from an HTTP request on the public listener to its response headers",
            Unit::Seconds,
            http_duration.clone(),
        );
        let dial_failures = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_dial_failures",
            "Failed dials (connect, handshake or timeout) of an instance of an upstream",
            dial_failures.clone(),
        );
        let leaf_expiry = Gauge::default();
        registry.register_with_unit(
            "leaf_cert_expiry_timestamp",
            "The current leaf certificate's notAfter, in Unix seconds (0 before the first leaf)",
            Unit::Seconds,
            leaf_expiry.clone(),
        );
        let leaf_expires_in = Gauge::default();
        registry.register_with_unit(
            "leaf_cert_expires_in",
            "Seconds until the current leaf certificate expires, at scrape time (0 before the first leaf)",
            Unit::Seconds,
            leaf_expires_in.clone(),
        );

        let direction = |d: Direction| {
            let one = [("direction", d.as_str())];
            DirectionMetrics {
                accepted: accepted.get_or_create_owned(&one),
                closed: closed.get_or_create_owned(&one),
                open: open.get_or_create_owned(&one),
                rejected: rejected.get_or_create_owned(&one),
                rx_bytes: bytes.get_or_create_owned(&[("direction", d.as_str()), ("way", "rx")]),
                tx_bytes: bytes.get_or_create_owned(&[("direction", d.as_str()), ("way", "tx")]),
                handshake_failures: HandshakeFailure::ALL.map(|r| {
                    handshakes
                        .get_or_create_owned(&[("direction", d.as_str()), ("reason", r.as_str())])
                }),
            }
        };
        let layer = |l: &'static str| Decisions {
            allow: decisions.get_or_create_owned(&[("layer", l), ("decision", "allow")]),
            deny: decisions.get_or_create_owned(&[("layer", l), ("decision", "deny")]),
        };
        Metrics {
            inbound: direction(Direction::Inbound),
            outbound: direction(Direction::Outbound),
            l4: layer("l4"),
            l7: layer("l7"),
            http_requests: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|c| requests.get_or_create_owned(&[("status_class", c)])),
            http_duration,
            dial_failures,
            leaf_expiry,
            leaf_expires_in,
            registry,
        }
    }

    /// One direction's series.
    pub fn direction(&self, d: Direction) -> &DirectionMetrics {
        match d {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// The public listener's series.
    pub fn inbound(&self) -> &DirectionMetrics {
        &self.inbound
    }

    /// The upstream listeners' series.
    pub fn outbound(&self) -> &DirectionMetrics {
        &self.outbound
    }

    /// Counts an authorization decision.
    pub fn decision(&self, layer: Layer, allowed: bool) {
        let d = match layer {
            Layer::L4 => &self.l4,
            Layer::L7 => &self.l7,
        };
        if allowed {
            d.allow.inc();
        } else {
            d.deny.inc();
        }
    }

    /// Counts an answered inbound HTTP request and its latency. Statuses above 599 count as
    /// `5xx`.
    pub fn http_response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5);
        self.http_requests[class - 1].inc();
        self.http_duration.observe(elapsed.as_secs_f64());
    }

    /// The dial-failure counter of an upstream, for the upstream to hold.
    pub fn upstream_dial_failures(&self, upstream: &str) -> Counter {
        self.dial_failures
            .get_or_create_owned(&[("upstream", upstream.to_string())])
    }

    /// Records the current leaf's notAfter (Unix seconds).
    pub fn set_leaf_expiry(&self, not_after: i64) {
        self.leaf_expiry.set(not_after);
        self.leaf_expires_in.set(not_after - unix_now());
    }

    /// The OpenMetrics text exposition, with the time-dependent gauges brought up to date.
    pub fn render(&self) -> String {
        let not_after = self.leaf_expiry.get();
        if not_after != 0 {
            self.leaf_expires_in.set(not_after - unix_now());
        }
        let mut out = String::with_capacity(8 * 1024);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Serves `GET /metrics` (HTTP/1.1) on `listener` until `stop` turns true or its sender goes.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => return,
        };
        let Ok(permit) = scrapes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many metrics connections; refusing one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = answer(&req, &metrics);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// The answer to one request on the metrics listener.
pub fn answer<B>(req: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    r
}

#[cfg(test)]
mod tests;
