//! Starting `trellis` processes and talking to them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free TCP port on 127.0.0.1 (bound, read, released), never one this test process handed
/// out before: the kernel may offer a just-released port again, and two listeners of one test
/// given the same port would collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `trellis agent`; killed on drop.
pub struct Agent {
    child: Option<Child>,
    /// HTTP API port.
    pub http: u16,
    /// Server RPC port (0 for client agents).
    pub server: u16,
    args: Vec<String>,
    log: PathBuf,
    env: Vec<(String, String)>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

impl Agent {
    fn spawn(args: Vec<String>, http: u16, server: u16, log: PathBuf) -> Agent {
        Agent::spawn_env(args, http, server, log, Vec::new())
    }

    fn spawn_env(
        args: Vec<String>,
        http: u16,
        server: u16,
        log: PathBuf,
        env: Vec<(String, String)>,
    ) -> Agent {
        let mut a = Agent {
            child: None,
            http,
            server,
            args,
            log,
            env,
        };
        a.start();
        a
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("trellis starts");
        self.child = Some(child);
    }

    /// A dev agent on the given ports, with extra flags and environment. `dash` is the flag
    /// prefix, so tests cover Consul's single-dash spelling as well as the double-dash one.
    fn dev_agent(
        node: &str,
        log_dir: &Path,
        (http, server): (u16, u16),
        dash: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Agent {
        let mut args = vec![
            "agent".into(),
            format!("{dash}dev"),
            format!("{dash}node"),
            node.into(),
            format!("{dash}http-port={http}"),
            format!("{dash}server-port={server}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::spawn_env(args, http, server, log_dir.join(format!("{node}.log")), env)
    }

    /// A dev agent (`-dev`, Consul's single-dash spelling) on fresh ports.
    pub fn dev(node: &str, log_dir: &Path) -> Agent {
        Agent::dev_agent(
            node,
            log_dir,
            (free_port(), free_port()),
            "-",
            &[],
            Vec::new(),
        )
    }

    /// A dev agent with extra flags.
    pub fn dev_with(node: &str, log_dir: &Path, extra: &[&str]) -> Agent {
        Agent::dev_agent(
            node,
            log_dir,
            (free_port(), free_port()),
            "--",
            extra,
            Vec::new(),
        )
    }

    /// A dev agent with extra environment variables.
    pub fn dev_env(node: &str, log_dir: &Path, env: Vec<(String, String)>) -> Agent {
        Agent::dev_agent(node, log_dir, (free_port(), free_port()), "--", &[], env)
    }

    /// A dev agent with extra flags and environment variables.
    pub fn dev_env_with(
        node: &str,
        log_dir: &Path,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Agent {
        Agent::dev_agent(node, log_dir, (free_port(), free_port()), "--", extra, env)
    }

    /// A dev agent on given ports (to stand in for a server that lost its state).
    pub fn dev_on(node: &str, http: u16, server: u16, log_dir: &Path) -> Agent {
        Agent::dev_agent(node, log_dir, (http, server), "--", &[], Vec::new())
    }

    /// A persistent one-server cluster with its state in `data_dir`.
    pub fn server(node: &str, data_dir: &Path, extra: &[&str]) -> Agent {
        let (http, server) = (free_port(), free_port());
        let mut args = vec![
            "agent".into(),
            "--server".into(),
            "--bootstrap-expect".into(),
            "1".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node".into(),
            node.into(),
            "--http-port".into(),
            http.to_string(),
            "--server-port".into(),
            server.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::spawn(args, http, server, data_dir.with_extension("log"))
    }

    /// One server of a multi-server cluster: its server port on `ip:server`, its HTTP API on
    /// 127.0.0.1, waiting for `expect` servers among `join` (server addresses) to bootstrap.
    pub fn cluster_server(
        node: &str,
        data_dir: &Path,
        ip: &str,
        (http, server): (u16, u16),
        expect: u32,
        join: &[String],
        extra: &[&str],
    ) -> Agent {
        let mut args = vec![
            "agent".into(),
            "--server".into(),
            "--bootstrap-expect".into(),
            expect.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node".into(),
            node.into(),
            "--bind".into(),
            ip.into(),
            "--client".into(),
            "127.0.0.1".into(),
            "--http-port".into(),
            http.to_string(),
            "--server-port".into(),
            server.to_string(),
        ];
        for j in join {
            args.push("--retry-join".into());
            args.push(j.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::spawn(args, http, server, data_dir.with_extension("log"))
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = self.child.as_ref() {
            let ok = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} failed");
        }
    }

    /// The exit code once the process has exited on its own (-1 for a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.code().unwrap_or(-1))
    }

    /// Whether the process was started and not killed since.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A client agent joined to a server's server port on 127.0.0.1.
    pub fn client(node: &str, data_dir: &Path, join: u16, extra: &[&str]) -> Agent {
        Agent::client_with(node, data_dir, &format!("127.0.0.1:{join}"), extra)
    }

    /// A client agent joined to the server at `addr` (`ip:port` of its server port).
    pub fn client_via(node: &str, data_dir: &Path, addr: &str, extra: &[&str]) -> Agent {
        Agent::client_with(node, data_dir, addr, extra)
    }

    fn client_with(node: &str, data_dir: &Path, addr: &str, extra: &[&str]) -> Agent {
        let http = free_port();
        let mut args = vec![
            "agent".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node".into(),
            node.into(),
            "--http-port".into(),
            http.to_string(),
            "--retry-join".into(),
            addr.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Agent::spawn(args, http, 0, data_dir.with_extension("log"))
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts again with the same arguments and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Base URL of the HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http, path)
    }

    /// Waits until the agent answers with a known leader.
    pub async fn ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(code))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited with {code}:\n{}", self.log());
            }
            if let Ok(r) = client().get(self.url("/v1/status/leader")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v.as_str().is_some_and(|s| !s.is_empty()) {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent never became ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET returning (status, X-Consul-Index, JSON body or Null).
    pub async fn get(&self, path: &str) -> (u16, u64, Value) {
        let r = client().get(self.url(path)).send().await.expect("request");
        let status = r.status().as_u16();
        let index = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let text = r.text().await.unwrap();
        (
            status,
            index,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// PUT with a raw body, returning (status, body text).
    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = client()
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls `path` until `pred` holds on its body (up to 10 s).
    pub async fn wait_for(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, _, body) = self.get(path).await;
            if status == 200 && pred(&body) {
                return body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; last: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shared HTTP client with no proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// IDs of the services in a health or catalog answer.
pub fn ids(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.pointer(field)
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    out.sort();
    out
}
