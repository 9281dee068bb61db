//! Runs the agent's checks: TTL expiry, HTTP and TCP probes at their intervals, alias checks.
//!
//! Each check gets one task; re-registering or removing a check aborts its task. Results go to
//! [`LocalState::update_check`], which decides whether the catalog must hear of it now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use trellis_api::{parse_go_duration, status, CheckDefinition};

use crate::local::LocalState;

/// Default timeout of one HTTP or TCP probe, as Consul's.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest check output kept, as Consul's (`checks.BufSize`, the default `output_max_size`:
/// 4 KiB).
pub const MAX_OUTPUT: usize = 4096;

/// A check output over [`MAX_OUTPUT`] bytes cut the way Consul cuts TTL outputs: its first
/// 4 KiB (to a character boundary), then `... (captured 4096 of N bytes)`.
pub fn truncate_output(output: &str) -> std::borrow::Cow<'_, str> {
    if output.len() <= MAX_OUTPUT {
        return output.into();
    }
    let mut cut = MAX_OUTPUT;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {cut} of {} bytes)",
        &output[..cut],
        output.len()
    )
    .into()
}

/// Reads at most [`MAX_OUTPUT`] bytes of an HTTP check's answer, chunk by chunk, and stops:
/// the rest is never read (the connection is dropped with it). Consul reads the whole answer
/// through a 4 KiB ring buffer within the check's timeout; stopping costs neither memory nor
/// time whatever the service sends. The output is the kept bytes (lossy UTF-8), and when the
/// answer was longer, Consul's truncation note.
async fn read_output(resp: &mut reqwest::Response) -> String {
    // The declared length, read before the body (reqwest's shrinks as the body is read).
    let total = resp.content_length();
    let mut kept: Vec<u8> = Vec::new();
    let mut more = false;
    // A body cut short keeps what arrived, as Consul's does.
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_OUTPUT - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            more = true;
            break;
        }
        kept.extend_from_slice(&chunk);
    }
    if !more {
        return String::from_utf8_lossy(&kept).into_owned();
    }
    cut_incomplete_char(&mut kept);
    let text = String::from_utf8_lossy(&kept);
    match total {
        Some(total) => format!("{text} ... (captured {} of {total} bytes)", kept.len()),
        None => format!("{text} ... (captured the first {} bytes)", kept.len()),
    }
}

/// Drops a UTF-8 sequence cut off at the end of `b` (so a cut inside a character does not show
/// as a replacement character).
fn cut_incomplete_char(b: &mut Vec<u8>) {
    let n = b.len();
    for back in 1..=n.min(4) {
        let byte = b[n - back];
        if byte & 0xC0 != 0x80 {
            let len = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            if len > back {
                b.truncate(n - back);
            }
            return;
        }
    }
}

/// The running check tasks.
pub struct CheckRunner {
    local: Arc<LocalState>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Bumped by a TTL update; the TTL task restarts its timer on each bump.
    ttl_touch: Mutex<HashMap<String, tokio::sync::watch::Sender<()>>>,
    http: reqwest::Client,
    http_insecure: reqwest::Client,
}

