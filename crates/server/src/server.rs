//! The server: Raft node, store, write and read paths.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use trellis_raft::{open_db, open_memory_db, LogStore, Network, Raft, ServerNode, StateMachine};
use trellis_state::{Applied, Command, Query, Store};

use trellis_rpc::{
    ApplyResponse, AutoEncryptSignRequest, AutoEncryptSignResponse, Error, QueryOptions,
    QueryRequest, QueryResponse, SignRequest, Write,
};

use crate::batch::{Batcher, Outcome};
use crate::ca::CaManager;

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Node name of this server.
    pub node_name: String,
    /// Datacenter name.
    pub datacenter: String,
    /// Where the Raft database lives; `None` keeps everything in memory (dev mode).
    pub data_dir: Option<PathBuf>,
    /// Address the server port listens on; also what peers and agents dial.
    pub rpc_addr: SocketAddr,
    /// Number of servers to wait for before bootstrapping; 1 bootstraps alone.
    pub bootstrap_expect: u32,
    /// Other servers' server-port addresses to join.
    pub retry_join: Vec<String>,
    /// Raft log entries between snapshots.
    pub snapshot_threshold: u64,
    /// The PKCS#11 modules the CA may load (the operator's allow-list; empty: none). A CA
    /// configuration naming any other module is refused and the module never loaded.
    pub pkcs11_modules: trellis_ca::Pkcs11Modules,
    /// Connections one client IP may hold open to the server port, 0 for no limit (Consul's
    /// `limits { rpc_max_conns_per_client }`, [`crate::listen::Limits::RPC`] by default).
    pub rpc_max_conns_per_client: usize,
    /// How long a write or read waits for a leader (Consul's `rpc_hold_timeout`,
    /// [`RPC_HOLD_TIMEOUT`] by default): while there is none, or the one known cannot be
    /// reached, the request is tried again until one answers or this time has passed.
    pub rpc_hold_timeout: Duration,
    /// TLS on the server port (Consul's `tls { internal_rpc }`): served when it holds a
    /// certificate, and used to dial other servers when outgoing TLS is on. `None`: plaintext.
    pub tls: Option<Arc<trellis_tls::rpc::RpcTls>>,
    /// ACLs (`acl { enabled }`): `None` when off. The leader initialises the ACL system.
    pub acl: Option<crate::acl::ServerAcl>,
}

/// Consul's default `performance { rpc_hold_timeout }`: long enough to ride out an election.
pub const RPC_HOLD_TIMEOUT: Duration = Duration::from_secs(7);

