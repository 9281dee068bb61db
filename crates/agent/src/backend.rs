//! Where an agent sends writes and catalog reads: its own server, or remote servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trellis_server::{
    post_json, remote_query, ApplyResponse, QueryOptions, QueryRequest, QueryResponse, Server,
    ServerError, SignRequest, StatusResponse, RPC_APPLY, RPC_CA_CONFIG, RPC_CA_SIGN, RPC_STATUS,
};
use trellis_state::{Command, Query};

/// GETs a server-port path and decodes its JSON; any failure is a transport failure (worth
/// trying another server).
async fn get_rpc<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    addr: &str,
    path: &str,
) -> Result<T, ServerError> {
    let err = |message: String| ServerError::Rpc {
        addr: addr.to_string(),
        message,
    };
    http.get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| err(e.to_string()))?
        .json()
        .await
        .map_err(|e| err(e.to_string()))
}

/// The agent's route to the servers.
#[derive(Clone)]
pub enum Backend {
    /// This process is a server (dev or server mode).
    Local(Arc<Server>),
    /// A client agent: servers reached over their server port, with failover.
    Remote(Arc<Remote>),
}

/// How often a client agent refreshes its server list from the cluster.
pub const SERVER_LIST_REFRESH: Duration = Duration::from_secs(30);

/// Remote servers and which one is in use.
pub struct Remote {
    /// The servers this agent was told to join, always kept in the list.
    configured: Vec<String>,
    /// Every server known: the configured ones and the cluster's voters when last asked.
    servers: parking_lot::RwLock<Vec<String>>,
    current: AtomicUsize,
    http: reqwest::Client,
    /// The store keys this agent's blocking reads wait on, long-polled in shards.
    watcher: crate::watcher::Watcher,
}

impl Remote {
    /// Servers at these server-port addresses.
    pub fn new(servers: Vec<String>) -> Remote {
        // HTTP/2 to the server port: every call and parked blocking query of this agent is a
        // stream on one connection per server, not a connection each.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_prior_knowledge()
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .build()
            .expect("HTTP client builds");
        // Agents start on a random server so that their load spreads over the servers.
        let start = if servers.is_empty() {
            0
        } else {
            rand::random_range(0..servers.len())
        };
        Remote {
            configured: servers.clone(),
            servers: parking_lot::RwLock::new(servers),
            current: AtomicUsize::new(start),
            http,
            watcher: crate::watcher::Watcher::default(),
        }
    }

    /// The HTTP/2 client to the server ports.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The keys blocking reads wait on.
    pub fn watcher(&self) -> &crate::watcher::Watcher {
        &self.watcher
    }

    /// Calls `f` against the current server, moving on to the next on a transport failure.
    pub(crate) async fn with_failover<T, F, Fut>(&self, f: F) -> Result<T, ServerError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServerError>>,
    {
        let servers = self.servers.read().clone();
        if servers.is_empty() {
            return Err(ServerError::NoLeader);
        }
        let start = self.current.load(Ordering::Relaxed);
        let mut last = ServerError::NoLeader;
        for step in 0..servers.len() {
            let i = (start + step) % servers.len();
            match f(servers[i].clone()).await {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e @ ServerError::Rpc { .. }) => {
                    tracing::debug!(server = %servers[i], error = %e, "server unreachable; trying the next");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
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
    }

    /// Keeps the server list current: asks the cluster for its voters now and every
    /// [`SERVER_LIST_REFRESH`], so that the agent can fail over to servers it was not told
    /// about. Ends when the agent is dropped.
    pub async fn refresh_servers(remote: std::sync::Weak<Remote>) {
        loop {
            let Some(r) = remote.upgrade() else { return };
            let status = r
                .with_failover(|addr| {
                    let r = r.clone();
                    async move { get_rpc::<StatusResponse>(&r.http, &addr, RPC_STATUS).await }
                })
                .await;
            // Until the cluster has named its voters (it may still be forming), ask again soon.
            let next = match status {
                Ok(s) if !s.peers.is_empty() => {
                    r.learn(&s.peers);
                    SERVER_LIST_REFRESH
                }
                Ok(_) => Duration::from_secs(1),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot refresh the server list");
                    Duration::from_secs(1)
                }
            };
            drop(r);
            tokio::time::sleep(next).await;
        }
    }
}

impl Backend {
    /// Commits a write.
    pub async fn apply(&self, cmd: Command) -> Result<ApplyResponse, ServerError> {
        match self {
            Backend::Local(s) => s.apply(cmd).await,
            Backend::Remote(r) => {
                r.with_failover(|addr| {
                    let cmd = cmd.clone();
                    async move { post_json(&r.http, &addr, RPC_APPLY, &cmd).await }
                })
                .await
            }
        }
    }

