//! Auto-encrypt: three servers with TLS everywhere and `auto_encrypt { allow_tls = true }`,
//! and a client agent with only the CA file and `auto_encrypt { tls = true }`, which gets its
//! server-port certificate (an agent SPIFFE ID of the Connect CA) from the servers at start.
//! The agent's certificate may do what its node does: a leaf CSR for a service the node does
//! not offer, or of another trust domain, sent straight to the server port with it, is
//! refused with nothing signed; Raft's RPCs are refused to it; a caller with no certificate
//! may only ask for one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::raft_cluster::Cluster;
use crate::rpc_tls::{config, tls};
use crate::support::Agent;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The servers' config: TLS everywhere with their certificate (as in `rpc_tls`), and
/// `allow_tls`.
fn server_config(dir: &Path, pki: &Path) -> String {
    let path = config(dir, "server.hcl", pki, "server");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("auto_encrypt {\n  allow_tls = true\n}\n");
    write(dir, "server.hcl", &text)
}

/// The client agent's config: the CA file only, and `auto_encrypt { tls = true }`.
fn client_config(dir: &Path, pki: &Path) -> String {
    let ca = pki.join("consul-agent-ca.pem").display().to_string();
    write(
        dir,
        "client.hcl",
        &format!(
            r#"
tls {{
  defaults {{
    ca_file = "{ca}"
    verify_outgoing = true
  }}
  internal_rpc {{
    verify_server_hostname = true
  }}
}}
auto_encrypt {{
  tls = true
}}
"#
        ),
    )
}

