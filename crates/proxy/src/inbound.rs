//! The public listener: mutual TLS in front of the local application. A `tcp` service is
//! authorized once per connection (L4) and then spliced; an HTTP-based one is served as HTTP
//! (HTTP/1.1 or HTTP/2) and every request is authorized against the L7 permissions, a denied
//! one answered 403 on a connection that stays open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use trellis_intentions::{Engine, HttpRequest, Protocol};
use trellis_tls::TlsSnapshot;

use crate::config::ProxySpec;
use crate::metrics::{HandshakeFailure, Layer, Metrics};
use crate::pipe::{BufferedRead, InboundTls};
use crate::traffic::{End, Metered, Report, Traffic};
use crate::{millis, ACCESS_LOG};

/// The longest an HTTP/1.1 client may take to send a request's headers. hyper starts this
/// clock when it begins reading a request head, which on a keep-alive connection is as soon as
/// the previous response is written: an HTTP/1.1 connection idle this long between requests is
/// closed too (the idle timeout matters for HTTP/2 and for requests still in flight).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The most HTTP/2 streams a client may have open at once on one inbound connection.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// The largest request head (request line and headers) accepted: HTTP/1.1's read buffer, which
/// a head must fit in, and HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE` (Envoy's default limit is
/// 60 KiB). A larger HTTP/1.1 head is answered 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// The most header fields in an HTTP/1.1 request (hyper's default).
pub const HTTP1_MAX_HEADERS: usize = 100;
/// How long a connection closed for idleness may take to finish after being told to.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Headers a proxy does not pass on (RFC 9110 §7.6.1 and the HTTP/2 ban list).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A response body from either the application or the proxy itself.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Everything the public listener reads per connection, each part current.
pub struct Inbound {
    /// The proxy's configuration (protocol, local application, timeouts).
    pub spec: watch::Receiver<Arc<ProxySpec>>,
    /// The TLS configuration (leaf and roots).
    pub tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
    /// The intentions for this service.
    pub engine: watch::Receiver<Option<Arc<Engine>>>,
    /// The decision when no intention matches.
    pub default_allow: Arc<AtomicBool>,
    /// Connections allowed at once.
    pub connections: Arc<Semaphore>,
    /// Where connections, decisions, requests and bytes are counted.
    pub metrics: Arc<Metrics>,
    /// A connection with no byte either way (and, for HTTP, no request in flight) for this
    /// long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Pooled HTTP/1.1 connections to the application.
    http1: Client<HttpConnector, Incoming>,
    /// Pooled HTTP/2 (prior knowledge) connections to the application, for `http2` and `grpc`.
    http2: Client<HttpConnector, Incoming>,
    /// How HTTP is served on inbound connections (limits and timeouts).
    server: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

impl Inbound {
    /// An inbound side reading from these channels, taking a permit from `connections` (the
    /// proxy's limit, shared with the upstream listeners) for each connection.
    pub fn new(
        spec: watch::Receiver<Arc<ProxySpec>>,
        tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
        engine: watch::Receiver<Option<Arc<Engine>>>,
        default_allow: Arc<AtomicBool>,
        connections: Arc<Semaphore>,
        metrics: Arc<Metrics>,
        idle_timeout: Option<Duration>,
    ) -> Inbound {
        let connector = || {
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            c.set_connect_timeout(Some(spec.borrow().local_connect_timeout));
            c
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector());
        Inbound {
            spec,
            tls,
            engine,
            default_allow,
            connections,
            metrics,
            idle_timeout,
            http1,
            http2,
            server: http_server(),
        }
    }
}

/// The HTTP server settings of inbound connections.
fn http_server() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(HTTP1_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    builder
}

/// Accepts connections until `stop` turns true; each is served on its own task.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "public listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => return,
        };
        let Ok(permit) = inbound.connections.clone().try_acquire_owned() else {
            inbound.metrics.inbound().rejected();
            tracing::warn!(%peer, "connection limit reached; refusing a connection");
            continue;
        };
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = inbound.metrics.inbound().open();
            let _ = tcp.set_nodelay(true);
            connection(tcp, peer, &inbound).await;
        });
    }
}

