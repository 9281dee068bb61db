//! Blocking queries against a real agent: wake on change, time out unchanged, ignore others.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::Agent;

fn reg(node: &str, id: &str, name: &str) -> String {
    json!({"Node": node, "Address": "127.0.0.1", "Service": {"ID": id, "Service": name, "Port": 1}})
        .to_string()
}

#[tokio::test]
async fn blocking_query_wakes_on_change_and_times_out_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("block-node", dir.path());
    a.ready().await;
    assert_eq!(
        a.put("/v1/catalog/register", reg("n1", "web-1", "web"))
            .await
            .0,
        200
    );
    let (_, index, _) = a.get("/v1/health/service/web").await;
    assert!(index >= 1);

    // A write to the watched service wakes the query well before its wait.
    let waiter = {
        let url = format!("/v1/health/service/web?index={index}&wait=20s");
        let http = a.http;
        tokio::spawn(async move {
            let started = Instant::now();
            let r = crate::support::client()
                .get(format!("http://127.0.0.1:{http}{url}"))
                .send()
                .await
                .unwrap();
            let idx: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: serde_json::Value = r.json().await.unwrap();
            (started.elapsed(), idx, body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.put("/v1/catalog/register", reg("n2", "web-2", "web"))
            .await
            .0,
        200
    );
    let (took, new_index, body) = waiter.await.unwrap();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(new_index > index);
    assert_eq!(body.as_array().unwrap().len(), 2);

    // Writes elsewhere (another service, a config entry) do not wake it: it runs to its wait
    // and returns the same index.
    let started = Instant::now();
    let unrelated = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            a.put("/v1/catalog/register", reg("n3", "db-1", "db"))
                .await
                .0,
            200
        );
        let entry =
            json!({"Kind": "service-defaults", "Name": "db", "Protocol": "http"}).to_string();
        assert_eq!(a.put("/v1/config", entry).await.0, 200);
    };
    let path = format!("/v1/health/service/web?index={new_index}&wait=2s");
    let (blocked, ()) = tokio::join!(a.get(&path), unrelated);
    let elapsed = started.elapsed();
    assert_eq!(blocked.1, new_index, "index unchanged after a timeout");
    assert!(
        elapsed >= Duration::from_secs(2),
        "woke early after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2000 + 2000 / 16 + 1500),
        "waited too long: {elapsed:?}"
    );

    // Every read endpoint answers with an index, never 0.
    for path in [
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/health/service/none",
        "/v1/config/proxy-defaults",
    ] {
        let (status, idx, _) = a.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(idx >= 1, "{path} index {idx}");
    }
}
