//! `trellis intention ...` as a real process: against a dev agent, against a recording fake
//! agent (to pin the requests it sends), and with bad usage.

use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{free_port, Agent};

/// What a `trellis` run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `trellis intention <args>` against the agent at `addr` (through `CONSUL_HTTP_ADDR`,
/// as Consul's CLI is usually pointed), with `stdin` as its standard input.
async fn intention_with_stdin(addr: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("intention")
        .args(args)
        .env("CONSUL_HTTP_ADDR", addr)
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn intention(addr: &str, args: &[&str]) -> Run {
    intention_with_stdin(addr, args, "").await
}

fn addr(a: &Agent) -> String {
    format!("127.0.0.1:{}", a.http)
}

#[track_caller]
fn assert_ok(run: &Run, stdout: &str) {
    assert_eq!((run.code, run.stdout.as_str()), (0, stdout), "{run:?}");
}

#[track_caller]
fn assert_fails(run: &Run, code: i32, stderr_has: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert!(run.stderr.contains(stderr_has), "{run:?}");
}

/// The whitespace-separated cells of each `list` row after the header.
fn list_rows(run: &Run) -> Vec<Vec<String>> {
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "Source", "Action", "Destination", "Precedence"],
        "{run:?}"
    );
    lines
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

async fn dev_agent(node: &str, dir: &Path) -> Agent {
    let mut a = Agent::dev(node, dir);
    a.ready().await;
    a
}