impl CheckRunner {
    /// A runner reporting to `local`.
    pub fn new(local: Arc<LocalState>) -> Arc<CheckRunner> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(insecure)
                .redirect(reqwest::redirect::Policy::limited(10))
                .user_agent("Consul Health Check")
                .build()
                .expect("HTTP client builds")
        };
        Arc::new(CheckRunner {
            local,
            tasks: Mutex::new(HashMap::new()),
            ttl_touch: Mutex::new(HashMap::new()),
            http: build(false),
            http_insecure: build(true),
        })
    }

    /// Starts (or restarts) the task for a check.
    pub fn start(self: &Arc<Self>, id: &str, def: &CheckDefinition) {
        self.stop(id);
        let me = self.clone();
        let id_owned = id.to_string();
        let def = def.clone();
        let task = if !def.ttl.is_empty() {
            let ttl = parse_go_duration(&def.ttl).unwrap_or(Duration::from_secs(30));
            let (tx, rx) = tokio::sync::watch::channel(());
            self.ttl_touch.lock().insert(id.to_string(), tx);
            tokio::spawn(async move { me.run_ttl(id_owned, ttl, rx).await })
        } else if !def.http.is_empty() || !def.tcp.is_empty() {
            tokio::spawn(async move { me.run_probe(id_owned, def).await })
        } else if !def.alias_service.is_empty() {
            tokio::spawn(async move { me.run_alias(id_owned, def.alias_service).await })
        } else {
            return;
        };
        self.tasks.lock().insert(id.to_string(), task);
    }

    /// Stops a check's task, if any.
    pub fn stop(&self, id: &str) {
        if let Some(task) = self.tasks.lock().remove(id) {
            task.abort();
        }
        self.ttl_touch.lock().remove(id);
    }

    /// Records a TTL update (`/v1/agent/check/{pass,warn,fail,update}`). Returns false for an
    /// unknown check.
    /// An output over [`MAX_OUTPUT`] bytes is cut as Consul cuts it ([`truncate_output`]).
    pub fn update_ttl(&self, id: &str, new_status: &str, output: &str) -> bool {
        let output = truncate_output(output);
        if self.local.update_check(id, new_status, &output).is_none() {
            return false;
        }
        if let Some(tx) = self.ttl_touch.lock().get(id) {
            tx.send_replace(());
        }
        true
    }

    async fn run_ttl(
        self: Arc<Self>,
        id: String,
        ttl: Duration,
        mut touched: tokio::sync::watch::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                r = touched.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(ttl) => {
                    let output = format!("TTL expired (last output before timeout follows): {}",
                        self.local.check(&id).map(|c| c.check.output).unwrap_or_default());
                    if self.local.update_check(&id, status::CRITICAL, &output).is_none() {
                        return;
                    }
                    // Stay critical until the next update restarts the timer.
                    if touched.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn run_probe(self: Arc<Self>, id: String, def: CheckDefinition) {
        let interval = parse_go_duration(&def.interval).unwrap_or(Duration::from_secs(10));
        let timeout = match parse_go_duration(&def.timeout) {
            Ok(t) if !t.is_zero() => t,
            _ => DEFAULT_TIMEOUT,
        };
        // Spread first runs over the interval, as Consul does, so a restart does not probe
        // every service at once.
        let stagger = interval.mul_f64(rand::random::<f64>());
        tokio::time::sleep(stagger.min(Duration::from_secs(1))).await;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            // Boxed: the probe's state exists only while it runs, not in every idle task.
            let (st, output) = if !def.http.is_empty() {
                Box::pin(self.probe_http(&def, timeout)).await
            } else {
                Box::pin(probe_tcp(&def.tcp, timeout)).await
            };
            if self.local.update_check(&id, st, &output).is_none() {
                return;
            }
        }
    }

    async fn probe_http(&self, def: &CheckDefinition, timeout: Duration) -> (&'static str, String) {
        let client = if def.tls_skip_verify {
            &self.http_insecure
        } else {
            &self.http
        };
        let method = if def.method.is_empty() {
            "GET"
        } else {
            def.method.as_str()
        };
        let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return (status::CRITICAL, format!("invalid HTTP method {method:?}"));
        };
        let mut req = client.request(m, &def.http).timeout(timeout);
        for (name, values) in &def.header {
            for v in values {
                req = req.header(name.as_str(), v.as_str());
            }
        }
        if !def.body.is_empty() {
            req = req.body(def.body.clone());
        }
        match req.send().await {
            Err(e) => (status::CRITICAL, format!("{method} {}: {e}", def.http)),
            Ok(mut resp) => {
                let code = resp.status();
                let body = read_output(&mut resp).await;
                drop(resp);
                let output = format!("HTTP {method} {}: {code} Output: {body}", def.http);
                let st = if code.is_success() {
                    status::PASSING
                } else if code.as_u16() == 429 {
                    status::WARNING
                } else {
                    status::CRITICAL
                };
                (st, output)
            }
        }
    }

    async fn run_alias(self: Arc<Self>, id: String, target: String) {
        let mut changes = self.local.watch_service(&target);
        loop {
            let (st, output) = match self.local.service_health(&target, &id) {
                Some(s) if s == status::PASSING => {
                    (status::PASSING, "All checks passing.".to_string())
                }
                Some(s) => (
                    if s == status::WARNING {
                        status::WARNING
                    } else {
                        status::CRITICAL
                    },
                    format!("Aliased service {target:?} is {s}"),
                ),
                None => (
                    status::CRITICAL,
                    format!("Service {target:?} could not be found on the agent"),
                ),
            };
            if self.local.update_check(&id, st, &output).is_none() {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn probe_tcp(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (status::PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (status::CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => (status::CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::local_check;

    fn ttl_check(local: &LocalState, id: &str) {
        let def = CheckDefinition {
            id: id.into(),
            name: id.into(),
            ttl: "10s".into(),
            ..Default::default()
        };
        local.add_check(local_check(def, None).unwrap()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_to_critical_and_updates_restart_the_timer() {
        let local = Arc::new(LocalState::open("n1", None).unwrap());
        ttl_check(&local, "t");
        let runner = CheckRunner::new(local.clone());
        runner.start("t", &local.check("t").unwrap().definition);
        tokio::task::yield_now().await;
        assert!(runner.update_ttl("t", status::PASSING, "ok"));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(runner.update_ttl("t", status::PASSING, "still ok"));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            local.check("t").unwrap().check.status,
            status::PASSING,
            "the update restarted the timer"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = local.check("t").unwrap().check;
        assert_eq!(c.status, status::CRITICAL);
        assert!(c.output.starts_with("TTL expired"), "{}", c.output);
        assert!(!runner.update_ttl("missing", status::PASSING, ""));
    }

    /// An alias check follows its target's checks, and only changes to the target wake it.
    #[tokio::test]
    async fn alias_follows_its_target_only() {
        let local = Arc::new(LocalState::open("n1", None).unwrap());
        let service = |id: &str| trellis_api::AgentService {
            id: id.into(),
            service: id.into(),
            ..Default::default()
        };
        let tags = Vec::new();
        let web_ttl = CheckDefinition {
            id: "web-ttl".into(),
            name: "web-ttl".into(),
            ttl: "1h".into(),
            service_id: "web".into(),
            ..Default::default()
        };
        local
            .add_service(
                service("web"),
                vec![local_check(web_ttl, Some(("web", &tags))).unwrap()],
                false,
            )
            .unwrap();
        let alias = CheckDefinition {
            id: "alias".into(),
            name: "alias".into(),
            alias_service: "web".into(),
            service_id: "proxy".into(),
            ..Default::default()
        };
        let alias = local_check(alias, Some(("proxy", &tags))).unwrap();
        local
            .add_service(service("proxy"), vec![alias.clone()], false)
            .unwrap();
        let runner = CheckRunner::new(local.clone());
        runner.start("alias", &alias.definition);
        let status_of = |id: &str| local.check(id).unwrap().check.status;
        let wait_for = |want: &'static str| {
            let local = local.clone();
            async move {
                for _ in 0..200 {
                    if local.check("alias").unwrap().check.status == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let c = local.check("alias").unwrap().check;
                let t = local.check("web-ttl").unwrap().check;
                panic!(
                    "alias never became {want}: {} {:?}; web-ttl {} {:?}",
                    c.status, c.output, t.status, t.service_id
                );
            }
        };
        // The target's TTL check starts critical.
        wait_for(status::CRITICAL).await;
        assert!(runner.update_ttl("web-ttl", status::PASSING, "ok"));
        wait_for(status::PASSING).await;
        assert!(runner.update_ttl("web-ttl", status::WARNING, "hmm"));
        wait_for(status::WARNING).await;
        let output = local.check("alias").unwrap().check.output;
        assert_eq!(output, "Aliased service \"web\" is warning");

        // Another service's change does not wake the alias: its output, rewritten behind its
        // back, stays as written.
        local.update_check("alias", status::WARNING, "left alone");
        local.add_service(service("other"), vec![], false).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(local.check("alias").unwrap().check.output, "left alone");
        assert_eq!(status_of("alias"), status::WARNING);

        // The target going away turns it critical.
        local.remove_service("web").unwrap();
        wait_for(status::CRITICAL).await;
    }

    #[test]
    fn outputs_are_cut_as_consul_cuts_them() {
        assert_eq!(truncate_output("short"), "short");
        let exact = "x".repeat(MAX_OUTPUT);
        assert_eq!(truncate_output(&exact), exact.as_str());
        let long = "y".repeat(MAX_OUTPUT + 10);
        assert_eq!(
            truncate_output(&long),
            format!("{} ... (captured 4096 of 4106 bytes)", "y".repeat(4096))
        );
        // A cut inside a character moves back to its start.
        let wide = format!("{}é", "z".repeat(MAX_OUTPUT - 1));
        assert_eq!(
            truncate_output(&wide),
            format!("{} ... (captured 4095 of 4097 bytes)", "z".repeat(4095))
        );
        let mut b = "aé".as_bytes().to_vec();
        b.pop();
        cut_incomplete_char(&mut b);
        assert_eq!(b, b"a");
        let mut b = "aé".as_bytes().to_vec();
        cut_incomplete_char(&mut b);
        assert_eq!(b, "aé".as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_outputs_are_truncated() {
        let local = Arc::new(LocalState::open("n1", None).unwrap());
        ttl_check(&local, "t");
        let runner = CheckRunner::new(local.clone());
        assert!(runner.update_ttl("t", status::PASSING, &"o".repeat(10_000)));
        let output = local.check("t").unwrap().check.output;
        assert!(
            output.ends_with(" ... (captured 4096 of 10000 bytes)"),
            "{}",
            &output[4000..]
        );
    }

    /// A service answering far more than [`MAX_OUTPUT`] bytes: the probe keeps 4 KiB and hangs
    /// up, reading a small part of the answer.
    #[tokio::test]
    async fn http_probe_reads_only_what_it_keeps() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const ANSWER: u64 = 64 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {ANSWER}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'a'; 64 << 10];
            while counter.load(Ordering::Relaxed) < ANSWER {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        let local = Arc::new(LocalState::open("n1", None).unwrap());
        let runner = CheckRunner::new(local);
        let def = CheckDefinition {
            http: format!("http://{addr}/"),
            ..Default::default()
        };
        let (st, output) = runner.probe_http(&def, Duration::from_secs(10)).await;
        assert_eq!(st, status::PASSING);
        let prefix = format!("HTTP GET http://{addr}/: 200 OK Output: ");
        assert_eq!(
            output,
            format!(
                "{prefix}{} ... (captured 4096 of {ANSWER} bytes)",
                "a".repeat(4096)
            )
        );
        server.await.unwrap();
        let read = sent.load(Ordering::Relaxed);
        assert!(read < 16 << 20, "{read} bytes sent before the hang-up");
    }

    #[tokio::test]
    async fn tcp_probe_sees_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert_eq!(
            probe_tcp(&addr, Duration::from_secs(2)).await.0,
            status::PASSING
        );
        drop(listener);
        assert_eq!(
            probe_tcp(&addr, Duration::from_secs(2)).await.0,
            status::CRITICAL
        );
    }
}

#[cfg(test)]
mod critical_tests {
    use super::*;
    use crate::definition::local_check;

    #[tokio::test(start_paused = true)]
    async fn critical_time_counts_from_turning_critical_and_resets_on_recovery() {
        let local = LocalState::open("n1", None).unwrap();
        let def = CheckDefinition {
            id: "t".into(),
            name: "t".into(),
            ttl: "10s".into(),
            ..Default::default()
        };
        local.add_check(local_check(def, None).unwrap()).unwrap();
        assert_eq!(
            local.critical_for("t"),
            Some(Duration::ZERO),
            "registered critical"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(local.critical_for("t"), Some(Duration::from_secs(30)));
        local.update_check("t", status::PASSING, "");
        assert_eq!(local.critical_for("t"), None);
        local.update_check("t", status::CRITICAL, "");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(local.critical_for("t"), Some(Duration::from_secs(5)));
    }
}
