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

mod acl;
mod l7_bypass;
mod mtls;

/// A running `trellis connect proxy`; killed on drop.
struct Proxy(Child);

impl Proxy {
    fn sidecar_for(agent: &Agent, service: &str, log_dir: &Path) -> Proxy {
        Proxy::start(agent, service, &["-sidecar-for", service], log_dir)
    }

    /// `trellis connect proxy` with `flags`, logging to `proxy-<name>.log` in `log_dir`.
    fn start(agent: &Agent, name: &str, flags: &[&str], log_dir: &Path) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
        cmd.args(["connect", "proxy"]);
        Proxy::spawn(cmd, agent, name, flags, log_dir)
    }

    /// The standalone `trellis-proxy` binary with `flags` (the same as `connect proxy`'s).
    fn standalone(agent: &Agent, name: &str, flags: &[&str], log_dir: &Path) -> Proxy {
        let cmd = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"));
        Proxy::spawn(cmd, agent, name, flags, log_dir)
    }

    fn spawn(mut cmd: Command, agent: &Agent, name: &str, flags: &[&str], log_dir: &Path) -> Proxy {
        let log = std::fs::File::create(log_dir.join(format!("proxy-{name}.log"))).unwrap();
        let child = cmd
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

/// The metrics a proxy serves on `127.0.0.1:port` (`None` while it does not answer).
async fn scrape(port: u16) -> Option<String> {
    let r = crate::support::client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.text().await.ok()
}

/// The value of `series` (name and labels exactly as rendered) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrapes `port` until `ok` holds for the text (up to `secs` seconds); the last scrape.
async fn metrics_until(
    port: u16,
    secs: u64,
    what: &str,
    dir: &Path,
    ok: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(port).await.unwrap_or_default();
        if ok(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; last scrape:\n{text}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log without its terminal colours (`ESC [ … m`).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
    let (db_metrics, web_metrics) = (free_port(), free_port());
    // db's side runs the standalone binary, web's `trellis connect proxy`.
    let _db = Proxy::standalone(
        &a,
        "db",
        &[
            "-sidecar-for",
            "db",
            "--metrics-addr",
            &format!("127.0.0.1:{db_metrics}"),
        ],
        dir.path(),
    );
    let _web = Proxy::start(
        &a,
        "web",
        &[
            "-sidecar-for",
            "web",
            "--metrics-addr",
            &format!("127.0.0.1:{web_metrics}"),
        ],
        dir.path(),
    );

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

    // db's proxy counted the decisions both ways and the spliced bytes (the counts land as
    // each connection closes, just after the client has seen the end); its leaf is current.
    let l4 =
        |d: &str| format!(r#"trellis_proxy_authz_decisions_total{{layer="l4",decision="{d}"}}"#);
    let bytes = |dir: &str, way: &str| {
        format!(r#"trellis_proxy_connection_bytes_total{{direction="{dir}",way="{way}"}}"#)
    };
    let (allow, deny) = (l4("allow"), l4("deny"));
    let (in_rx, in_tx) = (bytes("inbound", "rx"), bytes("inbound", "tx"));
    let text = metrics_until(
        db_metrics,
        10,
        "db's proxy to count the traffic",
        dir.path(),
        |t| {
            sample(t, &allow).unwrap_or(0.0) >= 3.0
                && sample(t, &deny).unwrap_or(0.0) >= 1.0
                && sample(t, &in_rx).unwrap_or(0.0) >= 1_000_000.0
                && sample(t, &in_tx).unwrap_or(0.0) >= 1_000_000.0
        },
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = sample(&text, "trellis_proxy_leaf_cert_expiry_timestamp_seconds").unwrap();
    assert!(
        expiry > now + 60.0,
        "the leaf expires at {expiry}, now is {now}\n{text}"
    );
    let left = sample(&text, "trellis_proxy_leaf_cert_expires_in_seconds").unwrap();
    assert!(
        left > 60.0 && (expiry - now - left).abs() < 30.0,
        "{left}\n{text}"
    );
    let decided = sample(&text, &allow).unwrap() + sample(&text, &deny).unwrap();
    let closed = sample(
        &text,
        r#"trellis_proxy_connections_closed_total{direction="inbound"}"#,
    );
    assert!(closed.unwrap() >= decided, "{text}");
    // No HTTP on a tcp service.
    assert_eq!(
        sample(
            &text,
            r#"trellis_proxy_authz_decisions_total{layer="l7",decision="allow"}"#
        ),
        Some(0.0)
    );

    // web's proxy saw the same bytes on its upstream listener, and has a dial-failure series
    // for its one upstream.
    let (out_rx, out_tx) = (bytes("outbound", "rx"), bytes("outbound", "tx"));
    let text = metrics_until(
        web_metrics,
        10,
        "web's proxy to count the traffic",
        dir.path(),
        |t| {
            sample(t, &out_rx).unwrap_or(0.0) >= 1_000_000.0
                && sample(t, &out_tx).unwrap_or(0.0) >= 1_000_000.0
        },
    )
    .await;
    assert!(
        sample(
            &text,
            r#"trellis_proxy_upstream_dial_failures_total{upstream="db"}"#
        )
        .is_some(),
        "{text}"
    );

    // The denials are in db's access log.
    let log = plain(&std::fs::read_to_string(dir.path().join("proxy-db.log")).unwrap());
    assert!(
        log.lines().any(|l| l.contains("trellis::access")
            && l.contains("connection denied")
            && l.contains("source=web")),
        "no denial in the access log:\n{log}"
    );
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
    let api_metrics = free_port();
    let api_metrics_flag = format!("127.0.0.1:{api_metrics}");
    let _api = Proxy::start(
        &a,
        "api",
        &["-sidecar-for", "api", "-metrics-addr", &api_metrics_flag],
        dir.path(),
    );
    let web_metrics = free_port();
    let web_metrics_flag = format!("127.0.0.1:{web_metrics}");
    let _web = Proxy::start(
        &a,
        "web",
        &["-sidecar-for", "web", "-metrics-addr", &web_metrics_flag],
        dir.path(),
    );

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
    drop(conn);

    // `api` speaks HTTP, so web's upstream listener does too: requests from several local
    // connections share one pooled mutual-TLS connection to api's proxy.
    for i in 3..6 {
        let s = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let mut r = BufReader::new(s);
        let path = format!("/ok/{i}");
        assert_eq!(
            request(&mut r, &path).await,
            Some((200, format!("app saw {path}")))
        );
    }
    let text = metrics_until(api_metrics, 10, "api's proxy metrics", dir.path(), |t| {
        sample(
            t,
            r#"trellis_proxy_authz_decisions_total{layer="l7",decision="allow"}"#,
        )
        .is_some_and(|n| n >= 5.0)
    })
    .await;
    let accepted = sample(
        &text,
        r#"trellis_proxy_connections_accepted_total{direction="inbound"}"#,
    )
    .unwrap_or(0.0);
    // Connections that never completed a handshake (the agent's TCP health check, for one).
    let failed: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("trellis_proxy_tls_handshake_failures_total{direction=\"inbound\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        accepted - failed,
        1.0,
        "one mutual-TLS connection carried every request\n{text}"
    );

    // A second instance of api that cannot be reached (on another node, registered straight
    // into the catalog with no checks, so it counts as passing): requests without a body that
    // land on it are sent again to the live one, so none fails.
    let dead = free_port();
    let (status, text) = a
        .put(
            "/v1/catalog/register",
            json!({"Node": "elsewhere", "Address": "127.0.0.1",
                "Service": {"ID": "api-dead-proxy", "Service": "api-sidecar-proxy",
                    "Kind": "connect-proxy", "Port": dead,
                    "Proxy": {"DestinationServiceName": "api", "DestinationServiceID": "api"}}})
            .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    a.wait_for("/v1/health/connect/api?passing", "two api instances", |v| {
        v.as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    // Until web's proxy has tried the dead instance at least once (it learns of it through
    // the agent's cache), and then for 20 more, every request succeeds.
    let dial_failures = r#"trellis_proxy_upstream_dial_failures_total{upstream="api"}"#;
    let start = Instant::now();
    let mut i = 0;
    while scrape(web_metrics)
        .await
        .and_then(|t| sample(&t, dial_failures))
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "web's proxy never tried the dead instance\n{}",
            logs(dir.path())
        );
        let s = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let mut r = BufReader::new(s);
        let path = format!("/ok/before-{i}");
        assert_eq!(
            request(&mut r, &path).await,
            Some((200, format!("app saw {path}"))),
            "request {i}\n{}",
            logs(dir.path())
        );
        i += 1;
    }
    for i in 0..20 {
        let s = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let mut r = BufReader::new(s);
        let path = format!("/ok/retry-{i}");
        assert_eq!(
            request(&mut r, &path).await,
            Some((200, format!("app saw {path}"))),
            "request {i}\n{}",
            logs(dir.path())
        );
    }
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