/// Why a server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A request failed as a caller of a server sees it: no leader, refused, not found, or
    /// another server unreachable (the server port's [`trellis_rpc::Error`]).
    #[error(transparent)]
    Rpc(#[from] Error),
    /// The Raft database could not be opened.
    #[error(transparent)]
    Storage(#[from] trellis_raft::StorageError),
    /// The Raft node could not start or has stopped.
    #[error("raft: {0}")]
    Raft(String),
    /// The CA refused (bad CSR or configuration, rate limit, not initialised).
    #[error(transparent)]
    Ca(#[from] trellis_ca::CaError),
    /// The data directory is damaged or incomplete; the server refuses to start on it.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The server port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<ServerError> for Error {
    /// What a caller of this server sees of its failure: the request-level errors as they are,
    /// the CA's by kind, anything else as internal.
    fn from(e: ServerError) -> Error {
        match e {
            ServerError::Rpc(e) => e,
            ServerError::Ca(e) => e.into(),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The Raft database's file name in the server's data directory.
pub const DB_FILE: &str = "raft.redb";

/// How long the leader may go without a Raft RPC answered by a voter before reporting it as
/// failed (`/v1/agent/members`).
pub const PEER_FAILED_AFTER: Duration = Duration::from_secs(3);

/// A file written once the server belongs to a cluster: a data directory holding it but no
/// Raft state is damaged, and the server refuses to start empty on it.
pub const MEMBER_MARKER: &str = "cluster-member";

/// Writes the [`MEMBER_MARKER`] (durably) once the server belongs to a cluster.
async fn record_membership(server: std::sync::Weak<Server>, dir: PathBuf) {
    let Some(mut metrics) = server.upgrade().map(|s| s.raft.metrics()) else {
        return;
    };
    loop {
        let member = metrics
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some();
        if member {
            let path = dir.join(MEMBER_MARKER);
            if !path.exists() {
                let write = std::fs::File::create(&path).and_then(|f| f.sync_all());
                if let Err(e) = write {
                    tracing::warn!(path = %path.display(), error = %e, "cannot record cluster membership");
                }
                if let Ok(d) = std::fs::File::open(&dir) {
                    let _ = d.sync_all();
                }
            }
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the leader-only work (the CA manager and the member health loop now; replication
/// later) when this server becomes leader and aborts it when it steps down, so it never runs on
/// two servers of one term. The CA manager's writes are check-and-set, so one overlapping a
/// leadership change cannot undo the new leader's; the member loop's are committed only while
/// this server leads (never forwarded to its successor).
async fn leadership(server: std::sync::Weak<Server>) {
    let Some((mut metrics, node_id)) = server.upgrade().map(|s| (s.raft.metrics(), s.node_id))
    else {
        return;
    };
    let mut work: Option<Vec<tokio::task::JoinHandle<()>>> = None;
    loop {
        let (leading, term) = {
            let m = metrics.borrow();
            (
                m.current_leader == Some(node_id) && m.state.is_leader(),
                m.current_term,
            )
        };
        match (leading, work.is_some()) {
            (true, false) => {
                if let Some(s) = server.upgrade() {
                    *s.leader_since.lock() = Some(Instant::now());
                    s.liveness.clear();
                }
                tracing::info!(term, "became leader: leader-only work started");
                work = Some(vec![
                    tokio::spawn(crate::ca::run(server.clone(), Duration::from_secs(60))),
                    tokio::spawn(crate::members::reconcile(server.clone())),
                    tokio::spawn(crate::acl::run(server.clone())),
                ]);
            }
            (false, true) => {
                for w in work.take().into_iter().flatten() {
                    w.abort();
                }
                if let Some(s) = server.upgrade() {
                    *s.leader_since.lock() = None;
                }
                tracing::info!(term, "no longer leader: leader-only work stopped");
            }
            _ => {}
        }
        if metrics.changed().await.is_err() {
            for w in work.take().into_iter().flatten() {
                w.abort();
            }
            return;
        }
    }
}

/// With auto-encrypt (`allow_tls`): keeps the server port's trust in client agents'
/// certificates on the Connect CA's current roots (a root added by rotation is trusted as soon
/// as this server applies it). Ends once the server is dropped.
async fn follow_connect_roots(server: std::sync::Weak<Server>, tls: Arc<trellis_tls::rpc::RpcTls>) {
    let mut index = 0;
    loop {
        let Some(store) = server.upgrade().map(|s| s.store.clone()) else {
            return;
        };
        let (_, next) = store
            .blocking_query(&Query::CaRoots, index, Duration::from_secs(30))
            .await;
        if next != index {
            index = next;
            if let Some(state) = store.ca_state() {
                let roots: Vec<String> = state
                    .roots
                    .iter()
                    .map(|r| r.root.root_cert.clone())
                    .collect();
                match tls.set_connect_roots(&state.trust_domain, &roots) {
                    Ok(()) => {
                        tracing::debug!(roots = roots.len(), "auto-encrypt: Connect roots trusted")
                    }
                    Err(e) => tracing::warn!(error = %e, "auto-encrypt: Connect roots not usable"),
                }
            }
        }
    }
}

/// A running server.
pub struct Server {
    pub(crate) config: ServerConfig,
    pub(crate) node_id: u64,
    pub(crate) raft: Raft,
    store: Store,
    pub(crate) http: trellis_rpc::Client,
    /// Groups concurrent writes into one Raft entry.
    batcher: Batcher,
    /// Leader-side CA work.
    ca: CaManager,
    /// Raft's metrics (leader, membership), read without cloning a receiver per request.
    pub(crate) metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, ServerNode>>,
    /// When the leader last reached this server (Raft append received).
    pub(crate) last_contact: Mutex<Instant>,
    /// The Raft transport, which knows when each peer last answered.
    pub(crate) network: Network,
    /// Since when this server leads (None while it does not).
    pub(crate) leader_since: Mutex<Option<Instant>>,
    /// Held while a membership change is made, so that two never interleave here.
    pub(crate) membership_lock: tokio::sync::Mutex<()>,
    /// On the leader: when each client agent was last heard from.
    pub(crate) liveness: crate::members::Liveness,
}

impl Server {
    /// Opens the state (from disk, or in memory), starts Raft, binds the server port, and
    /// bootstraps a new cluster when this server alone is expected.
    pub async fn start(config: ServerConfig) -> Result<Arc<Server>, ServerError> {
        let listener =
            crate::listen::bind(config.rpc_addr).map_err(|source| ServerError::Bind {
                addr: config.rpc_addr,
                source,
            })?;
        let db = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ServerError::Raft(format!("data dir {}: {e}", dir.display())))?;
                let path = dir.join(DB_FILE);
                if !path.exists() && dir.join(MEMBER_MARKER).exists() {
                    return Err(ServerError::DataDir(format!(
                        "{} is missing, but this data directory belonged to a cluster member; \
                         refusing to start empty. Restore the file, or remove {} to start over \
                         as a new server",
                        path.display(),
                        dir.display()
                    )));
                }
                open_db(&path)?
            }
            None => open_memory_db()?,
        };
        let node_id = trellis_raft::node_id(&db)?;
        let store = Store::new(&config.datacenter);
        let sm = StateMachine::open(db.clone(), store.clone())
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        let raft_config = Arc::new(
            trellis_raft::raft_config(&config.datacenter, config.snapshot_threshold)
                .validate()
                .map_err(|e| ServerError::Raft(e.to_string()))?,
        );
        let network = Network::with_client(
            trellis_rpc::Client::new(Network::client_builder(), config.tls.as_deref())
                .http()
                .clone(),
        );
        let raft = Raft::new(node_id, raft_config, network.clone(), LogStore::new(db), sm)
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        // HTTP/2 with prior knowledge (every server port serves h2c): forwarded reads and
        // writes to the leader share one connection, however many are parked, and so stay
        // within the leader's per-client connection limit.
        let http = trellis_rpc::Client::new(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .http2_prior_knowledge(),
            config.tls.as_deref(),
        );
        let ca = CaManager::new(config.pkcs11_modules.clone());
        let server = Arc::new(Server {
            config,
            node_id,
            metrics: raft.metrics(),
            batcher: Batcher::start(raft.clone()),
            ca,
            raft,
            store,
            http,
            last_contact: Mutex::new(Instant::now()),
            membership_lock: tokio::sync::Mutex::new(()),
            network,
            leader_since: Mutex::new(None),
            liveness: Default::default(),
        });
        if let Some(dir) = &server.config.data_dir {
            server.check_membership_record(dir).await?;
            tokio::spawn(record_membership(Arc::downgrade(&server), dir.clone()));
        }
        let router = crate::rpc::router(server.clone());
        let limits = crate::listen::Limits {
            max_conns_per_client: server.config.rpc_max_conns_per_client,
            ..crate::listen::Limits::RPC
        };
        let tls = server
            .config
            .tls
            .as_ref()
            .and_then(crate::listen::RpcTlsAcceptor::new);
        if tls.is_some() {
            tracing::info!(
                verify_incoming = server
                    .config
                    .tls
                    .as_deref()
                    .is_some_and(|t| t.verify_incoming()),
                "server port: TLS on"
            );
        }
        tokio::spawn(crate::listen::serve_rpc(listener, router, limits, tls));
        if let Some(tls) = server.config.tls.clone().filter(|t| t.allow_tls()) {
            tracing::info!("auto-encrypt: signing client agents' certificates (allow_tls)");
            tokio::spawn(follow_connect_roots(Arc::downgrade(&server), tls));
        }
        server.bootstrap(&server).await?;
        tokio::spawn(leadership(Arc::downgrade(&server)));
        Ok(server)
    }

    /// Refuses a database with no Raft state in a data directory that belonged to a cluster
    /// member (the file replaced or emptied).
    async fn check_membership_record(&self, dir: &std::path::Path) -> Result<(), ServerError> {
        if !dir.join(MEMBER_MARKER).exists() || self.initialized().await? {
            return Ok(());
        }
        Err(ServerError::DataDir(format!(
            "{} holds no Raft state, but this data directory belonged to a cluster member; \
             refusing to start empty. Restore the file, or remove {} to start over as a new \
             server",
            dir.join(DB_FILE).display(),
            dir.display()
        )))
    }

    /// Whether this server's Raft state holds a cluster (a vote or a log).
    async fn initialized(&self) -> Result<bool, ServerError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))
    }

    async fn bootstrap(&self, this: &Arc<Server>) -> Result<(), ServerError> {
        tokio::spawn(crate::cluster::stay_member(Arc::downgrade(this)));
        if self.initialized().await? {
            tracing::info!(
                node_id = self.node_id,
                "raft state found; rejoining the cluster"
            );
            return Ok(());
        }
        if self.config.bootstrap_expect == 1 && self.config.retry_join.is_empty() {
            let mut members = BTreeMap::new();
            members.insert(self.node_id, self.me());
            self.raft
                .initialize(members)
                .await
                .map_err(|e| ServerError::Raft(e.to_string()))?;
            tracing::info!(node_id = self.node_id, "bootstrapped a one-server cluster");
        } else {
            tokio::spawn(crate::cluster::form(Arc::downgrade(this)));
        }
        Ok(())
    }

    pub(crate) fn me(&self) -> ServerNode {
        ServerNode {
            addr: self.config.rpc_addr.to_string(),
            name: self.config.node_name.clone(),
        }
    }

    /// The Raft handle (for the server port's RPC handlers).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The current leader's server address, if one is known.
    pub fn leader(&self) -> Option<ServerNode> {
        let m = self.metrics.borrow().clone();
        let leader = m.current_leader?;
        let node = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.clone());
        node
    }

    /// True while this server is the leader.
    pub fn is_leader(&self) -> bool {
        self.metrics.borrow().current_leader == Some(self.node_id)
    }

    /// Server addresses of the voters.
    pub fn peers(&self) -> Vec<ServerNode> {
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        membership
            .nodes()
            .filter(|(id, _)| membership.voter_ids().any(|v| v == **id))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Leader and voters as this server knows them.
    pub fn status(&self) -> trellis_rpc::StatusResponse {
        let peers = self.peers();
        trellis_rpc::StatusResponse {
            leader: self.leader().map(|l| l.addr).unwrap_or_default(),
            peers: peers.iter().map(|p| p.addr.clone()).collect(),
            peer_names: peers.iter().map(|p| p.name.clone()).collect(),
            datacenter: self.config.datacenter.clone(),
        }
    }

    /// On the leader: each voter and whether it answers. Another voter is unreachable once it
    /// has not answered a Raft RPC for [`PEER_FAILED_AFTER`] (or ever, once this server has
    /// led that long).
    pub(crate) fn voter_health(&self) -> Vec<crate::members::ServerHealth> {
        let led_long_enough = self
            .leader_since
            .lock()
            .is_some_and(|t| t.elapsed() > PEER_FAILED_AFTER);
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, n)| {
                let reachable = *id == self.node_id
                    || match self.network.since_contact(*id) {
                        Some(ago) => ago <= PEER_FAILED_AFTER,
                        None => !led_long_enough,
                    };
                let address = n
                    .addr
                    .parse::<std::net::SocketAddr>()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|_| n.addr.clone());
                crate::members::ServerHealth {
                    name: n.name.clone(),
                    address,
                    reachable,
                }
            })
            .collect()
    }

    /// Waits until some leader is known (start-up), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        tokio::time::timeout(timeout, async {
            loop {
                if metrics.borrow().current_leader.is_some() {
                    return;
                }
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            0
        } else {
            self.last_contact.lock().elapsed().as_millis() as u64
        }
    }

    /// Commits a write through Raft (forwarding it to the leader when this server is not it)
    /// and returns its outcome and log index once it is applied here or on the leader. While
    /// there is no leader, or the one known cannot be reached, the write is held and tried
    /// again (the hold); one that may have reached a leader that then went away
    /// is sent again only if applying it twice changes nothing ([`Write::idempotent`]).
    pub async fn apply(&self, write: Write) -> Result<ApplyResponse, Error> {
        let resend = write.idempotent();
        let mut cmd = Command::from(write.clone());
        let data_dir = self.config.data_dir.as_deref();
        if let Command::AclBootstrap { reset_index, .. } = &mut cmd {
            // Only the leader applies it: its own reset file counts.
            *reset_index = crate::acl::reset_index(data_dir);
        }
        self.hold(resend, || async {
            match self.batcher.submit(cmd.clone()).await {
                Outcome::Done(resp) => {
                    if let (
                        Command::AclBootstrap {
                            reset_index: Some(_),
                            ..
                        },
                        Applied::Done,
                    ) = (&cmd, &resp.applied)
                    {
                        crate::acl::reset_used(data_dir);
                    }
                    Ok(resp)
                }
                Outcome::Forward(leader) => {
                    let node = leader.ok_or(Error::NoLeader)?;
                    self.http.apply(&node.addr, &write).await
                }
                Outcome::Failed(e) => Err(Error::Internal(format!("raft: {e}"))),
            }
        })
        .await
    }

    /// Runs `attempt` until it succeeds, fails for a reason waiting cannot mend, or the hold
    /// time ([`ServerConfig::rpc_hold_timeout`]) has passed, as Consul's servers hold an RPC
    /// through a leader election. Worth another try: no leader known, or the leader could not
    /// be reached (nothing was delivered); a request that was sent but got no answer only when
    /// `resend` (reads, and writes that applying twice does not change). Between tries a
    /// random pause of up to 1/16 of the hold time (Consul's jitter), at least 10 ms. A leader
    /// still unreachable when the hold ends is answered as none: "No cluster leader".
    async fn hold<T, F, Fut>(&self, resend: bool, attempt: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let hold = self.config.rpc_hold_timeout;
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let worth_waiting = match &err {
                Error::NoLeader | Error::Unreachable { .. } => true,
                Error::Transport { .. } => resend,
                _ => false,
            };
            let now = tokio::time::Instant::now();
            if !worth_waiting {
                return Err(err);
            }
            if now >= deadline {
                // A leader known but not reachable for the whole hold is no leader to the
                // caller: Consul's "No cluster leader" (the address is in the log).
                if let Error::Unreachable { .. } = &err {
                    tracing::warn!(error = %err, "no leader answered within rpc_hold_timeout");
                    return Err(Error::NoLeader);
                }
                return Err(err);
            }
            let most = (hold / 16).max(Duration::from_millis(10));
            let pause = Duration::from_millis(10) + most.mul_f64(rand::random::<f64>());
            tracing::debug!(error = %err, ?pause, "held: no leader answered; trying again");
            tokio::time::sleep_until((now + pause).min(deadline)).await;
        }
    }

    /// Commits a command through Raft only while this server leads (leader-only work: a write
    /// computed from a leader's view must not be forwarded to its successor).
    pub(crate) async fn apply_as_leader(&self, cmd: Command) -> Result<ApplyResponse, ServerError> {
        match self.batcher.submit(cmd).await {
            Outcome::Done(resp) => Ok(resp),
            Outcome::Forward(_) => Err(Error::NoLeader.into()),
            Outcome::Failed(e) => Err(ServerError::Raft(e)),
        }
    }

    /// The CA manager (leader-side CA work).
    pub(crate) fn ca(&self) -> &CaManager {
        &self.ca
    }

    /// Signs a leaf CSR; forwarded to the leader, which alone signs (held through an
    /// election; a CSR sent again at worst yields a second certificate for the same key).
    /// With `for_node` (a client agent's request), only for a service registered on that node.
    pub async fn sign(&self, req: &SignRequest) -> Result<trellis_api::IssuedCert, Error> {
        self.hold(true, || async {
            if self.is_leader() {
                return Ok(self.ca.sign(self, req).await?);
            }
            let leader = self.leader().ok_or(Error::NoLeader)?;
            Box::pin(self.http.sign(&leader.addr, req)).await
        })
        .await
    }

    /// Signs a client agent's server-port certificate (auto-encrypt; Consul's
    /// `AutoEncrypt.Sign`, with its refusals): only with `auto_encrypt.allow_tls`, only for
    /// this datacenter, by the leader (forwarded there, held through an election). Answers the
    /// certificate, the Connect roots and the servers' own CA bundle.
    pub async fn auto_encrypt_sign(
        &self,
        req: &AutoEncryptSignRequest,
    ) -> Result<AutoEncryptSignResponse, Error> {
        let Some(tls) = self.config.tls.as_ref().filter(|t| t.allow_tls()) else {
            return Err(Error::BadRequest(
                "AutoEncrypt.AllowTLS must be enabled in order to use this endpoint".into(),
            ));
        };
        if req.datacenter != self.config.datacenter {
            return Err(Error::BadRequest(format!(
                "mismatched datacenter (client_dc='{}' server_dc='{}'); check client has same datacenter set as servers",
                req.datacenter, self.config.datacenter
            )));
        }
        self.hold(true, || async {
            if !self.is_leader() {
                let leader = self.leader().ok_or(Error::NoLeader)?;
                return Box::pin(self.http.auto_encrypt_sign(&leader.addr, req)).await;
            }
            let issued_cert = self.ca.sign_agent(self, &req.csr).await?;
            let state = self
                .store
                .ca_state()
                .ok_or_else(|| Error::from(trellis_ca::CaError::Uninitialized))?;
            Ok(AutoEncryptSignResponse {
                issued_cert,
                trust_domain: state.trust_domain,
                connect_ca_roots: state.roots.into_iter().map(|r| r.root.root_cert).collect(),
                manual_ca_roots: tls.ca_pems().to_vec(),
                verify_server_hostname: tls.server_name().is_some(),
            })
        })
        .await
    }

    /// Changes the CA configuration (on the leader; forwarded there otherwise). Held through
    /// an election, but never sent twice: a second copy could rotate the root again.
    pub async fn set_ca_config(&self, update: trellis_api::CaConfiguration) -> Result<(), Error> {
        self.hold(false, || async {
            if self.is_leader() {
                return Ok(self.ca.set_config(self, update.clone()).await?);
            }
            let leader = self.leader().ok_or(Error::NoLeader)?;
            Box::pin(self.http.set_ca_config(&leader.addr, &update)).await
        })
        .await
    }

    /// Answers a read. Default and `consistent` reads are answered by the leader (forwarded);
    /// `stale` reads by this server from its own copy.
    pub async fn query(&self, q: Query, opts: QueryOptions) -> Result<QueryResponse, Error> {
        if !opts.stale && !self.is_leader() {
            // Held through an election like a write (a read may always be sent again).
            let req = QueryRequest {
                query: q.clone(),
                options: opts.clone(),
            };
            let forwarded = self
                .hold(true, || async {
                    if self.is_leader() {
                        return Ok(None);
                    }
                    let leader = self.leader().ok_or(Error::NoLeader)?;
                    // Boxed: a forwarded read's future is large, and a parked local read
                    // should not carry its space.
                    Box::pin(self.forward_query(&leader.addr, req.clone()))
                        .await
                        .map(Some)
                })
                .await?;
            if let Some(answer) = forwarded {
                return Ok(answer);
            }
        }
        if opts.consistent {
            Box::pin(self.raft.ensure_linearizable())
                .await
                .map_err(|e| Error::Internal(format!("raft: {e}")))?;
        }
        let (output, index) = self.store.blocking_query(&q, opts.index, opts.wait).await;
        let known_leader = self.metrics.borrow().current_leader.is_some();
        Ok(QueryResponse {
            output,
            index,
            known_leader,
            last_contact_ms: self.last_contact_ms(),
        })
    }

    async fn forward_query(&self, addr: &str, req: QueryRequest) -> Result<QueryResponse, Error> {
        self.http.query(addr, &req).await
    }
}
