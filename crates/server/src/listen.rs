//! Listening sockets and the serving loops (HTTP/1.1 and h2c on both the HTTP API and the
//! server port); and the limits both put on what one client may hold: connections per
//! client IP, request head size, HTTP/2 streams, request body size and time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use trellis_tls::rpc::Caller;

/// Pending-connection queue length, as Go's listeners get from `somaxconn` (tokio's default of
/// 128 drops bursts of new connections).
const BACKLOG: u32 = 4096;

/// Streams one HTTP/2 connection to the server port may hold open at once
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`). A client agent parks one long-poll per 256 watched
/// store keys (`watcher.rs`) plus its in-flight RPCs, so 4096 streams cover a million watched
/// keys with room for two thousand concurrent calls; a client at the limit waits for a free
/// stream (HTTP/2 clients queue), and one connection holds at most ~40 MB of parked streams
/// (about 10 KB each) instead of the 10 GB that 2^20 allowed.
pub const MAX_RPC_STREAMS: u32 = 4096;

/// The largest HTTP/1 request head (request line and headers) read: hyper's read buffer
/// ceiling, which is also what one idle or slow connection can make the server hold. 64 KiB,
/// about Envoy's default (60 KiB); Consul's own headers (ACL tokens, index, wait) are far
/// smaller. HTTP/2 header lists keep hyper's 16 KiB.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a refused client is given to take its 429 (Consul's limiter waits 10 ms).
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(10);

/// How often, at most, refused connections are logged at warn level.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one listener allows one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections one client IP may hold open at once; 0 for no limit. Consul's
    /// `limits { http_max_conns_per_client }` (HTTP API) and `rpc_max_conns_per_client`
    /// (server port).
    pub max_conns_per_client: usize,
    /// The largest request body read, in bytes; a larger one is refused with 413.
    pub max_body: usize,
    /// The longest a client may take to send a whole request body, counted from the end of its
    /// headers; a slower one is answered 408 and its connection closed.
    pub body_timeout: Duration,
}

impl Limits {
    /// The HTTP API: Consul's 200 connections per client IP; 4 MiB bodies, eight times the
    /// 512 KiB Consul allows a KV value or a transaction (its largest request bodies) and room
    /// for a `service-intentions` entry with thousands of sources; 30 s to send one, which
    /// still lets a 4 MiB body arrive at 140 KB/s.
    pub const HTTP: Limits = Limits {
        max_conns_per_client: 200,
        max_body: 4 << 20,
        body_timeout: Duration::from_secs(30),
    };

    /// The server port: Consul's 100 connections per client IP (`rpc_max_conns_per_client`);
    /// 64 MiB bodies (Raft appends and snapshot chunks); 60 s to send one.
    pub const RPC: Limits = Limits {
        max_conns_per_client: 100,
        max_body: 64 << 20,
        body_timeout: Duration::from_secs(60),
    };
}

/// Binds a TCP listener with a deep accept queue and address reuse.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The connections each client IP holds open, against the per-client limit.
struct ClientConns {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals not yet logged at warn level, and when that was last done.
    refused: Mutex<(u64, Option<Instant>)>,
}

/// One admitted connection's place; dropped when the connection ends.
struct ConnSlot {
    conns: Arc<ClientConns>,
    ip: IpAddr,
}

impl ClientConns {
    fn new(max: usize) -> Arc<ClientConns> {
        Arc::new(ClientConns {
            max,
            open: Mutex::new(HashMap::new()),
            refused: Mutex::new((0, None)),
        })
    }

    /// A place for a connection from `ip`, or `None` when it already holds the limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        if self.max == 0 {
            return Some(ConnSlot {
                conns: self.clone(),
                ip,
            });
        }
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            conns: self.clone(),
            ip,
        })
    }

    /// Logs a refusal: each at debug level, and at most one warning per interval with the
    /// count since the last.
    fn log_refusal(&self, ip: IpAddr, port: u16) {
        tracing::debug!(client = %ip, limit = self.max, "connection refused: per-client limit");
        let mut refused = self.refused.lock();
        refused.0 += 1;
        let due = refused
            .1
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                client = %ip,
                port,
                limit = self.max,
                refused = refused.0,
                "refused connections from clients over the per-client connection limit"
            );
            *refused = (0, Some(Instant::now()));
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if self.conns.max == 0 {
            return;
        }
        let mut open = self.conns.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection over the per-client limit gets before it is closed.
#[derive(Clone, Copy)]
enum Refusal {
    /// A 429, as Consul's HTTP server answers.
    TooManyRequests,
    /// Nothing (the server port, whose clients speak HTTP/2 or Raft RPCs).
    Close,
}

async fn refuse(mut stream: TcpStream, how: Refusal) {
    if let Refusal::TooManyRequests = how {
        const BODY: &str = "client connection limit reached";
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ =
            tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(answer.as_bytes())).await;
    }
}

/// Accepts connections until the listener fails (backing off when accept errors, e.g. out of
/// file descriptors) and serves each on its own task with `serve`, holding a place of its
/// client IP's quota while it lasts; a client over its quota is refused and closed at once.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    refusal: Refusal,
    serve: F,
) where
    F: Fn(TcpStream, Router) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let conns = ClientConns::new(limits.max_conns_per_client);
    let router = router.layer(axum::middleware::from_fn_with_state(limits, buffer_body));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let Some(slot) = conns.admit(ip) else {
            conns.log_refusal(ip, port);
            tokio::spawn(refuse(stream, refusal));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = serve(stream, router.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Streams one HTTP/2 connection to the HTTP API may hold open at once. A local sidecar
/// proxy parks one blocking query per thing it follows (its registration, leaf, roots,
/// intentions, one per upstream), all on one connection; 1024 covers a thousand upstreams.
pub const MAX_HTTP_STREAMS: u32 = 1024;

/// Serves the HTTP API until the listener fails: HTTP/1.1 with keep-alive, as Consul serves
/// it, and HTTP/2 in the clear with prior knowledge (h2c), which Trellis's own sidecar proxies
/// use so that all their parked blocking queries share one connection (one place of the
/// per-client connection limit) instead of one connection each.
pub async fn serve_http(listener: TcpListener, router: Router, limits: Limits) {
    accept_loop(
        listener,
        router,
        limits,
        Refusal::TooManyRequests,
        |stream, router| {
            let service = TowerToHyperService::new(router);
            serve_h1_and_h2c(TokioIo::new(stream), service, MAX_HTTP_STREAMS, false)
        },
    )
    .await
}

/// One connection of either port: HTTP/1.1, or h2c when the client opens with the HTTP/2
/// preface (only HTTP/2 with `h2_only`: TLS whose ALPN chose `h2`), each with the listener's
/// limits.
async fn serve_h1_and_h2c<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Router>,
    max_streams: u32,
    h2_only: bool,
) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        .adaptive_window(true)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if h2_only {
        builder = builder.http2_only();
    }
    builder
        .serve_connection(io, service)
        .await
        .map_err(|e| e.to_string())
}

/// How long a client of the server port has to complete its TLS handshake (Consul's
/// `limits { rpc_handshake_timeout }`).
pub const RPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// TLS on the server port: the acceptor, and whether plaintext connections are refused.
#[derive(Clone)]
pub struct RpcTlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    require_tls: bool,
    tls: Arc<trellis_tls::rpc::RpcTls>,
}

impl RpcTlsAcceptor {
    /// From the server port's TLS settings: `None` without a certificate to serve. With
    /// `verify_incoming` only TLS connections with a client certificate are served; otherwise
    /// plaintext clients are served too, as Consul's servers do.
    pub fn new(tls: &Arc<trellis_tls::rpc::RpcTls>) -> Option<RpcTlsAcceptor> {
        Some(RpcTlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(tls.server_config()?),
            require_tls: tls.verify_incoming(),
            tls: tls.clone(),
        })
    }
}

/// Serves the server port: HTTP/1.1, and HTTP/2 in the clear with prior knowledge (h2c), which
/// client agents use so that every RPC and parked blocking query of an agent shares one
/// connection, as Consul multiplexes its RPCs, instead of one connection (and its buffers)
/// each. With `tls`, a connection that opens with a TLS record is served over TLS once its
/// handshake completes within [`RPC_HANDSHAKE_TIMEOUT`] (HTTP/2 when ALPN chose `h2`); one
/// that does not is closed unanswered when TLS is required, and served in plaintext otherwise.
pub async fn serve_rpc(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<RpcTlsAcceptor>,
) {
    accept_loop(listener, router, limits, Refusal::Close, move |stream, router| {
        let tls = tls.clone();
        // Every request carries who its connection's client is (`Caller`), for the
        // server port's handlers to decide what it may do.
        let with_caller = |router: Router, caller: Caller| {
            TowerToHyperService::new(router.layer(axum::Extension(caller)))
        };
        async move {
            let Some(tls) = tls else {
                let service = with_caller(router, Caller::Unverified);
                return serve_h1_and_h2c(TokioIo::new(stream), service, MAX_RPC_STREAMS, false)
                    .await;
            };
            let peer = stream.peer_addr().ok();
            // One deadline for the first byte and the whole handshake.
            let deadline = tokio::time::Instant::now() + RPC_HANDSHAKE_TIMEOUT;
            // Whether the client opens with a TLS record, looked at without consuming it.
            let mut first = [0u8; 1];
            let is_tls = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                Err(_) => return Err("nothing received within the handshake timeout".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(n)) => n > 0 && first[0] == TLS_HANDSHAKE_RECORD,
            };
            if !is_tls {
                if tls.require_tls {
                    tracing::warn!(
                        client = ?peer,
                        "Non-TLS connection attempted with verify_incoming set; closed"
                    );
                    return Err("plaintext connection refused".into());
                }
                let service = with_caller(router, Caller::Unverified);
                return serve_h1_and_h2c(TokioIo::new(stream), service, MAX_RPC_STREAMS, false)
                    .await;
            }
            let accepted = tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await;
            let tls_stream = match accepted {
                Err(_) => return Err("TLS handshake timed out".into()),
                Ok(Err(e)) => {
                    tracing::warn!(client = ?peer, error = %e, "server port: TLS handshake failed");
                    return Err(e.to_string());
                }
                Ok(Ok(s)) => s,
            };
            let session = tls_stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            let caller = tls.tls.caller(session.peer_certificates());
            let service = with_caller(router, caller);
            serve_h1_and_h2c(TokioIo::new(tls_stream), service, MAX_RPC_STREAMS, h2).await
        }
    })
    .await
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Over the size limit (declared or sent).
    #[error("Request body too large, max size: {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Not all sent within the time limit.
    #[error("Request body not received within {} s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The connection failed while reading it.
    #[error("Request body read failed: {0}")]
    Read(String),
}

impl BodyError {
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), format!("{self}\n")).into_response();
        // The rest of the body is not read, so the connection cannot carry another request.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// The most of an over-limit body read and thrown away before its 413 is sent. An HTTP/1.1
/// client that does not wait for `100 Continue` writes its whole body before it reads the
/// answer, and a server that closes first makes the kernel reset the connection, which loses
/// the 413 on the way; so the rest is drained (into no buffer, within the body time limit), as
/// nginx's lingering close does, and a body larger still is cut off.
const DRAIN_MAX: u64 = 64 << 20;

/// Reads a whole request body into one buffer: at most `max` bytes, all of it within
/// `timeout`. Each received chunk is copied and dropped at once: a chunk is a view into the
/// connection's read buffer, and keeping the chunks of a body sent a byte at a time would keep
/// a read buffer (~4 KiB) per byte. A body over `max` is refused; unless the client waits for
/// `100 Continue` (`expects_continue`: it sends nothing until the body is read, so it is
/// answered at once) the rest of it is first read and dropped (up to a limit).
pub async fn collect_body(
    body: Body,
    declared: Option<u64>,
    expects_continue: bool,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let too_large = BodyError::TooLarge { limit: max };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut data = body.into_data_stream();
    if declared.is_some_and(|n| n > max as u64) {
        if !expects_continue {
            drain(&mut data, deadline).await;
        }
        return Err(too_large);
    }
    // A declared length is a claim, not bytes received: reserve at most 64 KiB up front.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(64 << 10) as usize);
    loop {
        match tokio::time::timeout_at(deadline, data.next()).await {
            Err(_) => return Err(BodyError::TimedOut(timeout)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > max {
                    drop(buf);
                    drain(&mut data, deadline).await;
                    return Err(too_large);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// Reads and drops what is left of a body, up to [`DRAIN_MAX`] bytes and until `deadline`.
async fn drain(data: &mut axum::body::BodyDataStream, deadline: tokio::time::Instant) {
    let mut drained = 0u64;
    while drained <= DRAIN_MAX {
        match tokio::time::timeout_at(deadline, data.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Middleware of both ports: the request's body read whole into one buffer, within the
/// listener's size and time limits, before the handler sees it.
async fn buffer_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    match collect_body(
        body,
        declared,
        expects_continue,
        limits.max_body,
        limits.body_timeout,
    )
    .await
    {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            // The path only: a query string may carry an ACL token.
            tracing::debug!(error = %e, path = %parts.uri.path(), "request body refused");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_places_are_counted_and_freed() {
        let conns = ClientConns::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = conns.admit(a).unwrap();
        let _second = conns.admit(a).unwrap();
        assert!(conns.admit(a).is_none(), "a third from one IP");
        let _other = conns.admit(b).expect("another IP has its own quota");
        drop(first);
        let _again = conns.admit(a).expect("a freed place is usable");
        assert!(conns.admit(a).is_none());

        let unlimited = ClientConns::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.admit(a).unwrap()).collect();
        assert!(unlimited.open.lock().is_empty(), "0 counts nothing");
        drop(held);
    }

    #[test]
    fn v4_mapped_addresses_count_as_their_v4_address() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:1".parse().unwrap();
        assert_eq!(
            mapped.ip().to_canonical(),
            IpAddr::from([10, 0, 0, 1]),
            "one client, one quota, whichever socket family it came in on"
        );
    }

    #[tokio::test]
    async fn bodies_are_read_within_size_and_time() {
        let max = 10;
        let t = Duration::from_secs(5);
        let body = collect_body(Body::from("0123456789"), Some(10), false, max, t).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"0123456789"));
        assert_eq!(
            collect_body(Body::from("x"), Some(11), true, max, t).await,
            Err(BodyError::TooLarge { limit: 10 }),
            "a declared length over the limit is refused unread"
        );
        assert_eq!(
            collect_body(Body::from("0123456789a"), None, false, max, t).await,
            Err(BodyError::TooLarge { limit: 10 })
        );
        let chunks = futures::stream::iter(
            ["ab", "cd", "ef"].map(|s| Ok::<_, std::io::Error>(Bytes::from_static(s.as_bytes()))),
        );
        let body = collect_body(Body::from_stream(chunks), None, false, max, t).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"abcdef"));
    }

    #[tokio::test]
    async fn a_slow_body_times_out() {
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let slow = futures::stream::iter([Ok(Bytes::from_static(b"a"))]).chain(never);
        let limit = Duration::from_millis(50);
        let err = collect_body(Body::from_stream(slow), None, false, 10, limit)
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::TimedOut(limit));
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(err.to_string(), "Request body not received within 0.05 s");
        assert_eq!(
            BodyError::TimedOut(Duration::from_secs(30)).to_string(),
            "Request body not received within 30 s"
        );
    }

    /// A CA and a server certificate (`server.dc1.consul`) written to `dir`; the TLS settings
    /// of a server with them.
    fn server_tls(dir: &std::path::Path, verify_incoming: bool) -> Arc<trellis_tls::rpc::RpcTls> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["server.dc1.consul".to_string()]).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
        trellis_tls::rpc::RpcTls::load(&trellis_tls::rpc::RpcTlsConfig {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: Some(dir.join("server.pem")),
            key_file: Some(dir.join("server-key.pem")),
            verify_incoming,
            verify_outgoing: true,
            verify_server_hostname: true,
            datacenter: "dc1".into(),
            domain: "consul".into(),
            ..Default::default()
        })
        .map(Arc::new)
        .unwrap()
    }

    /// A server port answering `/ok`, with `tls`.
    async fn rpc_port(tls: &Arc<trellis_tls::rpc::RpcTls>) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_rpc(
            listener,
            router,
            Limits::RPC,
            RpcTlsAcceptor::new(tls),
        ));
        addr
    }

    async fn plaintext_get(addr: SocketAddr) -> Result<String, reqwest::Error> {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{addr}/ok"))
            .send()
            .await?
            .text()
            .await
    }

    async fn tls_get(addr: SocketAddr, tls: &trellis_tls::rpc::RpcTls) -> Result<String, String> {
        let client = trellis_rpc::Client::new(reqwest::Client::builder().no_proxy(), Some(tls));
        let client = client.http();
        assert!(client.is_tls());
        let resp = client
            .get(&addr.to_string(), "/ok")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
        resp.text().await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn server_port_tls_refuses_plaintext_only_with_verify_incoming() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        // Without verify_incoming, as Consul's servers: TLS and plaintext both served.
        let lenient = server_tls(&one, false);
        let addr = rpc_port(&lenient).await;
        assert_eq!(tls_get(addr, &lenient).await.unwrap(), "ok");
        assert_eq!(plaintext_get(addr).await.unwrap(), "ok");

        // With it, plaintext is closed unanswered; a TLS client with no certificate is
        // refused during the handshake.
        let strict = server_tls(&two, true);
        let addr = rpc_port(&strict).await;
        assert!(plaintext_get(addr).await.is_err());
        assert_eq!(tls_get(addr, &strict).await.unwrap(), "ok");
        let anonymous = trellis_tls::rpc::RpcTls::load(&trellis_tls::rpc::RpcTlsConfig {
            ca_file: Some(two.join("ca.pem")),
            verify_outgoing: true,
            verify_server_hostname: true,
            datacenter: "dc1".into(),
            domain: "consul".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(
            tls_get(addr, &anonymous).await.is_err(),
            "no client certificate"
        );
    }
}
