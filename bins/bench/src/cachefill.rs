//! Fills one agent the way a host running N Connect services does, and reports the agent's
//! memory per service: each service registered with a sidecar and one upstream, its leaf
//! issued, an authorization decided for it (its intentions cached), and its upstream's
//! discovery read through the cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::stats::{round3, rss_kb};

/// Arguments of `trellis-bench cachefill`.
#[derive(clap::Args, Debug)]
pub struct CachefillArgs {
    /// The agent's HTTP address (host:port).
    #[arg(long)]
    pub addr: String,
    /// The agent's process ID, for its resident memory.
    #[arg(long)]
    pub pid: u32,
    /// The CA's trust domain (for the authorize requests' client URIs).
    #[arg(long = "trust-domain")]
    pub trust_domain: String,
    /// Number of services.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds to wait after the fill before reading memory: the allocator returns freed
    /// pages to the system over about ten seconds, and RSS before that counts them.
    #[arg(long = "settle-secs", default_value_t = 20)]
    pub settle_secs: u64,
    /// Do each step for every service before the next step, reading memory after each
    /// (settled), to see what each kind of cached data costs.
    #[arg(long)]
    pub staged: bool,
}

/// One of the four things done for each service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Register it with a sidecar and one upstream.
    Register,
    /// Have its leaf issued.
    Leaf,
    /// Decide one authorization for it (its intentions cached).
    Authorize,
    /// Read its upstream's discovery through the cache.
    Discovery,
}

impl Step {
    const ALL: [Step; 4] = [Step::Register, Step::Leaf, Step::Authorize, Step::Discovery];

    fn name(self) -> &'static str {
        match self {
            Step::Register => "register",
            Step::Leaf => "leaf",
            Step::Authorize => "authorize",
            Step::Discovery => "discovery",
        }
    }
}

/// Does `steps` for service `i`; returns the leaf's certificate and key bytes (0 without
/// the leaf step).
async fn fill_one(
    client: &reqwest::Client,
    base: &str,
    td: &str,
    n: usize,
    i: usize,
    steps: &[Step],
) -> anyhow::Result<usize> {
    let name = format!("svc-{i}");
    let upstream = format!("svc-{}", (i + 1) % n);
    let caller = format!("svc-{}", (i + n - 1) % n);
    let ok = |r: reqwest::Response, what: &'static str| async move {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{what}: {status}: {}", text.trim());
        }
        Ok::<String, anyhow::Error>(text)
    };
    let mut cert_bytes = 0;
    for &step in steps {
        let request = match step {
            Step::Register => {
                let reg = json!({
                    "Name": name, "Port": 8080,
                    "Connect": {"SidecarService": {"Port": 30000 + (i % 30000),
                        "Proxy": {"Upstreams": [{"DestinationName": upstream, "LocalBindPort": 9191}]}}},
                });
                client
                    .put(format!("{base}/v1/agent/service/register"))
                    .body(reg.to_string())
            }
            Step::Leaf => client.get(format!("{base}/v1/agent/connect/ca/leaf/{name}")),
            Step::Authorize => {
                let authz = json!({
                    "Target": name,
                    "ClientCertURI": format!("spiffe://{td}/ns/default/dc/dc1/svc/{caller}"),
                });
                client
                    .post(format!("{base}/v1/agent/connect/authorize"))
                    .body(authz.to_string())
            }
            Step::Discovery => client.get(format!("{base}/v1/health/connect/{upstream}?cached")),
        };
        let text = ok(request.send().await?, step.name()).await?;
        if step == Step::Leaf {
            let leaf: Value = serde_json::from_str(&text)?;
            cert_bytes = leaf["CertPEM"].as_str().map_or(0, str::len)
                + leaf["PrivateKeyPEM"].as_str().map_or(0, str::len);
        }
    }
    Ok(cert_bytes)
}

/// Runs `steps` for every service with `concurrency` requests in flight; returns the
/// certificate bytes, the errors and the first error.
async fn fill_all(
    client: &reqwest::Client,
    base: &Arc<str>,
    td: &Arc<str>,
    n: usize,
    concurrency: usize,
    steps: &'static [Step],
) -> anyhow::Result<(usize, usize, Option<String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, base, td, next) = (client.clone(), base.clone(), td.clone(), next.clone());
        workers.spawn(async move {
            let (mut cert_bytes, mut errors, mut first_error) = (0usize, 0usize, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match fill_one(&client, &base, &td, n, i, steps).await {
                    Ok(b) => cert_bytes += b,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (cert_bytes, errors, first_error)
        });
    }
    let (mut cert_bytes, mut errors, mut first_error) = (0usize, 0usize, None);
    while let Some(done) = workers.join_next().await {
        let (c, e, f) = done.context("a worker panicked")?;
        cert_bytes += c;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok((cert_bytes, errors, first_error))
}

/// Runs the fill and prints one JSON line.
pub async fn run(args: CachefillArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("building the HTTP client")?;
    let base: Arc<str> = format!("http://{}", args.addr).into();
    let td: Arc<str> = args.trust_domain.clone().into();
    let rss_before = rss_kb(args.pid)?;
    let start = Instant::now();
    let mut stages = Vec::new();
    let (mut cert_bytes, mut errors, mut first_error) = (0usize, 0usize, None);
    let plan: Vec<&'static [Step]> = if args.staged {
        Step::ALL.chunks(1).collect()
    } else {
        vec![&Step::ALL]
    };
    let last = plan.len() - 1;
    for (k, steps) in plan.into_iter().enumerate() {
        let (c, e, f) = fill_all(&client, &base, &td, args.n, args.concurrency, steps).await?;
        cert_bytes += c;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
        if args.staged && k != last {
            tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
            let rss = rss_kb(args.pid)?;
            stages.push(json!({"after": steps[0].name(), "rss_kb": rss,
                "bytes_per_service": ((rss.saturating_sub(rss_before) * 1024) as f64 / args.n as f64).round()}));
        }
    }
    let elapsed = start.elapsed();
    // Memory right after the fill still counts pages the allocator has freed but not yet
    // returned; the settled figure is the one to compare.
    let rss_at_end = rss_kb(args.pid)?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_after = rss_kb(args.pid)?;
    let per_service = (rss_after.saturating_sub(rss_before) * 1024) as f64 / args.n as f64;
    let cert_per_service = cert_bytes as f64 / args.n.max(1) as f64;
    let out = json!({
        "services": args.n,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "rss_before_kb": rss_before,
        "rss_at_end_of_fill_kb": rss_at_end,
        "settle_s": args.settle_secs,
        "rss_after_kb": rss_after,
        "bytes_per_service": per_service.round(),
        "certificate_bytes_per_service": cert_per_service.round(),
        "bytes_per_service_beyond_certificates": (per_service - cert_per_service).round(),
        "errors": errors,
        "first_error": first_error,
    });
    let mut out = out;
    if args.staged {
        out["stages"] = Value::Array(stages);
    }
    println!("{out}");
    if errors > 0 {
        bail!("{errors} services failed");
    }
    Ok(())
}
