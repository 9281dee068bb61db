//! Servers and client agents as separate processes: joining, persistence, anti-entropy.

use serde_json::json;

use crate::support::{ids, Agent};

#[tokio::test]
async fn client_agent_registers_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("srv1", &dir.path().join("srv1"), &[]);
    server.ready().await;
    let mut client = Agent::client("cli1", &dir.path().join("cli1"), server.server, &[]);
    client.ready().await;

    // The client answers status from the server.
    let (_, _, leader) = client.get("/v1/status/leader").await;
    assert_eq!(leader, json!(format!("127.0.0.1:{}", server.server)));
    let (_, _, me) = client.get("/v1/agent/self").await;
    assert_eq!(me["Config"]["Server"], false);

    let body = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}});
    assert_eq!(
        client
            .put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    // Anti-entropy puts the client's services in the catalog, visible through the server.
    let health = server
        .wait_for(
            "/v1/health/connect/web",
            "client's sidecar on the server",
            |v| v.as_array().is_some_and(|a| a.len() == 1),
        )
        .await;
    assert_eq!(health[0]["Node"]["Node"], "cli1");
    // Reads through the client are forwarded to the server.
    let (_, _, via_client) = client.get("/v1/catalog/service/web").await;
    assert_eq!(ids(&via_client, "/Node"), ["cli1"]);
    let (_, _, members) = client.get("/v1/agent/members").await;
    let mut roles: Vec<(String, String)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_string(),
                m["Tags"]["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("cli1".to_string(), "node".to_string()),
            ("srv1".to_string(), "consul".to_string())
        ]
    );

    // A write through the client lands on the server.
    let entry = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"});
    assert_eq!(client.put("/v1/config", entry.to_string()).await.0, 200);
    let (_, _, got) = server.get("/v1/config/service-defaults/web").await;
    assert_eq!(got["Protocol"], "http");

    // Deregistering on the client removes the rows from the catalog.
    assert_eq!(
        client.put("/v1/agent/service/deregister/web", "").await.0,
        200
    );
    server
        .wait_for("/v1/catalog/service/web", "web gone", |v| v == &json!([]))
        .await;
    server
        .wait_for(
            "/v1/catalog/service/web-sidecar-proxy",
            "sidecar gone",
            |v| v == &json!([]),
        )
        .await;
}

#[tokio::test]
async fn server_state_survives_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("persist", &dir.path().join("data"), &[]);
    server.ready().await;
    for i in 0..50 {
        let reg = json!({"Node": format!("n{i}"), "Address": "127.0.0.1", "Service": {"Service": "db", "ID": format!("db-{i}"), "Port": 5432}});
        assert_eq!(
            server.put("/v1/catalog/register", reg.to_string()).await.0,
            200
        );
    }
    let entry = json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"});
    assert_eq!(server.put("/v1/config", entry.to_string()).await.0, 200);
    let (_, index_before, before) = server.get("/v1/catalog/service/db").await;

    // SIGKILL: no clean shutdown. Everything acknowledged must come back from disk.
    server.restart();
    server.ready().await;
    let (_, index_after, after) = server.get("/v1/catalog/service/db").await;
    assert_eq!(after, before);
    assert_eq!(index_after, index_before);
    let (_, _, cfg) = server.get("/v1/config/service-defaults/db").await;
    assert_eq!(cfg["Protocol"], "tcp");
    // And the restarted server keeps taking writes with higher indexes.
    let reg = json!({"Node": "late", "Address": "127.0.0.1", "Service": {"Service": "db", "ID": "db-late", "Port": 1}});
    assert_eq!(
        server.put("/v1/catalog/register", reg.to_string()).await.0,
        200
    );
    let (_, index_new, _) = server.get("/v1/catalog/service/db").await;
    assert!(index_new > index_after);
}

