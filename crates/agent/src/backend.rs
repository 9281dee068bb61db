//! Where an agent sends writes and catalog reads: its own server, or remote servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trellis_rpc::{
    ApplyResponse, Error, Heartbeat, QueryOptions, QueryRequest, QueryResponse, RaftConfiguration,
    RemoveRequest, SignRequest, StatusResponse, Write,
};
use trellis_server::Server;
use trellis_state::Query;

/// The server addresses kept in `path` (none if it is missing or unreadable).
fn read_known(path: &std::path::Path) -> Vec<String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Replaces the kept server list (written aside and synced, then renamed over).
fn write_known(path: &std::path::Path, servers: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(servers).expect("strings serialise"))?;
    // On disk before it replaces the old list, so a crash leaves one list or the other.
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Any failure to deliver a heartbeat to `addr` as a transport failure, so that the next
/// server is tried: a server without a leader, or one that cannot reach it, is no help now. A
/// refusal (the heartbeat itself is bad) is logged loudly.
fn passed_over(addr: &str, e: Error) -> Error {
    match e {
        e if e.is_transport() => e,
        other => {
            if let Error::BadRequest(_) | Error::Forbidden(_) = &other {
                tracing::warn!(error = %other, "a server refused this agent's heartbeat");
            }
            Error::Transport {
                addr: addr.to_string(),
                message: other.to_string(),
            }
        }
    }
}

/// How a client agent dials the server port: HTTP/2, so that every call and parked blocking
/// query of this agent is a stream on one connection per server, not a connection each.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .http2_prior_knowledge()
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
}

/// The pause after `failures` rounds of auto-encrypt in a row that no server answered: 1 s,
/// doubling, at most 30 s.
fn auto_encrypt_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// The agent's route to the servers.
#[derive(Clone)]
pub enum Backend {
    /// This process is a server (dev or server mode).
    Local(Arc<Server>),
    /// A client agent: servers reached over their server port, with failover.
    Remote(Arc<Remote>),
}

/// Remote servers and which one is in use.
pub struct Remote {
    /// The servers this agent was told to join, always kept in the list.
    configured: Vec<String>,
    /// Every server known: the configured ones, those kept in `known_file` at start, and the
    /// cluster's voters when last told.
    servers: parking_lot::RwLock<Vec<String>>,
    /// Set once the agent has left: no more heartbeats.
    left: std::sync::atomic::AtomicBool,
    /// Drawn at start; tells the servers this process's heartbeats from a later one's.
    incarnation: u64,
    /// Where the voters last learned are kept, so that a restarted agent whose configured
    /// servers have gone can still reach the cluster (`None`: not kept).
    known_file: Option<std::path::PathBuf>,
    current: AtomicUsize,
    client: trellis_rpc::Client,
    /// The store keys this agent's blocking reads wait on, long-polled in shards.
    watcher: crate::watcher::Watcher,
    /// How long a call goes on trying while no server can take it (`rpc_hold_timeout`).
    hold: Duration,
}

impl Remote {
    /// Servers at these server-port addresses, plus those learned before and kept in
    /// `known_file`.
    pub fn new(servers: Vec<String>, known_file: Option<std::path::PathBuf>) -> Remote {
        Remote::with_tls(servers, known_file, None)
    }

    /// This remote, holding a call that no server can take for `hold` (Consul's
    /// `rpc_hold_timeout`; [`trellis_server::RPC_HOLD_TIMEOUT`] by default) before failing it.
    pub fn with_hold(mut self, hold: Duration) -> Remote {
        self.hold = hold;
        self
    }

