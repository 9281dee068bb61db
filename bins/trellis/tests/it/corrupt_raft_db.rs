//! A server's `raft.redb` with a page of random bytes in it: the server refuses to start with
//! the documented error (the file's path and redb's reason), not a panic in the storage
//! library.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, free_port, Agent};

const PAGE: usize = 4096;
const MARKER: &[u8] = b"page-marker-node";

/// Starts `trellis agent -server` on `data` and waits until it exits or serves with a leader
/// (the corruption hit a page nothing uses). Returns the exit code (`None`: it started) and
/// its stderr.
async fn start_server(data: &Path, stderr: &Path) -> (Option<i32>, String) {
    let http = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "agent",
            "-server",
            "-bootstrap-expect",
            "1",
            "-node",
            "corrupt",
        ])
        .arg("-data-dir")
        .arg(data)
        .arg(format!("-http-port={http}"))
        .arg(format!("-server-port={}", free_port()))
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("trellis starts");
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.code().unwrap_or(-1));
        }
        let leader = client()
            .get(format!("http://127.0.0.1:{http}/v1/status/leader"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if let Ok(r) = leader {
            if r.json::<Value>()
                .await
                .is_ok_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server neither started nor exited:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (code, std::fs::read_to_string(stderr).unwrap_or_default())
}

/// xorshift64 with a fixed seed: the same "random" bytes every run.
fn random_page(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..PAGE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A server's data dir holding a catalog, closed cleanly (as redb leaves a file it closed: a
/// clean file is trusted at open, where a crash image is checked), then one page of random
/// bytes: in the header, and in pages holding the catalog. Every start that does not succeed
/// (the bytes may land in a free page) exits non-zero with "cannot open Raft database <path>"
/// and no panic; the header and at least one data page are refused.
#[tokio::test]
async fn a_page_of_random_bytes_in_raft_redb_stops_the_server_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Agent::server("corrupt", &data, &[]);
    server.ready().await;
    for i in 0..40 {
        let node = format!("{}-{i}", String::from_utf8_lossy(MARKER));
        let reg = json!({"Node": node, "Address": "127.0.0.1",
            "Service": {"Service": format!("svc-{i}"), "Port": 8000 + i}});
        assert_eq!(
            server.put("/v1/catalog/register", reg.to_string()).await.0,
            200
        );
    }
    server.kill();
    let db = data.join("raft").join("raft.redb");
    // A killed server leaves a crash image; let redb recover it and close it cleanly.
    drop(trellis_raft::open_db(&db).expect("the server's database opens"));
    let clean = std::fs::read(&db).unwrap();

    // The header page, and (up to) four pages holding the catalog's records.
    let mut pages = vec![0];
    pages.extend(
        clean
            .chunks(PAGE)
            .enumerate()
            .filter(|(_, page)| page.windows(MARKER.len()).any(|w| w == MARKER))
            .map(|(i, _)| i)
            .take(4),
    );
    assert!(pages.len() > 1, "no page holds the catalog");
    let mut refused = Vec::new();
    for &page in &pages {
        let mut bytes = clean.clone();
        bytes[page * PAGE..(page + 1) * PAGE].copy_from_slice(&random_page(page as u64 + 7));
        std::fs::write(&db, &bytes).unwrap();
        let (code, stderr) = start_server(&data, &dir.path().join(format!("{page}.err"))).await;
        assert!(
            !stderr.contains("panicked"),
            "page {page}: the server panicked:\n{stderr}"
        );
        if let Some(code) = code {
            assert_ne!(code, 0, "page {page}: exited 0:\n{stderr}");
            let want = format!("cannot open Raft database {}: ", db.display());
            assert!(stderr.contains(&want), "page {page}: {stderr}");
            refused.push(page);
        }
    }
    assert!(
        refused.contains(&0) && refused.len() > 1,
        "refused {refused:?} of {pages:?}"
    );
}