#[tokio::test]
async fn create_check_replace_get_list_match_delete() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev_agent("ixn-cli", dir.path()).await;
    let at = addr(&a);

    let run = intention(
        &at,
        &["create", "-description", "web reads db", "web", "db"],
    )
    .await;
    assert_ok(&run, "Created: web => db (allow)\n");
    assert_ok(&intention(&at, &["check", "web", "db"]).await, "Allowed\n");
    let run = intention(&at, &["get", "web", "db"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    for line in [
        "Source:       web",
        "Destination:  db",
        "Action:       allow",
        "Precedence:   9",
        "Description:  web reads db",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "{line:?}: {run:?}");
    }

    // The pair exists: creating it again needs -replace, and changes nothing without it.
    let run = intention(&at, &["create", "-deny", "web", "db"]).await;
    assert_fails(
        &run,
        1,
        "Error creating intention \"web => db (deny)\": duplicate intention found: web => db (allow)",
    );
    assert!(run.stderr.contains("-replace"), "{run:?}");
    assert_ok(&intention(&at, &["check", "web", "db"]).await, "Allowed\n");

    let run = intention(&at, &["create", "-replace", "-deny", "web", "db"]).await;
    assert_ok(&run, "Created: web => db (deny)\n");
    // Consul's exit code for a denied check is 1 (2 is for errors).
    let run = intention(&at, &["check", "web", "db"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (1, "Denied\n"), "{run:?}");
    let run = intention(&at, &["get", "web", "db"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l == "Action:       deny"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("Description:"),
        "-replace keeps nothing of the old intention: {run:?}"
    );

    let run = intention(&at, &["list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let rows = list_rows(&run);
    assert_eq!(rows.len(), 1, "{run:?}");
    let row = &rows[0];
    assert_eq!(row[row.len() - 4..], ["web", "deny", "db", "9"], "{run:?}");

    assert_ok(
        &intention(&at, &["match", "-destination", "db"]).await,
        "web => db (deny)\n",
    );
    assert_ok(
        &intention(&at, &["match", "-source", "web"]).await,
        "web => db (deny)\n",
    );
    assert_ok(&intention(&at, &["match", "-destination", "web"]).await, "");

    assert_ok(
        &intention(&at, &["delete", "web", "db"]).await,
        "Intention deleted.\n",
    );
    assert_fails(
        &intention(&at, &["get", "web", "db"]).await,
        1,
        "Intention not found with source \"web\" and destination \"db\"",
    );
    assert_fails(
        &intention(&at, &["list"]).await,
        2,
        "There are no intentions.",
    );
    // Nothing matches any more: the default (no ACLs) allows.
    assert_ok(&intention(&at, &["check", "web", "db"]).await, "Allowed\n");
}

#[tokio::test]
async fn exact_intentions_match_before_wildcards() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev_agent("ixn-cli-wild", dir.path()).await;
    let at = addr(&a);

    assert_ok(
        &intention(&at, &["create", "-deny", "*", "db"]).await,
        "Created: * => db (deny)\n",
    );
    assert_ok(
        &intention(&at, &["create", "-allow", "web", "db"]).await,
        "Created: web => db (allow)\n",
    );
    let both = "web => db (allow)\n* => db (deny)\n";
    assert_ok(&intention(&at, &["match", "db"]).await, both);
    assert_ok(
        &intention(&at, &["match", "-destination", "db"]).await,
        both,
    );
    assert_ok(&intention(&at, &["match", "-source", "web"]).await, both);
    assert_ok(
        &intention(&at, &["match", "-source", "api"]).await,
        "* => db (deny)\n",
    );

    assert_ok(&intention(&at, &["check", "web", "db"]).await, "Allowed\n");
    let run = intention(&at, &["check", "api", "db"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (1, "Denied\n"), "{run:?}");

    let run = intention(&at, &["list"]).await;
    let mut rows: Vec<Vec<String>> = list_rows(&run)
        .into_iter()
        .map(|r| r[r.len() - 4..].to_vec())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [["*", "deny", "db", "8"], ["web", "allow", "db", "9"]],
        "{run:?}"
    );
}

#[tokio::test]
async fn create_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dev_agent("ixn-cli-file", dir.path()).await;
    let at = addr(&a);
    let write = |name: &str, v: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.display().to_string()
    };
    let one = write(
        "one.json",
        json!({"SourceName": "web", "DestinationName": "db", "Action": "deny",
               "Description": "from a file"}),
    );
    let two = write(
        "two.json",
        json!({"SourceName": "api", "DestinationName": "db", "Action": "allow",
               "SourceType": "consul"}),
    );
    assert_ok(
        &intention(&at, &["create", "-file", &one, &two]).await,
        "Created: web => db (deny)\nCreated: api => db (allow)\n",
    );
    let run = intention(&at, &["get", "web", "db"]).await;
    assert!(
        run.stdout.lines().any(|l| l == "Description:  from a file"),
        "{run:?}"
    );
    assert_eq!(intention(&at, &["check", "web", "db"]).await.code, 1);
    assert_eq!(intention(&at, &["check", "api", "db"]).await.code, 0);

    // Every file is read before anything is written: one bad file creates nothing.
    let good = write(
        "good.json",
        json!({"SourceName": "cache", "DestinationName": "db", "Action": "allow"}),
    );
    let bad = write(
        "bad.json",
        json!({"SourceName": "cache", "Action": "allow"}),
    );
    let run = intention(&at, &["create", "-file", &good, &bad]).await;
    assert_fails(&run, 1, "DestinationName is required");
    assert!(run.stderr.contains("bad.json"), "{run:?}");
    assert_fails(
        &intention(&at, &["get", "cache", "db"]).await,
        1,
        "Intention not found",
    );
    let missing = dir.path().join("missing.json").display().to_string();
    assert_fails(
        &intention(&at, &["create", "-file", &missing]).await,
        1,
        "missing.json",
    );

    // `-` reads the intention from stdin.
    let run = intention_with_stdin(
        &at,
        &["create", "-file", "-"],
        r#"{"SourceName": "cache", "DestinationName": "db", "Action": "deny"}"#,
    )
    .await;
    assert_ok(&run, "Created: cache => db (deny)\n");
    assert_eq!(intention(&at, &["check", "cache", "db"]).await.code, 1);
    // Existing pairs from files also need -replace.
    assert_fails(
        &intention(&at, &["create", "-file", &one]).await,
        1,
        "duplicate intention found",
    );
    assert_ok(
        &intention(&at, &["create", "-replace", "-file", &two]).await,
        "Created: api => db (allow)\n",
    );
}

#[tokio::test]
async fn bad_usage_fails_before_any_request() {
    // Nothing listens here: a command that got as far as a request would say so.
    let at = format!("127.0.0.1:{}", free_port());
    for (args, code, message) in [
        (&["create", "web"][..], 1, "Must specify two arguments"),
        (
            &["create", "web", "db", "x"],
            1,
            "Must specify two arguments",
        ),
        (
            &["create", "-allow", "-deny", "web", "db"],
            1,
            "Only one of -allow or -deny may be specified.",
        ),
        (&["create", "-file"], 1, "at least one file"),
        (
            &["create", "a/b/c/d", "db"],
            1,
            "Invalid intention source: input can contain at most two '/'",
        ),
        (&["get"], 1, "command requires exactly 1 or 2 arguments"),
        (&["get", "a", "b", "c"], 1, "exactly 1 or 2 arguments"),
        (&["delete"], 1, "command requires exactly 1 or 2 arguments"),
        (
            &["check", "web"],
            2,
            "requires exactly two arguments: src and dst",
        ),
        (&["check", "web", "db", "x"], 2, "requires exactly two"),
        (&["match"], 1, "requires exactly one argument: src or dst"),
        (
            &["match", "-source", "-destination", "web"],
            1,
            "only one of -source or -destination may be specified",
        ),
    ] {
        let run = intention(&at, args).await;
        assert_fails(&run, code, message);
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        assert!(!run.stderr.contains("cannot reach"), "{args:?}: {run:?}");
    }
    // With good usage the same address fails at the request: 1, or 2 for check.
    assert_fails(
        &intention(&at, &["get", "web", "db"]).await,
        1,
        "cannot reach",
    );
    assert_fails(
        &intention(&at, &["check", "web", "db"]).await,
        2,
        "Error checking the connection",
    );
}

/// One request as the fake agent saw it.
#[derive(Debug)]
struct Seen {
    /// `GET /v1/...?... HTTP/1.1`
    line: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on a free port answering its requests, one per connection, with `answers`
/// in order; the task returns what it saw.
async fn fake_agent(
    answers: Vec<(u16, &'static str)>,
) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut request_body = buf[head_end + 4..].to_vec();
            while request_body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                request_body.extend_from_slice(&chunk[..n]);
            }
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            seen.push(Seen {
                line,
                headers,
                body: String::from_utf8(request_body).unwrap(),
            });
        }
        seen
    });
    (addr, task)
}

