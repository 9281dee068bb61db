//! Root rotation with N leafs on one agent: how the re-issue spreads over time, and whether
//! the server's CSR limit holds.
//!
//! 1. A leaf is fetched for each of `svc-0..svc-N` (no index, a bounded number in flight),
//!    and its index and the root that signed it (the leaf's authority key ID against the
//!    roots' `SigningKeyID`) are recorded. The CSR limit is lifted for this fill (it would
//!    only make the fill take N / limit seconds) and put back as it was before step 2.
//! 2. N blocking watchers are parked, one per service and each on its own HTTP/1.1
//!    connection: `GET /v1/agent/connect/ca/leaf/svc-i?index=I&wait=10m`.
//! 3. The root is rotated by a CA configuration change of the key size (EC 256 <-> 384);
//!    T0 is when that PUT returned.
//! 4. Each watcher's new leaf is timed from T0 and checked: a higher index, its authority key
//!    ID equal to the new root's, and its signature verified with the new root's key. Its
//!    notBefore plus the CA's backdating gives the second the server signed it.
//! 5. The report: the time until all N re-issued, arrivals per bucket and their percentiles,
//!    leafs signed per second against `CSRMaxPerSecond`, watchers that never saw a
//!    new-root leaf, and errors. A text report, then one JSON line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use x509_parser::extensions::ParsedExtension;
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

use crate::http1;
use crate::stats::{open_files_limit, percentile, round3, rss_kb};

/// How far the built-in CA backdates a leaf's notBefore (`BACKDATE` in crates/ca/src/keyed.rs):
/// the second a leaf was signed is its notBefore plus this.
const CA_BACKDATE_SECS: i64 = 60;

/// Flags of `trellis-bench rotation`.
#[derive(clap::Args, Debug)]
pub struct RotationArgs {
    /// The agent's HTTP address, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// Number of services, each with one leaf and one blocking watcher.
    #[arg(long, default_value_t = 10_000)]
    pub leafs: usize,
    /// Seconds after the rotation before watchers without a new-root leaf count as missing.
    #[arg(long = "timeout-secs", default_value_t = 600)]
    pub timeout_secs: u64,
    /// Leaf requests in flight during the fill, and connections opened at once for the
    /// watchers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Pause after the last watcher is sent, before the rotation, for the agent to park them.
    #[arg(long = "settle-ms", default_value_t = 3000)]
    pub settle_ms: u64,
    /// Width of the arrival histogram's buckets, in seconds.
    #[arg(long = "bucket-secs", default_value_t = 5)]
    pub bucket_secs: u64,
    /// Keep the CSR limit during the fill too (the fill then takes N / limit seconds).
    #[arg(long = "keep-limit-during-fill")]
    pub keep_limit_during_fill: bool,
    /// The agent's root-change jitter window in seconds (`--leaf-root-change-jitter`); only
    /// for the comparison in the report.
    #[arg(long = "jitter-secs", default_value_t = 30)]
    pub jitter_secs: u64,
    /// The agent's process ID, for its CPU time and resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What the bench needs from a certificate.
struct CertFacts {
    /// Colon-hex authority key ID (empty if absent).
    aki: String,
    /// Unix seconds of notBefore.
    not_before: i64,
    /// The signed part (DER).
    tbs: Vec<u8>,
    /// The signature bytes.
    signature: Vec<u8>,
    /// The signature algorithm's OID, dotted.
    signature_oid: String,
}

/// A root's public key, ready for verification.
struct RootKey {
    /// The key bits of the SubjectPublicKeyInfo (EC point or RSAPublicKey DER).
    key: Vec<u8>,
    /// `ec256`, `ec384` or `rsa`.
    kind: &'static str,
}

/// The first certificate of a PEM chain, as DER.
fn first_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .context("no PEM block")?
        .map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
    Ok(block.contents)
}

fn cert_facts(pem: &str) -> anyhow::Result<CertFacts> {
    let der = first_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a
                .key_identifier
                .as_ref()
                .map(|k| trellis_ca::colon_hex(k.0)),
            _ => None,
        })
        .unwrap_or_default();
    Ok(CertFacts {
        aki,
        not_before: cert.validity().not_before.timestamp(),
        tbs: cert.tbs_certificate.as_ref().to_vec(),
        signature: cert.signature_value.data.to_vec(),
        signature_oid: cert.signature_algorithm.algorithm.to_id_string(),
    })
}

