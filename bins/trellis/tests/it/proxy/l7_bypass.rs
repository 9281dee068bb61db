//! The L7 intention bypasses an attack pass found, against real processes: a dev agent, `api` (HTTP) behind its
//! sidecar with an L7 intention from `web`, and `web`'s sidecar whose upstream listener takes
//! raw requests from a TCP socket, so no client library tidies the path or the header bytes
//! on the way. Every spelling of a denied path, and every header value that is not UTF-8 that
//! a permission tests, must be denied (403) or refused (400) by api's proxy and never reach
//! the application; an allowed request reaches it with its path normalized.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{logs, Proxy};
use crate::support::{free_port, Agent};

/// What the application received: the head (request line and headers, raw bytes) of each
/// request, or for the HTTP/2 stand-in the first bytes of each connection that sent any.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// An HTTP/1.1 application recording every request head and answering `200 app saw <target>`.
async fn recording_http_app() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut head = Vec::new();
                    loop {
                        let before = head.len();
                        if r.read_until(b'\n', &mut head).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if &head[before..] == b"\r\n" {
                            break;
                        }
                    }
                    let target = head
                        .split(|&b| b == b' ')
                        .nth(1)
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    log.lock().unwrap().push(head);
                    let body = format!("app saw {target}");
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
    (port, seen)
}

/// The application of an `http2` service, standing in only to notice being reached: it
/// records the first bytes of any connection that sends some (a proxy's HTTP/2 preface; a
/// health check's bare connect sends none) and closes it.
async fn recording_tcp_app() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await
                {
                    if n > 0 {
                        log.lock().unwrap().push(buf[..n].to_vec());
                    }
                }
            });
        }
    });
    (port, seen)
}

