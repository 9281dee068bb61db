//! ACLs through real processes, default deny: a server and a client agent, each resolving
//! tokens (the client through the server port), refusing and filtering as Consul does.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, Agent};

const MANAGEMENT: &str = "6b1ab4f2-90e4-4b0c-9a55-4d5c00000001";

fn acl_file(dir: &Path, name: &str, extra_tokens: &str, ttl: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  token_ttl = \"{ttl}\"\n  \
             tokens {{\n    initial_management = \"{MANAGEMENT}\"\n{extra_tokens}  }}\n}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// (status, body) of a request with `token` (none when empty).
async fn call(
    a: &Agent,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client().request(method, a.url(path));
    if !token.is_empty() {
        req = req.header("X-Consul-Token", token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

async fn get(a: &Agent, path: &str, token: &str) -> (u16, Value) {
    let (s, b, _) = call(a, reqwest::Method::GET, path, token, None).await;
    (s, b)
}

async fn put(a: &Agent, path: &str, token: &str, body: Value) -> (u16, Value) {
    let (s, b, _) = call(a, reqwest::Method::PUT, path, token, Some(body)).await;
    (s, b)
}

/// Waits (up to `secs`) until `f` holds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_management(a: &Agent) {
    eventually(10, "the initial management token", || async {
        get(a, "/v1/acl/token/self", MANAGEMENT).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn default_deny_on_a_server_and_a_client_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server_cfg = acl_file(dir.path(), "server.hcl", "", "30s");
    let mut server = Agent::server(
        "acl-s1",
        &dir.path().join("s1"),
        &["--config-file", &server_cfg],
    );
    server.ready().await;
    wait_for_management(&server).await;

    // The agent's own token may write its node (Consul's node identity).
    let (s, agent_token) = put(
        &server,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"Description": "agent", "NodeIdentities": [{"NodeName": "acl-c1", "Datacenter": "dc1"}]}),
    )
    .await;
    assert_eq!(s, 200, "{agent_token}");
    let agent_secret = agent_token["SecretID"].as_str().unwrap().to_string();
    let client_cfg = acl_file(
        dir.path(),
        "client.hcl",
        &format!("    agent = \"{agent_secret}\"\n"),
        "1s",
    );
    let mut c1 = Agent::client(
        "acl-c1",
        &dir.path().join("c1"),
        server.server,
        &["--config-file", &client_cfg],
    );
    c1.ready().await;
    assert!(c1.log().contains("agent running"));

    // Bootstrapping again is refused (the initial management token ended it).
    let (s, body) = put(&c1, "/v1/acl/bootstrap", "", json!({})).await;
    assert_eq!(s, 403, "{body}");
    assert!(body
        .as_str()
        .unwrap()
        .starts_with("Permission denied: ACL bootstrap no longer allowed (reset index: "));

    // Without a token: registrations and leafs are refused, reads come back empty.
    let web = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}});
    let (s, body) = put(&c1, "/v1/agent/service/register", "", web.clone()).await;
    assert_eq!(s, 403, "{body}");
    assert!(body
        .as_str()
        .unwrap()
        .contains("anonymous token lacks permission 'service:write' on \"web\""));
    assert_eq!(get(&c1, "/v1/agent/connect/ca/leaf/web", "").await.0, 403);
    let (s, body) = get(&c1, "/v1/catalog/nodes", "").await;
    assert_eq!((s, body), (200, json!([])));

    // A token with web's service identity: web and its sidecar, not db.
    let (s, tok) = put(
        &server,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"ServiceIdentities": [{"ServiceName": "web"}]}),
    )
    .await;
    assert_eq!(s, 200, "{tok}");
    let web_secret = tok["SecretID"].as_str().unwrap().to_string();
    let web_accessor = tok["AccessorID"].as_str().unwrap().to_string();
    let (s, body) = put(&c1, "/v1/agent/service/register", &web_secret, web).await;
    assert_eq!(s, 200, "{body}");
    let db = json!({"Name": "db", "Port": 5432});
    let (s, body) = put(&c1, "/v1/agent/service/register", &web_secret, db.clone()).await;
    assert_eq!(s, 403, "{body}");
    let (s, leaf) = get(&c1, "/v1/agent/connect/ca/leaf/web", &web_secret).await;
    assert_eq!(s, 200, "{leaf}");
    assert_eq!(leaf["Service"], "web");
    assert_eq!(
        get(&c1, "/v1/agent/connect/ca/leaf/db", &web_secret)
            .await
            .0,
        403
    );

    // A token for another service can neither take web's place by its ID nor remove web's
    // check alongside its own service.
    let (_, evil) = put(
        &server,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"ServiceIdentities": [{"ServiceName": "evil"}]}),
    )
    .await;
    let evil = evil["SecretID"].as_str().unwrap().to_string();
    let (s, body) = put(
        &c1,
        "/v1/agent/service/register",
        &evil,
        json!({"ID": "web", "Name": "evil", "Port": 1}),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let cat = json!({
        "Node": "cat1", "Address": "10.0.0.9",
        "Service": {"ID": "web-1", "Service": "web", "Port": 80},
        "Check": {"CheckID": "chk-web", "Name": "web", "ServiceID": "web-1", "Status": "passing"}
    });
    assert_eq!(
        put(&server, "/v1/catalog/register", MANAGEMENT, cat)
            .await
            .0,
        200
    );
    let mine = json!({"Node": "cat1", "SkipNodeUpdate": true, "Service": {"ID": "evil-1", "Service": "evil"}});
    let (s, body) = put(&server, "/v1/catalog/register", &evil, mine).await;
    assert_eq!(s, 200, "{body}");
    let both = json!({"Node": "cat1", "ServiceID": "evil-1", "CheckID": "chk-web"});
    let (s, body) = put(&server, "/v1/catalog/deregister", &evil, both).await;
    assert_eq!(s, 403, "{body}");
    let own = json!({"Node": "cat1", "ServiceID": "evil-1"});
    assert_eq!(
        put(&server, "/v1/catalog/deregister", &evil, own).await.0,
        200
    );
    // Registering a check on web through its own service's registration is refused too.
    let sneaky = json!({"Node": "cat1", "SkipNodeUpdate": true,
        "Checks": [{"CheckID": "x", "ServiceID": "web-1", "ServiceName": "evil", "Status": "critical"}]});
    assert_eq!(
        put(&server, "/v1/catalog/register", &evil, sneaky).await.0,
        403
    );

    // The client agent keeps its catalog entries in step (anti-entropy).
    eventually(10, "web synced to the catalog", || async {
        let (_, body) = get(&server, "/v1/catalog/services", MANAGEMENT).await;
        body.get("web").is_some() && body.get("web-sidecar-proxy").is_some()
    })
    .await;
    // The management token registers db at the server agent.
    assert_eq!(
        put(&server, "/v1/agent/service/register", MANAGEMENT, db)
            .await
            .0,
        200
    );

    // Two tokens see different slices of the same cached reads.
    let (_, only_db_policy) = put(
        &server,
        "/v1/acl/policy",
        MANAGEMENT,
        json!({"Name": "db-read", "Rules": "service \"db\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"}),
    )
    .await;
    let (_, only_db) = put(
        &server,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"Policies": [{"Name": only_db_policy["Name"]}]}),
    )
    .await;
    let only_db = only_db["SecretID"].as_str().unwrap().to_string();
    eventually(10, "db in the catalog", || async {
        let (_, body) = get(&c1, "/v1/catalog/services?cached", &only_db).await;
        body.get("db").is_some()
    })
    .await;
    let (s, body, headers) = call(
        &c1,
        reqwest::Method::GET,
        "/v1/catalog/services?cached",
        &only_db,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["db"]);
    assert_eq!(headers["x-consul-results-filtered-by-acls"], "true");
    assert_eq!(headers["x-consul-default-acl-policy"], "deny");
    let (_, body) = get(&c1, "/v1/catalog/services?cached", &web_secret).await;
    assert!(
        body.get("web").is_some() && body.get("db").is_some(),
        "{body}"
    );
    let (_, body) = get(&c1, "/v1/health/service/web?cached", &only_db).await;
    assert_eq!(body, json!([]), "db's token sees nothing of web");
    // A blocking cached read answers with the same filter.
    let (_, index, _) = c1.get("/v1/health/service/db?cached").await;
    let (s, body) = get(
        &c1,
        &format!("/v1/health/service/web?cached&index={index}&wait=100ms"),
        &only_db,
    )
    .await;
    assert_eq!((s, body), (200, json!([])));

    // Intention writes on db need intentions:write on db.
    let ixn = json!({"Action": "allow"});
    let path = "/v1/connect/intentions/exact?source=web&destination=db";
    let (s, body) = put(&c1, path, &web_secret, ixn.clone()).await;
    assert_eq!(s, 403, "{body}");
    assert!(body
        .as_str()
        .unwrap()
        .contains("'intentions:write' on \"db\""));
    let (_, writer) = put(
        &server,
        "/v1/acl/policy",
        MANAGEMENT,
        json!({"Name": "db-ixn", "Rules": "service \"db\" {\n  policy = \"read\"\n  intentions = \"write\"\n}"}),
    )
    .await;
    let (_, writer) = put(
        &server,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"Policies": [{"ID": writer["ID"]}]}),
    )
    .await;
    let writer = writer["SecretID"].as_str().unwrap().to_string();
    let (s, body) = put(&c1, path, &writer, ixn).await;
    assert_eq!(s, 200, "{body}");

    // A token deleted at the server stops working at the client within its token_ttl (1 s).
    let (s, _, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/acl/token/{web_accessor}"),
        MANAGEMENT,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let deleted = Instant::now();
    eventually(5, "the deleted token refused", || async {
        get(&c1, "/v1/agent/connect/ca/leaf/web", &web_secret).await
            == (403, Value::String("ACL not found\n".into()))
    })
    .await;
    assert!(deleted.elapsed() < Duration::from_secs(3));
    // And the secret never reached a log.
    for log in [server.log(), c1.log()] {
        assert!(!log.contains(&web_secret) && !log.contains(MANAGEMENT));
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_then_reaped_and_the_recovery_token_reaches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let recovery = "5d2c7a8e-3f1b-4c6d-9e0a-7b7b00000002";
    let cfg = acl_file(
        dir.path(),
        "dev.hcl",
        &format!("    agent_recovery = \"{recovery}\"\n"),
        "30s",
    );
    let mut a = Agent::dev_with("acl-reap", dir.path(), &["--config-file", &cfg]);
    a.ready().await;
    wait_for_management(&a).await;
    let soon =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3))
            .to_string();
    let (s, tok) = put(
        &a,
        "/v1/acl/token",
        MANAGEMENT,
        json!({"ExpirationTime": soon, "ServiceIdentities": [{"ServiceName": "web"}]}),
    )
    .await;
    assert_eq!(s, 200, "{tok}");
    let (secret, accessor) = (
        tok["SecretID"].as_str().unwrap().to_string(),
        tok["AccessorID"].as_str().unwrap().to_string(),
    );
    // Used (and cached) before it expires, refused after, whatever the token_ttl (30 s).
    assert_eq!(
        get(&a, "/v1/agent/connect/ca/leaf/web", &secret).await.0,
        200
    );
    eventually(10, "the expired token refused", || async {
        get(&a, "/v1/agent/connect/ca/leaf/web", &secret).await.0 == 403
    })
    .await;
    // The leader deletes it.
    eventually(15, "the expired token reaped", || async {
        let (_, list) = get(&a, "/v1/acl/tokens", MANAGEMENT).await;
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["AccessorID"] == accessor.as_str())
    })
    .await;
    // The recovery token: this agent's endpoints, not the catalog's services or ACLs.
    assert_eq!(get(&a, "/v1/agent/self", recovery).await.0, 200);
    assert_eq!(get(&a, "/v1/acl/tokens", recovery).await.0, 403);
    let (s, services) = get(&a, "/v1/catalog/services", recovery).await;
    assert_eq!((s, services), (200, json!({})));
}
