//! The agent cache through real processes: `?cached` with Consul's headers, blocking reads
//! served from the cache, and a client agent that keeps answering (discovery, roots, its leaf)
//! while its server is down.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{client, Agent};

/// GET returning (status, X-Cache, Age, X-Consul-Index, body).
async fn cached(a: &Agent, path: &str) -> (u16, String, Option<u64>, u64, Value) {
    let r = client().get(a.url(path)).send().await.unwrap();
    let h = r.headers().clone();
    let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_string());
    let status = r.status().as_u16();
    let raw = r.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
    assert!(
        h.contains_key("x-consul-index"),
        "{path}: {status} without X-Consul-Index: {body}"
    );
    (
        status,
        text("x-cache").unwrap_or_default(),
        text("age").map(|v| v.parse().unwrap()),
        text("x-consul-index").unwrap().parse().unwrap(),
        body,
    )
}

async fn register(a: &Agent, name: &str, port: u16) -> (u16, String) {
    let body = format!(r#"{{"Name":"{name}","Port":{port},"Connect":{{"SidecarService":{{}}}}}}"#);
    a.put("/v1/agent/service/register", body).await
}

#[tokio::test]
async fn cached_reads_hit_and_block_on_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("cache-dev", dir.path());
    a.ready().await;
    assert_eq!(register(&a, "db", 5432).await.0, 200);
    let path = "/v1/health/connect/db?cached";
    a.wait_for(
        "/v1/health/connect/db",
        "the sidecar in the catalog",
        one_entry_with_member_check,
    )
    .await;

    let (s, x, age, index, body) = cached(&a, path).await;
    assert_eq!((s, x.as_str(), age), (200, "MISS", None));
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, x, age, index2, _) = cached(&a, path).await;
    assert_eq!((x.as_str(), age), ("HIT", Some(0)));
    assert_eq!(index2, index);
    // These are background-refresh endpoints in Consul's terms: Cache-Control is ignored
    // (the refresher keeps the entry current), so even "must revalidate" is a HIT.
    let r = client()
        .get(a.url(path))
        .header("cache-control", "max-age=0, must-revalidate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    // Without ?cached the endpoint does not say anything about a cache.
    let r = client()
        .get(a.url("/v1/health/connect/db"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-cache").is_none());

    // A blocking read on the cache returns when the background refresh sees a change.
    let url = a.url(&format!("{path}&index={index}&wait=20s"));
    let start = Instant::now();
    let waiter = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the cached read did not block");
    let body = r#"{"Name":"db","ID":"db-2","Port":5433,"Connect":{"SidecarService":{}}}"#;
    assert_eq!(a.put("/v1/agent/service/register", body).await.0, 200);
    let r = waiter.await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(15));
    let new_index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_index > index);
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );

    // The agent's roots endpoint is always answered from the cache.
    let (s, x, _, _, roots) = cached(&a, "/v1/agent/connect/ca/roots").await;
    assert_eq!((s, x.as_str()), (200, "MISS"));
    assert!(roots["Roots"].as_array().is_some_and(|r| !r.is_empty()));
    assert_eq!(cached(&a, "/v1/agent/connect/ca/roots").await.1, "HIT");
}

/// One health entry whose node carries the servers' member check: the answer will not change
/// again by itself (the check's first write changes every health answer of the node).
fn one_entry_with_member_check(v: &Value) -> bool {
    v.as_array().is_some_and(|l| {
        l.len() == 1
            && l[0]["Checks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["CheckID"] == "serfHealth"))
    })
}

#[tokio::test]
async fn a_client_agent_serves_cached_discovery_and_roots_while_its_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("cache-srv", &dir.path().join("srv"), &[]);
    server.ready().await;
    let mut agent = Agent::client("cache-cli", &dir.path().join("cli"), server.server, &[]);
    agent.ready().await;
    assert_eq!(register(&agent, "db", 5432).await.0, 200);
    agent
        .wait_for(
            "/v1/health/connect/db",
            "the sidecar in the catalog",
            one_entry_with_member_check,
        )
        .await;
    agent
        .wait_for("/v1/agent/connect/ca/roots", "the CA", |v| {
            v["ActiveRootID"].as_str().is_some_and(|s| !s.is_empty())
        })
        .await;
    let discovery = "/v1/health/connect/db?cached";
    let (_, _, _, _, before) = cached(&agent, discovery).await;
    let (_, _, _, _, roots_before) = cached(&agent, "/v1/agent/connect/ca/roots").await;
    let leaf_path = "/v1/agent/connect/ca/leaf/db";
    let (s, x, _, _, leaf_before) = cached(&agent, leaf_path).await;
    assert_eq!((s, x.as_str()), (200, "MISS"), "{leaf_before}");
    assert_eq!(cached(&agent, leaf_path).await.1, "HIT");

    server.kill();
    let start = Instant::now();
    // Answers keep coming from memory; once the refresh notices the loss, Age counts up.
    let mut saw_age = false;
    while start.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let (s, x, age, _, body) = cached(&agent, discovery).await;
        assert_eq!((s, x.as_str()), (200, "HIT"));
        assert_eq!(body, before);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "waited on the dead server"
        );
        saw_age |= age.is_some_and(|a| a >= 1);
        let (s, x, _, _, roots) = cached(&agent, "/v1/agent/connect/ca/roots").await;
        assert_eq!((s, x.as_str()), (200, "HIT"));
        assert_eq!(roots, roots_before);
        // The leaf is not expired and its root is still active: served from memory.
        let (s, x, _, _, leaf) = cached(&agent, leaf_path).await;
        assert_eq!((s, x.as_str()), (200, "HIT"));
        assert_eq!(leaf, leaf_before);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(saw_age, "Age never showed the lost contact");
}

