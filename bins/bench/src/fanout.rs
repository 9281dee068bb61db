//! Blocking-query fan-out: N watchers of one service, one write, how long until all N know.
//!
//! Each watcher is its own TCP connection carrying one
//! `GET /v1/health/service/NAME?index=I&wait=60s`, where I is the service's current
//! `X-Consul-Index`. Once all are parked (sent, and a settling pause for the agent to take them
//! up), the agent's RSS is read again, one catalog registration adds an instance of the service
//! on a throwaway node, and the time from sending that write until each watcher's answer (with
//! a larger index) is recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::http1;
use crate::stats::{open_files_limit, percentile, round3, rss_kb};

/// Flags of `trellis-bench fanout`.
#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// The agent's HTTP address, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// The service the watchers watch; it should exist already.
    #[arg(long)]
    pub service: String,
    /// Number of concurrent blocking queries (one TCP connection each).
    #[arg(long)]
    pub n: usize,
    /// The agent's process ID, to read its resident memory from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// `wait` of each blocking query (Go duration); longer than the whole measurement.
    #[arg(long, default_value = "60s")]
    pub wait: String,
    /// Pause after the last query is sent, before the write, for the agent to park them all.
    #[arg(long = "settle-ms", default_value_t = 2000)]
    pub settle_ms: u64,
    /// Connections being opened at once (all stay open; this only paces the opening).
    #[arg(long = "connect-concurrency", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds after the write before unanswered watchers count as errors.
    #[arg(long = "timeout-secs", default_value_t = 30)]
    pub timeout_secs: u64,
}

/// What became of one watcher.
enum Outcome {
    /// An answer arrived at `at`.
    Answered {
        at: Instant,
        status: u16,
        index: Option<u64>,
    },
    /// The request could not be made; the name says at which step.
    Failed(&'static str),
}

/// One watcher: connect, send, count itself parked, wait for the answer.
async fn watch(
    addr: Arc<str>,
    path: Arc<str>,
    opening: Arc<Semaphore>,
    parked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> Outcome {
    let permit = opening.acquire_owned().await;
    let fail = |what: &'static str| {
        failed.fetch_add(1, Ordering::SeqCst);
        Outcome::Failed(what)
    };
    let mut stream = match TcpStream::connect(&*addr).await {
        Ok(s) => s,
        Err(_) => return fail("connect"),
    };
    if http1::send_request(&mut stream, "GET", &addr, &path, None)
        .await
        .is_err()
    {
        return fail("send");
    }
    parked.fetch_add(1, Ordering::SeqCst);
    drop(permit);
    match http1::read_response(&mut stream).await {
        Ok(r) => Outcome::Answered {
            at: Instant::now(),
            status: r.status,
            index: r.consul_index(),
        },
        Err(_) => Outcome::Failed("read"),
    }
}

/// Runs the fan-out benchmark and prints its JSON summary.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    if let Some(limit) = open_files_limit() {
        let need = args.n as u64 + 64;
        if limit < need {
            bail!(
                "open-files limit is {limit}, {need} needed for {} connections: raise it with \
                 `ulimit -n` (the agent needs as many)",
                args.n
            );
        }
    }
    let first = http1::request(
        &args.addr,
        "GET",
        &format!("/v1/health/service/{}", args.service),
        None,
    )
    .await
    .with_context(|| format!("first read from {}", args.addr))?;
    if first.status != 200 {
        bail!("first read answered {}", first.status);
    }
    let index = first
        .consul_index()
        .context("first read has no X-Consul-Index")?;
    let rss_before = args.pid.map(rss_kb).transpose()?;

    let addr: Arc<str> = args.addr.clone().into();
    let path: Arc<str> = format!(
        "/v1/health/service/{}?index={index}&wait={}",
        args.service, args.wait
    )
    .into();
    let opening = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let parked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut watchers = JoinSet::new();
    let open_start = Instant::now();
    for _ in 0..args.n {
        watchers.spawn(watch(
            addr.clone(),
            path.clone(),
            opening.clone(),
            parked.clone(),
            failed.clone(),
        ));
    }
    let open_deadline = Instant::now() + Duration::from_secs(120);
    while parked.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < args.n {
        if Instant::now() > open_deadline {
            bail!(
                "only {} of {} queries sent after 120 s",
                parked.load(Ordering::SeqCst),
                args.n
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_ms = open_start.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_waiting = args.pid.map(rss_kb).transpose()?;

    // The one write: a new instance of the service on a throwaway node.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let reg = json!({
        "Node": "bench-fanout-writer",
        "Address": "127.0.0.2",
        "Service": {
            "ID": format!("{}-fanout-{nanos}", args.service),
            "Service": args.service,
            "Port": 9999,
        },
    })
    .to_string();
    let t0 = Instant::now();
    let write = http1::request(
        &args.addr,
        "PUT",
        "/v1/catalog/register",
        Some(reg.as_bytes()),
    )
    .await
    .context("the write")?;
    let write_ms = t0.elapsed().as_secs_f64() * 1e3;
    if write.status != 200 {
        bail!(
            "the write answered {}: {}",
            write.status,
            String::from_utf8_lossy(&write.body)
        );
    }

    let mut errors: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut times: Vec<f64> = Vec::with_capacity(args.n);
    let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(args.timeout_secs));
    loop {
        match tokio::time::timeout_at(deadline, watchers.join_next()).await {
            Ok(None) => break,
            Ok(Some(Err(_))) => *errors.entry("panic").or_default() += 1,
            Ok(Some(Ok(Outcome::Failed(what)))) => *errors.entry(what).or_default() += 1,
            Ok(Some(Ok(Outcome::Answered {
                at,
                status,
                index: got,
            }))) => {
                if at < t0 {
                    *errors.entry("answered_before_write").or_default() += 1;
                } else if status != 200 {
                    *errors.entry("status").or_default() += 1;
                } else if got.is_none_or(|g| g <= index) {
                    *errors.entry("index_not_larger").or_default() += 1;
                } else {
                    times.push((at - t0).as_secs_f64() * 1e3);
                }
            }
            Err(_) => {
                *errors.entry("timeout").or_default() += watchers.len();
                watchers.abort_all();
                break;
            }
        }
    }
    let rss_after = args.pid.map(rss_kb).transpose()?;
    times.sort_by(f64::total_cmp);
    let error_count: usize = errors.values().sum();
    let max = times.last().copied();
    let bytes_per_waiting = match (rss_before, rss_waiting) {
        (Some(b), Some(w)) => Some((w as f64 - b as f64) * 1024.0 / args.n as f64),
        _ => None,
    };
    let out = json!({
        "n": args.n,
        "all_answered_ms": if error_count == 0 { max.map(round3) } else { None },
        "p50_answer_ms": percentile(&times, 50.0).map(round3),
        "p99_answer_ms": percentile(&times, 99.0).map(round3),
        "max_answer_ms": max.map(round3),
        "answered": times.len(),
        "write_ms": round3(write_ms),
        "open_ms": round3(open_ms),
        "index_before": index,
        "rss_before_kb": rss_before,
        "rss_waiting_kb": rss_waiting,
        "rss_after_kb": rss_after,
        "bytes_per_waiting_query": bytes_per_waiting.map(f64::round),
        "errors": error_count,
        "error_kinds": errors,
    });
    println!("{out}");
    Ok(())
}
