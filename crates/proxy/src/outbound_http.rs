//! HTTP upstreams: for an `http`, `http2` or `grpc` destination the upstream listener speaks
//! HTTP itself (HTTP/1.1 or HTTP/2, by preface), and each request goes to an instance chosen
//! per request (least-request of two) over a pooled mutual-TLS connection, so keep-alive and
//! multiplexing survive the hop and load spreads per request rather than per connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use trellis_identity::ServiceId;
use trellis_intentions::Protocol;
use trellis_tls::{ExpectedService, TlsSnapshot};

use prometheus_client::metrics::counter::Counter;

use crate::balance::Balancer;

use crate::inbound::{status, target_at, Body};

/// A pooled mTLS connection to one instance.
pub struct MeshConn(TokioIo<crate::pipe::OutboundTls>);

impl Connection for MeshConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for MeshConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Dials an instance (the URI's authority is its address) over mutual TLS, checking that it
/// is the upstream service in the instance's datacenter.
#[derive(Clone)]
pub struct MeshConnector {
    service: String,
    tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
    balancer: watch::Receiver<Option<Arc<Balancer>>>,
    connect_timeout: std::time::Duration,
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = MeshConn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<MeshConn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let err = |m: String| std::io::Error::other(m);
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| err(format!("no instance address in {uri}")))?;
            let tls = this
                .tls
                .borrow()
                .clone()
                .ok_or_else(|| err("no certificate yet".into()))?;
            let datacenter = this
                .balancer
                .borrow()
                .as_ref()
                .and_then(|b| {
                    b.endpoints()
                        .iter()
                        .find(|e| e.addr == addr)
                        .map(|e| e.datacenter.clone())
                })
                .ok_or_else(|| err(format!("{addr} is no longer an instance")))?;
            let own = tls.identity();
            let expected = ExpectedService::new(ServiceId::new(
                own.trust_domain.clone(),
                datacenter,
                this.service.clone(),
            ));
            let config = tls
                .client_config(&expected, &[b"h2", b"http/1.1"])
                .map_err(|e| err(e.to_string()))?;
            let name = expected.server_name().map_err(|e| err(e.to_string()))?;
            let attempt = async {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, crate::pipe::BufferedRead::new(tcp))
                    .await
            };
            let stream = tokio::time::timeout(this.connect_timeout, attempt)
                .await
                .map_err(|_| err(format!("dialling {addr} timed out")))??;
            Ok(MeshConn(TokioIo::new(stream)))
        })
    }
}

/// The pooled client of one HTTP upstream.
pub type MeshClient = Client<MeshConnector, Body>;

/// A client for `service`'s instances, HTTP/2 only for `http2` and `grpc`.
pub fn client(
    service: &str,
    protocol: Protocol,
    tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
    balancer: watch::Receiver<Option<Arc<Balancer>>>,
    connect_timeout: std::time::Duration,
) -> MeshClient {
    let connector = MeshConnector {
        service: service.to_string(),
        tls,
        balancer,
        connect_timeout,
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_timer(TokioTimer::new());
    if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// Serves one local connection as HTTP, sending each request to an instance.
pub async fn serve(
    local: TcpStream,
    client: MeshClient,
    balancer: watch::Receiver<Option<Arc<Balancer>>>,
    protocol: Protocol,
    service: Arc<str>,
    dial_failures: Counter,
) -> Result<(), String> {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (client, balancer, service, failures) = (
            client.clone(),
            balancer.clone(),
            service.clone(),
            dial_failures.clone(),
        );
        async move {
            Ok::<_, Infallible>(
                forward(req, &client, &balancer, protocol, &service, &failures).await,
            )
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(crate::inbound::HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
        .serve_connection(TokioIo::new(local), svc)
        .await
        .map_err(|e| format!("serving HTTP: {e}"))
}

async fn forward(
    req: Request<Incoming>,
    client: &MeshClient,
    balancer: &watch::Receiver<Option<Arc<Balancer>>>,
    protocol: Protocol,
    service: &str,
    dial_failures: &Counter,
) -> Response<Body> {
    let Some(balancer) = balancer.borrow().clone() else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "instances not discovered yet\n",
        );
    };
    let (mut parts, body) = req.into_parts();
    if !matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        // An HTTP/2 caller of an HTTP/1.1 upstream: the request goes on as HTTP/1.1.
        parts.version = hyper::Version::HTTP_11;
    }
    let target = parts.uri.path_and_query().cloned();
    // A request without a body can be sent again when its instance cannot be reached; one
    // with a body goes once (its body is consumed by the attempt).
    let replayable = hyper::body::Body::is_end_stream(&body);
    let mut body = Some(body.boxed());
    let mut tried = Vec::new();
    loop {
        let Some((i, in_flight)) = balancer.pick(&tried, |n| rand::random_range(0..n)) else {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy instances found\n",
            );
        };
        tried.push(i);
        let authority = in_flight.endpoint().addr.to_string();
        let Some(uri) = target_at(&authority, target.as_ref()) else {
            return status(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        // Only a request that may be sent again keeps a copy of its head.
        let head = if replayable {
            parts.clone()
        } else {
            std::mem::replace(&mut parts, Request::new(()).into_parts().0)
        };
        let mut attempt = Request::from_parts(head, ());
        *attempt.uri_mut() = uri;
        let attempt = attempt.map(|()| {
            body.take().unwrap_or_else(|| {
                Full::new(Bytes::new())
                    .map_err(|never: Infallible| match never {})
                    .boxed()
            })
        });
        let result = client.request(attempt).await;
        drop(in_flight);
        match result {
            Ok(resp) => return resp.map(BodyExt::boxed),
            Err(e) if e.is_connect() && replayable => {
                dial_failures.inc();
                tracing::debug!(upstream = %service, error = %e, "instance unreachable; trying another");
            }
            Err(e) => {
                if e.is_connect() {
                    dial_failures.inc();
                }
                tracing::info!(upstream = %service, error = %e, "upstream request failed");
                return status(StatusCode::BAD_GATEWAY, "upstream request failed\n");
            }
        }
    }
}
