//! The sidecar proxy end to end: a dev agent, two services with sidecars, `trellis connect
//! proxy` processes for both, and traffic from the caller's upstream listener through mutual
//! TLS to the destination's application, as intentions allow.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{free_port, Agent};

mod mtls;

/// A running `trellis connect proxy`; killed on drop.
struct Proxy(Child);

impl Proxy {
    fn sidecar_for(agent: &Agent, service: &str, log_dir: &Path) -> Proxy {
        Proxy::start(agent, service, &["-sidecar-for", service], log_dir)
    }

    /// `trellis connect proxy` with `flags`, logging to `proxy-<name>.log` in `log_dir`.
    fn start(agent: &Agent, name: &str, flags: &[&str], log_dir: &Path) -> Proxy {
        let log = std::fs::File::create(log_dir.join(format!("proxy-{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(["connect", "proxy"])
            .args(flags)
            .env("TRELLIS_HTTP_ADDR", format!("127.0.0.1:{}", agent.http))
            .env("RUST_LOG", "info,trellis_proxy=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the proxy starts");
        Proxy(child)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!(
            "--- {}\n{}\n",
            entry.path().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    out
}

/// An echo server; returns its port.
async fn echo_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A minimal HTTP/1.1 server answering `200 <path>` on keep-alive connections.
async fn http_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let body = format!("app saw {path}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Sends `msg` through the upstream listener and returns what came back (empty when the
/// connection was refused or closed).
async fn echo_through(port: u16, msg: &[u8]) -> Vec<u8> {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return Vec::new();
    };
    if s.write_all(msg).await.is_err() {
        return Vec::new();
    }
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

async fn register(a: &Agent, body: serde_json::Value) {
    let (status, text) = a.put("/v1/agent/service/register", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
}

async fn intention(a: &Agent, src: &str, dst: &str, body: serde_json::Value) {
    let (status, text) = a
        .put(
            &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
            body.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
}

/// Waits until `f` holds, polling every 100 ms for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, dir: &Path, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two services with sidecars: bytes go through at L4 while intentions allow, stop within a
/// second of a deny, and flow again after an allow.
#[tokio::test]
async fn l4_traffic_follows_intentions() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("proxy-l4", dir.path());
    a.ready().await;
    let app = echo_app().await;
    let (db_public, web_public, upstream) = (free_port(), free_port(), free_port());
    register(
        &a,
        json!({"Name": "db", "Port": app, "Connect": {"SidecarService": {"Port": db_public}}}),
    )
    .await;
    register(
        &a,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_public,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    let _db = Proxy::sidecar_for(&a, "db", dir.path());
    let _web = Proxy::sidecar_for(&a, "web", dir.path());

    // No intention and no ACLs: the default allows.
    eventually(20, "traffic through the proxies", dir.path(), || async {
        echo_through(upstream, b"hello").await == b"hello"
    })
    .await;

    intention(&a, "web", "db", json!({"Action": "deny"})).await;
    let denied_at = Instant::now();
    eventually(5, "the deny to take effect", dir.path(), || async {
        echo_through(upstream, b"hello").await.is_empty()
    })
    .await;
    assert!(
        denied_at.elapsed() < Duration::from_secs(2),
        "a deny took {:?}",
        denied_at.elapsed()
    );

    intention(&a, "web", "db", json!({"Action": "allow"})).await;
    eventually(5, "the allow to take effect", dir.path(), || async {
        echo_through(upstream, b"again").await == b"again"
    })
    .await;

    // A large payload goes through whole, in both directions.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_through(upstream, &big).await, big);
}

/// An HTTP service: each request on one keep-alive connection is decided by the L7
/// permissions; a denied request gets 403 and the next request still goes through.
#[tokio::test]
async fn l7_requests_are_decided_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("proxy-l7", dir.path());
    a.ready().await;
    let (status, text) = a
        .put(
            "/v1/config",
            json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = a
        .put(
            "/v1/config",
            json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web",
            "Permissions": [
                {"Action": "allow", "HTTP": {"PathPrefix": "/ok"}},
                {"Action": "deny", "HTTP": {"PathPrefix": "/"}}
            ]}]})
            .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let app = http_app().await;
    let (api_public, web_public, upstream) = (free_port(), free_port(), free_port());
    register(
        &a,
        json!({"Name": "api", "Port": app, "Connect": {"SidecarService": {"Port": api_public}}}),
    )
    .await;
    register(
        &a,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_public,
            "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    let _api = Proxy::sidecar_for(&a, "api", dir.path());
    let _web = Proxy::sidecar_for(&a, "web", dir.path());

    // One keep-alive connection, three requests.
    let start = Instant::now();
    let conn = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", upstream)).await {
            let mut r = BufReader::new(s);
            if request(&mut r, "/ok/1").await == Some((200, "app saw /ok/1".into())) {
                break r;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the upstream never answered HTTP\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut conn = conn;
    assert_eq!(
        request(&mut conn, "/admin").await,
        Some((403, "RBAC: access denied".into()))
    );
    assert_eq!(
        request(&mut conn, "/ok/2").await,
        Some((200, "app saw /ok/2".into()))
    );
}

/// One HTTP/1.1 request on `conn`; the status and body (by content-length).
async fn request(conn: &mut BufReader<TcpStream>, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: api\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.ok()?;
    let read = async {
        let mut status_line = String::new();
        conn.read_line(&mut status_line).await.ok()?;
        let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if conn.read_line(&mut h).await.ok()? == 0 {
                return None;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.ok()?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()?
}
