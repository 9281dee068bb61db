//! The agent: wiring of server (if any), backend, local state, checks, sync and HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use trellis_api::{AgentService, CheckDefinition, ServiceDefinition};
use trellis_rpc::QueryOptions;
use trellis_server::{Server, ServerConfig};
use trellis_state::{Query, QueryOutput};

use crate::backend::{Backend, Remote};
use crate::checks::CheckRunner;
use crate::definition::{expand, local_check, pick_sidecar_port, validate_name};
use crate::error::bad;
use crate::http::Params;
use crate::local::LocalState;
use crate::sync::{NodeInfo, Syncer};
use crate::AgentError;

/// How an agent is set up (flags and config files resolved).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Node name.
    pub node_name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Address the HTTP API listens on.
    pub http_addr: SocketAddr,
    /// Address advertised for this node in the catalog.
    pub advertise_addr: String,
    /// Where agent state persists; `None` keeps it in memory (dev mode).
    pub data_dir: Option<PathBuf>,
    /// Run a server in this process.
    pub server: Option<ServerConfig>,
    /// Servers to use when this agent is a client (their server-port addresses).
    pub retry_join: Vec<String>,
    /// Period of the full anti-entropy sync.
    pub sync_interval: Duration,
    /// How often a client agent tells the servers it is alive (its node is failed after
    /// [`trellis_server::members::MISSED_BEFORE_FAILED`] missed).
    pub heartbeat_interval: Duration,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// Window over which leaf watchers re-issue after a CA root change.
    pub leaf_root_change_jitter: Duration,
    /// What `/v1/agent/connect/authorize` answers when no intention matches; `None` follows
    /// the ACL default policy (allow while ACLs are off).
    pub default_intention_policy: Option<trellis_intentions::Action>,
    /// How long a cache entry lives without being read (Consul's 72 hours by default).
    pub cache_ttl: Duration,
    /// What the HTTP API allows one client: connections per IP, body size and time
    /// ([`trellis_server::listen::Limits::HTTP`] by default).
    pub http_limits: trellis_server::listen::Limits,
    /// TLS for dialling the servers' port when this agent is a client (Consul's
    /// `tls { internal_rpc }`; a server agent's is [`ServerConfig::tls`]). `None`: plaintext.
    pub rpc_tls: Option<std::sync::Arc<trellis_tls::rpc::RpcTls>>,
    /// How long a client agent holds a write no server can take (all unreachable) before
    /// failing it (Consul's `rpc_hold_timeout`).
    pub rpc_hold_timeout: Duration,
    /// ACLs: off, or how tokens are resolved and the agent's own tokens.
    pub acl: crate::acl::AgentAcl,
}

/// The file in a client agent's data directory keeping the servers it last learned.
pub const KNOWN_SERVERS_FILE: &str = "known-servers.json";

/// A running agent.
pub struct Agent {
    config: AgentConfig,
    node_id: String,
    backend: Backend,
    local: Arc<LocalState>,
    checks: Arc<CheckRunner>,
    /// Serialises registrations so sidecar port choice and check runners stay consistent.
    register_lock: parking_lot::Mutex<()>,
    /// Leaf certificates of this agent's services, by (datacenter, token, service).
    leafs: crate::leaf::LeafStore<crate::leaf::Servers>,
    /// Each local proxy's configuration resolved from config entries.
    service_configs: crate::service_config::ServiceConfigs,
    /// Intentions of the destinations asked about, by (datacenter, token, destination), kept
    /// fresh in the background.
    intentions: Arc<crate::cache::Cache<crate::cache::IntentionMatch>>,
    /// Store reads served from memory (`?cached`, the agent's roots endpoint), by
    /// (datacenter, token, query).
    queries: Arc<crate::cache::Cache<crate::cache::StoreQuery>>,
    /// Set when the agent has left (`PUT /v1/agent/leave`); the process then exits.
    left: tokio::sync::watch::Sender<bool>,
    /// The anti-entropy task, stopped before leaving (so that it cannot write the node back).
    syncer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The anti-entropy loop as started, to start again if a leave fails.
    sync_again: crate::sync::Syncer,
    /// Resolves the tokens requests carry.
    acl: Arc<trellis_acl_resolver::Resolver>,
    /// The agent's own tokens (`acl.tokens`, `/v1/agent/token/<kind>`).
    tokens: crate::acl::Tokens,
    /// Answers filtered per identity (ACLs on).
    filtered: crate::acl::FilteredAnswers,
}

fn startup(msg: impl std::fmt::Display) -> AgentError {
    AgentError::Startup(msg.to_string())
}