fn root_key(pem: &str) -> anyhow::Result<RootKey> {
    let der = first_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("bad root certificate: {e}"))?;
    let spki = cert.public_key();
    let kind = match spki.parsed() {
        Ok(PublicKey::EC(p)) if p.key_size() == 256 => "ec256",
        Ok(PublicKey::EC(p)) if p.key_size() == 384 => "ec384",
        Ok(PublicKey::RSA(_)) => "rsa",
        _ => bail!("unsupported root key"),
    };
    Ok(RootKey {
        key: spki.subject_public_key.data.to_vec(),
        kind,
    })
}

/// Whether `leaf`'s signature verifies with `root`'s key.
fn verify(leaf: &CertFacts, root: &RootKey) -> bool {
    use aws_lc_rs::signature as sig;
    let alg: &dyn sig::VerificationAlgorithm = match (leaf.signature_oid.as_str(), root.kind) {
        ("1.2.840.10045.4.3.2", "ec256") => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", "ec256") => &sig::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", "ec384") => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", "ec384") => &sig::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.113549.1.1.11", "rsa") => &sig::RSA_PKCS1_2048_8192_SHA256,
        _ => return false,
    };
    sig::UnparsedPublicKey::new(alg, &root.key)
        .verify(&leaf.tbs, &leaf.signature)
        .is_ok()
}

/// CPU seconds (user + system) of a process, from /proc (USER_HZ = 100).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn unix_secs_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A number from a CA `Config` value: a JSON number or a numeric string.
fn config_number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The roots as the bench needs them.
struct Roots {
    active_id: String,
    /// `ID` -> (`SigningKeyID`, root PEM).
    by_id: BTreeMap<String, (String, String)>,
}

impl Roots {
    /// The ID of the root whose signing key ID is `aki`.
    fn root_of(&self, aki: &str) -> Option<&str> {
        self.by_id
            .iter()
            .find(|(_, (skid, _))| skid == aki)
            .map(|(id, _)| id.as_str())
    }

    fn signing_key_id(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(|(skid, _)| skid.as_str())
    }
}

/// GETs `path` and parses its body as JSON (the status must be 200).
async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<Value> {
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("GET {path}: body is not JSON"))
}

async fn roots(client: &reqwest::Client, base: &str) -> anyhow::Result<Roots> {
    let v = get_json(client, base, "/v1/connect/ca/roots").await?;
    let active_id = v["ActiveRootID"].as_str().unwrap_or_default().to_string();
    let mut by_id = BTreeMap::new();
    for r in v["Roots"].as_array().into_iter().flatten() {
        by_id.insert(
            r["ID"].as_str().unwrap_or_default().to_string(),
            (
                r["SigningKeyID"].as_str().unwrap_or_default().to_string(),
                r["RootCert"].as_str().unwrap_or_default().to_string(),
            ),
        );
    }
    if active_id.is_empty() || !by_id.contains_key(&active_id) {
        bail!("the CA has no active root yet");
    }
    Ok(Roots { active_id, by_id })
}