/// One inbound connection: handshake, identify the caller, then L4 or L7. Every way it ends
/// is counted and written to the access log.
async fn connection(tcp: TcpStream, peer: SocketAddr, inbound: &Arc<Inbound>) {
    let started = Instant::now();
    let spec = inbound.spec.borrow().clone();
    let Some(tls) = inbound.tls.borrow().clone() else {
        tracing::debug!(target: ACCESS_LOG, %peer, destination = %spec.service, duration_ms = 0.0, end = "no certificate yet", "connection closed");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().clone());
    let failed = |reason: HandshakeFailure, error: &dyn std::fmt::Display| {
        inbound.metrics.inbound().handshake_failed(reason);
        let duration_ms = millis(started.elapsed());
        if reason.is_noise() {
            tracing::debug!(target: ACCESS_LOG, %peer, destination = %spec.service, reason = %reason.as_str(), %error, duration_ms, "handshake failed");
        } else {
            tracing::info!(target: ACCESS_LOG, %peer, destination = %spec.service, reason = %reason.as_str(), %error, duration_ms, "handshake failed");
        }
    };
    let stream = match tokio::time::timeout(
        spec.handshake_timeout,
        acceptor.accept(BufferedRead::new(tcp)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(HandshakeFailure::from_io(&e), &e),
        Err(_) => return failed(HandshakeFailure::Timeout, &"timed out"),
    };
    let Some(caller) = trellis_tls::peer_service(stream.get_ref().1) else {
        return failed(
            HandshakeFailure::BadIdentity,
            &"the verified peer has no service identity",
        );
    };
    let source = caller.service;
    if spec.protocol.is_l7() {
        serve_http(stream, peer, source, spec, inbound.clone(), started).await;
    } else {
        splice(stream, peer, &source, &spec, inbound, started).await;
    }
}

/// L4: one decision for the connection, then bytes both ways (half-close passed on) until
/// either side closes or the connection idles out.
async fn splice(
    stream: InboundTls,
    peer: SocketAddr,
    source: &str,
    spec: &ProxySpec,
    inbound: &Inbound,
    started: Instant,
) {
    let destination = spec.service.as_str();
    let Some(engine) = inbound.engine.borrow().clone() else {
        tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, duration_ms = millis(started.elapsed()), end = "no intentions yet", "connection closed");
        return;
    };
    let decision = engine.decide(
        source,
        destination,
        inbound.default_allow.load(Ordering::Relaxed),
    );
    inbound.metrics.decision(Layer::L4, decision.allowed);
    if !decision.allowed {
        tracing::info!(target: ACCESS_LOG, %peer, %source, %destination, reason = %decision.reason, duration_ms = millis(started.elapsed()), "connection denied");
        return;
    }
    tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, reason = %decision.reason, "connection allowed");
    let app = match tokio::time::timeout(
        spec.local_connect_timeout,
        TcpStream::connect(&spec.local_app),
    )
    .await
    {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => {
            tracing::warn!(%destination, app = %spec.local_app, error = %e, "cannot reach the application");
            tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, rx_bytes = 0, tx_bytes = 0, duration_ms = millis(started.elapsed()), end = "application unreachable", "connection closed");
            return;
        }
        Err(_) => {
            tracing::warn!(%destination, app = %spec.local_app, "dialling the application timed out");
            tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, rx_bytes = 0, tx_bytes = 0, duration_ms = millis(started.elapsed()), end = "application unreachable", "connection closed");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let s =
        crate::traffic::splice(stream, app, inbound.idle_timeout, inbound.metrics.inbound()).await;
    tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, rx_bytes = s.rx, tx_bytes = s.tx, duration_ms = millis(started.elapsed()), end = %s.end, "connection closed");
}

/// A response the proxy makes itself (a refusal or an error), with a fixed body.
pub(crate) fn status(code: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// The absolute `http://` URI of request target `target` (`/` when absent) at `authority`, or
/// `None` when either is invalid or the target is not a path (`*`). Built from the parts, so the
/// target is shared rather than copied and parsed again.
pub(crate) fn target_at(
    authority: &str,
    target: Option<&hyper::http::uri::PathAndQuery>,
) -> Option<hyper::Uri> {
    use hyper::http::uri::{Parts, PathAndQuery, Scheme};
    let target = match target {
        Some(t) if t.as_str().starts_with('/') => t.clone(),
        Some(_) => return None,
        None => PathAndQuery::from_static("/"),
    };
    let mut parts = Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.parse().ok()?);
    parts.path_and_query = Some(target);
    hyper::Uri::from_parts(parts).ok()
}