    /// Runs a read (blocking when `opts.index` is set).
    pub async fn query(
        &self,
        query: Query,
        options: QueryOptions,
    ) -> Result<QueryResponse, ServerError> {
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
                    let req = req.clone();
                    async move { remote_query(&r.http, &addr, &req).await }
                }))
                .await
            }
        }
    }

    /// Leader and peers.
    pub async fn status(&self) -> Result<StatusResponse, ServerError> {
        match self {
            Backend::Local(s) => Ok(s.status(false).await),
            Backend::Remote(r) => {
                let path = format!("{RPC_STATUS}?local");
                r.with_failover(|addr| {
                    let path = path.clone();
                    async move { get_rpc(&r.http, &addr, &path).await }
                })
                .await
            }
        }
    }

    /// The voters the leader has not reached lately (its view, asked of it).
    pub async fn failed_peers(&self) -> Result<Vec<String>, ServerError> {
        match self {
            Backend::Local(s) => Ok(s.status(true).await.failed_peers),
            Backend::Remote(r) => r
                .with_failover(|addr| async move {
                    get_rpc::<StatusResponse>(&r.http, &addr, RPC_STATUS).await
                })
                .await
                .map(|s| s.failed_peers),
        }
    }

    /// The Raft configuration: every server, voter or not, and who leads.
    pub async fn raft_configuration(
        &self,
    ) -> Result<trellis_server::cluster::RaftConfiguration, ServerError> {
        use trellis_server::cluster::RPC_CONFIGURATION;
        match self {
            Backend::Local(s) => Ok(s.leader_raft_configuration().await),
            Backend::Remote(r) => {
                r.with_failover(
                    |addr| async move { get_rpc(&r.http, &addr, RPC_CONFIGURATION).await },
                )
                .await
            }
        }
    }

    /// Removes a server from the Raft configuration (done by the leader).
    pub async fn remove_peer(
        &self,
        req: trellis_server::cluster::RemoveRequest,
    ) -> Result<(), ServerError> {
        use trellis_server::cluster::RPC_REMOVE;
        match self {
            Backend::Local(s) => s.remove_peer(req).await,
            Backend::Remote(r) => r
                .with_failover(|addr| {
                    let req = req.clone();
                    async move { post_json::<_, bool>(&r.http, &addr, RPC_REMOVE, &req).await }
                })
                .await
                .map(|_| ()),
        }
    }

    /// Has a leaf CSR signed by the leader.
    pub async fn sign(&self, csr: &str) -> Result<trellis_api::IssuedCert, ServerError> {
        match self {
            Backend::Local(s) => s.sign(csr).await,
            Backend::Remote(r) => {
                let req = SignRequest {
                    csr: csr.to_string(),
                };
                Box::pin(r.with_failover(|addr| {
                    let req = req.clone();
                    async move { post_json(&r.http, &addr, RPC_CA_SIGN, &req).await }
                }))
                .await
            }
        }
    }

    /// Changes the CA configuration.
    pub async fn set_ca_config(
        &self,
        cfg: trellis_api::CaConfiguration,
    ) -> Result<(), ServerError> {
        match self {
            Backend::Local(s) => s.set_ca_config(cfg).await,
            Backend::Remote(r) => {
                Box::pin(r.with_failover(|addr| {
                    let cfg = cfg.clone();
                    async move {
                        post_json::<_, bool>(&r.http, &addr, RPC_CA_CONFIG, &cfg)
                            .await
                            .map(|_| ())
                    }
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