#[tokio::test]
async fn requests_are_consuls_with_the_token() {
    // check, with -http-addr and -token flags.
    let (at, agent) = fake_agent(vec![(200, r#"{"Allowed": false}"#)]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["intention", "check", "-http-addr", &at, "-token", "s3cr3t"])
        .args(["web", "ns1/db"])
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Denied\n");
    let seen = agent.await.unwrap();
    assert_eq!(
        seen[0].line,
        "GET /v1/connect/intentions/check?source=web&destination=ns1%2Fdb&source-type=consul HTTP/1.1"
    );
    assert_eq!(seen[0].header("x-consul-token"), Some("s3cr3t"));

    // create: looks the pair up, then upserts it; the token from CONSUL_HTTP_TOKEN.
    let (at, agent) = fake_agent(vec![(404, "Intention not found"), (200, "true")]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["intention", "create", "-deny", "-description", "no"])
        .args(["web", "db"])
        .env("CONSUL_HTTP_ADDR", &at)
        .env("CONSUL_HTTP_TOKEN", "from-env")
        .output()
        .await
        .unwrap();
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stdout)),
        (Some(0), "Created: web => db (deny)\n".into()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = agent.await.unwrap();
    let exact = "/v1/connect/intentions/exact?source=web&destination=db HTTP/1.1";
    assert_eq!(seen[0].line, format!("GET {exact}"));
    assert_eq!(seen[1].line, format!("PUT {exact}"));
    for s in &seen {
        assert_eq!(s.header("x-consul-token"), Some("from-env"), "{s:?}");
    }
    assert_eq!(
        serde_json::from_str::<Value>(&seen[1].body).unwrap(),
        json!({"SourceType": "consul", "Action": "deny", "Description": "no"})
    );

    // The agent's error text is shown; no token header without a token.
    let (at, agent) = fake_agent(vec![(500, "boom: no leader")]).await;
    let run = intention(&at, &["delete", "web", "db"]).await;
    assert_fails(
        &run,
        1,
        "Error deleting the intention: Unexpected response code: 500 (boom: no leader)",
    );
    let seen = agent.await.unwrap();
    assert_eq!(
        seen[0].line,
        "DELETE /v1/connect/intentions/exact?source=web&destination=db HTTP/1.1"
    );
    assert_eq!(seen[0].header("x-consul-token"), None);

    // match asks by source or destination and prints the list under the name it asked for.
    let (at, agent) = fake_agent(vec![(
        200,
        r#"{"web": [{"SourceName": "web", "DestinationName": "api", "Permissions": [{}, {}]},
                    {"SourceName": "web", "DestinationName": "*", "Action": "deny"}]}"#,
    )])
    .await;
    assert_ok(
        &intention(&at, &["match", "-source", "web"]).await,
        "web => api (2 permissions)\nweb => * (deny)\n",
    );
    assert_eq!(
        agent.await.unwrap()[0].line,
        "GET /v1/connect/intentions/match?by=source&name=web HTTP/1.1"
    );
}