/// A proxy's registration reads back with `service-defaults`/`proxy-defaults` merged under it
/// (its protocol and its upstreams'), the registration's own values winning; a config change
/// wakes a blocking read of the proxy, and the catalog gets the merged view too.
#[tokio::test]
async fn proxies_see_their_resolved_service_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("resolved-config", dir.path());
    a.ready().await;
    let set = |body: serde_json::Value| {
        let a = &a;
        async move {
            let (status, text) = a.put("/v1/config", body.to_string()).await;
            assert_eq!(status, 200, "{text}");
        }
    };
    set(
        serde_json::json!({"Kind": "proxy-defaults", "Name": "global",
        "Config": {"protocol": "http2", "local_connect_timeout_ms": 900}}),
    )
    .await;
    set(serde_json::json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})).await;
    set(serde_json::json!({"Kind": "service-defaults", "Name": "db", "Protocol": "grpc"})).await;
    let body = serde_json::json!({
        "Name": "web", "Port": 8080,
        "Connect": {"SidecarService": {"Proxy": {
            "Config": {"local_connect_timeout_ms": 100},
            "Upstreams": [
                {"DestinationName": "db", "LocalBindPort": 9191},
                {"DestinationName": "cache", "LocalBindPort": 9192, "Config": {"protocol": "tcp"}}
            ]}}}
    });
    let (status, text) = a.put("/v1/agent/service/register", body.to_string()).await;
    assert_eq!(status, 200, "{text}");

    let proxy = a
        .wait_for(
            "/v1/agent/service/web-sidecar-proxy",
            "the resolved protocol",
            |v| v["Proxy"]["Config"]["protocol"] == "http",
        )
        .await;
    let p = &proxy["Proxy"];
    assert_eq!(
        p["Config"]["local_connect_timeout_ms"], 100,
        "the registration's own value wins: {p}"
    );
    assert_eq!(p["Upstreams"][0]["Config"]["protocol"], "grpc", "{p}");
    assert_eq!(p["Upstreams"][1]["Config"]["protocol"], "tcp", "{p}");

    // A blocking read of the proxy wakes when its destination's defaults change.
    let r = client()
        .get(a.url("/v1/agent/service/web-sidecar-proxy"))
        .send()
        .await
        .unwrap();
    let hash = r.headers()["x-consul-contenthash"]
        .to_str()
        .unwrap()
        .to_string();
    let url = a.url(&format!(
        "/v1/agent/service/web-sidecar-proxy?hash={hash}&wait=30s"
    ));
    let blocked = tokio::spawn(async move {
        let started = Instant::now();
        let body: Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (started.elapsed(), body)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client()
        .delete(a.url("/v1/config/service-defaults/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (took, body) = blocked.await.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "woken by the change, took {took:?}"
    );
    assert_eq!(
        body["Proxy"]["Config"]["protocol"], "http2",
        "falls back to proxy-defaults: {body}"
    );

    // The catalog holds the merged view.
    a.wait_for(
        "/v1/catalog/service/web-sidecar-proxy",
        "the merged proxy in the catalog",
        |v| {
            v[0]["ServiceProxy"]["Config"]["protocol"] == "http2"
                && v[0]["ServiceProxy"]["Upstreams"][0]["Config"]["protocol"] == "grpc"
        },
    )
    .await;

    // The plain service gets nothing merged, and deregistering stops the watch.
    let (_, _, web) = a.get("/v1/agent/service/web").await;
    assert!(web.get("Proxy").is_none_or(|p| p.is_null()), "{web}");
    assert_eq!(a.put("/v1/agent/service/deregister/web", "").await.0, 200);
    let (status, _, _) = a.get("/v1/agent/service/web-sidecar-proxy").await;
    assert_eq!(status, 404);
}
