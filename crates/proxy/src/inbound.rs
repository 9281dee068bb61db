//! The public listener: mutual TLS in front of the local application. A `tcp` service is
//! authorized once per connection (L4) and then spliced; an HTTP-based one is served as HTTP
//! (HTTP/1.1 or HTTP/2) and every request is authorized against the L7 permissions, a denied
//! one answered 403 on a connection that stays open.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// The longest an HTTP/1.1 client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers a proxy does not pass on (RFC 9110 §7.6.1 and the HTTP/2 ban list).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A response body from either the application or the proxy itself.
type Body = BoxBody<Bytes, hyper::Error>;

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
    /// Pooled HTTP/1.1 connections to the application.
    http1: Client<HttpConnector, Incoming>,
    /// Pooled HTTP/2 (prior knowledge) connections to the application, for `http2` and `grpc`.
    http2: Client<HttpConnector, Incoming>,
}

impl Inbound {
    /// An inbound side reading from these channels, allowing `max_connections` at once.
    pub fn new(
        spec: watch::Receiver<Arc<ProxySpec>>,
        tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
        engine: watch::Receiver<Option<Arc<Engine>>>,
        default_allow: Arc<AtomicBool>,
        max_connections: usize,
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
            connections: Arc::new(Semaphore::new(max_connections)),
            http1,
            http2,
        }
    }
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
            tracing::warn!(%peer, "connection limit reached; refusing a connection");
            continue;
        };
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            if let Err(why) = connection(tcp, &inbound).await {
                tracing::debug!(%peer, %why, "inbound connection ended");
            }
        });
    }
}

/// One inbound connection: handshake, identify the caller, then L4 or L7.
async fn connection(tcp: TcpStream, inbound: &Arc<Inbound>) -> Result<(), String> {
    let spec = inbound.spec.borrow().clone();
    let Some(tls) = inbound.tls.borrow().clone() else {
        return Err("no certificate yet".into());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().clone());
    let stream = match tokio::time::timeout(spec.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("handshake failed: {e}")),
        Err(_) => return Err("handshake timed out".into()),
    };
    let Some(peer) = trellis_tls::peer_service(stream.get_ref().1) else {
        return Err("the verified peer has no service identity".into());
    };
    let source = peer.service;
    if spec.protocol.is_l7() {
        serve_http(stream, source, spec, inbound.clone()).await
    } else {
        splice(stream, &source, &spec, inbound).await
    }
}

/// L4: one decision for the connection, then bytes both ways (half-close passed on).
async fn splice(
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
    source: &str,
    spec: &ProxySpec,
    inbound: &Inbound,
) -> Result<(), String> {
    let Some(engine) = inbound.engine.borrow().clone() else {
        return Err("no intentions yet".into());
    };
    let decision = engine.decide(
        source,
        &spec.service,
        inbound.default_allow.load(Ordering::Relaxed),
    );
    if !decision.allowed {
        tracing::info!(target: "trellis::access", %source, destination = %spec.service, reason = %decision.reason, "connection denied");
        return Ok(());
    }
    let mut app = match tokio::time::timeout(
        spec.local_connect_timeout,
        TcpStream::connect(&spec.local_app),
    )
    .await
    {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => {
            return Err(format!(
                "dialling the application at {}: {e}",
                spec.local_app
            ))
        }
        Err(_) => {
            return Err(format!(
                "dialling the application at {} timed out",
                spec.local_app
            ))
        }
    };
    let _ = app.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut stream, &mut app).await {
        Ok((up, down)) => {
            tracing::debug!(target: "trellis::access", %source, destination = %spec.service, bytes_in = up, bytes_out = down, "connection closed");
            Ok(())
        }
        Err(e) => Err(format!("splicing: {e}")),
    }
}

fn status(code: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// L7: HTTP/1.1 or HTTP/2 (by preface) over the TLS stream, each request decided.
async fn serve_http(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    source: String,
    spec: Arc<ProxySpec>,
    inbound: Arc<Inbound>,
) -> Result<(), String> {
    let source: Arc<str> = source.into();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (source, inbound, spec) = (source.clone(), inbound.clone(), spec.clone());
        async move { Ok::<_, Infallible>(handle(req, &source, &spec, &inbound).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| format!("serving HTTP: {e}"))
}

/// Decides one request and, when allowed, passes it to the application.
async fn handle(
    mut req: Request<Incoming>,
    source: &str,
    spec: &ProxySpec,
    inbound: &Inbound,
) -> Response<Body> {
    let Some(engine) = inbound.engine.borrow().clone() else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "no intentions yet\n");
    };
    let decision = {
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let view = HttpRequest {
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: &headers,
        };
        engine.decide_request(
            source,
            &spec.service,
            &view,
            inbound.default_allow.load(Ordering::Relaxed),
        )
    };
    if !decision.allowed {
        tracing::info!(target: "trellis::access", %source, destination = %spec.service, method = %req.method(), path = %req.uri().path(), reason = %decision.reason, "request denied");
        // Envoy's answer to a request its RBAC filter refuses.
        return status(StatusCode::FORBIDDEN, "RBAC: access denied");
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let Ok(uri) = format!("http://{}{path}", spec.local_app).parse::<hyper::Uri>() else {
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
    match client.request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => {
            tracing::warn!(destination = %spec.service, error = %e, "the application did not answer");
            status(StatusCode::BAD_GATEWAY, "the application did not answer\n")
        }
    }
}
