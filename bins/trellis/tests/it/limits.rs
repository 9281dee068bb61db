//! Resource limits of the HTTP API and the server port, and registration input checks, against
//! a real agent: slow and oversized request bodies, a huge HTTP check answer, connections per
//! client IP, HTTP/2 streams per connection, Consul's metadata rules.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Agent;

/// The agent process serving `http` (found by its command line).
fn pid_of(a: &Agent) -> u32 {
    // `Agent::dev` spells flags with one dash, `Agent::dev_with` with two.
    let flag = format!("http-port={}", a.http);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let flag_of = |arg: &[u8]| {
            let arg = arg.strip_prefix(b"-")?;
            Some(arg.strip_prefix(b"-").unwrap_or(arg) == flag.as_bytes())
        };
        if cmd
            .split(|b| *b == 0)
            .any(|arg| flag_of(arg).unwrap_or(false))
        {
            return pid;
        }
    }
    panic!("no process with {flag}");
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Reads until the peer closes or `limit` passes; what was read, and whether the peer closed.
async fn read_until_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// 50 connections each dribbling a request body a byte every 10 ms (the attack of issue 13)
/// cost the agent next to nothing while they last, and each is answered 408 and closed at the
/// body deadline (`limits { http_body_read_timeout }`, 5 s here). Before the fix every byte kept
/// a ~4 KiB read buffer alive: ~90 MB after 4 s, and no deadline at all.
#[tokio::test]
async fn slow_request_bodies_are_cut_off_and_cost_little_memory() {
    const CONNS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "limits.hcl",
        "limits { http_body_read_timeout = \"5s\" }\n",
    );
    let mut a = Agent::dev_with("slow-body", dir.path(), &["--config-file", &cfg]);
    a.ready().await;
    let pid = pid_of(&a);
    let before = status_kib(pid, "VmRSS");
    let started = Instant::now();
    let port = a.http;
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            let head = "PUT /v1/agent/service/register HTTP/1.1\r\nHost: t\r\n\
                        Content-Length: 100000\r\n\r\n";
            s.write_all(head.as_bytes()).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            let dribble = tokio::spawn(async move {
                // Stops on its own well after the deadline, or when the agent hangs up.
                for _ in 0..1000 {
                    if wr.write_all(b" ").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(9), async {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            dribble.abort();
            (read.is_ok(), String::from_utf8_lossy(&answer).into_owned())
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = status_kib(pid, "VmRSS");
    let grown_mib = during.saturating_sub(before) / 1024;
    println!("slow bodies: VmRSS {before} KiB before, {during} KiB after 4 s of dribbling");
    assert!(
        grown_mib < 25,
        "{CONNS} slow bodies grew the agent by {grown_mib} MiB in 4 s ({before} -> {during} KiB)"
    );
    for t in tasks {
        let (closed, answer) = t.await.unwrap();
        assert!(
            closed && answer.starts_with("HTTP/1.1 408"),
            "a slow body must be answered 408 and closed at the deadline: closed {closed}, {answer:?}"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(9),
        "cut off after {took:?} for a 5 s deadline"
    );
    // The agent still serves.
    assert_eq!(a.get("/v1/agent/self").await.0, 200);
}

/// A declared body over the 4 MiB limit is refused with 413 before a byte of it is read (before
/// the fix the agent waited for the body); a chunked body over the limit is cut off at it.
#[tokio::test]
async fn oversized_request_bodies_are_refused_with_a_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("big-body", dir.path());
    a.ready().await;
    let mut s = TcpStream::connect(("127.0.0.1", a.http)).await.unwrap();
    // A client that waits for `100 Continue` is answered at once, before it sends anything.
    let head = "PUT /v1/catalog/register HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n\
                Expect: 100-continue\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "declared 100 MiB body: {answer:?}"
    );
    assert!(
        answer.contains("Request body too large"),
        "declared 100 MiB body: {answer:?}"
    );
    assert!(closed, "the connection is closed after the 413");

    // One that sends its over-limit body whole before reading gets the 413 too: the rest of
    // the body is read and dropped rather than the connection reset under the answer.
    let mut s = TcpStream::connect(("127.0.0.1", a.http)).await.unwrap();
    let size = 6usize << 20;
    let head =
        format!("PUT /v1/catalog/register HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; size]).await.unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "declared and sent 6 MiB body: {answer:?}"
    );
    assert!(closed, "the connection is closed after the 413");

    // Chunked, no length declared: read up to the limit, then refused.
    let mut s = TcpStream::connect(("127.0.0.1", a.http)).await.unwrap();
    let head = "PUT /v1/agent/service/register HTTP/1.1\r\nHost: t\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    let mut sent = 0usize;
    // 8 MiB at most: twice the limit.
    while sent < 8 << 20 {
        s.write_all(chunk.as_bytes()).await.unwrap();
        sent += 0x10000;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "chunked body of {sent} bytes: {answer:?}"
    );
    assert_eq!(a.get("/v1/agent/self").await.0, 200);
}

/// An HTTP check against a service answering 200 MiB keeps 4 KiB of output, Consul's
/// `BufSize`, and reads little more than that: the agent's peak RSS stays put and the service
/// is hung up on after a few MiB at most. Before the fix the whole answer was read into memory.
#[tokio::test]
async fn http_check_keeps_4k_of_a_huge_answer() {
    const ANSWER: u64 = 200 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let served = written.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {ANSWER}\r\n\r\n");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                let mut left = ANSWER;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    served.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("big-check", dir.path());
    a.ready().await;
    let pid = pid_of(&a);
    let peak_before = status_kib(pid, "VmHWM");
    let check = json!({
        "ID": "big", "Name": "big", "HTTP": format!("http://{app}/health"),
        "Interval": "1h", "Timeout": "20s",
    });
    assert_eq!(
        a.put("/v1/agent/check/register", check.to_string()).await.0,
        200
    );
    let checks = a
        .wait_for("/v1/agent/checks", "the big check's first result", |v| {
            v["big"]["Output"].as_str().is_some_and(|o| !o.is_empty())
        })
        .await;
    let output = checks["big"]["Output"].as_str().unwrap().to_string();
    assert_eq!(checks["big"]["Status"], "passing", "{output:.200}");
    let prefix = format!("HTTP GET http://{app}/health: 200 OK Output: ");
    assert!(output.starts_with(&prefix), "{output:.200}");
    let kept = &output[prefix.len()..];
    assert!(
        kept.starts_with(&"x".repeat(4096)),
        "4 KiB of the answer kept: {kept:.100}"
    );
    assert!(
        kept.len() < 4096 + 64,
        "at most 4 KiB (and Consul's truncation note) kept: {} bytes",
        kept.len()
    );
    let peak_after = status_kib(pid, "VmHWM");
    let grown_mib = peak_after.saturating_sub(peak_before) / 1024;
    // Let the service notice the hang-up (or finish, before the fix).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_mib = written.load(Ordering::Relaxed) >> 20;
    println!(
        "huge check answer: VmHWM {peak_before} -> {peak_after} KiB; the service wrote {sent_mib} MiB"
    );
    assert!(
        grown_mib < 32,
        "a 200 MiB check answer raised the agent's peak RSS by {grown_mib} MiB"
    );
    assert!(
        sent_mib < 32,
        "the agent read {sent_mib} MiB of a check answer it keeps 4 KiB of"
    );
}

/// Opens a connection and sends one request; the status line (or "" if the agent hung up) and
/// the connection, kept open for keep-alive.
async fn request_on_new_connection(port: u16) -> (String, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s
        .write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 64 << 10];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer or a hang-up within 5 s")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text.lines().next().unwrap_or("").to_string();
    (status, s)
}

/// One client IP may hold `http_max_conns_per_client` (Consul's default, 200) connections to the
/// HTTP API: the 201st is answered 429 and closed, as Consul's connection limiter does, and a
/// place freed is usable again. The server port holds `rpc_max_conns_per_client` (set to 3 here
/// through the config file): the 4th connection is closed at once.
#[tokio::test]
async fn connections_per_client_ip_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "limits.json",
        r#"{"limits": {"rpc_max_conns_per_client": 3}}"#,
    );
    let mut a = Agent::dev_with("conn-limit", dir.path(), &["--config-file", &cfg]);
    a.ready().await;
    // The readiness client's pooled connection is gone once it is dropped.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut held = Vec::new();
    for i in 0..200 {
        let (status, s) = request_on_new_connection(a.http).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "connection {}", i + 1);
        held.push(s);
    }
    // The 201st, read before anything is sent (a request racing the hang-up could reset the
    // connection before the 429 is read).
    let mut extra = TcpStream::connect(("127.0.0.1", a.http)).await.unwrap();
    let (answer, closed) = read_until_close(&mut extra, Duration::from_secs(2)).await;
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests"),
        "the 201st connection from one IP: {answer:?}"
    );
    assert!(
        answer.ends_with("client connection limit reached"),
        "{answer:?}"
    );
    assert!(closed, "the 201st connection is closed");

    // A place freed is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, s) = request_on_new_connection(a.http).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "after one connection closed");
    held.push(s);

    // The server port: three held, the fourth closed.
    let mut rpc = Vec::new();
    for _ in 0..3 {
        rpc.push(TcpStream::connect(("127.0.0.1", a.server)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for s in &mut rpc {
        let (_, closed) = read_until_close(s, Duration::from_millis(200)).await;
        assert!(!closed, "a connection within the limit stays open");
    }
    let mut fourth = TcpStream::connect(("127.0.0.1", a.server)).await.unwrap();
    let (_, closed) = read_until_close(&mut fourth, Duration::from_secs(2)).await;
    assert!(
        closed,
        "the 4th server-port connection from one IP is closed"
    );
    drop(held);
}

/// The server port advertises a bounded `SETTINGS_MAX_CONCURRENT_STREAMS` to HTTP/2 clients
/// (a client agent parks one long-poll per 256 watched keys, so thousands suffice); before the
/// fix one connection could open 2^20 streams.
#[tokio::test]
async fn server_port_bounds_http2_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("h2-streams", dir.path());
    a.ready().await;
    let mut s = TcpStream::connect(("127.0.0.1", a.server)).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut max_streams = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    'frames: loop {
        let mut head = [0u8; 9];
        tokio::time::timeout_at(deadline, s.read_exact(&mut head))
            .await
            .expect("the server's SETTINGS within 5 s")
            .unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        // SETTINGS, not an ACK.
        if head[3] == 4 && head[4] & 1 == 0 {
            for setting in payload.chunks_exact(6) {
                let id = u16::from_be_bytes([setting[0], setting[1]]);
                let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                if id == 3 {
                    max_streams = Some(value);
                }
            }
            break 'frames;
        }
    }
    let max_streams = max_streams.expect("SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    println!("server port: SETTINGS_MAX_CONCURRENT_STREAMS = {max_streams}");
    assert!(
        (1024..=4096).contains(&max_streams),
        "streams per HTTP/2 connection: {max_streams}"
    );
}

fn meta(n: usize) -> Value {
    Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
}

/// Service and node `Meta` follow Consul's `ValidateServiceMetadata`/`ValidateNodeMetadata`
/// with its messages: at most 64 pairs, keys of `[A-Za-z0-9_-]` up to 128 characters, values up
/// to 512, no `consul-` prefix from the agent API (but `consul-wan-federation` on a mesh
/// gateway). Refused registrations change nothing. The catalog endpoint applies the sizes and
/// characters; the reserved prefix stays allowed there, as Consul's agents write `consul-*`
/// node meta through it. A config file's `node_meta` is checked at start.
#[tokio::test]
async fn service_and_node_meta_follow_consuls_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("meta", dir.path());
    a.ready().await;
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(513);
    let pair = |k: &str, v: &str| format!("Couldn't load metadata pair ('{k}', '{v}'): ");
    let cases = [
        (
            meta(65),
            "Node metadata cannot contain more than 64 key/value pairs".to_string(),
        ),
        (
            json!({ long_key.clone(): "v" }),
            pair(&long_key, "v") + "Key is too long (limit: 128 characters)",
        ),
        (
            json!({ "k": long_value.clone() }),
            pair("k", &long_value) + "Value is too long (limit: 512 characters)",
        ),
        (
            json!({ "a.b": "v" }),
            pair("a.b", "v") + "Key contains invalid characters",
        ),
        (json!({ "": "v" }), pair("", "v") + "Key cannot be blank"),
        (
            json!({ "consul-x": "v" }),
            pair("consul-x", "v") + "Key prefix 'consul-' is reserved for internal use",
        ),
    ];
    for (i, (m, reason)) in cases.iter().enumerate() {
        let body = json!({"Name": format!("bad{i}"), "Port": 1, "Meta": m});
        let (status, text) = a.put("/v1/agent/service/register", body.to_string()).await;
        assert_eq!(status, 400, "case {i}: {text}");
        assert_eq!(text.trim_end(), format!("Invalid Service Meta: {reason}"));
    }
    // 10,000 keys, the attack's size.
    let body = json!({"Name": "huge", "Port": 1, "Meta": meta(10_000)});
    assert_eq!(
        a.put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        400
    );
    // The limits themselves are accepted.
    // 64 pairs, a 128-character key, a 512-character value.
    let mut fine = meta(62);
    fine["k"] = json!("v".repeat(512));
    fine["K_-9".to_string() + &"x".repeat(124)] = json!("");
    let body = json!({"Name": "fine", "Port": 1, "Meta": fine});
    let (status, text) = a.put("/v1/agent/service/register", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let gw = json!({"Name": "gw", "Kind": "mesh-gateway", "Port": 8443,
                    "Meta": {"consul-wan-federation": "1"}});
    let (status, text) = a.put("/v1/agent/service/register", gw.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let (_, _, services) = a.get("/v1/agent/services").await;
    let mut names: Vec<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["fine", "gw"],
        "only the valid registrations are stored"
    );

    // The catalog endpoint.
    let reg = |node_meta: Value, svc_meta: Value| {
        json!({"Node": "ext", "Address": "10.0.0.9", "NodeMeta": node_meta,
               "Service": {"Service": "ext-svc", "Port": 1, "Meta": svc_meta}})
        .to_string()
    };
    let (status, text) = a
        .put("/v1/catalog/register", reg(meta(65), json!({})))
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        text.trim_end(),
        "Invalid Node Meta: Node metadata cannot contain more than 64 key/value pairs"
    );
    let (status, text) = a
        .put("/v1/catalog/register", reg(json!({}), meta(65)))
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        text.trim_end(),
        "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
    );
    let (status, text) = a
        .put("/v1/catalog/register", reg(json!({"a.b": "1"}), json!({})))
        .await;
    assert_eq!(status, 400, "{text}");
    let (_, _, nodes) = a.get("/v1/catalog/nodes").await;
    assert!(
        !nodes.to_string().contains("\"ext\""),
        "nothing registered: {nodes}"
    );
    let (status, text) = a
        .put(
            "/v1/catalog/register",
            reg(json!({"consul-version": "1.20"}), json!({"consul-x": "1"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");

    // A service may be named `*` (Consul accepts it); a proxy may not stand for `*`.
    let star = json!({"Name": "*", "Port": 1});
    let (status, text) = a.put("/v1/agent/service/register", star.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let wildcard = "Proxy.DestinationServiceName must not be a wildcard for Connect proxy services";
    let proxy = json!({"Name": "p", "Kind": "connect-proxy", "Port": 2,
                       "Proxy": {"DestinationServiceName": "*"}});
    let (status, text) = a.put("/v1/agent/service/register", proxy.to_string()).await;
    assert_eq!((status, text.trim_end()), (400, wildcard));
    let proxy = json!({"Node": "ext", "Address": "10.0.0.9",
                       "Service": {"Service": "p", "Kind": "connect-proxy", "Port": 2,
                                   "Proxy": {"DestinationServiceName": "*"}}});
    let (status, text) = a.put("/v1/catalog/register", proxy.to_string()).await;
    assert_eq!((status, text.trim_end()), (400, wildcard));

    // node_meta from a config file.
    let cfg = write_config(
        dir.path(),
        "node-meta.json",
        r#"{"node_meta": {"consul-x": "1"}}"#,
    );
    let mut bad = Agent::dev_with("bad-node-meta", dir.path(), &["--config-file", &cfg]);
    let start = Instant::now();
    while bad.exit_code().is_none() && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bad.exit_code().is_some_and(|c| c != 0),
        "an agent with invalid node_meta must not start:\n{}",
        bad.log()
    );
    assert!(
        bad.log()
            .contains("node_meta invalid: Couldn't load metadata pair ('consul-x', '1'): Key prefix 'consul-' is reserved for internal use"),
        "{}",
        bad.log()
    );
}
