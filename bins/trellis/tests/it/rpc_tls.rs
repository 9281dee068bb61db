//! TLS on the server port with Consul's keys: three servers and a client agent with
//! `verify_incoming`, `verify_outgoing` and `verify_server_hostname`, their certificates made
//! by `trellis tls ca create` / `tls cert create`; plaintext and strangers are refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::raft_cluster::{wait_holds, write, write_to, Cluster};
use crate::support::Agent;

/// Runs `trellis tls ...` in `dir`.
pub(crate) fn tls(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("tls")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("trellis runs");
    assert!(
        out.status.success(),
        "trellis tls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA with a server and a client certificate for dc1, in `dir`.
fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    tls(dir, &["ca", "create"]);
    tls(dir, &["cert", "create", "-server", "-dc", "dc1"]);
    tls(dir, &["cert", "create", "-client", "-dc", "dc1"]);
    tls(dir, &["cert", "create", "-server", "-dc", "dc2"]);
}

/// A config file using `tls { ... }` with CA `ca_dir`'s certificate of `kind`.
pub(crate) fn config(dir: &Path, name: &str, ca_dir: &Path, kind: &str) -> PathBuf {
    let p = |f: &str| ca_dir.join(f).display().to_string();
    let text = format!(
        r#"
tls {{
  defaults {{
    ca_file = "{ca}"
    cert_file = "{cert}"
    key_file = "{key}"
    verify_incoming = true
    verify_outgoing = true
  }}
  internal_rpc {{
    verify_server_hostname = true
  }}
}}
"#,
        ca = p("consul-agent-ca.pem"),
        cert = p(&format!("dc1-{kind}-consul-0.pem")),
        key = p(&format!("dc1-{kind}-consul-0-key.pem")),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTPS client of the server port trusting `ca_dir`'s CA and presenting `cert`/`key`.
fn tls_client(ca_dir: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    let tls = trellis_tls::rpc::RpcTls::load(&trellis_tls::rpc::RpcTlsConfig {
        ca_file: Some(ca_dir.join("consul-agent-ca.pem")),
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        verify_incoming: false,
        verify_outgoing: true,
        verify_server_hostname: true,
        datacenter: "dc1".into(),
        domain: "consul".into(),
        ..Default::default()
    })
    .unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls((*tls.client_config().unwrap()).clone())
        .build()
        .unwrap()
}

/// What a plaintext HTTP request to `addr` gets back (the bytes read until the server closed)
/// and whether it closed within 10 s.
async fn plaintext_answer(addr: &str) -> (Vec<u8>, bool) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET /v1/internal/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    (got, read.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_everywhere_works_and_refuses_plaintext_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let other = dir.path().join("other");
    make_pki(&pki);
    make_pki(&other);
    let server_cfg = config(dir.path(), "server.hcl", &pki, "server");
    let client_cfg = config(dir.path(), "client.hcl", &pki, "client");
    let server_cfg = server_cfg.display().to_string();
    let client_cfg = client_cfg.display().to_string();

    let cluster = Cluster::start_with(dir.path(), 3, 3, &["--config-file", &server_cfg]);
    let leader = cluster.agreed_leader(3).await;
    let follower = (leader + 1) % 3;
    let mut client = Agent::client_via(
        "c1",
        &dir.path().join("c1"),
        &cluster.addrs[follower],
        &["--config-file", &client_cfg],
    );
    client.ready().await;

    // Writes through a follower (forwarded to the leader over TLS) and through the client
    // agent are acknowledged and replicated to every server.
    assert!(
        write(&cluster.servers[follower], "via-follower").await,
        "write through a follower\n{}",
        cluster.logs()
    );
    assert!(
        write_to(&client.url("/v1/config"), "via-client").await,
        "write through the client agent\n{}",
        client.log()
    );
    let want = vec!["via-client".to_string(), "via-follower".to_string()];
    for s in &cluster.servers {
        wait_holds(s, &want, "replicated over TLS").await;
    }

    // A leaf through the client agent (CSR signed by the leader, over TLS).
    let leaf = client
        .wait_for("/v1/agent/connect/ca/leaf/web", "a leaf", |v| {
            v["CertPEM"]
                .as_str()
                .is_some_and(|c| c.contains("CERTIFICATE"))
        })
        .await;
    assert!(leaf["ServiceURI"].as_str().unwrap().ends_with("/svc/web"));

    for addr in &cluster.addrs {
        // Plaintext HTTP gets no HTTP answer: the connection is closed unanswered.
        let (got, closed) = plaintext_answer(addr).await;
        assert!(
            !got.starts_with(b"HTTP/"),
            "plaintext answered by {addr}: {}",
            String::from_utf8_lossy(&got)
        );
        assert!(closed, "{addr} neither answered nor closed");
        let plain = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(format!("http://{addr}/v1/internal/status"))
            .send()
            .await;
        assert!(plain.is_err(), "plaintext request answered: {plain:?}");

        // A client certificate of this CA is served.
        let good = tls_client(
            &pki,
            &pki.join("dc1-client-consul-0.pem"),
            &pki.join("dc1-client-consul-0-key.pem"),
        );
        let status = good
            .get(format!("https://{addr}/v1/internal/status"))
            .send()
            .await
            .expect("a TLS client of the CA is served");
        assert_eq!(status.status().as_u16(), 200);

        // One from another CA is refused during the handshake.
        let stranger = tls_client(
            &pki,
            &other.join("dc1-client-consul-0.pem"),
            &other.join("dc1-client-consul-0-key.pem"),
        );
        let refused = stranger
            .get(format!("https://{addr}/v1/internal/status"))
            .send()
            .await;
        assert!(
            refused.is_err(),
            "another CA's client certificate was served: {refused:?}"
        );
    }
    let logs = cluster.logs();
    assert!(logs.contains("server port: TLS on"), "{logs}");

    // What a certificate may do: a client agent's certificate, or a server certificate of
    // another datacenter, may not speak Raft, join the cluster or write the CA's state; the
    // leader refuses each (403, logged) and nothing changes. A server of this datacenter may.
    let addr = &cluster.addrs[leader];
    let cert = |name: &str| {
        tls_client(
            &pki,
            &pki.join(format!("{name}.pem")),
            &pki.join(format!("{name}-key.pem")),
        )
    };
    let server = cert("dc1-server-consul-0");
    let hello = server
        .get(format!("https://{addr}/v1/internal/raft/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status().as_u16(), 200, "a server's hello");
    let forged_ca = serde_json::to_value(trellis_state::Command::CaSet {
        state: Box::default(),
        cas: 0,
    })
    .unwrap();
    for who in ["dc1-client-consul-0", "dc2-server-consul-0"] {
        let c = cert(who);
        for (method, path, body) in [
            ("GET", "/v1/internal/raft/hello", Value::Null),
            ("POST", "/v1/internal/raft/vote", json!({})),
            ("POST", "/v1/internal/raft/append", json!({})),
            ("POST", "/v1/internal/raft/snapshot", json!({})),
            ("POST", "/v1/internal/raft/join", json!({})),
        ] {
            let url = format!("https://{addr}{path}");
            let req = match method {
                "GET" => c.get(url),
                _ => c.post(url).json(&body),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or_default();
            assert_eq!(status, 403, "{who}: {method} {path}: {body}");
            assert_eq!(body["Code"], "Forbidden", "{who}: {path}: {body}");
        }
    }
    // The CA's state is no write anyone may send, a server of this datacenter included: the
    // apply RPC takes intent-level writes only, and a raw command is a 400 naming it.
    for who in ["dc1-client-consul-0", "dc1-server-consul-0"] {
        let resp = cert(who)
            .post(format!("https://{addr}/v1/internal/apply"))
            .json(&forged_ca)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{who}: {body}");
        assert_eq!(body["Code"], "BadRequest", "{who}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .is_some_and(|m| m.contains("CaSet")),
            "{who}: {body}"
        );
    }
    assert!(
        cluster.servers[leader]
            .log()
            .contains("server port: refused an undecodable request"),
        "the forged CA state is logged"
    );
    assert!(
        cluster.servers[leader]
            .log()
            .contains("server port: refused a client agent's certificate"),
        "the refusals are logged"
    );
    // The leader is still the leader (the forged vote did not depose it), and the CA is as it
    // was: a leaf is still issued under the same root.
    assert_eq!(cluster.agreed_leader(3).await, leader);
    let roots = client.get("/v1/connect/ca/roots").await.2;
    assert!(
        roots["Roots"].as_array().is_some_and(|r| r.len() == 1),
        "{roots}"
    );
}