/// L7: HTTP/1.1 or HTTP/2 (by preface) over the TLS stream, each request decided, until the
/// client closes, the connection fails or it idles out.
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    source: String,
    spec: Arc<ProxySpec>,
    inbound: Arc<Inbound>,
    started: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let source: Arc<str> = source.into();
    let traffic = Arc::new(Traffic::default());
    let service = {
        let (source, spec, inbound, traffic) = (
            source.clone(),
            spec.clone(),
            inbound.clone(),
            traffic.clone(),
        );
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (source, inbound, spec, traffic) = (
                source.clone(),
                inbound.clone(),
                spec.clone(),
                traffic.clone(),
            );
            async move {
                let _in_flight = traffic.request();
                let start = Instant::now();
                let resp = handle(req, peer, &source, &spec, &inbound, start).await;
                inbound
                    .metrics
                    .http_response(resp.status().as_u16(), start.elapsed());
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = inbound
        .server
        .serve_connection(TokioIo::new(Metered::new(stream, traffic.clone())), service);
    tokio::pin!(conn);
    let mut report = Report::new(inbound.metrics.inbound());
    let end = tokio::select! {
        r = conn.as_mut() => match r {
            Ok(()) => End::Closed,
            Err(e) => End::Error(std::io::Error::other(e.to_string())),
        },
        () = crate::traffic::idle(&traffic, inbound.idle_timeout, &mut report) => {
            // HTTP/1.1: closes now (nothing in flight); HTTP/2: GOAWAY, then closes.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn.as_mut()).await;
            End::Idle
        }
    };
    report.flush(&traffic);
    tracing::debug!(target: ACCESS_LOG, %peer, source = %source, destination = %spec.service, requests = traffic.requests(), rx_bytes = traffic.rx(), tx_bytes = traffic.tx(), duration_ms = millis(started.elapsed()), %end, "connection closed");
}

/// The request target the proxy decides on and sends on: the normalized path
/// ([`trellis_intentions::path::normalize`]) with the query as it came, sharing the original when the path
/// was already normal. An error (the body of a 400) when the path cannot be normalized safely
/// or the result is not a valid target.
fn normalized_target(uri: &hyper::Uri) -> Result<hyper::http::uri::PathAndQuery, &'static str> {
    use hyper::http::uri::PathAndQuery;
    let path = trellis_intentions::path::normalize(uri.path())
        .map_err(trellis_intentions::path::PathError::body)?;
    match (path, uri.path_and_query()) {
        (std::borrow::Cow::Borrowed(_), Some(pq)) => Ok(pq.clone()),
        (path, _) => {
            let target = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            PathAndQuery::try_from(target).map_err(|_| "bad request target\n")
        }
    }
}

