//! Anti-entropy: makes the catalog's view of this node match the agent's local state.
//!
//! The agent is the truth for its node. A full sync reads what the catalog holds for the node
//! and writes only the differences: registers what is missing or changed, deregisters what the
//! agent no longer has. It runs when local state changes, periodically (so a server that lost
//! the node's rows gets them back), and with backoff while the servers are unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use trellis_api::{
    AgentService, CatalogDeregistration, CatalogRegistration, HealthCheck, Node, NodeState,
};
use trellis_rpc::{Error, QueryOptions, Write};
use trellis_state::{Applied, Query, QueryOutput};

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

/// How many writes a sync made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Register commands sent.
    pub registered: usize,
    /// Deregister commands sent.
    pub deregistered: usize,
}

/// The anti-entropy loop of one agent.
#[derive(Clone)]
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

    /// Runs forever: a full sync at start and every interval (with jitter); on local changes,
    /// a partial sync of what changed (Consul's `SyncChanges`), so registering a service costs
    /// a write or two rather than a comparison of the whole node; capped exponential backoff
    /// while the servers cannot be reached.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(500);
        let mut full_due = true;
        loop {
            let outcome = if full_due {
                self.sync_full().await
            } else {
                self.sync_changes().await
            };
            match outcome {
                Ok(stats) => {
                    if stats != SyncStats::default() {
                        tracing::debug!(
                            ?stats,
                            full = full_due,
                            "synced node state to the catalog"
                        );
                    }
                    backoff = Duration::from_millis(500);
                    full_due = false;
                    let jitter = self.interval.mul_f64(rand::random::<f64>() / 4.0);
                    tokio::select! {
                        _ = self.local.sync_requested() => {}
                        _ = tokio::time::sleep(self.interval + jitter) => full_due = true,
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

    /// Writes what changed locally since the last sync: each changed service again with all
    /// its checks (or its deregistration), then each other changed check. On failure what was
    /// taken is marked again, and the next sync (partial or full) writes it.
    pub async fn sync_changes(&self) -> Result<SyncStats, Error> {
        let dirty = self.local.take_dirty();
        if dirty.is_empty() {
            return Ok(SyncStats::default());
        }
        let result = self.write_changes(&dirty).await;
        if result.is_err() {
            self.local.restore_dirty(dirty);
        }
        result
    }

    async fn write_changes(&self, dirty: &crate::local::Dirty) -> Result<SyncStats, Error> {
        let mut stats = SyncStats::default();
        let (services, mut checks) = self.local.service_rows(&dirty.services);
        let mut covered = std::collections::HashSet::new();
        for (id, svc) in services {
            match svc {
                Some(svc) => {
                    let own = checks.remove(&id).unwrap_or_default();
                    covered.extend(own.iter().map(|c| c.check_id.clone()));
                    let mut reg = self.registration();
                    reg.checks = own.into_iter().map(|c| self.check_row(c, &svc)).collect();
                    reg.service = Some(svc);
                    self.write(Write::Register(Box::new(reg))).await?;
                    stats.registered += 1;
                }
                None => {
                    self.write(Write::Deregister(CatalogDeregistration {
                        node: self.node.name.clone(),
                        service_id: id,
                        ..Default::default()
                    }))
                    .await?;
                    stats.deregistered += 1;
                }
            }
        }
        for id in dirty.checks.iter().filter(|id| !covered.contains(*id)) {
            match self.local.check(id) {
                Some(c) if c.check.service_id.is_empty() => {
                    let mut reg = self.registration();
                    let mut row = c.check;
                    row.node = self.node.name.clone();
                    reg.checks = vec![row];
                    self.write(Write::Register(Box::new(reg))).await?;
                    stats.registered += 1;
                }
                Some(c) => {
                    // A service's check: written with its service, which the catalog needs.
                    let Some(svc) = self.local.service(&c.check.service_id) else {
                        continue;
                    };
                    let mut reg = self.registration();
                    reg.checks = vec![self.check_row(c.check, &svc)];
                    reg.service = Some(svc);
                    self.write(Write::Register(Box::new(reg))).await?;
                    stats.registered += 1;
                }
                None => {
                    self.write(Write::Deregister(CatalogDeregistration {
                        node: self.node.name.clone(),
                        check_id: id.clone(),
                        ..Default::default()
                    }))
                    .await?;
                    stats.deregistered += 1;
                }
            }
        }
        Ok(stats)
    }

    /// A service check's row as the catalog holds it.
    fn check_row(&self, mut check: HealthCheck, svc: &AgentService) -> HealthCheck {
        check.node = self.node.name.clone();
        check.service_name = svc.service.clone();
        check.service_tags = svc.tags.clone();
        check
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

    async fn write(&self, cmd: Write) -> Result<(), Error> {
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
    pub async fn sync_full(&self) -> Result<SyncStats, Error> {
        // Everything is compared now; what changes from here on is marked again.
        let taken = self.local.take_dirty();
        let result = self.compare_and_write().await;
        if result.is_err() {
            self.local.restore_dirty(taken);
        }
        result
    }

    async fn compare_and_write(&self) -> Result<SyncStats, Error> {
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
            return Err(Error::Internal(
                "node state query answered not found".into(),
            ));
        };
        let remote: NodeState = body
            .node_state()
            .map_err(|e| Error::Internal(e.to_string()))?
            .clone();
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
        // The member check belongs to the servers, not to this agent's state.
        let remote_checks: BTreeMap<String, HealthCheck> = remote
            .checks
            .into_iter()
            .filter(|c| c.check_id != trellis_api::serf_check::ID)
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
            self.write(Write::Deregister(CatalogDeregistration {
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
                self.write(Write::Deregister(CatalogDeregistration {
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
            self.write(Write::Register(Box::new(reg))).await?;
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
            self.write(Write::Register(Box::new(reg))).await?;
            stats.registered += 1;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::local_check;
    use trellis_api::{status, CheckDefinition};

    async fn catalog(backend: &Backend) -> NodeState {
        let out = backend
            .query(
                Query::NodeState { node: "n1".into() },
                QueryOptions::default(),
            )
            .await
            .expect("a read");
        let QueryOutput::Found(body) = out.output else {
            panic!("no node state");
        };
        body.node_state().expect("node state").clone()
    }

    /// Partial syncs write what changed, and only that: a new service with its checks, a
    /// check's new status, a removed service; the periodic full sync finds nothing left.
    #[tokio::test]
    async fn partial_syncs_write_only_what_changed() {
        let backend = Backend::Local(crate::test_server().await);
        let local = Arc::new(LocalState::open("n1", None).unwrap());
        let node = NodeInfo {
            id: "11111111-1111-1111-1111-111111111111".into(),
            name: "n1".into(),
            address: "10.0.0.1".into(),
            meta: BTreeMap::new(),
        };
        let syncer = Syncer::new(
            backend.clone(),
            local.clone(),
            node,
            vec![],
            Duration::from_secs(60),
        );
        syncer.sync_full().await.unwrap();
        let svc = |id: &str| AgentService {
            id: id.into(),
            service: id.into(),
            port: 80,
            ..Default::default()
        };
        let ttl = |id: &str, service: &str| {
            let def = CheckDefinition {
                id: id.into(),
                name: id.into(),
                ttl: "1h".into(),
                service_id: service.into(),
                ..Default::default()
            };
            local_check(def, Some((service, &Vec::new()))).unwrap()
        };
        local
            .add_service(svc("web"), vec![ttl("web-ttl", "web")], false)
            .unwrap();
        local.add_service(svc("db"), vec![], false).unwrap();
        let stats = syncer.sync_changes().await.unwrap();
        assert_eq!(stats.registered, 2);
        let c = catalog(&backend).await;
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.checks.len(), 1);
        assert_eq!(c.checks[0].service_name, "web");
        assert_eq!(c.checks[0].status, status::CRITICAL);

        // A status change: one write, the check with its service.
        local.update_check("web-ttl", status::PASSING, "ok");
        let stats = syncer.sync_changes().await.unwrap();
        assert_eq!((stats.registered, stats.deregistered), (1, 0));
        assert_eq!(catalog(&backend).await.checks[0].status, status::PASSING);

        // A removal deregisters the service and its check.
        local.remove_service("web").unwrap();
        let stats = syncer.sync_changes().await.unwrap();
        assert!(stats.deregistered >= 1);
        let c = catalog(&backend).await;
        assert_eq!(c.services.len(), 1);
        assert!(c.checks.is_empty());

        // Nothing left for the partial sync, and the full comparison agrees.
        assert_eq!(syncer.sync_changes().await.unwrap(), SyncStats::default());
        assert_eq!(syncer.sync_full().await.unwrap(), SyncStats::default());
    }
}
