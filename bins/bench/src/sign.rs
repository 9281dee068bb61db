//! `sign`: leaf signing through a server's signing RPC, per CPU-second of the server process,
//! against the raw ECDSA P-256 sign+verify rate of the same library on one core, same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde_json::json;

use crate::stats::{percentile, round3};

/// Arguments of `sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The server's server-port address (`host:port`).
    #[arg(long)]
    addr: String,
    /// The datacenter's trust domain (`<cluster-id>.consul`).
    #[arg(long = "trust-domain")]
    trust_domain: String,
    /// Number of leafs to sign.
    #[arg(long, default_value_t = 5000)]
    n: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The server's process ID, to read its CPU time.
    #[arg(long)]
    pid: u32,
}

/// CPU seconds (user + system) a process has used, from /proc (USER_HZ = 100).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// ECDSA P-256 sign + verify per second on this thread, for `dur`.
fn raw_rate(dur: Duration) -> f64 {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).expect("key");
    let public = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    let msg = [7u8; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        let sig = key.sign(&rng, &msg).expect("sign");
        public.verify(&msg, sig.as_ref()).expect("verify");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Runs the signing benchmark and prints its JSON summary.
pub async fn run(args: SignArgs) -> anyhow::Result<()> {
    let csrs: Vec<String> = (0..args.n)
        .map(|i| {
            let uri = format!(
                "spiffe://{}/ns/default/dc/dc1/svc/svc-{i}",
                args.trust_domain
            );
            trellis_ca::leaf_key_and_csr(&uri).map(|k| k.csr_pem)
        })
        .collect::<Result<_, _>>()?;
    let raw = raw_rate(Duration::from_secs(2));
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/v1/internal/ca/sign", args.addr);
    let cpu_before = cpu_seconds(args.pid)?;
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let per = args.n.div_ceil(args.concurrency);
    for chunk in csrs.chunks(per) {
        let (http, url, chunk) = (http.clone(), url.clone(), chunk.to_vec());
        workers.spawn(async move {
            let mut lat = Vec::with_capacity(chunk.len());
            let mut errors = 0usize;
            for csr in chunk {
                let t = Instant::now();
                match http.post(&url).json(&json!({"csr": csr})).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        let (l, e) = done?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(args.pid)? - cpu_before;
    lat.sort_by(f64::total_cmp);
    let per_cpu = lat.len() as f64 / cpu.max(0.01);
    println!(
        "{}",
        json!({
            "n": args.n,
            "concurrency": args.concurrency,
            "signed": lat.len(),
            "errors": errors,
            "signs_per_sec": round3(lat.len() as f64 / elapsed),
            "server_cpu_s": round3(cpu),
            "signs_per_server_cpu_s": round3(per_cpu),
            "raw_sign_verify_per_s_one_core": round3(raw),
            "ratio_to_raw": round3(per_cpu / raw),
            "p50_ms": percentile(&lat, 50.0).map(round3),
            "p99_ms": percentile(&lat, 99.0).map(round3),
        })
    );
    Ok(())
}