/// The server port's TLS for a test client holding only the CA: `auto_encrypt_tls`, so that
/// an auto-encrypt certificate can be set on it.
fn ca_only(pki: &Path) -> std::sync::Arc<trellis_tls::rpc::RpcTls> {
    std::sync::Arc::new(
        trellis_tls::rpc::RpcTls::load(&trellis_tls::rpc::RpcTlsConfig {
            ca_file: Some(pki.join("consul-agent-ca.pem")),
            verify_outgoing: true,
            verify_server_hostname: true,
            datacenter: "dc1".into(),
            domain: "consul".into(),
            auto_encrypt_tls: true,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// An HTTPS client of the server port with `tls`'s configuration (and certificate, if set).
fn https(tls: &trellis_tls::rpc::RpcTls) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .use_preconfigured_tls((*tls.client_config().unwrap()).clone())
        .build()
        .unwrap()
}

/// POSTs `body` to `path` on `addr`: (status, JSON body).
async fn post(client: &reqwest::Client, addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("https://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` to the agent's HTTP API: (status, JSON body).
async fn agent_post(agent: &Agent, path: &str, body: &Value) -> (u16, Value) {
    let r = crate::support::client()
        .post(agent.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_on_auto_encrypt_works_and_its_certificate_does_only_what_its_node_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki: PathBuf = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    tls(&pki, &["ca", "create"]);
    tls(&pki, &["cert", "create", "-server", "-dc", "dc1"]);
    let server_cfg = server_config(dir.path(), &pki);
    let client_cfg = client_config(dir.path(), &pki);

    let cluster = Cluster::start_with(dir.path(), 3, 3, &["--config-file", &server_cfg]);
    let leader = cluster.agreed_leader(3).await;
    let follower = (leader + 1) % 3;
    // Short-lived certificates (Consul's test-only SkipValidate; the CA backdates a minute, so
    // 80 s leaves 20 s from issue), so that the agent's renewal shows within the test.
    let ttl = json!({"Provider": "consul", "Config": {"LeafCertTTL": "80s", "SkipValidate": true}});
    let (status, body) = cluster.servers[leader]
        .put("/v1/connect/ca/configuration", ttl.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    let mut client = Agent::client_via(
        "c1",
        &dir.path().join("c1"),
        &cluster.addrs[follower],
        &["--config-file", &client_cfg],
    );
    client.ready().await;
    assert!(
        client
            .log()
            .contains("auto-encrypt: certificate received from the servers"),
        "{}",
        client.log()
    );

    // The agent works over its auto-encrypt certificate: registers a service, gets a leaf for
    // it, and authorizes a connection to it.
    let reg = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}});
    let (status, body) = client
        .put("/v1/agent/service/register", reg.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    let leaf = client
        .wait_for("/v1/agent/connect/ca/leaf/web", "a leaf for web", |v| {
            v["CertPEM"]
                .as_str()
                .is_some_and(|c| c.contains("CERTIFICATE"))
        })
        .await;
    let web_uri = leaf["ServiceURI"].as_str().unwrap().to_string();
    assert!(web_uri.ends_with("/ns/default/dc/dc1/svc/web"), "{web_uri}");
    let trust_domain = web_uri
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let authz = agent_post(
        &client,
        "/v1/agent/connect/authorize",
        &json!({
            "Target": "web",
            "ClientCertURI": format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/api"),
        }),
    )
    .await;
    assert_eq!(authz.0, 200, "{}", authz.1);
    assert!(authz.1["Authorized"].is_boolean(), "{}", authz.1);
    // A leaf for a service this node does not offer: refused by the servers.
    let (status, _, body) = client.get("/v1/agent/connect/ca/leaf/db").await;
    assert_eq!(status, 403, "{body}");

    let addr = &cluster.addrs[leader];
    // Without a certificate, only auto-encrypt's RPC is open (verify_incoming).
    let anonymous = ca_only(&pki);
    let bare = https(&anonymous);
    let status = bare
        .get(format!("https://{addr}/v1/internal/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status().as_u16(), 403);
    let csr = trellis_ca::leaf_key_and_csr("spiffe://unknown/agent/client/dc/dc2/id/c9")
        .unwrap()
        .csr_pem;
    let (status, body) = post(
        &bare,
        addr,
        "/v1/internal/auto-encrypt/sign",
        &json!({"datacenter": "dc2", "csr": csr}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("mismatched datacenter")),
        "{body}"
    );

    // A certificate for node c1 as the agent got it, held by this test.
    let as_c1 = ca_only(&pki);
    let plain = reqwest::Client::builder().no_proxy();
    let rpc = trellis_rpc::Client::new(plain, Some(&as_c1));
    let got =
        trellis_rpc::auto_encrypt::obtain(&rpc, std::slice::from_ref(addr), &as_c1, "dc1", "c1")
            .await
            .unwrap();
    assert_eq!(
        got.uri,
        format!("spiffe://{trust_domain}/agent/client/dc/dc1/id/c1")
    );
    let c1 = https(&as_c1);
    let sign = |uri: String| {
        let c1 = c1.clone();
        async move {
            let csr = trellis_ca::leaf_key_and_csr(&uri).unwrap().csr_pem;
            post(&c1, addr, "/v1/internal/ca/sign", &json!({"csr": csr})).await
        }
    };
    // For a service the node offers: signed.
    let (status, body) = sign(web_uri.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ServiceURI"], web_uri.as_str());
    // For another service: refused, nothing signed, whatever node the request claims.
    let db = format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/db");
    let (status, body) = sign(db.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["Code"], "Forbidden", "{body}");
    let csr = trellis_ca::leaf_key_and_csr(&db).unwrap().csr_pem;
    let (status, body) = post(
        &c1,
        addr,
        "/v1/internal/ca/sign",
        &json!({"csr": csr, "for_node": "c1-other"}),
    )
    .await;
    assert_eq!(
        (status, &body["Code"]),
        (403, &json!("Forbidden")),
        "{body}"
    );
    // Of another trust domain: refused.
    let (status, body) = sign(
        "spiffe://99999999-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web".into(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("different trust domain")),
        "{body}"
    );
    // Raft's RPCs and joining are for servers.
    for path in ["/v1/internal/raft/append", "/v1/internal/raft/join"] {
        let (status, body) = post(&c1, addr, path, &json!({})).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    assert!(
        cluster.servers[leader]
            .log()
            .contains("refused a client agent's CSR for a service its node does not offer"),
        "the refusal is logged"
    );

    // The agent renews its certificate before it expires (between 60 and 90 % of its
    // lifetime) and goes on working with the new one.
    let received = "auto-encrypt: certificate received from the servers";
    let start = std::time::Instant::now();
    while client.log().matches(received).count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no renewal:\n{}",
            client.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reg = json!({"Name": "api", "Port": 9090});
    let (status, body) = client
        .put("/v1/agent/service/register", reg.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    client
        .wait_for("/v1/catalog/service/api", "api in the catalog", |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
}
