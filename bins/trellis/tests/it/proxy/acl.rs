//! Sidecar proxies on an agent enforcing ACLs (default deny): each proxy asks the agent with
//! its own token (a service identity) and carries traffic as the intentions allow; without a
//! token a proxy gets nothing it needs, and no secret reaches a log.

use std::path::Path;

use serde_json::{json, Value};

use super::{echo_app, echo_through, eventually, logs, Proxy};
use crate::support::{client, free_port, Agent};

const MANAGEMENT: &str = "0f5b4c1e-8d7a-4a39-9c1e-6f0000000001";

async fn put(a: &Agent, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .put(a.url(path))
        .header("X-Consul-Token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn identity_token(a: &Agent, service: &str) -> String {
    let (s, body) = put(
        a,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"ServiceIdentities": [{"ServiceName": service}]}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["SecretID"].as_str().unwrap().to_string()
}

/// The agent's config file, in a directory of its own (the logs the test scans are the files
/// of `dir`).
fn config(dir: &Path) -> String {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let path = conf.join("acl.hcl");
    std::fs::write(
        &path,
        format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{ initial_management = \"{MANAGEMENT}\" }}\n}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn proxies_carry_traffic_with_their_own_tokens_under_default_deny() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut a = Agent::dev_with("proxy-acl", dir.path(), &["--config-file", &cfg]);
    a.ready().await;
    eventually(10, "the management token", dir.path(), || async {
        let r = client()
            .get(a.url("/v1/acl/token/self"))
            .header("X-Consul-Token", MANAGEMENT)
            .send()
            .await
            .unwrap();
        r.status().is_success()
    })
    .await;
    let (db_token, web_token) = (
        identity_token(&a, "db").await,
        identity_token(&a, "web").await,
    );
    let app = echo_app().await;
    let (db_public, web_public, upstream) = (free_port(), free_port(), free_port());
    let (s, body) = put(
        &a,
        "/v1/agent/service/register",
        &db_token,
        json!({"Name": "db", "Port": app, "Connect": {"SidecarService": {"Port": db_public}}}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = put(
        &a,
        "/v1/agent/service/register",
        &web_token,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_public,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let _db = Proxy::start(
        &a,
        "db",
        &["-sidecar-for", "db", "-token", &db_token],
        dir.path(),
    );
    let _web = Proxy::start(
        &a,
        "web",
        &["-sidecar-for", "web", "-token", &web_token],
        dir.path(),
    );
    // No intention: the ACL default (deny) decides, so nothing goes through.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(echo_through(upstream, b"hello").await.is_empty());
    // An intention written with a token allowed to.
    let (s, body) = put(
        &a,
        "/v1/connect/intentions/exact?source=web&destination=db",
        MANAGEMENT,
        json!({"Action": "allow"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    eventually(20, "traffic through the proxies", dir.path(), || async {
        echo_through(upstream, b"hello").await == b"hello"
    })
    .await;
    let all = logs(dir.path());
    for secret in [db_token.as_str(), web_token.as_str(), MANAGEMENT] {
        assert!(!all.contains(secret), "a token in the logs:\n{all}");
    }
}
