//! HTTP API behaviour of a dev agent: sidecars, checks, config files, bad input.

use serde_json::{json, Value};

use crate::support::{client, ids, Agent};

#[tokio::test]
async fn sidecar_registration_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("sidecar-node", dir.path());
    a.ready().await;
    let body = json!({
        "Name": "web", "Port": 8080, "Tags": ["v1"],
        "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}}
    });
    assert_eq!(
        a.put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    let (_, _, services) = a.get("/v1/agent/services").await;
    let sc = &services["web-sidecar-proxy"];
    assert_eq!(sc["Kind"], "connect-proxy");
    assert_eq!(sc["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(sc["Proxy"]["DestinationServiceID"], "web");
    assert_eq!(sc["Proxy"]["LocalServiceAddress"], "127.0.0.1");
    assert_eq!(sc["Proxy"]["LocalServicePort"], 8080);
    assert_eq!(sc["Proxy"]["Upstreams"][0]["DestinationName"], "db");
    assert_eq!(sc["Port"], 21000);

    // A second sidecar takes the next free port.
    let body = json!({"Name": "api", "Port": 9090, "Connect": {"SidecarService": {}}});
    assert_eq!(
        a.put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    let (_, _, sc2) = a.get("/v1/agent/service/api-sidecar-proxy").await;
    assert_eq!(sc2["Port"], 21001);

    let health = a
        .wait_for("/v1/health/connect/web", "sidecar in health/connect", |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(health[0]["Service"]["ID"], "web-sidecar-proxy");
    let check_names: Vec<&str> = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert!(
        check_names.contains(&"Connect Sidecar Listening"),
        "{check_names:?}"
    );
    assert!(
        check_names.contains(&"Connect Sidecar Aliasing web"),
        "{check_names:?}"
    );
    let (_, _, catalog) = a.get("/v1/catalog/connect/web").await;
    assert_eq!(ids(&catalog, "/ServiceID"), ["web-sidecar-proxy"]);
    assert_eq!(catalog[0]["ServiceProxy"]["DestinationServiceName"], "web");

    assert_eq!(a.put("/v1/agent/service/deregister/web", "").await.0, 200);
    let (_, _, services) = a.get("/v1/agent/services").await;
    assert!(
        services.get("web").is_none() && services.get("web-sidecar-proxy").is_none(),
        "{services}"
    );
    a.wait_for(
        "/v1/health/connect/web",
        "sidecar gone from the catalog",
        |v| v == &json!([]),
    )
    .await;
    assert_eq!(a.put("/v1/agent/service/deregister/web", "").await.0, 404);
}

#[tokio::test]
async fn checks_run_and_reach_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("checks-node", dir.path());
    a.ready().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let closed = format!("127.0.0.1:{}", crate::support::free_port());
    let body = json!({
        "Name": "svc", "Port": 1,
        "Checks": [
            {"Name": "open", "TCP": open, "Interval": "200ms"},
            {"Name": "closed", "TCP": closed, "Interval": "200ms"},
            {"CheckID": "ttl", "Name": "ttl", "TTL": "30s"}
        ]
    });
    assert_eq!(
        a.put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    let statuses = |v: &Value| -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["Name"].as_str().unwrap().to_string(),
                    c["Status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let want = |ttl: &str| {
        vec![
            ("closed".to_string(), "critical".to_string()),
            ("open".to_string(), "passing".to_string()),
            ("ttl".to_string(), ttl.to_string()),
        ]
    };
    a.wait_for("/v1/health/checks/svc", "TCP check results", |v| {
        statuses(v) == want("critical")
    })
    .await;
    assert_eq!(a.put("/v1/agent/check/pass/ttl?note=fine", "").await.0, 200);
    let v = a
        .wait_for("/v1/health/checks/svc", "TTL pass", |v| {
            statuses(v) == want("passing")
        })
        .await;
    let ttl = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "ttl")
        .unwrap();
    assert_eq!(ttl["Output"], "fine");
    assert_eq!(a.put("/v1/agent/check/warn/ttl", "").await.0, 200);
    a.wait_for("/v1/health/checks/svc", "TTL warn", |v| {
        statuses(v) == want("warning")
    })
    .await;
    assert_eq!(a.put("/v1/agent/check/pass/nope", "").await.0, 404);
    // ?passing drops the instance while any check is not passing.
    let (_, _, passing) = a.get("/v1/health/service/svc?passing").await;
    assert_eq!(passing, json!([]));
    drop(listener);
}

#[tokio::test]
async fn services_from_an_hcl_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.hcl");
    std::fs::write(
        &cfg,
        r#"
        datacenter = "east"
        service {
          name = "from-file"
          port = 7000
          connect {
                sidecar_service {}
              }
        }
        "#,
    )
    .unwrap();
    let mut a = Agent::dev_with(
        "file-node",
        dir.path(),
        &["--config-file", cfg.to_str().unwrap()],
    );
    a.ready().await;
    let (_, _, me) = a.get("/v1/agent/self").await;
    assert_eq!(me["Config"]["Datacenter"], "east");
    let (_, _, services) = a.get("/v1/agent/services").await;
    assert_eq!(services["from-file"]["Port"], 7000);
    assert_eq!(services["from-file-sidecar-proxy"]["Kind"], "connect-proxy");
    let (_, _, dcs) = a.get("/v1/catalog/datacenters").await;
    assert_eq!(dcs, json!(["east"]));
}

/// Every malformed request gets the right 4xx with a one-line message and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("bad-node", dir.path());
    a.ready().await;
    assert_eq!(
        a.put("/v1/agent/service/register", r#"{"Name":"keep","Port":1}"#)
            .await
            .0,
        200
    );
    a.wait_for("/v1/catalog/service/keep", "baseline service", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let snapshot = || async {
        let (_, i1, services) = a.get("/v1/catalog/services").await;
        let (_, i2, nodes) = a.get("/v1/catalog/nodes").await;
        let (_, _, local) = a.get("/v1/agent/services").await;
        let (_, _, checks) = a.get("/v1/agent/checks").await;
        let (_, i3, cfg) = a.get("/v1/config/service-defaults").await;
        (i1, i2, i3, services, nodes, local, checks, cfg)
    };
    let before = snapshot().await;

    let big = format!(
        r#"{{"Name":"huge","Meta":{{"x":"{}"}}}}"#,
        "a".repeat(5 << 20)
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "PUT",
            "/v1/agent/service/register",
            "{not json".into(),
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            "".into(),
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            "[1,2]".into(),
            400,
            "must be a JSON object",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Port":"eighty"}"#.into(),
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Port":70000}"#.into(),
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Tags":"notalist"}"#.into(),
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Port":1}"#.into(),
            400,
            "Missing service name",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"a/b"}"#.into(),
            400,
            "Invalid service name",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Kind":"bogus"}"#.into(),
            400,
            "Invalid service kind",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"p","Kind":"connect-proxy","Port":1}"#.into(),
            400,
            "DestinationServiceName",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Name":"c","TTL":"soon"}}"#.into(),
            400,
            "invalid duration",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Name":"c","HTTP":"http://x"}}"#.into(),
            400,
            "Interval is required",
        ),
        (
            "PUT",
            "/v1/agent/check/register",
            r#"{"Name":"c"}"#.into(),
            400,
            "one of TTL, HTTP, TCP",
        ),
        (
            "PUT",
            "/v1/agent/check/register",
            r#"{"Name":"c","TTL":"5s","ServiceID":"ghost"}"#.into(),
            400,
            "does not exist",
        ),
        (
            "PUT",
            "/v1/agent/check/register",
            r#"{"ID":"serfHealth","Name":"c","TTL":"5s"}"#.into(),
            400,
            "reserved",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            r#"{"Address":"10.0.0.1"}"#.into(),
            400,
            "Must provide node",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            r#"{"Node":"n","Address":"10.0.0.1","Check":{"CheckID":"c","ServiceID":"ghost"}}"#
                .into(),
            400,
            "Unknown service ID",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            r#"{"Node":"n","Address":"10.0.0.1","Check":{"CheckID":"c","Status":"sad"}}"#.into(),
            400,
            "Invalid check status",
        ),
        (
            "PUT",
            "/v1/catalog/deregister",
            r#"{}"#.into(),
            400,
            "Must provide node",
        ),
        (
            "PUT",
            "/v1/config",
            r#"{"Kind":"nope","Name":"x"}"#.into(),
            400,
            "invalid config entry kind",
        ),
        (
            "PUT",
            "/v1/config",
            r#"{"Kind":"proxy-defaults","Name":"web"}"#.into(),
            400,
            "global",
        ),
        (
            "PUT",
            "/v1/config",
            r#"{"Kind":"service-defaults","Name":"web","Protocol":7}"#.into(),
            400,
            "must be a string",
        ),
        (
            "PUT",
            "/v1/config",
            r#"{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web"}]}"#.into(),
            400,
            "Action is required",
        ),
        (
            "PUT",
            "/v1/config?cas=abc",
            r#"{"Kind":"service-defaults","Name":"web"}"#.into(),
            400,
            "Invalid cas",
        ),
        (
            "GET",
            "/v1/catalog/services?index=abc",
            "".into(),
            400,
            "Invalid index",
        ),
        (
            "GET",
            "/v1/catalog/services?index=-1",
            "".into(),
            400,
            "Invalid index",
        ),
        (
            "GET",
            "/v1/health/service/web?index=1&wait=forever",
            "".into(),
            400,
            "Invalid wait",
        ),
        (
            "GET",
            "/v1/catalog/services?stale&consistent",
            "".into(),
            400,
            "conflicting",
        ),
        (
            "GET",
            "/v1/health/state/bogus",
            "".into(),
            400,
            "Invalid state",
        ),
        (
            "GET",
            "/v1/config/bogus",
            "".into(),
            400,
            "invalid config entry kind",
        ),
        (
            "GET",
            "/v1/config/service-defaults/missing",
            "".into(),
            404,
            "Config entry not found",
        ),
        (
            "GET",
            "/v1/agent/service/missing",
            "".into(),
            404,
            "unknown service ID",
        ),
        (
            "GET",
            "/v1/no/such/path",
            "".into(),
            404,
            "404 page not found",
        ),
        (
            "POST",
            "/v1/agent/service/register",
            r#"{"Name":"x"}"#.into(),
            405,
            "method not allowed",
        ),
        (
            "DELETE",
            "/v1/catalog/services",
            "".into(),
            405,
            "method not allowed",
        ),
        ("PUT", "/v1/agent/service/register", big, 413, ""),
    ];
    let http = client();
    for (method, path, body, want, needle) in cases {
        let resp = http
            .request(method.parse().unwrap(), a.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{method} {path}: {text}");
        assert!(
            text.contains(needle),
            "{method} {path}: {text:?} lacks {needle:?}"
        );
        if status == 400 {
            assert_eq!(
                text.trim_end().lines().count(),
                1,
                "{method} {path}: message is one line: {text:?}"
            );
        }
    }
    // Give anti-entropy a moment: nothing may have changed anywhere.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = snapshot().await;
    assert_eq!(before, after);
    assert!(!a.log().contains("panicked"), "{}", a.log());
}
