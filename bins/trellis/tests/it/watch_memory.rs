//! Blocking reads and many-keys watches on random keys (names nobody registers) must not grow
//! the agent: each waiter's registration goes when it leaves. The attack this reproduces grew
//! a dev agent by hundreds of MB, never freed.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, free_port};

/// Many-keys watches in the loop, each on `KEYS_PER_WATCH` fresh random keys.
const WATCHES: usize = 120;
/// The most keys one watch may carry (the server's limit).
const KEYS_PER_WATCH: usize = 4096;
/// Blocking health reads on fresh random service names in the loop.
const READS: usize = 3000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// Allowed RSS growth over the loop. The old registry kept ~0.5 KB per key ever waited on:
/// ~490,000 keys here, well over 200 MB; the fixed one holds only the keys waited on now.
const MAX_GROWTH_KB: u64 = 40 * 1024;

/// A dev agent this test started; killed on drop.
struct DevAgent {
    child: Child,
    http: u16,
    server: u16,
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevAgent {
    async fn start(log: &std::path::Path) -> DevAgent {
        let (http, server) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(["agent", "-dev", "-node", "rss-node"])
            .arg(format!("-http-port={http}"))
            .arg(format!("-server-port={server}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("trellis starts");
        let mut agent = DevAgent {
            child,
            http,
            server,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!(
                    "agent exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let leader = client()
                .get(format!("http://127.0.0.1:{http}/v1/status/leader"))
                .send()
                .await;
            if let Ok(r) = leader {
                if r.json::<Value>()
                    .await
                    .is_ok_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                {
                    return agent;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "agent not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resident memory in KB (VmRSS).
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

/// Fresh names: a per-run seed and a counter, so no two requests share a key.
struct Names {
    seed: u64,
    next: AtomicU64,
}

impl Names {
    fn new() -> Names {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Names {
            seed,
            next: AtomicU64::new(0),
        }
    }

    fn name(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut z = self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("rand-{:016x}-{n}", z ^ (z >> 31))
    }
}

/// `count` watches of `KEYS_PER_WATCH` random keys on the server port and `reads` blocking
/// health reads of random names on the HTTP API, `CONCURRENCY` at a time, each waiting 10 ms.
async fn attack(agent: &DevAgent, names: &Arc<Names>, watches: usize, reads: usize) {
    let http = client();
    let jobs: Vec<bool> = std::iter::repeat_n(true, watches)
        .chain(std::iter::repeat_n(false, reads))
        .collect();
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, names, jobs) = (http.clone(), names.clone(), jobs.clone());
        let (http_port, server_port) = (agent.http, agent.server);
        workers.push(tokio::spawn(async move {
            loop {
                let Some(watch) = jobs.lock().unwrap().pop() else {
                    return;
                };
                if watch {
                    let keys: Vec<Value> = (0..KEYS_PER_WATCH)
                        .map(|_| json!([{"Service": names.name()}, 1]))
                        .collect();
                    let r = http
                        .post(format!("http://127.0.0.1:{server_port}/v1/internal/watch"))
                        .json(&json!({"keys": keys, "wait_ms": 10}))
                        .send()
                        .await
                        .expect("watch request");
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(body["changed"], json!([]));
                } else {
                    let url = format!(
                        "http://127.0.0.1:{http_port}/v1/health/service/{}?index=1&wait=10ms",
                        names.name()
                    );
                    let r = http.get(url).send().await.expect("blocking read");
                    assert_eq!(r.status(), 200);
                    assert_eq!(r.text().await.unwrap(), "[]");
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

/// A loop of ~490,000 random watched keys and 3,000 random blocking reads leaves the agent's
/// RSS within `MAX_GROWTH_KB` of where a warm-up left it.
#[tokio::test]
async fn blocking_reads_on_random_keys_do_not_grow_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let agent = DevAgent::start(&log).await;
    let names = Arc::new(Names::new());
    let before = agent.rss_kb();
    // Warm-up: the same traffic, small, so pools, caches and thread stacks are in place.
    attack(&agent, &names, 2 * CONCURRENCY, 200).await;
    let warm = agent.rss_kb();
    let started = Instant::now();
    attack(&agent, &names, WATCHES, READS).await;
    let after = agent.rss_kb();
    eprintln!(
        "agent RSS: {before} KB at start, {warm} KB after warm-up, {after} KB after {WATCHES} \
         watches of {KEYS_PER_WATCH} keys and {READS} reads ({:.1?})",
        started.elapsed()
    );
    assert!(
        after.saturating_sub(warm) < MAX_GROWTH_KB,
        "the agent grew by {} KB (from {warm} KB to {after} KB) on random keys",
        after.saturating_sub(warm)
    );
}

/// The server port refuses a watch on more keys than one may carry with a 400 that says so
/// (the typed body every server-port error has), and takes one at the limit.
#[tokio::test]
async fn a_watch_on_too_many_keys_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let agent = DevAgent::start(&dir.path().join("agent.log")).await;
    let names = Names::new();
    let watch = |n: usize| {
        let keys: Vec<Value> = (0..n)
            .map(|_| json!([{"Service": names.name()}, 1]))
            .collect();
        client()
            .post(format!(
                "http://127.0.0.1:{}/v1/internal/watch",
                agent.server
            ))
            .json(&json!({"keys": keys, "wait_ms": 10}))
            .send()
    };
    let r = watch(KEYS_PER_WATCH + 1).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({
            "Code": "BadRequest",
            "Message": format!(
                "a watch may carry at most {KEYS_PER_WATCH} keys, not {}",
                KEYS_PER_WATCH + 1
            )
        })
    );
    assert_eq!(watch(KEYS_PER_WATCH).await.unwrap().status(), 200);
}