/// The CA configuration: provider and `Config` map.
async fn ca_config(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<(String, Map<String, Value>)> {
    let v = get_json(client, base, "/v1/connect/ca/configuration").await?;
    let provider = v["Provider"].as_str().unwrap_or("consul").to_string();
    let config = v["Config"].as_object().cloned().unwrap_or_default();
    Ok((provider, config))
}

async fn put_ca_config(
    client: &reqwest::Client,
    base: &str,
    provider: &str,
    config: &Map<String, Value>,
) -> anyhow::Result<()> {
    let body = json!({"Provider": provider, "Config": config});
    let r = client
        .put(format!("{base}/v1/connect/ca/configuration"))
        .body(body.to_string())
        .send()
        .await
        .context("PUT /v1/connect/ca/configuration")?;
    let status = r.status();
    if !status.is_success() {
        bail!(
            "PUT /v1/connect/ca/configuration: {status}: {}",
            r.text().await.unwrap_or_default().trim()
        );
    }
    Ok(())
}

/// One leaf of the fill: its index and the root that signed it.
struct Filled {
    index: u64,
    root_id: String,
}

/// Fetches `svc-i`'s leaf, retrying refusals (a rate limit if it was kept) for a while.
async fn fill_one(
    client: &reqwest::Client,
    base: &str,
    roots: &Roots,
    i: usize,
) -> anyhow::Result<Filled> {
    let url = format!("{base}/v1/agent/connect/ca/leaf/svc-{i}");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = client.get(&url).send().await?;
        let status = r.status();
        let index = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = r.text().await?;
        if !status.is_success() {
            if attempts < 600 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            bail!("svc-{i}: {status}: {}", text.trim());
        }
        let leaf: Value = serde_json::from_str(&text)?;
        let facts = cert_facts(leaf["CertPEM"].as_str().unwrap_or_default())?;
        let root_id = roots
            .root_of(&facts.aki)
            .with_context(|| format!("svc-{i}: leaf signed by no known root"))?
            .to_string();
        return Ok(Filled {
            index: index.context("no X-Consul-Index")?,
            root_id,
        });
    }
}

/// What the watchers need to know about the rotation: whether it has been asked for, and
/// the new root's signing key ID once it is known.
struct Rotation {
    started: AtomicBool,
    new_signing_key_id: watch::Receiver<Option<Arc<str>>>,
}

/// What became of one watcher.
#[derive(Default)]
struct WatchResult {
    /// When its new-root leaf arrived, and the leaf's certificate PEM.
    arrived: Option<(Instant, String)>,
    /// Errors by kind (it re-parks after each).
    errors: BTreeMap<&'static str, usize>,
    /// Answers with a higher index but still under the old root.
    old_root_answers: usize,
    /// Answers to a blocking wait that ran out (same index), re-parked.
    wait_expired: usize,
}

/// Counters the main task reads while watchers run.
#[derive(Default)]
struct Progress {
    parked: AtomicUsize,
    failed_first: AtomicUsize,
    arrived: AtomicUsize,
}

