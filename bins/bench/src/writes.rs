//! Catalog writes: registration throughput (`writes`) and bulk population (`populate`).
//!
//! Both send `PUT /v1/catalog/register` from a fixed number of workers, each with its request
//! in flight at a time, over reqwest's keep-alive pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::stats::{percentile, round3};

/// Flags of `trellis-bench writes`.
#[derive(clap::Args, Debug)]
pub struct WritesArgs {
    /// The agent's HTTP address, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// Number of registrations.
    #[arg(long)]
    pub n: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Prefix of the node and service names, so that runs register distinct nodes.
    #[arg(long, default_value = "write")]
    pub prefix: String,
}

/// Flags of `trellis-bench populate`.
#[derive(clap::Args, Debug)]
pub struct PopulateArgs {
    /// The agent's HTTP address, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// Number of services (each gets its own node and a connect-proxy sidecar).
    #[arg(long)]
    pub services: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// ACL token sent with each registration (an agent enforcing ACLs).
    #[arg(long)]
    pub token: Option<String>,
}

/// Latencies (ms) of the successful requests, the error count, and the wall time.
struct PutRun {
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

/// Sends `n` registrations, the i-th with body `body(i)`, `concurrency` at a time.
async fn put_registrations(
    addr: &str,
    n: usize,
    concurrency: usize,
    token: Option<&str>,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> anyhow::Result<PutRun> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            "x-consul-token",
            reqwest::header::HeaderValue::from_str(t).context("the token is not a header value")?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("building the HTTP client")?;
    let url: Arc<str> = format!("http://{addr}/v1/catalog/register").into();
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let payload = body(i).to_string();
                let t = Instant::now();
                let result = async {
                    let resp = client.put(&*url).body(payload).send().await?;
                    let status = resp.status();
                    let text = resp.text().await?;
                    Ok::<_, reqwest::Error>((status, text))
                }
                .await;
                match result {
                    Ok((status, text)) if status.is_success() && text.trim() == "true" => {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok((status, text)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{status}: {}", text.trim()));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut run = PutRun {
        latencies: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(done) = workers.join_next().await {
        let (latencies, errors, first_error) = done.context("a worker panicked")?;
        run.latencies.extend(latencies);
        run.errors += errors;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run.elapsed = start.elapsed();
    run.latencies.sort_by(f64::total_cmp);
    Ok(run)
}

/// Runs the write benchmark and prints its JSON summary.
pub async fn run_writes(args: WritesArgs) -> anyhow::Result<()> {
    let prefix = args.prefix.clone();
    let run = put_registrations(&args.addr, args.n, args.concurrency, None, move |i| {
        json!({
            "Node": format!("{prefix}-node-{i}"),
            "Address": format!("127.1.{}.{}", (i / 250) % 250, i % 250 + 1),
            "Service": {
                "ID": format!("{prefix}-svc-{i}"),
                "Service": format!("{prefix}-svc"),
                "Port": 8080,
            },
        })
    })
    .await?;
    let secs = run.elapsed.as_secs_f64();
    let out = json!({
        "n": args.n,
        "concurrency": args.concurrency,
        "elapsed_s": round3(secs),
        "registrations_per_sec": round3(run.latencies.len() as f64 / secs),
        "p50_ms": percentile(&run.latencies, 50.0).map(round3),
        "p99_ms": percentile(&run.latencies, 99.0).map(round3),
        "max_ms": run.latencies.last().copied().map(round3),
        "errors": run.errors,
        "first_error": run.first_error,
    });
    println!("{out}");
    Ok(())
}

/// Runs `populate` and prints a JSON summary; fails if any registration failed.
pub async fn run_populate(args: PopulateArgs) -> anyhow::Result<()> {
    let token = args.token.as_deref();
    let run = put_registrations(
        &args.addr,
        args.services * 2,
        args.concurrency,
        token,
        |k| {
            let i = k / 2;
            let node = format!("bench-node-{i}");
            let address = format!("127.2.{}.{}", (i / 250) % 250, i % 250 + 1);
            let name = format!("svc-{i}");
            if k % 2 == 0 {
                json!({
                    "Node": node,
                    "Address": address,
                    "Service": {"ID": name, "Service": name, "Port": 8080, "Tags": ["bench"]},
                })
            } else {
                let proxy = format!("{name}-sidecar-proxy");
                json!({
                    "Node": node,
                    "Address": address,
                    "Service": {
                        "Kind": "connect-proxy",
                        "ID": proxy,
                        "Service": proxy,
                        "Port": 21000,
                        "Proxy": {
                            "DestinationServiceName": name,
                            "DestinationServiceID": name,
                            "LocalServiceAddress": "127.0.0.1",
                            "LocalServicePort": 8080,
                        },
                    },
                    "Check": {
                        "Node": node,
                        "CheckID": format!("service:{proxy}"),
                        "Name": "Connect Sidecar Listening",
                        "Status": "passing",
                        "ServiceID": proxy,
                    },
                })
            }
        },
    )
    .await?;
    let out = json!({
        "services": args.services,
        "registrations": args.services * 2,
        "elapsed_s": round3(run.elapsed.as_secs_f64()),
        "errors": run.errors,
        "first_error": run.first_error,
    });
    println!("{out}");
    if run.errors > 0 {
        bail!("{} registrations failed", run.errors);
    }
    Ok(())
}
