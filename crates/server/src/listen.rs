//! Listening sockets and the serving loops: HTTP/1.1 for the HTTP API, HTTP/1.1 and h2c for
//! the server port.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Pending-connection queue length, as Go's listeners get from `somaxconn` (tokio's default of
/// 128 drops bursts of new connections).
const BACKLOG: u32 = 4096;

/// Streams one HTTP/2 connection to the server port may hold open: every blocking query a client
/// agent's cache parks is one stream, so the limit is sized for tens of thousands.
const MAX_RPC_STREAMS: u32 = 1 << 20;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Accepts connections until the listener fails (backing off when accept errors, e.g. out of
/// file descriptors) and serves each on its own task with `serve`.
async fn accept_loop<F, Fut>(listener: TcpListener, router: Router, serve: F)
where
    F: Fn(TokioIo<TcpStream>, TowerToHyperService<Router>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = serve(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Serves `router` over HTTP/1.1 with keep-alive until the listener fails. Consul's HTTP API
/// is HTTP/1.1 in the clear; serving only that keeps each idle connection small.
pub async fn serve_http1(listener: TcpListener, router: Router) {
    accept_loop(listener, router, |io, service| async move {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(io, service)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// Serves the server port: HTTP/1.1, and HTTP/2 in the clear with prior knowledge (h2c), which
/// client agents use so that every RPC and parked blocking query of an agent shares one
/// connection, as Consul multiplexes its RPCs, instead of one connection (and its buffers)
/// each.
pub async fn serve_rpc(listener: TcpListener, router: Router) {
    accept_loop(listener, router, |io, service| async move {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_RPC_STREAMS)
            .adaptive_window(true)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        builder
            .serve_connection(io, service)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}