    /// [`Remote::new`], dialling the servers over TLS when `tls` turns outgoing TLS on.
    pub fn with_tls(
        servers: Vec<String>,
        known_file: Option<std::path::PathBuf>,
        tls: Option<&trellis_tls::rpc::RpcTls>,
    ) -> Remote {
        let client = trellis_rpc::Client::new(client_builder(), tls);
        let configured = servers.clone();
        let mut servers = servers;
        for s in known_file.as_deref().map(read_known).unwrap_or_default() {
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
        // Agents start on a random server so that their load spreads over the servers.
        let start = if servers.is_empty() {
            0
        } else {
            rand::random_range(0..servers.len())
        };
        Remote {
            configured,
            servers: parking_lot::RwLock::new(servers),
            known_file,
            left: Default::default(),
            incarnation: rand::random(),
            current: AtomicUsize::new(start),
            client,
            watcher: crate::watcher::Watcher::default(),
            hold: trellis_server::RPC_HOLD_TIMEOUT,
        }
    }

    /// One auto-encrypt round: asks the servers for this agent's certificate and, once one
    /// signs it, presents it from then on. Each round dials on connections of its own, without
    /// a certificate (so an expired one cannot stand in the way of the next), and the agent's
    /// pooled connections are only ever opened with one.
    async fn auto_encrypt_once(
        &self,
        tls: &trellis_tls::rpc::RpcTls,
        datacenter: &str,
        node: &str,
    ) -> Result<trellis_rpc::auto_encrypt::Obtained, Error> {
        let client = trellis_rpc::Client::anonymous(client_builder(), Some(tls));
        let servers = self.servers.read().clone();
        let obtained =
            trellis_rpc::auto_encrypt::obtain(&client, &servers, tls, datacenter, node).await?;
        tracing::info!(uri = %obtained.uri, valid_before = %humantime::format_rfc3339_seconds(obtained.valid_before), "auto-encrypt: certificate received from the servers");
        Ok(obtained)
    }

    /// Auto-encrypt at start (Consul's `auto_encrypt { tls = true }`): asks the servers for
    /// this agent's certificate until one signs it (the agent cannot talk to them without
    /// it), backing off between rounds. A refusal (another datacenter, auto-encrypt off on
    /// the servers) ends it with the servers' reason.
    pub async fn auto_encrypt(
        &self,
        tls: &trellis_tls::rpc::RpcTls,
        datacenter: &str,
        node: &str,
    ) -> Result<trellis_rpc::auto_encrypt::Obtained, Error> {
        let mut failures = 0;
        loop {
            match self.auto_encrypt_once(tls, datacenter, node).await {
                Ok(obtained) => return Ok(obtained),
                Err(e @ (Error::BadRequest(_) | Error::Forbidden(_))) => return Err(e),
                Err(e) => {
                    let pause = auto_encrypt_backoff(failures);
                    failures += 1;
                    tracing::warn!(error = %e, ?pause, "auto-encrypt: No servers successfully responded to the auto-encrypt request");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Renews this agent's auto-encrypt certificate before it expires (between 60 % and 90 %
    /// of its lifetime), retrying with backoff while no server signs. Ends when the agent is
    /// dropped.
    pub async fn renew_auto_encrypt(
        remote: std::sync::Weak<Remote>,
        tls: Arc<trellis_tls::rpc::RpcTls>,
        datacenter: String,
        node: String,
        obtained: trellis_rpc::auto_encrypt::Obtained,
    ) {
        let mut next = obtained.renew_at;
        let mut failures = 0;
        loop {
            let wait = next
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            let Some(r) = remote.upgrade() else { return };
            let round = r.auto_encrypt_once(&tls, &datacenter, &node).await;
            drop(r);
            match round {
                Ok(obtained) => {
                    failures = 0;
                    next = obtained.renew_at;
                }
                Err(e) => {
                    let pause = auto_encrypt_backoff(failures);
                    failures += 1;
                    tracing::warn!(error = %e, ?pause, "auto-encrypt: renewal failed; retrying");
                    next = std::time::SystemTime::now() + pause;
                }
            }
        }
    }

    /// The client of the server ports (HTTP/2, one connection per server).
    pub(crate) fn client(&self) -> &trellis_rpc::Client {
        &self.client
    }

    /// The keys blocking reads wait on.
    pub fn watcher(&self) -> &crate::watcher::Watcher {
        &self.watcher
    }

    /// Calls `f` against the current server, moving on to the next on a transport failure.
    /// Fails at once when no server can take it: reads (the cache's refreshes among them)
    /// report a lost contact promptly and keep their own backoff.
    pub(crate) async fn with_failover<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        self.failover(true, Duration::ZERO, f).await
    }

    /// [`Remote::with_failover`] for a write, which may not be sent twice unless `resend`:
    /// one that reached a server and got no answer ([`Error::Transport`]) is then not sent to
    /// the next (it may have been applied); one never delivered ([`Error::Unreachable`])
    /// always is. When no server can take it (all unreachable,
    /// or none with a leader) the write is held and the servers tried again until the hold
    /// time passes (`rpc_hold_timeout`), as the servers hold one through an election.
    pub(crate) async fn with_failover_for<T, F, Fut>(&self, resend: bool, f: F) -> Result<T, Error>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        self.failover(resend, self.hold, f).await
    }

    async fn failover<T, F, Fut>(&self, resend: bool, hold: Duration, f: F) -> Result<T, Error>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let servers = self.servers.read().clone();
            if servers.is_empty() {
                return Err(Error::NoLeader);
            }
            let start = self.current.load(Ordering::Relaxed);
            let mut last = Error::NoLeader;
            for step in 0..servers.len() {
                let i = (start + step) % servers.len();
                match f(servers[i].clone()).await {
                    Ok(v) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(e @ Error::Transport { .. }) if !resend => return Err(e),
                    Err(e) if e.is_transport() => {
                        tracing::debug!(server = %servers[i], error = %e, "server unreachable; trying the next");
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            // No server could take it (all down or restarting, or none with a leader): held,
            // as the servers hold a request through an election, then tried again.
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let most = (hold / 16).max(Duration::from_millis(10));
            let pause = Duration::from_millis(10) + most.mul_f64(rand::random::<f64>());
            tracing::debug!(error = %last, ?pause, "held: no server could take the call");
            tokio::time::sleep_until((now + pause).min(deadline)).await;
        }
    }

    /// Sets the server list to the configured servers plus `voters` (the cluster's, as a
    /// server reported them), keeping the server in use where it is in the new list.
    fn learn(&self, voters: &[String]) {
        let mut list = self.configured.clone();
        for v in voters {
            if !list.contains(v) {
                list.push(v.clone());
            }
        }
        let mut servers = self.servers.write();
        if *servers == list {
            return;
        }
        let in_use = servers
            .get(self.current.load(Ordering::Relaxed))
            .cloned()
            .unwrap_or_default();
        let at = list.iter().position(|s| *s == in_use).unwrap_or(0);
        tracing::info!(servers = ?list, "server list updated from the cluster");
        *servers = list;
        self.current.store(at, Ordering::Relaxed);
        drop(servers);
        if let Some(path) = &self.known_file {
            if let Err(e) = write_known(path, voters) {
                tracing::warn!(path = %path.display(), error = %e, "cannot keep the server list");
            }
        }
    }

    /// Tells the servers every `interval` that this agent's node is alive (the leader keeps
    /// its member check passing) and keeps the server list current from each answer, so that
    /// the agent can fail over to servers it was not told about. A server that does not
    /// take the heartbeat within one interval, for whatever reason, is passed over for the
    /// next. Ends when the agent is dropped or has left.
    pub async fn heartbeat(
        remote: std::sync::Weak<Remote>,
        node: String,
        address: String,
        interval: Duration,
    ) {
        let Some(hb) = remote
            .upgrade()
            .map(|r| r.heartbeat_message(node, address, interval, false))
        else {
            return;
        };
        loop {
            let Some(r) = remote.upgrade() else { return };
            // While a leave is under way or done, say nothing (a failed leave resumes).
            if !r.left.load(Ordering::Relaxed) {
                let sent = r
                    .with_failover(|addr| {
                        let (r, hb) = (r.clone(), &hb);
                        async move {
                            r.client
                                .heartbeat(&addr, hb, interval)
                                .await
                                .map_err(|e| passed_over(&addr, e))
                        }
                    })
                    .await;
                match sent {
                    Ok(s) if !s.peers.is_empty() => r.learn(&s.peers),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
                }
            }
            drop(r);
            tokio::time::sleep(interval).await;
        }
    }

    /// This agent process's heartbeat (or, with `leaving`, its leave).
    fn heartbeat_message(
        &self,
        node: String,
        address: String,
        interval: Duration,
        leaving: bool,
    ) -> Heartbeat {
        Heartbeat {
            node,
            address,
            interval_ms: interval.as_millis() as u64,
            forwarded: false,
            leaving,
            incarnation: self.incarnation,
        }
    }

    /// Leaves the datacenter for good: stops the heartbeats and has the leader deregister
    /// this agent's node, so that it is gone from the members rather than failed.
    pub async fn leave(&self, node: &str, address: &str) -> Result<(), Error> {
        self.left.store(true, Ordering::Relaxed);
        let hb = self.heartbeat_message(
            node.to_string(),
            address.to_string(),
            trellis_rpc::DEFAULT_HEARTBEAT,
            true,
        );
        let sent = self
            .with_failover(|addr| {
                let hb = &hb;
                async move {
                    let limit = trellis_rpc::CALL_TIMEOUT;
                    self.client.heartbeat(&addr, hb, limit).await.map(|_| ())
                }
            })
            .await;
        if sent.is_err() {
            // Still a member: go on telling the servers so.
            self.left.store(false, Ordering::Relaxed);
        }
        sent
    }
}

impl Backend {
    /// Commits a write.
    pub async fn apply(&self, write: Write) -> Result<ApplyResponse, Error> {
        match self {
            Backend::Local(s) => s.apply(write).await,
            Backend::Remote(r) => {
                r.with_failover_for(write.idempotent(), |addr| {
                    let write = &write;
                    async move { r.client.apply(&addr, write).await }
                })
                .await
            }
        }
    }

    /// Runs a read (blocking when `opts.index` is set).
    pub async fn query(&self, query: Query, options: QueryOptions) -> Result<QueryResponse, Error> {
        match self {
            Backend::Local(s) => s.query(query, options).await,
            Backend::Remote(r) => {
                let mut options = options;
                if options.index > 0 {
                    // A blocking read waits on the key's index with the agent's other
                    // watches (one long-poll per few hundred keys), then reads at once.
                    Box::pin(crate::watcher::wait_past(
                        r,
                        query.key(),
                        options.index,
                        options.wait,
                    ))
                    .await?;
                    options.index = 0;
                }
                let req = QueryRequest { query, options };
                // Boxed so the local path's parked futures stay small.
                Box::pin(r.with_failover(|addr| {
                    let req = &req;
                    async move { r.client.query(&addr, req).await }
                }))
                .await
            }
        }
    }

    /// Leader and peers.
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        match self {
            Backend::Local(s) => Ok(s.status()),
            Backend::Remote(r) => {
                r.with_failover(|addr| async move { r.client.status(&addr).await })
                    .await
            }
        }
    }

    /// The Raft configuration: every server, voter or not, and who leads.
    pub async fn raft_configuration(&self) -> Result<RaftConfiguration, Error> {
        match self {
            Backend::Local(s) => Ok(s.leader_raft_configuration().await),
            Backend::Remote(r) => {
                let limit = Duration::from_secs(5);
                r.with_failover(|addr| async move {
                    r.client.raft_configuration(&addr, false, limit).await
                })
                .await
            }
        }
    }

    /// Removes a server from the Raft configuration (done by the leader).
    pub async fn remove_peer(&self, req: RemoveRequest) -> Result<(), Error> {
        match self {
            Backend::Local(s) => s.remove_peer(req).await,
            Backend::Remote(r) => {
                r.with_failover(|addr| {
                    let req = &req;
                    async move { r.client.remove_peer(&addr, req).await }
                })
                .await
            }
        }
    }

    /// Has a leaf CSR signed by the leader.
    pub async fn sign(&self, csr: &str) -> Result<trellis_api::IssuedCert, Error> {
        let req = SignRequest {
            csr: csr.to_string(),
            for_node: None,
        };
        match self {
            Backend::Local(s) => s.sign(&req).await,
            Backend::Remote(r) => {
                Box::pin(r.with_failover(|addr| {
                    let req = &req;
                    async move { r.client.sign(&addr, req).await }
                }))
                .await
            }
        }
    }

    /// Changes the CA configuration.
    pub async fn set_ca_config(&self, cfg: trellis_api::CaConfiguration) -> Result<(), Error> {
        match self {
            Backend::Local(s) => s.set_ca_config(cfg).await,
            Backend::Remote(r) => {
                Box::pin(r.with_failover_for(false, |addr| {
                    let cfg = &cfg;
                    async move { r.client.set_ca_config(&addr, cfg).await }
                }))
                .await
            }
        }
    }

    /// The in-process server, if this agent is one.
    pub fn server(&self) -> Option<&Arc<Server>> {
        match self {
            Backend::Local(s) => Some(s),
            Backend::Remote(_) => None,
        }
    }
}