/// One raw HTTP/1.1 request (`connection: close`) to the upstream listener: the status and
/// body, or `None` when there was no complete answer in 5 s.
async fn raw(port: u16, target: &[u8], extra_headers: &[&[u8]]) -> Option<(u16, String)> {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: api\r\nconnection: close\r\n");
    for h in extra_headers {
        req.extend_from_slice(h);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(&req).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
}

/// A dev agent, `api` speaking `protocol` with one intention from `web` holding
/// `permissions`, `web` with an upstream to it, and both sidecars; ready once `probe` through
/// the upstream listener is answered `ready_status`.
struct Mesh {
    upstream: u16,
    seen: Seen,
    dir: tempfile::TempDir,
    _proxies: (Proxy, Proxy),
    _agent: Agent,
}

impl Mesh {
    async fn start(
        node: &str,
        protocol: &str,
        permissions: Value,
        probe: &[u8],
        ready_status: u16,
    ) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Agent::dev(node, dir.path());
        a.ready().await;
        // The intentions are in before any proxy starts, so no request is ever decided by
        // the default alone.
        for entry in [
            json!({"Kind": "service-defaults", "Name": "api", "Protocol": protocol}),
            json!({"Kind": "service-intentions", "Name": "api",
                "Sources": [{"Name": "web", "Permissions": permissions}]}),
        ] {
            let (status, text) = a.put("/v1/config", entry.to_string()).await;
            assert_eq!(status, 200, "{text}");
        }
        let (app, seen) = if protocol == "http" {
            recording_http_app().await
        } else {
            recording_tcp_app().await
        };
        let (api_public, web_public, upstream) = (free_port(), free_port(), free_port());
        for body in [
            json!({"Name": "api", "Port": app,
                "Connect": {"SidecarService": {"Port": api_public}}}),
            json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_public,
                "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}}),
        ] {
            let (status, text) = a.put("/v1/agent/service/register", body.to_string()).await;
            assert_eq!(status, 200, "{text}");
        }
        let proxies = (
            Proxy::sidecar_for(&a, "api", dir.path()),
            Proxy::sidecar_for(&a, "web", dir.path()),
        );
        let start = Instant::now();
        loop {
            let got = raw(upstream, probe, &[]).await;
            if got.as_ref().is_some_and(|(s, _)| *s == ready_status) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the mesh never answered {ready_status}; last {got:?}\n{}",
                logs(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Mesh {
            upstream,
            seen,
            dir,
            _proxies: proxies,
            _agent: a,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

fn deny_admin() -> Value {
    json!([
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
    ])
}

/// Spellings of `/admin/…` and what they must get: 403 (decided on the normalized path) or
/// 400 (refused: escaped slash, backslash, dot segment with parameters; `\admin`, not a path
/// at all, is refused by web's listener already).
const ADMIN_SPELLINGS: &[(&[u8], u16)] = &[
    (b"/admin/secret", 403),
    (b"/api/../admin/secret", 403),
    (b"/api/%2e%2e/admin/secret", 403),
    (b"/api/%2E%2E/admin", 403),
    (b"/api/.%2e/admin", 403),
    (b"/api/./../admin", 403),
    (b"//admin", 403),
    (b"//admin//secret", 403),
    (b"/%61dmin", 403),
    (b"/api/..%2fadmin/secret", 400),
    (b"/api/..%2Fadmin/secret", 400),
    (b"/api/..%5cadmin/secret", 400),
    (b"/api/..%5Cadmin/secret", 400),
    (b"/api/..\\admin/secret", 400),
    (b"\\admin", 400),
    (b"/api/..;/admin/secret", 400),
];

/// Sends every spelling and checks each answer; none may reach the application.
async fn no_spelling_gets_through(m: &Mesh) {
    for (target, want) in ADMIN_SPELLINGS {
        let shown = String::from_utf8_lossy(target);
        let got = raw(m.upstream, target, &[]).await;
        assert!(
            got.as_ref().is_some_and(|(status, _)| status == want),
            "{shown}: wanted {want}, got {got:?}\n{}",
            logs(m.dir.path())
        );
    }
    assert!(
        m.seen().is_empty(),
        "the application was reached: {:?}",
        m.seen()
    );
}

/// Item 2: a deny on `/admin` holds against dot segments (raw and percent-encoded), merged
/// slashes and escaped unreserved characters (403); escaped slashes, backslashes and `..;`
/// are refused (400); an allowed path reaches the application normalized, its query as sent.
#[tokio::test]
async fn l7_path_spellings_of_a_denied_prefix_never_reach_the_app() {
    let m = Mesh::start("l7-paths", "http", deny_admin(), b"/ok", 200).await;
    m.seen.lock().unwrap().clear();
    no_spelling_gets_through(&m).await;

    let got = raw(m.upstream, b"/api//v1/./x/../%61bc%3a?q=/../%2e", &[]).await;
    assert_eq!(
        got,
        Some((200, "app saw /api/v1/abc%3A?q=/../%2e".to_string())),
        "{}",
        logs(m.dir.path())
    );
    let seen = m.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("GET /api/v1/abc%3A?q=/../%2e HTTP/1.1\r\n"),
        "{seen:?}"
    );
}

/// Item 2 over HTTP/2: with `api` speaking `http2` the hop between the proxies is HTTP/2, so
/// api's proxy decides on `:path`; every spelling is denied or refused there and its
/// application is never contacted.
#[tokio::test]
async fn l7_path_spellings_over_http2_never_reach_the_app() {
    let m = Mesh::start("l7-paths-h2", "http2", deny_admin(), b"/admin", 403).await;
    no_spelling_gets_through(&m).await;
}

/// Item 3: a `Present` deny on `x-debug` holds against a value that is not visible ASCII: raw
/// `\xff` bytes (alone, or repeated with a valid value) are refused (400) and a UTF-8 value is
/// matched as its bytes (403); none reaches the application. A header no permission tests
/// goes on with its bytes untouched, and repeated values are still joined with `,` for an
/// `Exact` test, as Envoy does.
#[tokio::test]
async fn l7_header_values_that_are_not_ascii_cannot_escape_a_header_deny() {
    let permissions = json!([
        {"Action": "deny", "HTTP": {"Header": [{"Name": "X-Debug", "Present": true}]}},
        {"Action": "deny", "HTTP": {"Header": [{"Name": "x-role", "Exact": "guest,admin"}]}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
    ]);
    let m = Mesh::start("l7-headers", "http", permissions, b"/ok", 200).await;
    m.seen.lock().unwrap().clear();
    let cases: &[(&[&[u8]], u16)] = &[
        (&[b"x-debug: \xff"], 400),
        (&[b"X-Debug: on\x80\xfe"], 400),
        (&[b"x-debug: 1", b"x-debug: \xfe"], 400),
        (&[b"x-debug: \xc3\xa9"], 403),
        (&[b"x-debug: 1"], 403),
        (&[b"x-role: guest", b"x-role: admin"], 403),
    ];
    for (headers, want) in cases {
        let got = raw(m.upstream, b"/ok", headers).await;
        assert_eq!(
            got.as_ref().map(|(s, _)| *s),
            Some(*want),
            "{:?}: {got:?}\n{}",
            headers
                .iter()
                .map(|h| String::from_utf8_lossy(h))
                .collect::<Vec<_>>(),
            logs(m.dir.path())
        );
    }
    assert!(
        m.seen().is_empty(),
        "the application was reached: {:?}",
        m.seen()
    );

    let got = raw(m.upstream, b"/ok", &[b"x-other: \xff", b"x-role: guest"]).await;
    assert_eq!(got, Some((200, "app saw /ok".to_string())));
    let heads = m.seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert!(
        head.windows(10).any(|w| w == b"x-other: \xff"),
        "{:?}",
        String::from_utf8_lossy(head)
    );
}