/// One watcher: parks a blocking leaf query and re-parks until a new-root leaf arrives.
async fn watch(
    addr: Arc<str>,
    service: String,
    mut index: u64,
    opening: Arc<Semaphore>,
    rotation: Arc<Rotation>,
    progress: Arc<Progress>,
) -> WatchResult {
    let mut out = WatchResult::default();
    let mut first = true;
    loop {
        let path = format!("/v1/agent/connect/ca/leaf/{service}?index={index}&wait=10m");
        let permit = if first {
            opening.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let sent = async {
            let mut stream = TcpStream::connect(&*addr).await.map_err(|_| "connect")?;
            http1::send_request(&mut stream, "GET", &addr, &path, None)
                .await
                .map_err(|_| "send")?;
            Ok::<TcpStream, &'static str>(stream)
        }
        .await;
        let mut stream = match sent {
            Ok(s) => s,
            Err(kind) => {
                *out.errors.entry(kind).or_default() += 1;
                if first {
                    progress.failed_first.fetch_add(1, Ordering::SeqCst);
                    first = false;
                }
                drop(permit);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if first {
            progress.parked.fetch_add(1, Ordering::SeqCst);
            first = false;
        }
        drop(permit);
        let resp = http1::read_response(&mut stream).await;
        let at = Instant::now();
        drop(stream);
        let resp = match resp {
            Ok(r) => r,
            Err(_) => {
                *out.errors.entry("read").or_default() += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if resp.status != 200 {
            *out.errors.entry("status").or_default() += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let Some(got) = resp.consul_index() else {
            *out.errors.entry("no_index").or_default() += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if got <= index {
            out.wait_expired += 1;
            continue;
        }
        if !rotation.started.load(Ordering::SeqCst) {
            // A new leaf before the rotation: nothing in this run should make one.
            *out.errors.entry("new_leaf_before_rotation").or_default() += 1;
            index = got;
            continue;
        }
        // The leaf may come before the bench has read the new root's ID: wait for it.
        let mut skid = rotation.new_signing_key_id.clone();
        let Ok(new_skid) = skid.wait_for(Option::is_some).await.map(|v| v.clone()) else {
            *out.errors.entry("internal").or_default() += 1;
            return out;
        };
        let new_skid = new_skid.unwrap_or_default();
        let pem = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v["CertPEM"].as_str().map(str::to_string));
        let Some(pem) = pem else {
            *out.errors.entry("bad_body").or_default() += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match cert_facts(&pem) {
            Ok(f) if *f.aki == *new_skid => {
                out.arrived = Some((at, pem));
                progress.arrived.fetch_add(1, Ordering::SeqCst);
                return out;
            }
            Ok(_) => {
                out.old_root_answers += 1;
                index = got;
            }
            Err(_) => {
                *out.errors.entry("bad_certificate").or_default() += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A text bar of `n` out of `max`, at most `width` characters.
fn bar(n: usize, max: usize, width: usize) -> String {
    if max == 0 {
        return String::new();
    }
    "#".repeat((n * width).div_ceil(max))
}

/// Runs the rotation benchmark: prints a text report, then one JSON line.
pub async fn run(args: RotationArgs) -> anyhow::Result<()> {
    let n = args.leafs;
    if n == 0 {
        bail!("--leafs must be at least 1");
    }
    if let Some(limit) = open_files_limit() {
        let need = n as u64 + args.concurrency as u64 + 64;
        if limit < need {
            bail!(
                "open-files limit is {limit}, {need} needed for {n} watchers: raise it with \
                 `ulimit -n` (the agent needs as many)"
            );
        }
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = format!("http://{}", args.addr);

    // --- the CA as it is (a fresh dev agent makes its first root just after its election) ----
    let ca_deadline = Instant::now() + Duration::from_secs(30);
    let roots_before = loop {
        match roots(&client, &base).await {
            Ok(r) => break r,
            Err(e) if Instant::now() > ca_deadline => return Err(e.context("after 30 s")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let (provider, config_before) = ca_config(&client, &base).await?;
    let csr_max_per_second = config_number(config_before.get("CSRMaxPerSecond"));
    let csr_max_concurrent = config_number(config_before.get("CSRMaxConcurrent"));

    // --- 1. fill ------------------------------------------------------------------------------
    if !args.keep_limit_during_fill {
        let mut unlimited = config_before.clone();
        unlimited.insert("CSRMaxPerSecond".into(), json!(0));
        put_ca_config(&client, &base, &provider, &unlimited)
            .await
            .context("lifting the CSR limit for the fill")?;
    }
    eprintln!("fill: {n} leafs, {} in flight...", args.concurrency);
    let fill_start = Instant::now();
    let roots_before = Arc::new(roots_before);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, base, roots, next) = (
            client.clone(),
            base.clone(),
            roots_before.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(got);
                }
                got.push((i, fill_one(&client, &base, &roots, i).await?));
            }
        });
    }
    let mut filled: Vec<Option<Filled>> = (0..n).map(|_| None).collect();
    while let Some(done) = workers.join_next().await {
        for (i, f) in done.context("a fill worker panicked")?? {
            filled[i] = Some(f);
        }
    }
    let fill_s = fill_start.elapsed().as_secs_f64();
    let filled: Vec<Filled> = filled
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.with_context(|| format!("svc-{i} has no leaf")))
        .collect::<anyhow::Result<_>>()?;
    let fill_old_root = filled
        .iter()
        .filter(|f| f.root_id == roots_before.active_id)
        .count();
    if fill_old_root != n {
        bail!(
            "{} of {n} leafs of the fill are not signed by the active root",
            n - fill_old_root
        );
    }
    if !args.keep_limit_during_fill {
        put_ca_config(&client, &base, &provider, &config_before)
            .await
            .context("putting the CSR limit back")?;
    }
    let (_, config_now) = ca_config(&client, &base).await?;
    if config_number(config_now.get("CSRMaxPerSecond")) != csr_max_per_second {
        bail!("the CSR limit was not restored: {config_now:?}");
    }
    if roots(&client, &base).await?.active_id != roots_before.active_id {
        bail!("the active root changed during the fill");
    }
    eprintln!("fill: done in {fill_s:.1} s");

    // --- 2. watchers --------------------------------------------------------------------------
    let rss_before = args.pid.and_then(|p| rss_kb(p).ok());
    let addr: Arc<str> = args.addr.clone().into();
    let opening = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (skid_tx, skid_rx) = watch::channel::<Option<Arc<str>>>(None);
    let rotation = Arc::new(Rotation {
        started: AtomicBool::new(false),
        new_signing_key_id: skid_rx,
    });
    let progress: Arc<Progress> = Arc::default();
    let mut watchers = JoinSet::new();
    let mut service_of = std::collections::HashMap::new();
    let open_start = Instant::now();
    for (i, f) in filled.iter().enumerate() {
        let h = watchers.spawn(watch(
            addr.clone(),
            format!("svc-{i}"),
            f.index,
            opening.clone(),
            rotation.clone(),
            progress.clone(),
        ));
        service_of.insert(h.id(), i);
    }
    let open_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (p, f) = (
            progress.parked.load(Ordering::SeqCst),
            progress.failed_first.load(Ordering::SeqCst),
        );
        if p + f >= n {
            break;
        }
        if Instant::now() > open_deadline {
            bail!("only {p} of {n} watchers sent after 120 s ({f} failed)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_s = open_start.elapsed().as_secs_f64();
    let parked_ok = progress.parked.load(Ordering::SeqCst);
    eprintln!("watchers: {parked_ok} of {n} sent in {open_s:.2} s; settling...");
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_parked = args.pid.and_then(|p| rss_kb(p).ok());

    // --- 3. rotate ----------------------------------------------------------------------------
    let (_, mut rotate_config) = ca_config(&client, &base).await?;
    let key_type = rotate_config
        .get("PrivateKeyType")
        .and_then(Value::as_str)
        .unwrap_or("ec")
        .to_string();
    let bits = config_number(rotate_config.get("PrivateKeyBits")).unwrap_or(256.0) as u64;
    let new_bits = if key_type == "ec" && bits == 256 {
        384
    } else {
        256
    };
    rotate_config.insert("PrivateKeyType".into(), json!("ec"));
    rotate_config.insert("PrivateKeyBits".into(), json!(new_bits));
    let cpu_before = args.pid.and_then(cpu_seconds);
    rotation.started.store(true, Ordering::SeqCst);
    let put_start = Instant::now();
    put_ca_config(&client, &base, &provider, &rotate_config)
        .await
        .context("the rotation")?;
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let put_ms = (t0 - put_start).as_secs_f64() * 1e3;
    let roots_after = roots(&client, &base).await?;
    if roots_after.active_id == roots_before.active_id {
        bail!("the configuration change did not rotate the root");
    }
    let new_skid = roots_after
        .signing_key_id(&roots_after.active_id)
        .context("new active root missing")?
        .to_string();
    let new_root_key = root_key(&roots_after.by_id[&roots_after.active_id].1)?;
    skid_tx.send_replace(Some(new_skid.into()));
    eprintln!(
        "rotated: {}/{bits} -> ec/{new_bits}, new root {} (PUT took {put_ms:.0} ms); waiting \
         up to {} s...",
        key_type, roots_after.active_id, args.timeout_secs
    );

    // --- 4. collect ---------------------------------------------------------------------------
    let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(args.timeout_secs));
    let mut results: Vec<(usize, WatchResult)> = Vec::with_capacity(n);
    let mut panicked = 0usize;
    let mut next_note = t0 + Duration::from_secs(10);
    loop {
        let wake = tokio::time::Instant::from_std(next_note).min(deadline);
        match tokio::time::timeout_at(wake, watchers.join_next_with_id()).await {
            Ok(None) => break,
            Ok(Some(Ok((id, r)))) => results.push((service_of[&id], r)),
            Ok(Some(Err(_))) => panicked += 1,
            Err(_) if wake >= deadline => {
                watchers.abort_all();
                break;
            }
            Err(_) => {
                eprintln!(
                    "  {:>4.0} s: {} of {n} re-issued",
                    t0.elapsed().as_secs_f64(),
                    progress.arrived.load(Ordering::SeqCst)
                );
                next_note += Duration::from_secs(10);
            }
        }
    }
    let cpu_used = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rss_after = args.pid.and_then(|p| rss_kb(p).ok());
    let watched_for_s = t0.elapsed().as_secs_f64();

    // --- 5. report ----------------------------------------------------------------------------
    let mut arrivals: Vec<f64> = Vec::with_capacity(n);
    let mut signed_per_sec: BTreeMap<i64, usize> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut watchers_with_errors = Vec::new();
    let (mut bad_signature, mut old_root_answers, mut wait_expired) = (0usize, 0usize, 0usize);
    let mut sign_to_arrival: Vec<f64> = Vec::new();
    let t0_unix = unix_secs_f64(t0_wall);
    for (i, r) in &results {
        for (k, v) in &r.errors {
            *errors.entry(k).or_default() += v;
        }
        if !r.errors.is_empty() {
            watchers_with_errors.push(*i);
        }
        old_root_answers += r.old_root_answers;
        wait_expired += r.wait_expired;
        let Some((at, pem)) = &r.arrived else {
            continue;
        };
        let facts = cert_facts(pem)?;
        if !verify(&facts, &new_root_key) {
            bad_signature += 1;
        }
        // Signed: a leaf may arrive before the PUT has returned.
        let since_t0 = match at.checked_duration_since(t0) {
            Some(d) => d.as_secs_f64(),
            None => -(t0 - *at).as_secs_f64(),
        };
        arrivals.push(since_t0);
        let signed = facts.not_before + CA_BACKDATE_SECS;
        *signed_per_sec.entry(signed).or_default() += 1;
        // Arrival (wall clock) minus the signing second: in [0, 1) plus delivery time when
        // the backdating is as assumed.
        sign_to_arrival.push(t0_unix + since_t0 - signed as f64);
    }
    arrivals.sort_by(f64::total_cmp);
    sign_to_arrival.sort_by(f64::total_cmp);
    watchers_with_errors.sort_unstable();
    let got = arrivals.len();
    let missing = n - got;
    let all_s = if missing == 0 {
        arrivals.last().copied()
    } else {
        None
    };
    let pct = |p: f64| percentile(&arrivals, p).map(round3);
    let limit = csr_max_per_second.unwrap_or(0.0);
    let (max_sec, max_signed) = signed_per_sec
        .iter()
        .max_by_key(|(s, c)| (**c, std::cmp::Reverse(**s)))
        .map_or((0, 0), |(s, c)| (*s, *c));
    let seconds_over_limit = if limit > 0.0 {
        signed_per_sec
            .values()
            .filter(|&&c| c as f64 > limit)
            .count()
    } else {
        0
    };
    let t0_sec = t0_unix.floor() as i64;

    // Histogram of arrivals.
    let width = args.bucket_secs.max(1) as f64;
    let mut buckets: Vec<usize> = Vec::new();
    for a in &arrivals {
        let b = (a / width).floor().max(0.0) as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, 0);
        }
        buckets[b] += 1;
    }
    let bucket_max = buckets.iter().copied().max().unwrap_or(0);

    println!(
        "rotation of one agent's {n} leafs ({} -> {})",
        roots_before.active_id, roots_after.active_id
    );
    println!(
        "fill: {n} leafs in {fill_s:.1} s (CSR limit {}); {parked_ok} watchers parked in {open_s:.2} s, settle {} ms; agent RSS {} -> {} KiB",
        if args.keep_limit_during_fill { "kept" } else { "lifted" },
        args.settle_ms,
        rss_before.map_or("?".into(), |v| v.to_string()),
        rss_parked.map_or("?".into(), |v| v.to_string()),
    );
    println!(
        "rotation: key {key_type}/{bits} -> ec/{new_bits}; PUT /v1/connect/ca/configuration took {put_ms:.1} ms; T0 = when it returned"
    );
    println!(
        "re-issued under the new root: {got} of {n}; all by {} s after T0; missing after {} s: {missing}",
        all_s.map_or("n/a".into(), |v| format!("{v:.3}")),
        args.timeout_secs
    );
    println!(
        "arrival percentiles (s after T0): p0 {} p50 {} p90 {} p99 {} p100 {}",
        pct(0.0).map_or("n/a".into(), |v| v.to_string()),
        pct(50.0).map_or("n/a".into(), |v| v.to_string()),
        pct(90.0).map_or("n/a".into(), |v| v.to_string()),
        pct(99.0).map_or("n/a".into(), |v| v.to_string()),
        pct(100.0).map_or("n/a".into(), |v| v.to_string()),
    );
    println!(
        "expectations: jitter window {} s; N / CSRMaxPerSecond = {}",
        args.jitter_secs,
        if limit > 0.0 {
            format!("{:.1} s", n as f64 / limit)
        } else {
            "n/a (no limit)".into()
        }
    );
    println!("arrivals per {} s (s after T0):", args.bucket_secs.max(1));
    for (b, c) in buckets.iter().enumerate() {
        let lo = b as u64 * args.bucket_secs.max(1);
        println!(
            "  {:>4}-{:<4} {:>6} {}",
            lo,
            lo + args.bucket_secs.max(1),
            c,
            bar(*c, bucket_max, 60)
        );
    }
    println!(
        "signed per second (notBefore + {CA_BACKDATE_SECS} s): max {max_signed} (at T0{:+} s) vs CSRMaxPerSecond {}; seconds above the limit: {seconds_over_limit}; seconds with signing: {}",
        max_sec - t0_sec,
        csr_max_per_second.map_or("unset".into(), |v| v.to_string()),
        signed_per_sec.len(),
    );
    if let (Some(first), Some(last)) = (signed_per_sec.keys().next(), signed_per_sec.keys().last())
    {
        let series: Vec<String> = (*first..=*last)
            .map(|s| signed_per_sec.get(&s).copied().unwrap_or(0).to_string())
            .collect();
        println!(
            "signed per second from T0{:+} s: {}",
            first - t0_sec,
            series.join(" ")
        );
    }
    println!(
        "checks: new leafs whose signature does not verify with the new root: {bad_signature}; answers still under the old root: {old_root_answers}; blocking waits that ran out and were re-parked: {wait_expired}"
    );
    println!(
        "errors: {} ({} watchers{}); panicked watchers: {panicked}",
        errors.values().sum::<usize>(),
        watchers_with_errors.len(),
        if watchers_with_errors.is_empty() {
            String::new()
        } else {
            format!(
                ", first: svc-{}",
                watchers_with_errors
                    .iter()
                    .take(10)
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", svc-")
            )
        },
    );
    if let Some(cpu) = cpu_used {
        println!(
            "agent: {cpu:.2} CPU-s from T0 over {watched_for_s:.1} s; RSS {} KiB after",
            rss_after.map_or("?".into(), |v| v.to_string())
        );
    }
    let out = json!({
        "leafs": n,
        "reissued": got,
        "missing": missing,
        "all_reissued_s": all_s.map(round3),
        "p0_s": pct(0.0),
        "p50_s": pct(50.0),
        "p90_s": pct(90.0),
        "p99_s": pct(99.0),
        "p100_s": pct(100.0),
        "bucket_s": args.bucket_secs.max(1),
        "arrivals_per_bucket": buckets,
        "max_signed_in_one_second": max_signed,
        "csr_max_per_second": csr_max_per_second,
        "csr_max_concurrent": csr_max_concurrent,
        "seconds_over_limit": seconds_over_limit,
        "n_over_limit_s": (limit > 0.0).then(|| round3(n as f64 / limit)),
        "jitter_s": args.jitter_secs,
        "sign_to_arrival_s_min": sign_to_arrival.first().copied().map(round3),
        "sign_to_arrival_s_max": sign_to_arrival.last().copied().map(round3),
        "bad_signature": bad_signature,
        "old_root_answers": old_root_answers,
        "wait_expired": wait_expired,
        "errors": errors.values().sum::<usize>(),
        "error_kinds": errors,
        "watchers_with_errors": watchers_with_errors.len(),
        "panicked": panicked,
        "fill_s": round3(fill_s),
        "open_s": round3(open_s),
        "rotate_put_ms": round3(put_ms),
        "old_root": roots_before.active_id,
        "new_root": roots_after.active_id,
        "agent_cpu_s": cpu_used.map(round3),
        "agent_rss_before_kb": rss_before,
        "agent_rss_parked_kb": rss_parked,
        "agent_rss_after_kb": rss_after,
    });
    println!("{out}");
    if missing > 0 || bad_signature > 0 {
        bail!("{missing} watchers without a new-root leaf, {bad_signature} bad signatures");
    }
    Ok(())
}
