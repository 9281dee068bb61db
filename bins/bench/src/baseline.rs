//! The baseline server: hyper 1 over HTTP/1.1, one task per connection, keep-alive, answering
//! every GET (and every POST, after reading its body) with status 200, a fixed body and the
//! header names Trellis sends on a read.
//!
//! It does nothing Trellis would not also have to do (accept, parse the request, write headers
//! and body), so Trellis' latency over this server's is the cost of routing, the query, and
//! serialising the answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves `body_file`'s bytes on `listen` until the process is killed.
pub async fn run(listen: SocketAddr, body_file: &Path) -> anyhow::Result<()> {
    let body = Bytes::from(
        std::fs::read(body_file).with_context(|| format!("reading {}", body_file.display()))?,
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("baseline: serving {} bytes on http://{listen}", body.len());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("baseline: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let (parts, incoming) = req.into_parts();
                    // A POST's body is read in full, as Trellis must read it before deciding.
                    if parts.method == Method::POST {
                        use http_body_util::BodyExt;
                        let _ = incoming.collect().await;
                    }
                    Ok::<_, Infallible>(respond(&parts.method, body))
                }
            });
            // Errors here are clients going away mid-request; nothing to do about them.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer to one request: the fixed body for a GET or POST, 405 for anything else.
fn respond(method: &Method, body: Bytes) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::POST {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"method not allowed\n")));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    // The header names and value shapes Trellis sends with a catalog read.
    h.insert(
        "x-consul-default-acl-policy",
        HeaderValue::from_static("allow"),
    );
    h.insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static("leader"),
    );
    h.insert("x-consul-index", HeaderValue::from_static("2003"));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