#[tokio::test]
async fn corrupt_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("raft")).unwrap();
    std::fs::write(
        data.join("raft").join("raft.redb"),
        b"this is not a database",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "agent",
            "--server",
            "--data-dir",
            data.to_str().unwrap(),
            "--node",
            "c",
        ])
        .args(["--http-port", &crate::support::free_port().to_string()])
        .args(["--server-port", &crate::support::free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.redb"), "{err}");
}

#[tokio::test]
async fn anti_entropy_restores_what_a_server_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::dev("mem-server", dir.path());
    server.ready().await;
    let mut client = Agent::client(
        "ae-client",
        &dir.path().join("client"),
        server.server,
        &["--sync-interval", "1s"],
    );
    client.ready().await;
    let body = json!({"Name": "cache", "Port": 6379, "Check": {"TTL": "60s", "Status": "passing"}});
    assert_eq!(
        client
            .put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    server
        .wait_for(
            "/v1/health/service/cache?passing",
            "cache registered",
            |v| v.as_array().is_some_and(|a| a.len() == 1),
        )
        .await;

    // The dev server keeps state in memory: a restart loses everything.
    let (http, port) = (server.http, server.server);
    server.kill();
    drop(server);
    let mut server = Agent::dev_on("mem-server", http, port, dir.path());
    server.ready().await;
    let (_, _, empty) = server.get("/v1/catalog/service/cache").await;
    assert_eq!(empty, json!([]));
    // The client is the truth for its node and puts it back.
    let back = server
        .wait_for("/v1/health/service/cache?passing", "cache re-synced", |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(back[0]["Node"]["Node"], "ae-client");
    // Rows the client does not own are removed from its node on the next sync.
    let stray = json!({"Node": "ae-client", "Address": "127.0.0.1", "Service": {"Service": "stray", "Port": 1}});
    assert_eq!(
        server
            .put("/v1/catalog/register", stray.to_string())
            .await
            .0,
        200
    );
    server
        .wait_for(
            "/v1/catalog/service/stray",
            "stray removed by anti-entropy",
            |v| v == &json!([]),
        )
        .await;
}

#[tokio::test]
async fn restart_recovers_from_snapshot_plus_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server(
        "snap",
        &dir.path().join("data"),
        &["--raft-snapshot-threshold", "16"],
    );
    server.ready().await;
    // Enough writes for several snapshots and purges, then a tail past the last snapshot.
    for i in 0..70 {
        let reg = json!({"Node": format!("n{i}"), "Address": "127.0.0.1", "Service": {"Service": "kv", "ID": format!("kv-{i}"), "Port": 1}});
        assert_eq!(
            server.put("/v1/catalog/register", reg.to_string()).await.0,
            200
        );
    }
    let (_, index, before) = server.get("/v1/catalog/service/kv").await;
    assert_eq!(before.as_array().unwrap().len(), 70);
    server.restart();
    server.ready().await;
    let (_, index_after, after) = server.get("/v1/catalog/service/kv").await;
    assert_eq!(after, before);
    assert_eq!(index_after, index);
    assert!(
        server.log().contains("snapshot written"),
        "no snapshot was taken:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn concurrent_writes_all_land_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("concurrent", &dir.path().join("data"), &[]);
    server.ready().await;
    // 200 writes, 50 in flight at a time: the server batches them into shared Raft entries.
    let http = crate::support::client();
    let url = server.url("/v1/catalog/register");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let reg = json!({"Node": format!("c{i}"), "Address": "127.0.0.1", "Service": {"Service": "conc", "ID": format!("conc-{i}"), "Port": 1}});
            http.put(url).body(reg.to_string()).send().await.unwrap().status().as_u16()
        }));
        if tasks.len() == 50 {
            for t in tasks.drain(..) {
                assert_eq!(t.await.unwrap(), 200);
            }
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, _, all) = server.get("/v1/catalog/service/conc").await;
    assert_eq!(all.as_array().unwrap().len(), 200);
    server.restart();
    server.ready().await;
    let (_, _, after) = server.get("/v1/catalog/service/conc").await;
    assert_eq!(after, all);
}

#[tokio::test]
async fn client_agent_keeps_its_services_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("srv-keep", &dir.path().join("srv"), &[]);
    server.ready().await;
    let mut client = Agent::client("cli-keep", &dir.path().join("cli"), server.server, &[]);
    client.ready().await;
    let body = json!({"Name": "api", "Port": 9000, "Check": {"TTL": "60s", "Status": "passing"}});
    assert_eq!(
        client
            .put("/v1/agent/service/register", body.to_string())
            .await
            .0,
        200
    );
    let (_, _, node_id_before) = client.get("/v1/agent/self").await;
    client.restart();
    client.ready().await;
    let (_, _, services) = client.get("/v1/agent/services").await;
    assert_eq!(services["api"]["Port"], 9000, "{services}");
    let (_, _, me) = client.get("/v1/agent/self").await;
    assert_eq!(
        me["Config"]["NodeID"], node_id_before["Config"]["NodeID"],
        "node ID is kept in the data dir"
    );
    server
        .wait_for(
            "/v1/health/service/api?passing",
            "api still in the catalog",
            |v| v.as_array().is_some_and(|a| a.len() == 1),
        )
        .await;
}
