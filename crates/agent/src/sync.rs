//! Anti-entropy: makes the catalog's view of this node match the agent's local state.
//!
//! The agent is the truth for its node. A full sync reads what the catalog holds for the node
//! and writes only the differences: registers what is missing or changed, deregisters what the
//! agent no longer has. It runs when local state changes, periodically (so a server that lost
//! the node's rows gets them back), and with backoff while the servers are unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use trellis_api::{AgentService, CatalogDeregistration, CatalogRegistration, HealthCheck, Node};
use trellis_server::{QueryOptions, ServerError};
use trellis_state::{Applied, Command, Query, QueryOutput};

use crate::local::LocalState;
use crate::Backend;

/// The node row this agent registers.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node ID (UUID).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Advertised address.
    pub address: String,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
}

/// What the catalog holds for one node (the body of [`Query::NodeState`]).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Remote {
    node: Option<Node>,
    services: Vec<AgentService>,
    checks: Vec<HealthCheck>,
}

/// How many writes a sync made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Register commands sent.
    pub registered: usize,
    /// Deregister commands sent.
    pub deregistered: usize,
}

/// The anti-entropy loop of one agent.
pub struct Syncer {
    backend: Backend,
    local: Arc<LocalState>,
    node: NodeInfo,
    /// Services the catalog must hold for this node beyond the local ones (`consul` on servers).
    extra: Vec<AgentService>,
    interval: Duration,
}

fn strip(mut s: AgentService) -> AgentService {
    s.create_index = 0;
    s.modify_index = 0;
    s.datacenter.clear();
    s
}

fn strip_check(mut c: HealthCheck) -> HealthCheck {
    c.create_index = 0;
    c.modify_index = 0;
    c
}

impl Syncer {
    /// A syncer for this node.
    pub fn new(
        backend: Backend,
        local: Arc<LocalState>,
        node: NodeInfo,
        extra: Vec<AgentService>,
        interval: Duration,
    ) -> Syncer {
        Syncer {
            backend,
            local,
            node,
            extra,
            interval,
        }
    }

    /// Runs forever: a full sync at start, on local changes, every interval (with jitter), and
    /// with capped exponential backoff while it fails.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.sync_full().await {
                Ok(stats) => {
                    if stats != SyncStats::default() {
                        tracing::debug!(?stats, "synced node state to the catalog");
                    }
                    backoff = Duration::from_millis(500);
                    let jitter = self.interval.mul_f64(rand::random::<f64>() / 4.0);
                    tokio::select! {
                        _ = self.local.sync_requested() => {}
                        _ = tokio::time::sleep(self.interval + jitter) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "anti-entropy sync failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    fn node_row_matches(&self, node: &Node) -> bool {
        node.id == self.node.id && node.address == self.node.address && node.meta == self.node.meta
    }

    fn registration(&self) -> CatalogRegistration {
        CatalogRegistration {
            id: self.node.id.clone(),
            node: self.node.name.clone(),
            address: self.node.address.clone(),
            tagged_addresses: BTreeMap::from([
                ("lan".to_string(), self.node.address.clone()),
                ("wan".to_string(), self.node.address.clone()),
            ]),
            node_meta: self.node.meta.clone(),
            ..Default::default()
        }
    }

    async fn write(&self, cmd: Command) -> Result<(), ServerError> {
        match self.backend.apply(cmd).await?.applied {
            Applied::Rejected(reason) => {
                // A row the catalog refuses will be refused again; log it and carry on.
                tracing::warn!(%reason, "catalog refused a sync write");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// One full comparison and the writes it needs.
    pub async fn sync_full(&self) -> Result<SyncStats, ServerError> {
        let resp = self
            .backend
            .query(
                Query::NodeState {
                    node: self.node.name.clone(),
                },
                QueryOptions::default(),
            )
            .await?;
        let QueryOutput::Found(body) = resp.output else {
            return Err(ServerError::Raft(
                "node state query answered not found".into(),
            ));
        };
        let remote: Remote =
            serde_json::from_slice(&body).map_err(|e| ServerError::Raft(e.to_string()))?;
        let mut stats = SyncStats::default();

        let mut services: BTreeMap<String, AgentService> = self.local.services();
        for s in &self.extra {
            services.insert(s.id.clone(), s.clone());
        }
        let mut checks: BTreeMap<String, HealthCheck> = self
            .local
            .checks()
            .into_values()
            .map(|c| {
                let mut check = c.check;
                check.node = self.node.name.clone();
                if let Some(svc) = services.get(&check.service_id) {
                    check.service_name = svc.service.clone();
                    check.service_tags = svc.tags.clone();
                }
                (check.check_id.clone(), check)
            })
            .collect();
        let remote_services: BTreeMap<String, AgentService> = remote
            .services
            .into_iter()
            .map(|s| (s.id.clone(), strip(s)))
            .collect();
        let remote_checks: BTreeMap<String, HealthCheck> = remote
            .checks
            .into_iter()
            .map(|c| (c.check_id.clone(), strip_check(c)))
            .collect();

        let mut node_synced = remote
            .node
            .as_ref()
            .is_some_and(|n| self.node_row_matches(n));

        // Deregistrations first, so a re-registered ID starts clean.
        for id in remote_services
            .keys()
            .filter(|id| !services.contains_key(*id))
        {
            self.write(Command::Deregister(CatalogDeregistration {
                node: self.node.name.clone(),
                service_id: id.clone(),
                ..Default::default()
            }))
            .await?;
            stats.deregistered += 1;
        }
        for (id, check) in &remote_checks {
            let service_gone =
                !check.service_id.is_empty() && !services.contains_key(&check.service_id);
            if !checks.contains_key(id) && !service_gone {
                self.write(Command::Deregister(CatalogDeregistration {
                    node: self.node.name.clone(),
                    check_id: id.clone(),
                    ..Default::default()
                }))
                .await?;
                stats.deregistered += 1;
            }
        }

        // Each service's checks, grouped once (not rescanned per service).
        let mut by_service: HashMap<&str, Vec<&HealthCheck>> = HashMap::new();
        for c in checks.values().filter(|c| !c.service_id.is_empty()) {
            by_service.entry(c.service_id.as_str()).or_default().push(c);
        }
        for (id, svc) in &services {
            let svc_changed = remote_services.get(id) != Some(&strip(svc.clone()));
            let own_checks: Vec<HealthCheck> = by_service
                .get(id.as_str())
                .into_iter()
                .flatten()
                .filter(|c| svc_changed || remote_checks.get(&c.check_id) != Some(**c))
                .map(|c| (*c).clone())
                .collect();
            if !svc_changed && own_checks.is_empty() {
                continue;
            }
            let mut reg = self.registration();
            reg.service = Some(svc.clone());
            reg.checks = own_checks;
            self.write(Command::Register(Box::new(reg))).await?;
            node_synced = true;
            stats.registered += 1;
        }
        checks.retain(|_, c| c.service_id.is_empty());
        let node_checks: Vec<HealthCheck> = checks
            .into_values()
            .filter(|c| remote_checks.get(&c.check_id) != Some(c))
            .collect();
        if !node_synced || !node_checks.is_empty() {
            let mut reg = self.registration();
            reg.checks = node_checks;
            self.write(Command::Register(Box::new(reg))).await?;
            stats.registered += 1;
        }
        Ok(stats)
    }
}