/// Decides one request and, when allowed, passes it to the application. The decision and the
/// application see the same request: the normalized path, and every header value as its bytes.
async fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    source: &str,
    spec: &ProxySpec,
    inbound: &Inbound,
    start: Instant,
) -> Response<Body> {
    let destination = spec.service.as_str();
    let Some(engine) = inbound.engine.borrow().clone() else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "no intentions yet\n");
    };
    let target = match normalized_target(req.uri()) {
        Ok(t) => t,
        Err(why) => {
            tracing::info!(target: ACCESS_LOG, %peer, %source, %destination, method = %req.method(), path = %req.uri().path(), reason = %why.trim_end(), duration_ms = millis(start.elapsed()), "request refused");
            return status(StatusCode::BAD_REQUEST, why);
        }
    };
    let decision = {
        // Header values are matched as their bytes: a value that is UTF-8 (every visible-ASCII
        // one, and more) is shown to the engine as it is, so Present, Exact, Prefix, Suffix and
        // Regex compare exactly the bytes the application gets. A value that is not UTF-8
        // (obs-text such as `\xff`) has no exact `&str` view; a lossy one could make distinct
        // values equal, and dropping it let such a header escape a `Present` deny. So when an
        // intention's permission tests that header the request is refused (400, not sent on);
        // when none does, the value cannot change the decision and the request goes on whole.
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            match std::str::from_utf8(value.as_bytes()) {
                Ok(v) => headers.push((name.as_str(), v)),
                Err(_) if engine.reads_header(source, destination, name.as_str()) => {
                    tracing::info!(target: ACCESS_LOG, %peer, %source, %destination, method = %req.method(), path = %target.path(), header = %name, reason = "a header an intention tests is not UTF-8", duration_ms = millis(start.elapsed()), "request refused");
                    return status(
                        StatusCode::BAD_REQUEST,
                        "bad request header: a value that is not UTF-8\n",
                    );
                }
                Err(_) => {}
            }
        }
        let view = HttpRequest {
            method: req.method().as_str(),
            path: target.path(),
            headers: &headers,
        };
        engine.decide_request(
            source,
            destination,
            &view,
            inbound.default_allow.load(Ordering::Relaxed),
        )
    };
    inbound.metrics.decision(Layer::L7, decision.allowed);
    if !decision.allowed {
        tracing::info!(target: ACCESS_LOG, %peer, %source, %destination, method = %req.method(), path = %target.path(), reason = %decision.reason, duration_ms = millis(start.elapsed()), "request denied");
        // Envoy's answer to a request its RBAC filter refuses.
        return status(StatusCode::FORBIDDEN, "RBAC: access denied");
    }
    let method = req.method().clone();
    let Some(uri) = target_at(&spec.local_app, Some(&target)) else {
        return status(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    *req.uri_mut() = uri;
    for h in HOP_BY_HOP {
        req.headers_mut().remove(*h);
    }
    let client = match spec.protocol {
        Protocol::Http2 | Protocol::Grpc => &inbound.http2,
        _ => {
            // HTTP/2 requests carry no Host header; the application gets the authority.
            *req.version_mut() = hyper::Version::HTTP_11;
            &inbound.http1
        }
    };
    let resp = match client.request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => {
            tracing::warn!(%destination, error = %e, "the application did not answer");
            status(StatusCode::BAD_GATEWAY, "the application did not answer\n")
        }
    };
    tracing::debug!(target: ACCESS_LOG, %peer, %source, %destination, %method, path = %target.path(), status = resp.status().as_u16(), reason = %decision.reason, duration_ms = millis(start.elapsed()), "request allowed");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use trellis_intentions::Protocol;

    #[test]
    fn targets_are_rebuilt_at_the_authority_without_copying() {
        use hyper::http::uri::PathAndQuery;
        let pq = PathAndQuery::from_static("/api/x?q=1");
        assert_eq!(
            target_at("127.0.0.1:5432", Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:5432/api/x?q=1"
        );
        assert_eq!(
            target_at("127.0.0.1:5432", None).unwrap().to_string(),
            "http://127.0.0.1:5432/"
        );
        assert!(target_at("127.0.0.1:5432", Some(&PathAndQuery::from_static("*"))).is_none());
        assert!(target_at("not an authority", Some(&pq)).is_none());
    }

    /// What the application got: each request's target and its `x-…` headers, as bytes.
    type Seen = Arc<std::sync::Mutex<Vec<(String, Vec<(String, Vec<u8>)>)>>>;
    /// Header fields to send, as bytes.
    type Fields<'a> = &'a [(&'a str, &'a [u8])];

    /// An application on a loopback port (HTTP/1.1 or HTTP/2 by preface) that records the
    /// target and the `x-…` headers of every request it gets and answers 200.
    async fn recording_app() -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let target = req
                            .uri()
                            .path_and_query()
                            .map_or(String::new(), |t| t.to_string());
                        let debug = req
                            .headers()
                            .iter()
                            .filter(|(k, _)| k.as_str().starts_with("x-"))
                            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                            .collect();
                        log.lock().unwrap().push((target, debug));
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"app",
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    /// An inbound side for `api` (speaking `protocol`, its application at `app`) whose one
    /// intention, from `web`, has these permissions.
    fn with_permissions(
        protocol: Protocol,
        app: &str,
        permissions: serde_json::Value,
    ) -> Arc<Inbound> {
        let spec = Arc::new(ProxySpec {
            service: "api".into(),
            public_listener: None,
            local_app: app.into(),
            protocol,
            local_connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            upstreams: Vec::new(),
        });
        let entry = serde_json::json!([{"Name": "web", "Permissions": permissions}]);
        let mut engine = Engine::new();
        engine.set_destination(
            "api",
            trellis_intentions::parse_entry("api", &entry).unwrap(),
        );
        Arc::new(Inbound::new(
            watch::channel(spec).1,
            watch::channel(None).1,
            watch::channel(Some(Arc::new(engine))).1,
            Arc::new(AtomicBool::new(true)),
            Arc::new(Semaphore::new(10)),
            Arc::new(Metrics::new()),
            None,
        ))
    }

    /// Serves one inbound connection from `web` over an in-memory pipe.
    fn connect(inbound: &Arc<Inbound>) -> tokio::io::DuplexStream {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_http(
            server_io,
            "10.0.0.9:50000".parse().unwrap(),
            "web".into(),
            inbound.spec.borrow().clone(),
            inbound.clone(),
            Instant::now(),
        ));
        client_io
    }

    fn deny_admin() -> serde_json::Value {
        serde_json::json!([
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "deny", "HTTP": {"Header": [{"Name": "X-Debug", "Present": true}]}},
            {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
        ])
    }

    /// Paths that spell `/admin…` another way, and what each must get (403 denied, 400
    /// refused): none reaches the application.
    const ADMIN_SPELLINGS: &[(&str, u16)] = &[
        ("/admin", 403),
        ("/api/../admin/secret", 403),
        ("/api/%2e%2e/admin/secret", 403),
        ("/api/%2E%2E/admin", 403),
        ("/api/./../admin", 403),
        ("//admin", 403),
        ("/%61dmin", 403),
        ("/api/..%2fadmin/secret", 400),
        ("/api/..%2Fadmin/secret", 400),
        ("/api/..%5cadmin/secret", 400),
        ("/api/..\\admin/secret", 400),
        ("/api/..;/admin/secret", 400),
        ("/api/%zz", 400),
    ];

    /// HTTP/2: the decision is on the normalized `:path`, the application gets it (with the
    /// query untouched), and no spelling of a denied path gets through.
    #[tokio::test]
    async fn http2_paths_are_normalized_before_the_decision_and_sent_on_normalized() {
        let (app, seen) = recording_app().await;
        let inbound = with_permissions(Protocol::Http2, &app, deny_admin());
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            TokioIo::new(connect(&inbound)),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for (path, want) in ADMIN_SPELLINGS {
            let req = Request::get(format!("http://api{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), *want, "{path}");
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        let req = Request::get("http://api/api//v1/./x/../%61bc%3a?q=/../%2e")
            .body(Empty::<Bytes>::new())
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 200);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [("/api/v1/abc%3A?q=/../%2e".to_string(), vec![])]
        );
    }

    /// HTTP/1.1: the same paths; and a header value that is not UTF-8 cannot escape a header
    /// test (refused), while a UTF-8 one is matched as its bytes and a non-UTF-8 value of a
    /// header no permission tests goes on untouched.
    #[tokio::test]
    async fn http1_paths_and_header_bytes() {
        let (app, seen) = recording_app().await;
        let inbound = with_permissions(Protocol::Http, &app, deny_admin());
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(connect(&inbound)))
                .await
                .unwrap();
        tokio::spawn(conn);
        let get = |path: &str, headers: Fields<'_>| {
            let mut req = Request::get(path)
                .header("host", "api")
                .body(Empty::<Bytes>::new())
                .unwrap();
            for (k, v) in headers {
                req.headers_mut().append(
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    hyper::header::HeaderValue::from_bytes(v).unwrap(),
                );
            }
            req
        };
        for (path, want) in ADMIN_SPELLINGS {
            let resp = send.send_request(get(path, &[])).await.unwrap();
            assert_eq!(resp.status().as_u16(), *want, "{path}");
        }
        let cases: &[(Fields<'_>, u16)] = &[
            (&[("x-debug", b"\xff")], 400),
            (&[("x-debug", b"on\x80off")], 400),
            // One value fine, another not: the joined value has no exact view either.
            (&[("x-debug", b"1"), ("x-debug", b"\xfe")], 400),
            (&[("x-debug", "é".as_bytes())], 403),
            (&[("x-debug", b"")], 403),
        ];
        for (headers, want) in cases {
            let resp = send.send_request(get("/ok", headers)).await.unwrap();
            assert_eq!(resp.status().as_u16(), *want, "{headers:?}");
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // A header no permission tests is not read: its bytes go on as they came.
        let resp = send
            .send_request(get("/ok/./a", &[("x-other", b"\xff")]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [(
                "/ok/a".to_string(),
                vec![("x-other".to_string(), b"\xff".to_vec())]
            )]
        );
    }

    /// An inbound side for an `http` service with no intentions, denying by default (every
    /// request is answered 403 by the proxy itself: no application needed).
    fn denying(idle_timeout: Option<Duration>) -> Arc<Inbound> {
        let spec = Arc::new(ProxySpec {
            service: "api".into(),
            public_listener: None,
            local_app: "127.0.0.1:1".into(),
            protocol: Protocol::Http2,
            local_connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            upstreams: Vec::new(),
        });
        let (engine, _) = Engine::from_intentions(&[]);
        Arc::new(Inbound::new(
            watch::channel(spec).1,
            watch::channel(None).1,
            watch::channel(Some(Arc::new(engine))).1,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Semaphore::new(10)),
            Arc::new(Metrics::new()),
            idle_timeout,
        ))
    }

    fn sample(m: &Metrics, series: &str) -> f64 {
        let text = m.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// HTTP/2: requests are decided and counted; once none is in flight and nothing moves for
    /// the idle timeout, the proxy sends GOAWAY and the connection ends.
    #[tokio::test(start_paused = true)]
    async fn an_idle_http2_connection_is_closed() {
        let inbound = denying(Some(Duration::from_secs(60)));
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "10.0.0.9:50000".parse().unwrap();
        let started = Instant::now();
        let server = tokio::spawn(serve_http(
            server_io,
            peer,
            "web".into(),
            inbound.spec.borrow().clone(),
            inbound.clone(),
            started,
        ));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .unwrap();
        let client = tokio::spawn(conn);
        for _ in 0..3 {
            let req = Request::get("http://api/admin")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        }
        let quiet_from = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(120), server)
            .await
            .expect("the idle connection is closed")
            .unwrap();
        let idle_for = quiet_from.elapsed();
        assert!(
            idle_for >= Duration::from_secs(60) && idle_for <= Duration::from_secs(80),
            "closed after {idle_for:?} of silence"
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .expect("the client sees the end");
        let m = &inbound.metrics;
        assert_eq!(
            sample(
                m,
                r#"trellis_proxy_authz_decisions_total{layer="l7",decision="deny"}"#
            ),
            3.0
        );
        assert_eq!(
            sample(
                m,
                r#"trellis_proxy_http_requests_total{status_class="4xx"}"#
            ),
            3.0
        );
        assert_eq!(
            sample(m, "trellis_proxy_http_request_duration_seconds_count"),
            3.0
        );
        assert!(
            sample(
                m,
                r#"trellis_proxy_connection_bytes_total{direction="inbound",way="rx"}"#
            ) > 0.0
        );
        assert!(
            sample(
                m,
                r#"trellis_proxy_connection_bytes_total{direction="inbound",way="tx"}"#
            ) > 0.0
        );
    }

    /// Without an idle timeout an HTTP/2 connection stays open however long it is quiet.
    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_http2_stays_open() {
        let inbound = denying(None);
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve_http(
            server_io,
            "10.0.0.9:50000".parse().unwrap(),
            "web".into(),
            inbound.spec.borrow().clone(),
            inbound.clone(),
            Instant::now(),
        ));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(conn);
        tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
        assert!(!server.is_finished());
        let req = Request::get("http://api/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        assert_eq!(
            send.send_request(req).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
}
