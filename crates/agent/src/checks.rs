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
/// Longest HTTP check output kept, as Consul's (4 KiB).
const MAX_OUTPUT: usize = 4096;

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
    pub fn update_ttl(&self, id: &str, new_status: &str, output: &str) -> bool {
        if self.local.update_check(id, new_status, output).is_none() {
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
            Ok(resp) => {
                let code = resp.status();
                let mut body = resp.text().await.unwrap_or_default();
                if body.len() > MAX_OUTPUT {
                    let mut cut = MAX_OUTPUT;
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    body.truncate(cut);
                }
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
