//! Intentions over HTTP through real processes: the legacy API's refusals, blocking match,
//! the default policy from the agent's config file, authorization following changes, and a
//! client agent that keeps authorizing while its server is down.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, Agent};

async fn authorize(a: &Agent, td: &str, source: &str, target: &str) -> (u16, Value) {
    let body = json!({
        "Target": target,
        "ClientCertURI": format!("spiffe://{td}/ns/default/dc/dc1/svc/{source}"),
        "ClientCertSerial": "01",
    });
    let r = client()
        .post(a.url("/v1/agent/connect/authorize"))
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

async fn trust_domain(a: &Agent) -> String {
    let roots = a
        .wait_for("/v1/connect/ca/roots", "CA roots", |v| {
            v["TrustDomain"].as_str().is_some_and(|s| !s.is_empty())
        })
        .await;
    roots["TrustDomain"].as_str().unwrap().to_string()
}

/// Polls authorize until it answers `want`; returns how long that took.
async fn until_authorized(a: &Agent, td: &str, source: &str, want: bool) -> (Duration, Value) {
    let start = Instant::now();
    loop {
        let (status, body) = authorize(a, td, source, "db").await;
        assert_eq!(status, 200, "{body}");
        if body["Authorized"] == want {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "authorize never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn default_policy_from_config_and_authorize_follows_intention_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.hcl");
    std::fs::write(&cfg, "default_intention_policy = \"deny\"\n").unwrap();
    let mut a = Agent::dev_with(
        "intent-default",
        dir.path(),
        &["--config-file", cfg.to_str().unwrap()],
    );
    a.ready().await;
    let td = trust_domain(&a).await;

    // Nothing matches: the agent's default_intention_policy decides.
    let (status, body) = authorize(&a, &td, "web", "db").await;
    assert_eq!(status, 200);
    assert_eq!(body["Authorized"], false);
    assert_eq!(body["Reason"], "Default intention policy");
    let (_, _, check) = a
        .get("/v1/connect/intentions/check?source=web&destination=db")
        .await;
    assert_eq!(check, json!({"Allowed": false}));

    // An allow reaches the agent's view within a second or so of the write.
    let (s, _) = a
        .put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            r#"{"Action":"allow"}"#,
        )
        .await;
    assert_eq!(s, 200);
    let (took, body) = until_authorized(&a, &td, "web", true).await;
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .starts_with("Matched L4 intention: default/web => default/db (Precedence: 9"),
        "{body}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // L7 permissions need a destination that speaks HTTP.
    let l7 = r#"{"Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}"#;
    let (s, msg) = a
        .put("/v1/connect/intentions/exact?source=web&destination=db", l7)
        .await;
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("incompatible with L7"), "{msg}");
    let (s, _) = a
        .put(
            "/v1/config",
            r#"{"Kind":"service-defaults","Name":"db","Protocol":"http"}"#,
        )
        .await;
    assert_eq!(s, 200);

    // An L7 intention cannot be enforced on a connection: not authorized.
    let (s, msg) = a
        .put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            r#"{"Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}"#,
        )
        .await;
    assert_eq!(s, 200, "{msg}");
    let (_, body) = until_authorized(&a, &td, "web", false).await;
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .starts_with("Matched L7 intention:"),
        "{body}"
    );

    // A wildcard allow for another source, then deleting it falls back to the default.
    a.put(
        "/v1/connect/intentions/exact?source=*&destination=db",
        r#"{"Action":"allow"}"#,
    )
    .await;
    until_authorized(&a, &td, "api", true).await;
    // The destination cannot go back to tcp while it has L7 intentions.
    let r = client()
        .delete(a.url("/v1/config/service-defaults/db"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .delete(a.url("/v1/connect/intentions/exact?source=*&destination=db"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, body) = until_authorized(&a, &td, "api", false).await;
    assert_eq!(body["Reason"], "Default intention policy");
}

#[tokio::test]
async fn legacy_api_refusals_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("intent-bad", dir.path());
    a.ready().await;
    let r = client()
        .post(a.url("/v1/connect/intentions"))
        .body(r#"{"SourceName":"web","DestinationName":"db","Action":"allow"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, index_before, before) = a.get("/v1/connect/intentions").await;
    assert_eq!(before.as_array().unwrap().len(), 1);

    let http = client();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        // Legacy create of an existing pair.
        (
            http.post(a.url("/v1/connect/intentions"))
                .body(r#"{"SourceName":"web","DestinationName":"db","Action":"deny"}"#),
            400,
            "duplicate intention",
        ),
        (
            http.post(a.url("/v1/connect/intentions"))
                .body(r#"{"ID":"x","SourceName":"a","DestinationName":"b","Action":"deny"}"#),
            400,
            "ID must be empty",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web&destination=db"))
                .body(r#"{"Action":"maybe"}"#),
            400,
            "Action",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web&destination=db"))
                .body(r#"{"Action":"allow","Meta":{"a":"b"}}"#),
            400,
            "Meta",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web*&destination=db"))
                .body(r#"{"Action":"allow"}"#),
            400,
            "wildcard",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web&destination=*"))
                .body(r#"{"Permissions":[{"Action":"allow","HTTP":{"PathExact":"/"}}]}"#),
            400,
            "wildcard destination",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web&destination=db"))
                .body(r#"{"Permissions":[{"Action":"allow","HTTP":{"PathRegex":"("}}]}"#),
            400,
            "does not compile",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?destination=db"))
                .body(r#"{"Action":"allow"}"#),
            400,
            "'source' not set",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=ns1/web&destination=db"))
                .body(r#"{"Action":"allow"}"#),
            400,
            "Enterprise",
        ),
        (
            http.put(a.url("/v1/connect/intentions/exact?source=web&destination=db"))
                .body("not json"),
            400,
            "Request decode failed",
        ),
        (
            http.put(a.url(&format!("/v1/connect/intentions/{id}")))
                .body(r#"{"SourceName":"web","DestinationName":"db","Action":"allow","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}"#),
            400,
            "mutually exclusive",
        ),
        (
            http.delete(a.url("/v1/connect/intentions/00000000-0000-0000-0000-000000000000")),
            404,
            "Intention not found",
        ),
        (
            http.get(a.url("/v1/connect/intentions/not-a-uuid")),
            400,
            "not a UUID",
        ),
        (
            http.get(a.url("/v1/connect/intentions/match?by=sideways&name=db")),
            400,
            "'by'",
        ),
        (
            http.get(a.url("/v1/connect/intentions/match?by=source")),
            400,
            "'name'",
        ),
        (
            http.get(a.url("/v1/connect/intentions?filter=Nope%20%3D%3D%20x")),
            400,
            "Nope",
        ),
        (
            http.post(a.url("/v1/agent/connect/authorize"))
                .body(r#"{"ClientCertURI":"spiffe://x.consul/ns/default/dc/dc1/svc/web"}"#),
            400,
            "Target service must be specified",
        ),
        (
            http.post(a.url("/v1/agent/connect/authorize"))
                .body(r#"{"Target":"db","ClientCertURI":"https://example.com/"}"#),
            400,
            "not a valid Connect identifier",
        ),
        (
            http.post(a.url("/v1/agent/connect/authorize"))
                .body(r#"{"Target":"db","ClientCertURI":"spiffe://11111111-2222-3333-4444-555555555555.consul/agent/client/dc/dc1/id/abc"}"#),
            400,
            "not a valid Service identifier",
        ),
    ];
    for (req, want_status, want_text) in cases {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, want_status, "{want_text}: {text}");
        assert!(
            text.contains(want_text),
            "expected {want_text:?} in {text:?}"
        );
    }
    let (_, index_after, after) = a.get("/v1/connect/intentions").await;
    assert_eq!(after, before, "a refused request changed the intentions");
    assert_eq!(index_after, index_before);
}

#[tokio::test]
async fn match_blocks_until_an_intention_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("intent-block", dir.path());
    a.ready().await;
    a.put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action":"allow"}"#,
    )
    .await;
    let (_, index, _) = a
        .get("/v1/connect/intentions/match?by=destination&name=db")
        .await;
    let url = a.url(&format!(
        "/v1/connect/intentions/match?by=destination&name=db&index={index}&wait=20s"
    ));
    let start = Instant::now();
    let waiter = tokio::spawn(async move {
        let r = client().get(url).send().await.unwrap();
        let idx: u64 = r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (idx, r.json::<Value>().await.unwrap(), start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "match did not block");
    a.put(
        "/v1/connect/intentions/exact?source=*&destination=*",
        r#"{"Action":"deny"}"#,
    )
    .await;
    let (new_index, body, took) = waiter.await.unwrap();
    assert!(new_index > index);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let names: Vec<&str> = body["db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["SourceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "*"]);
}

#[tokio::test]
async fn client_agent_keeps_authorizing_while_the_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("intent-srv", &dir.path().join("srv"), &[]);
    server.ready().await;
    let td = trust_domain(&server).await;
    server
        .put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            r#"{"Action":"allow"}"#,
        )
        .await;
    server
        .put(
            "/v1/connect/intentions/exact?source=api&destination=db",
            r#"{"Action":"deny"}"#,
        )
        .await;
    let mut agent = Agent::client(
        "intent-client",
        &dir.path().join("client"),
        server.server,
        &[],
    );
    agent.ready().await;
    assert_eq!(
        authorize(&agent, &td, "web", "db").await.1["Authorized"],
        true
    );
    assert_eq!(
        authorize(&agent, &td, "api", "db").await.1["Authorized"],
        false
    );

    server.kill();
    for _ in 0..5 {
        let start = Instant::now();
        let (status, body) = authorize(&agent, &td, "web", "db").await;
        assert_eq!((status, body["Authorized"].clone()), (200, json!(true)));
        let (_, body) = authorize(&agent, &td, "api", "db").await;
        assert_eq!(body["Authorized"], false);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "authorize waited on the dead server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The server comes back; a change flows to the client's view again.
    server.restart();
    server.ready().await;
    server
        .put(
            "/v1/connect/intentions/exact?source=api&destination=db",
            r#"{"Action":"allow"}"#,
        )
        .await;
    let start = Instant::now();
    loop {
        let (_, body) = authorize(&agent, &td, "api", "db").await;
        if body["Authorized"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the change never reached the client agent:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn authorize_is_cached_per_token_with_consuls_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("intent-cache", dir.path());
    a.ready().await;
    let td = trust_domain(&a).await;
    let body = json!({
        "Target": "db",
        "ClientCertURI": format!("spiffe://{td}/ns/default/dc/dc1/svc/web"),
    });
    let call = |token: Option<&'static str>| {
        let mut req = client()
            .post(a.url("/v1/agent/connect/authorize"))
            .json(&body);
        if let Some(t) = token {
            req = req.header("X-Consul-Token", t);
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
            let age = r
                .headers()
                .get("age")
                .map(|v| v.to_str().unwrap().to_string());
            (cache, age)
        }
    };
    assert_eq!(call(Some("token-a")).await, ("MISS".to_string(), None));
    let (cache, age) = call(Some("token-a")).await;
    assert_eq!(cache, "HIT");
    assert_eq!(
        age.as_deref(),
        Some("0"),
        "a refreshing entry in contact has age 0"
    );
    // Another token never shares the first one's entry.
    assert_eq!(call(Some("token-b")).await.0, "MISS");
    assert_eq!(call(Some("token-b")).await.0, "HIT");
    assert_eq!(call(None).await.0, "MISS");
    assert_eq!(call(None).await.0, "HIT");
}