/// Reads the node ID kept in the data dir, or makes one (and keeps it there).
fn node_id(data_dir: Option<&PathBuf>) -> Result<String, AgentError> {
    let Some(dir) = data_dir else {
        return Ok(uuid::Uuid::new_v4().to_string());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| startup(format!("data dir {}: {e}", dir.display())))?;
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            uuid::Uuid::parse_str(id)
                .map_err(|_| startup(format!("{} does not hold a UUID", path.display())))?;
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)
                .map_err(|e| startup(format!("writing {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(startup(format!("reading {}: {e}", path.display()))),
    }
}

impl Agent {
    /// Starts the agent's parts (server, checks, sync) and binds its HTTP port. The returned
    /// future serves HTTP until the process ends.
    pub async fn start(config: AgentConfig) -> Result<(Arc<Agent>, TcpListener), AgentError> {
        // Consul's check of `node_meta` at start, with its message.
        trellis_api::validate_node_meta(&config.node_meta, false)
            .map_err(|e| startup(format!("node_meta invalid: {e}")))?;
        let node_id = node_id(config.data_dir.as_ref())?;
        let http = trellis_server::listen::bind(config.http_addr)
            .map_err(|e| startup(format!("cannot listen on {}: {e}", config.http_addr)))?;
        let mut extra = Vec::new();
        let backend = match &config.server {
            Some(sc) => {
                let server = Server::start(sc.clone())
                    .await
                    .map_err(|e| startup(format!("server: {e}")))?;
                if !server.wait_for_leader(Duration::from_secs(10)).await {
                    tracing::warn!("no leader yet; the agent will sync once one is elected");
                }
                extra.push(AgentService {
                    id: "consul".into(),
                    service: "consul".into(),
                    port: sc.rpc_addr.port(),
                    ..Default::default()
                });
                Backend::Local(server)
            }
            None => {
                trellis_rpc::check_interval(config.heartbeat_interval).map_err(bad)?;
                if config.retry_join.is_empty() {
                    return Err(bad(
                        "a client agent needs at least one --retry-join server address",
                    ));
                }
                let known = config.data_dir.as_ref().map(|d| d.join(KNOWN_SERVERS_FILE));
                let remote = Arc::new(
                    Remote::with_tls(config.retry_join.clone(), known, config.rpc_tls.as_deref())
                        .with_hold(config.rpc_hold_timeout),
                );
                if let Some(tls) = config.rpc_tls.clone().filter(|t| t.auto_encrypt_tls()) {
                    let (dc, node) = (config.datacenter.clone(), config.node_name.clone());
                    let obtained = remote
                        .auto_encrypt(&tls, &dc, &node)
                        .await
                        .map_err(|e| startup(format!("auto-encrypt: {e}")))?;
                    tokio::spawn(Remote::renew_auto_encrypt(
                        Arc::downgrade(&remote),
                        tls,
                        dc,
                        node,
                        obtained,
                    ));
                }
                tokio::spawn(Remote::heartbeat(
                    Arc::downgrade(&remote),
                    config.node_name.clone(),
                    config.advertise_addr.clone(),
                    config.heartbeat_interval,
                ));
                Backend::Remote(remote)
            }
        };
        let persist = config.data_dir.as_ref().map(|d| d.join("local"));
        let local = Arc::new(LocalState::open(&config.node_name, persist).map_err(startup)?);
        let checks = CheckRunner::new(local.clone());
        for (id, c) in local.checks() {
            checks.start(&id, &c.definition);
        }
        let node = NodeInfo {
            id: node_id.clone(),
            name: config.node_name.clone(),
            address: config.advertise_addr.clone(),
            meta: config.node_meta.clone(),
        };
        let syncer = Syncer::new(
            backend.clone(),
            local.clone(),
            node,
            extra,
            config.sync_interval,
        );
        let sync_again = syncer.clone();
        let syncer = tokio::spawn(syncer.run());
        let intentions = crate::cache::Cache::new(
            crate::cache::IntentionMatch::new(backend.clone()),
            crate::cache::Options {
                last_get_ttl: config.cache_ttl,
                ..Default::default()
            },
        );
        let queries = crate::cache::Cache::new(
            crate::cache::StoreQuery::new(backend.clone()),
            crate::cache::Options {
                last_get_ttl: config.cache_ttl,
                ..Default::default()
            },
        );
        let service_configs = crate::service_config::ServiceConfigs::new(
            crate::cache::Cache::new(
                crate::cache::ResolvedServiceConfig::new(backend.clone()),
                crate::cache::Options {
                    last_get_ttl: config.cache_ttl,
                    ..Default::default()
                },
            ),
            local.clone(),
            config.datacenter.clone(),
        );
        for svc in local.services().values() {
            service_configs.track(svc);
        }
        // Leafs read the roots from the agent's cache, as the agent itself (anonymous token).
        let roots = crate::leaf::Roots {
            cache: queries.clone(),
            key: crate::cache::Key::new(config.datacenter.clone(), "", Query::CaRoots),
        };
        let leafs = crate::leaf::LeafStore::new(
            crate::leaf::Servers::new(backend.clone(), roots),
            config.leaf_root_change_jitter,
            config.cache_ttl,
        );
        let acl = crate::acl::resolver(&config.acl, backend.clone());
        let tokens = crate::acl::Tokens::load(&config.acl, config.data_dir.as_ref());
        let agent = Arc::new(Agent {
            acl,
            tokens,
            filtered: Default::default(),
            config,
            node_id,
            backend,
            local,
            checks,
            register_lock: parking_lot::Mutex::new(()),
            leafs,
            service_configs,
            intentions,
            queries,
            left: tokio::sync::watch::channel(false).0,
            syncer: parking_lot::Mutex::new(Some(syncer)),
            sync_again,
        });
        tokio::spawn(reap_critical_services(Arc::downgrade(&agent)));
        Ok((agent, http))
    }

    /// Serves the HTTP API on `listener`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let limits = self.config.http_limits;
        trellis_server::listen::serve_http(listener, crate::http::router(self), limits).await
    }

    /// The agent's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The ACL resolver.
    pub fn acl(&self) -> &trellis_acl_resolver::Resolver {
        &self.acl
    }

    /// Answers filtered per identity.
    pub(crate) fn filtered(&self) -> &crate::acl::FilteredAnswers {
        &self.filtered
    }

    /// The agent's tokens now.
    pub fn tokens(&self) -> crate::acl::AgentTokens {
        self.tokens.get()
    }

    /// Sets one of the agent's tokens (`/v1/agent/token/<kind>`); `false` for an unknown kind.
    pub(crate) fn set_token(&self, kind: &str, token: String) -> Result<bool, AgentError> {
        self.tokens
            .set(kind, token)
            .map_err(|e| AgentError::Persist(format!("keeping the ACL token: {e}")))
    }

    /// The identity of a request's token: the token it carries, else the agent's `default`
    /// token, else the anonymous token.
    pub async fn identity(
        &self,
        token: &str,
    ) -> Result<Arc<trellis_acl_resolver::Identity>, AgentError> {
        if !self.acl.enabled() {
            return Ok(self.acl.resolve("", false).await?);
        }
        let tokens = self.tokens.get();
        if token.is_empty() {
            let default = tokens.default.unwrap_or_default();
            return Ok(self.acl.resolve(&default, false).await?);
        }
        if tokens
            .agent_recovery
            .as_deref()
            .is_some_and(|r| crate::acl::same_secret(r, token))
        {
            // Resolved here, servers or not: this agent's endpoints and node reads only.
            return Ok(Arc::new(crate::acl::agent_recovery_identity(
                &self.config.node_name,
            )));
        }
        Ok(self.acl.resolve(token, true).await?)
    }

    /// The node ID.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Leaves the datacenter gracefully (a client agent's SIGTERM or `PUT /v1/agent/leave`):
    /// the leader deregisters this node instead of failing it once its heartbeats stop.
    /// A server leaves the Raft group through `operator raft remove-peer` instead.
    pub async fn leave(&self) -> Result<(), AgentError> {
        let Backend::Remote(r) = &self.backend else {
            return Err(crate::error::bad(
                "a server agent does not leave this way: stop it with a signal, then remove it \
                 from the cluster with `trellis operator raft remove-peer` (a removed server \
                 that runs again joins again)",
            ));
        };
        // No anti-entropy write may land after the node is deregistered.
        if let Some(sync) = self.syncer.lock().take() {
            sync.abort();
        }
        if let Err(e) = r
            .leave(&self.config.node_name, &self.config.advertise_addr)
            .await
        {
            // Still a member: anti-entropy resumes (with a full sync).
            *self.syncer.lock() = Some(tokio::spawn(self.sync_again.clone().run()));
            return Err(e.into());
        }
        self.left.send_replace(true);
        tracing::info!("left the datacenter");
        Ok(())
    }

    /// Resolves once the agent has left through `PUT /v1/agent/leave`.
    pub async fn has_left(&self) {
        let mut rx = self.left.subscribe();
        let _ = rx.wait_for(|left| *left).await;
    }

    /// Whether this agent is a client agent (no server in the process).
    pub fn is_client(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// Route to the servers.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Local services and checks.
    pub fn local(&self) -> &LocalState {
        &self.local
    }

    /// Leaf certificates.
    pub fn leafs(&self) -> &crate::leaf::LeafStore<crate::leaf::Servers> {
        &self.leafs
    }

    /// Intentions by destination, for authorization.
    pub fn intentions(&self) -> &Arc<crate::cache::Cache<crate::cache::IntentionMatch>> {
        &self.intentions
    }

    /// Store reads kept in memory.
    pub fn queries(&self) -> &Arc<crate::cache::Cache<crate::cache::StoreQuery>> {
        &self.queries
    }

    /// The check runner.
    pub fn checks(&self) -> &Arc<CheckRunner> {
        &self.checks
    }

    /// Rejects `?dc=` naming another datacenter (federation comes later).
    pub(crate) fn check_dc(&self, p: &Params) -> Result<(), AgentError> {
        self.check_dc_name(p.get("dc").unwrap_or(""))
    }

    pub(crate) fn check_dc_name(&self, dc: &str) -> Result<(), AgentError> {
        if dc.is_empty() || dc == self.config.datacenter {
            Ok(())
        } else {
            Err(AgentError::Server(trellis_rpc::Error::Internal(
                "No path to datacenter".into(),
            )))
        }
    }

    /// Registers a service (and its sidecar) on this agent.
    pub fn register_service(
        &self,
        def: ServiceDefinition,
        replace_checks: bool,
    ) -> Result<(), AgentError> {
        let _guard = self.register_lock.lock();
        let parent_id = if def.id.is_empty() {
            def.name.clone()
        } else {
            def.id.clone()
        };
        let (svc, sidecar) = expand(def, &|sidecar_id| {
            let existing = self.local.registration(sidecar_id).map(|s| s.port);
            let in_use = self.local.ports_in_use(sidecar_id);
            pick_sidecar_port(&in_use, existing)
        })
        .map_err(bad)?;
        debug_assert_eq!(svc.service.id, parent_id);
        for reg in std::iter::once(svc).chain(sidecar) {
            let defs: Vec<(String, CheckDefinition)> = reg
                .checks
                .iter()
                .map(|c| (c.check.check_id.clone(), c.definition.clone()))
                .collect();
            let service = reg.service.clone();
            let removed = self
                .local
                .add_service(reg.service, reg.checks, replace_checks)
                .map_err(AgentError::Persist)?;
            self.service_configs.track(&service);
            for id in removed {
                self.checks.stop(&id);
            }
            for (id, def) in defs {
                self.checks.start(&id, &def);
            }
        }
        Ok(())
    }

    /// Removes a service, its checks and its sidecar.
    pub fn deregister_service(&self, id: &str) -> Result<(), AgentError> {
        let _guard = self.register_lock.lock();
        let removed = self
            .local
            .remove_service(id)
            .map_err(AgentError::Persist)?
            .ok_or_else(|| AgentError::NotFound(format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name.")))?;
        self.service_configs.untrack(id);
        for c in removed {
            self.checks.stop(&c);
        }
        let sidecar = format!("{id}-sidecar-proxy");
        let is_our_sidecar = self
            .local
            .service(&sidecar)
            .and_then(|s| s.proxy)
            .is_some_and(|p| p.destination_service_id == id);
        if is_our_sidecar {
            let removed = self
                .local
                .remove_service(&sidecar)
                .map_err(AgentError::Persist)?
                .unwrap_or_default();
            self.service_configs.untrack(&sidecar);
            for c in removed {
                self.checks.stop(&c);
            }
        }
        Ok(())
    }

    /// Registers a check on this agent.
    pub fn register_check(&self, def: CheckDefinition) -> Result<(), AgentError> {
        let _guard = self.register_lock.lock();
        let service = if def.service_id.is_empty() {
            None
        } else {
            Some(
                self.local
                    .service(&def.service_id)
                    .ok_or_else(|| bad(format!("ServiceID {:?} does not exist", def.service_id)))?,
            )
        };
        let check = local_check(def, service.as_ref().map(|s| (s.service.as_str(), &s.tags)))
            .map_err(bad)?;
        let (id, definition) = (check.check.check_id.clone(), check.definition.clone());
        self.local.add_check(check).map_err(AgentError::Persist)?;
        self.checks.start(&id, &definition);
        Ok(())
    }

    /// Removes a check.
    pub fn deregister_check(&self, id: &str) -> Result<(), AgentError> {
        validate_name("check ID", id).map_err(bad)?;
        if !self.local.remove_check(id).map_err(AgentError::Persist)? {
            return Err(AgentError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        }
        self.checks.stop(id);
        Ok(())
    }

    /// This agent as a member entry.
    pub(crate) fn member_self(&self) -> Value {
        let server_port = self
            .config
            .server
            .as_ref()
            .map(|s| s.rpc_addr.port())
            .unwrap_or(0);
        member(
            &self.config.node_name,
            &self.config.advertise_addr,
            server_port,
            self.config.server.is_some(),
            &self.config.datacenter,
        )
    }

    /// Members of the datacenter: the nodes carrying the servers' member check (alive while
    /// it passes, failed once it is critical), the voters, and this agent. Nodes registered
    /// through the catalog API without an agent are not members, as in Consul.
    pub(crate) async fn members(&self) -> Result<Vec<Value>, AgentError> {
        let status = self.backend.status().await?;
        let resp = self
            .backend
            .query(
                Query::Members,
                QueryOptions {
                    stale: true,
                    ..Default::default()
                },
            )
            .await?;
        let held: Vec<trellis_api::MemberHealth> = match resp.output {
            QueryOutput::Found(b) => b
                .members()
                .map_err(|e| AgentError::Unavailable(e.to_string()))?
                .clone(),
            QueryOutput::NotFound(_) => Vec::new(),
        };
        // Serf's codes: 1 alive, 4 failed.
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        let server_port = |name: &str| {
            let i = status.peer_names.iter().position(|n| n == name)?;
            status.peers.get(i)?.rsplit(':').next()?.parse::<u16>().ok()
        };
        for m in held {
            let port = server_port(&m.node);
            let mut v = member(
                &m.node,
                &m.address,
                port.unwrap_or(0),
                port.is_some(),
                &self.config.datacenter,
            );
            if m.status != trellis_api::status::PASSING {
                v["Status"] = json!(4);
            }
            out.insert(m.node, v);
        }
        // Voters and this agent before the leader has recorded them.
        for (name, addr) in status.peer_names.iter().zip(&status.peers) {
            if !out.contains_key(name) {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
                let port = port.parse().unwrap_or(0);
                let v = member(name, host, port, true, &self.config.datacenter);
                out.insert(name.clone(), v);
            }
        }
        if !out.contains_key(&self.config.node_name) {
            out.insert(self.config.node_name.clone(), self.member_self());
        }
        Ok(out.into_values().collect())
    }
}

fn member(name: &str, addr: &str, port: u16, server: bool, dc: &str) -> Value {
    let mut tags = json!({"dc": dc, "role": if server { "consul" } else { "node" }, "build": env!("CARGO_PKG_VERSION")});
    if server {
        tags["port"] = json!(port.to_string());
    }
    json!({
        "Name": name,
        "Addr": addr,
        "Port": port,
        "Tags": tags,
        "Status": 1,
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

/// Shortest `DeregisterCriticalServiceAfter` honoured, as Consul's.
const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// Whether a check critical for `critical_for` has passed its `DeregisterCriticalServiceAfter`.
pub(crate) fn deregister_due(after: &str, critical_for: Option<Duration>) -> bool {
    let Ok(after) = trellis_api::parse_go_duration(after) else {
        return false;
    };
    critical_for.is_some_and(|c| c >= after.max(MIN_DEREGISTER_AFTER))
}

/// Removes services whose check has been critical longer than its
/// `DeregisterCriticalServiceAfter`. Stops when the agent is gone.
async fn reap_critical_services(agent: std::sync::Weak<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(agent) = agent.upgrade() else { return };
        let due: Vec<(String, String)> = agent
            .local
            .checks()
            .into_iter()
            .filter(|(_, c)| {
                !c.check.service_id.is_empty()
                    && !c.definition.deregister_critical_service_after.is_empty()
            })
            .filter(|(id, c)| {
                deregister_due(
                    &c.definition.deregister_critical_service_after,
                    agent.local.critical_for(id),
                )
            })
            .map(|(id, c)| (id, c.check.service_id))
            .collect();
        for (check, service) in due {
            tracing::info!(%service, %check, "deregistering a service whose check stayed critical");
            if let Err(e) = agent.deregister_service(&service) {
                tracing::debug!(%service, error = %e, "service already gone");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deregister_after_has_consuls_one_minute_floor() {
        assert!(!deregister_due("90s", None));
        assert!(!deregister_due("90s", Some(Duration::from_secs(89))));
        assert!(deregister_due("90s", Some(Duration::from_secs(90))));
        assert!(!deregister_due("10s", Some(Duration::from_secs(59))));
        assert!(deregister_due("10s", Some(Duration::from_secs(60))));
        assert!(!deregister_due("bogus", Some(Duration::from_secs(600))));
    }
}
