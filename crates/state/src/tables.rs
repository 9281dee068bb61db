//! The tables, their secondary indexes, command application, snapshots and blocking reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use trellis_api::{
    status, AgentService, CatalogDeregistration, CatalogRegistration, ConfigEntry, HealthCheck,
    Node,
};

use crate::answers::AnswerCache;
use crate::command::{validate_config_entry, validate_registration, Applied, Command};
use crate::watch::{Subscription, WatchKey, Watches, MAX_WATCH_KEYS};
use crate::StateError;

/// Key of a row owned by a node: (node name, service or check ID).
pub(crate) type NodeKey = (String, String);

/// The persistent part of the state: what a snapshot holds.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Index of the last applied command.
    pub index: u64,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Services by (node, service ID).
    pub services: BTreeMap<String, BTreeMap<String, AgentService>>,
    /// Checks by (node, check ID).
    pub checks: BTreeMap<String, BTreeMap<String, HealthCheck>>,
    /// Config entries by kind, then name.
    pub config: BTreeMap<String, BTreeMap<String, ConfigEntry>>,
    /// The index at which each watch key last changed.
    pub key_index: Vec<(WatchKey, u64)>,
    /// The CA, once initialised.
    #[serde(default)]
    pub ca: Option<crate::CaState>,
    /// ACL tokens, policies and roles.
    #[serde(default)]
    pub acl: crate::acl::AclTables,
}

/// Tables plus derived indexes. Only [`Store`] mutates it.
#[derive(Default)]
pub(crate) struct Tables {
    pub(crate) index: u64,
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) services: BTreeMap<NodeKey, AgentService>,
    pub(crate) checks: BTreeMap<NodeKey, HealthCheck>,
    pub(crate) config: BTreeMap<(String, String), ConfigEntry>,
    /// Service name -> instances.
    pub(crate) by_name: HashMap<String, BTreeSet<NodeKey>>,
    /// Service kind -> instances.
    pub(crate) by_kind: HashMap<String, BTreeSet<NodeKey>>,
    /// Connect destination name -> proxies for it and its native instances.
    pub(crate) by_connect: HashMap<String, BTreeSet<NodeKey>>,
    /// The index at which each key last changed.
    pub(crate) key_index: HashMap<WatchKey, u64>,
    /// The CA, once initialised.
    pub(crate) ca: Option<crate::CaState>,
    /// ACL tokens, policies and roles.
    pub(crate) acl: crate::acl::AclTables,
}

/// Iterates the rows of one node in a (node, id)-keyed table.
pub(crate) fn node_rows<'a, T>(
    table: &'a BTreeMap<NodeKey, T>,
    node: &'a str,
) -> impl Iterator<Item = (&'a NodeKey, &'a T)> + 'a {
    table
        .range((node.to_string(), String::new())..)
        .take_while(move |(k, _)| k.0 == node)
}

impl Tables {
    /// The highest change index of the given keys, never below 1.
    pub(crate) fn index_of(&self, keys: &[WatchKey]) -> u64 {
        keys.iter()
            .filter_map(|k| self.key_index.get(k))
            .copied()
            .max()
            .unwrap_or(0)
            .max(1)
    }

    fn service_keys(svc: &AgentService, out: &mut Vec<WatchKey>) {
        out.push(WatchKey::Service(svc.service.clone()));
        if let Some(dest) = svc.connect_destination() {
            out.push(WatchKey::Connect(dest.to_string()));
        }
    }

    fn node_service_keys(&self, node: &str, out: &mut Vec<WatchKey>) {
        for (_, svc) in node_rows(&self.services, node) {
            Self::service_keys(svc, out);
        }
    }

    fn index_service(&mut self, key: &NodeKey, svc: &AgentService, insert: bool) {
        let apply = |map: &mut HashMap<String, BTreeSet<NodeKey>>, k: &str| {
            if insert {
                map.entry(k.to_string()).or_default().insert(key.clone());
            } else if let Some(set) = map.get_mut(k) {
                set.remove(key);
                if set.is_empty() {
                    map.remove(k);
                }
            }
        };
        apply(&mut self.by_name, &svc.service);
        apply(&mut self.by_kind, &svc.kind);
        if let Some(dest) = svc.connect_destination() {
            apply(&mut self.by_connect, dest);
        }
    }

    fn put_service(
        &mut self,
        index: u64,
        node: &str,
        mut svc: AgentService,
        keys: &mut Vec<WatchKey>,
    ) {
        if svc.id.is_empty() {
            svc.id = svc.service.clone();
        }
        svc.datacenter = String::new();
        let key = (node.to_string(), svc.id.clone());
        if let Some(old) = self.services.get(&key) {
            svc.create_index = old.create_index;
            svc.modify_index = old.modify_index;
            if *old == svc {
                return;
            }
            let old = old.clone();
            Self::service_keys(&old, keys);
            self.index_service(&key, &old, false);
        } else {
            svc.create_index = index;
        }
        svc.modify_index = index;
        Self::service_keys(&svc, keys);
        keys.extend([WatchKey::Services, WatchKey::Node(node.to_string())]);
        self.index_service(&key, &svc, true);
        // Keep the denormalised service fields of its checks in step.
        for (_, check) in self.checks.range_mut((node.to_string(), String::new())..) {
            if check.node != node {
                break;
            }
            if check.service_id == svc.id
                && (check.service_name != svc.service || check.service_tags != svc.tags)
            {
                check.service_name = svc.service.clone();
                check.service_tags = svc.tags.clone();
                check.modify_index = index;
                keys.push(WatchKey::Checks);
            }
        }
        self.services.insert(key, svc);
    }

    fn put_check(
        &mut self,
        index: u64,
        node: &str,
        mut check: HealthCheck,
        keys: &mut Vec<WatchKey>,
    ) -> Result<(), String> {
        check.node = node.to_string();
        if check.check_id.is_empty() {
            check.check_id = check.name.clone();
        }
        if check.status.is_empty() {
            check.status = status::CRITICAL.to_string();
        }
        if !check.service_id.is_empty() {
            let svc = self
                .services
                .get(&(node.to_string(), check.service_id.clone()))
                .ok_or_else(|| {
                    format!(
                        "Unknown service ID {:?} for check ID {:?}",
                        check.service_id, check.check_id
                    )
                })?;
            check.service_name = svc.service.clone();
            check.service_tags = svc.tags.clone();
        } else {
            check.service_name.clear();
            check.service_tags.clear();
        }
        let key = (node.to_string(), check.check_id.clone());
        if let Some(old) = self.checks.get(&key) {
            check.create_index = old.create_index;
            check.modify_index = old.modify_index;
            if *old == check {
                return Ok(());
            }
            // The answers that showed the old row must change too (a check can move from the
            // node to a service or between services).
            let old = old.clone();
            self.check_keys(&old, keys);
        } else {
            check.create_index = index;
        }
        check.modify_index = index;
        self.check_keys(&check, keys);
        self.checks.insert(key, check);
        Ok(())
    }

    fn check_keys(&self, check: &HealthCheck, keys: &mut Vec<WatchKey>) {
        keys.extend([WatchKey::Checks, WatchKey::Node(check.node.clone())]);
        if check.service_id.is_empty() {
            self.node_service_keys(&check.node, keys);
        } else if let Some(svc) = self
            .services
            .get(&(check.node.clone(), check.service_id.clone()))
        {
            Self::service_keys(svc, keys);
        }
    }

    fn remove_service(&mut self, node: &str, id: &str, keys: &mut Vec<WatchKey>) {
        let key = (node.to_string(), id.to_string());
        let Some(svc) = self.services.remove(&key) else {
            return;
        };
        self.index_service(&key, &svc, false);
        Self::service_keys(&svc, keys);
        keys.extend([
            WatchKey::Services,
            WatchKey::Node(node.to_string()),
            WatchKey::Checks,
        ]);
        self.checks
            .retain(|k, c| !(k.0 == node && c.service_id == id));
    }

    fn register(
        &mut self,
        index: u64,
        reg: CatalogRegistration,
        keys: &mut Vec<WatchKey>,
    ) -> Result<(), String> {
        validate_registration(&reg)?;
        let exists = self.nodes.contains_key(&reg.node);
        if !reg.skip_node_update || !exists {
            let mut node = Node {
                id: reg.id,
                node: reg.node.clone(),
                address: reg.address,
                datacenter: String::new(),
                tagged_addresses: reg.tagged_addresses,
                meta: reg.node_meta,
                create_index: index,
                modify_index: index,
            };
            match self.nodes.get(&reg.node) {
                Some(old) => {
                    node.create_index = old.create_index;
                    node.modify_index = old.modify_index;
                    if *old != node {
                        node.modify_index = index;
                        keys.extend([WatchKey::Nodes, WatchKey::Node(reg.node.clone())]);
                        self.node_service_keys(&reg.node, keys);
                        self.nodes.insert(reg.node.clone(), node);
                    }
                }
                None => {
                    keys.extend([WatchKey::Nodes, WatchKey::Node(reg.node.clone())]);
                    self.nodes.insert(reg.node.clone(), node);
                }
            }
        }
        if let Some(svc) = reg.service {
            self.put_service(index, &reg.node, svc, keys);
        }
        for check in reg.check.into_iter().chain(reg.checks) {
            self.put_check(index, &reg.node, check, keys)?;
        }
        Ok(())
    }

    fn deregister(
        &mut self,
        dereg: CatalogDeregistration,
        keys: &mut Vec<WatchKey>,
    ) -> Result<(), String> {
        if dereg.node.is_empty() {
            return Err("Must provide node".into());
        }
        let node = dereg.node.as_str();
        if !dereg.service_id.is_empty() {
            self.remove_service(node, &dereg.service_id, keys);
        }
        if !dereg.check_id.is_empty() {
            if let Some(check) = self
                .checks
                .remove(&(node.to_string(), dereg.check_id.clone()))
            {
                self.check_keys(&check, keys);
            }
        }
        if dereg.service_id.is_empty()
            && dereg.check_id.is_empty()
            && self.nodes.remove(node).is_some()
        {
            let ids: Vec<String> = node_rows(&self.services, node)
                .map(|(k, _)| k.1.clone())
                .collect();
            for id in ids {
                self.remove_service(node, &id, keys);
            }
            self.checks.retain(|k, _| k.0 != node);
            keys.extend([
                WatchKey::Nodes,
                WatchKey::Node(node.to_string()),
                WatchKey::Checks,
            ]);
        }
        Ok(())
    }

    /// Stores a config entry. `legacy` marks a write of the legacy intentions API, the only
    /// writer of an intention's legacy fields.
    pub(crate) fn config_set(
        &mut self,
        index: u64,
        mut entry: ConfigEntry,
        cas: Option<u64>,
        legacy: bool,
        keys: &mut Vec<WatchKey>,
    ) -> Result<Applied, String> {
        crate::command::normalize_config_entry(&mut entry);
        validate_config_entry(&entry)?;
        let key = (entry.kind.clone(), entry.name.clone());
        let existing = self.config.get(&key);
        if !legacy && entry.kind == trellis_api::config_kind::SERVICE_INTENTIONS {
            crate::intentions::check_legacy_fields(&entry, existing)?;
        }
        self.check_l7_protocols(&entry.kind, &entry.name, Some(&entry))?;
        if let Some(cas) = cas {
            let current = existing.map(|e| e.modify_index).unwrap_or(0);
            if current != cas {
                return Ok(Applied::Cas(false));
            }
        }
        entry.create_index = existing.map(|e| e.create_index).unwrap_or(index);
        entry.modify_index = index;
        keys.extend([
            WatchKey::ConfigKind(entry.kind.clone()),
            WatchKey::Config(entry.kind.clone(), entry.name.clone()),
        ]);
        if shapes_service_config(&entry.kind) {
            keys.push(WatchKey::ServiceConfig);
        }
        self.config.insert(key, entry);
        Ok(cas.map(|_| Applied::Cas(true)).unwrap_or(Applied::Done))
    }

    pub(crate) fn config_delete(
        &mut self,
        kind: String,
        name: String,
        cas: Option<u64>,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let key = (kind, name);
        let current = self.config.get(&key).map(|e| e.modify_index);
        if let Some(cas) = cas {
            if current.unwrap_or(0) != cas {
                return Applied::Cas(false);
            }
        }
        if current.is_some() {
            if let Err(e) = self.check_l7_protocols(&key.0, &key.1, None) {
                return Applied::Rejected(e);
            }
            self.config.remove(&key);
            if shapes_service_config(&key.0) {
                keys.push(WatchKey::ServiceConfig);
            }
            keys.extend([
                WatchKey::ConfigKind(key.0.clone()),
                WatchKey::Config(key.0, key.1),
            ]);
        }
        cas.map(|_| Applied::Cas(true)).unwrap_or(Applied::Done)
    }

    /// Applies one (non-batch) command. Validation runs before the first mutation, so a
    /// rejection leaves no trace.
    fn apply_one(&mut self, index: u64, cmd: Command, keys: &mut Vec<WatchKey>) -> Applied {
        match cmd {
            Command::Register(reg) => match preflight_register(self, &reg) {
                Err(e) => Applied::Rejected(e),
                Ok(()) => match self.register(index, *reg, keys) {
                    Ok(()) => Applied::Done,
                    Err(e) => Applied::Rejected(e),
                },
            },
            Command::Deregister(d) => match self.deregister(d, keys) {
                Ok(()) => Applied::Done,
                Err(e) => Applied::Rejected(e),
            },
            Command::ConfigSet { entry, cas } => self
                .config_set(index, entry, cas, false, keys)
                .unwrap_or_else(Applied::Rejected),
            Command::ConfigDelete { kind, name, cas } => self.config_delete(kind, name, cas, keys),
            Command::CaSet { state, cas } => self.ca_set(index, *state, cas, keys),
            Command::IntentionUpsert {
                destination,
                source,
                create_only,
                replace_id,
            } => self.intention_upsert(index, destination, source, create_only, replace_id, keys),
            Command::IntentionDelete { target } => self.intention_delete(index, target, keys),
            Command::AclBootstrap { token, reset_index } => {
                self.acl_bootstrap(index, token, reset_index, keys)
            }
            Command::AclInit {
                initial_management,
                create_time,
            } => self.acl_init(index, initial_management, &create_time, keys),
            Command::AclTokenSet { token, create } => {
                self.acl_token_set(index, token, create, keys)
            }
            Command::AclTokenDelete { accessor } => self.acl_token_delete(&accessor, keys),
            Command::AclPolicySet { policy, create } => {
                self.acl_policy_set(index, policy, create, keys)
            }
            Command::AclPolicyDelete { id } => self.acl_policy_delete(&id, keys),
            Command::AclRoleSet { role, create } => self.acl_role_set(index, role, create, keys),
            Command::AclRoleDelete { id } => self.acl_role_delete(&id, keys),
            Command::Batch { .. } => Applied::Rejected("batches do not nest".into()),
        }
    }

    fn ca_set(
        &mut self,
        index: u64,
        mut state: crate::CaState,
        cas: u64,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        if let Err(e) = crate::ca::validate_ca_state(&state) {
            return Applied::Rejected(e);
        }
        if self.ca.as_ref().map(|c| c.modify_index).unwrap_or(0) != cas {
            return Applied::Cas(false);
        }
        state.stamp(self.ca.as_ref(), index);
        self.ca = Some(state);
        keys.extend([WatchKey::CaRoots, WatchKey::CaConfig]);
        Applied::Cas(true)
    }

    fn to_snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            index: self.index,
            nodes: self.nodes.clone(),
            key_index: self
                .key_index
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            ca: self.ca.clone(),
            acl: self.acl.clone(),
            ..Default::default()
        };
        snap.key_index.sort();
        for ((node, id), svc) in &self.services {
            snap.services
                .entry(node.clone())
                .or_default()
                .insert(id.clone(), svc.clone());
        }
        for ((node, id), check) in &self.checks {
            snap.checks
                .entry(node.clone())
                .or_default()
                .insert(id.clone(), check.clone());
        }
        for ((kind, name), entry) in &self.config {
            snap.config
                .entry(kind.clone())
                .or_default()
                .insert(name.clone(), entry.clone());
        }
        snap
    }

    fn from_snapshot(snap: Snapshot) -> Tables {
        let mut t = Tables {
            index: snap.index,
            nodes: snap.nodes,
            key_index: snap.key_index.into_iter().collect(),
            ca: snap.ca,
            acl: snap.acl,
            ..Default::default()
        };
        t.acl.reindex();
        for (node, svcs) in snap.services {
            for (id, svc) in svcs {
                let key = (node.clone(), id);
                t.index_service(&key, &svc, true);
                t.services.insert(key, svc);
            }
        }
        for (node, checks) in snap.checks {
            for (id, check) in checks {
                t.checks.insert((node.clone(), id), check);
            }
        }
        for (kind, entries) in snap.config {
            for (name, entry) in entries {
                t.config.insert((kind.clone(), name), entry);
            }
        }
        t
    }
}

/// The state store of one datacenter. Cheap to clone; clones share the same state.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    datacenter: String,
    tables: RwLock<Tables>,
    watches: Watches,
    answers: Mutex<AnswerCache>,
}

impl Store {
    /// An empty store for the given datacenter.
    pub fn new(datacenter: &str) -> Store {
        Store {
            inner: Arc::new(Inner {
                datacenter: datacenter.to_string(),
                tables: RwLock::new(Tables::default()),
                watches: Watches::default(),
                answers: Mutex::new(AnswerCache::default()),
            }),
        }
    }

    /// The datacenter this store belongs to.
    pub fn datacenter(&self) -> &str {
        &self.inner.datacenter
    }

    /// Index of the last applied command.
    pub fn last_index(&self) -> u64 {
        self.inner.tables.read().index
    }

    /// Applies one committed command at its Raft log index. Deterministic: every replica gets
    /// the same rows, indexes and outcome. A rejected command changes nothing.
    pub fn apply(&self, index: u64, cmd: Command) -> Applied {
        let mut keys = Vec::new();
        let outcome = {
            let mut tables = self.inner.tables.write();
            let outcome = match cmd {
                Command::Batch { commands: cmds } => Applied::Batch(
                    cmds.into_iter()
                        .map(|c| match c {
                            Command::Batch { .. } => {
                                Applied::Rejected("batches do not nest".into())
                            }
                            c => tables.apply_one(index, c, &mut keys),
                        })
                        .collect(),
                ),
                c => tables.apply_one(index, c, &mut keys),
            };
            tables.index = tables.index.max(index);
            for key in &keys {
                tables.key_index.insert(key.clone(), index);
            }
            outcome
        };
        if !keys.is_empty() {
            self.inner.watches.notify(&keys);
        }
        outcome
    }

    /// Records that a log entry without a command (membership, blank) was applied.
    pub fn advance(&self, index: u64) {
        let mut tables = self.inner.tables.write();
        tables.index = tables.index.max(index);
    }

    /// A consistent copy of the whole state.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.tables.read().to_snapshot()
    }

    /// Serialises the whole state.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.snapshot()).expect("snapshot serialises")
    }

    /// Replaces the whole state with a snapshot and wakes every blocking query.
    pub fn restore(&self, snap: Snapshot) {
        let fresh = Tables::from_snapshot(snap);
        {
            let mut tables = self.inner.tables.write();
            *tables = fresh;
            // Cached answers belong to the old tables; drop them before any reader sees the
            // new ones.
            self.inner.answers.lock().clear();
        }
        self.inner.watches.notify_all();
    }

    /// Decodes and restores a snapshot produced by [`Store::snapshot_bytes`].
    pub fn restore_bytes(&self, bytes: &[u8]) -> Result<(), StateError> {
        let snap: Snapshot = serde_json::from_slice(bytes)?;
        self.restore(snap);
        Ok(())
    }

    /// Runs `read` once under the read lock with the change index of `keys` (at least 1).
    pub(crate) fn read_at<T>(
        &self,
        keys: &[WatchKey],
        read: impl FnOnce(&Tables, u64) -> T,
    ) -> (T, u64) {
        let tables = self.inner.tables.read();
        let idx = tables.index_of(keys);
        (read(&tables, idx), idx)
    }

    /// Consul's blocking read over `keys`: with `min_index` 0 answer at once; otherwise wait
    /// until the keys' change index exceeds `min_index` or `wait` passes, then answer with
    /// what is current.
    pub(crate) async fn blocking<T>(
        &self,
        min_index: u64,
        wait: Duration,
        keys: &[WatchKey],
        read: impl Fn(&Tables, u64) -> T,
    ) -> (T, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut receivers = {
                let tables = self.inner.tables.read();
                let idx = tables.index_of(keys);
                if min_index == 0 || idx > min_index {
                    return (read(&tables, idx), idx);
                }
                // Subscribe before the read lock goes, so no write slips in between.
                keys.iter()
                    .map(|k| self.inner.watches.subscribe(k))
                    .collect::<Vec<_>>()
            };
            tokio::select! {
                _ = futures_any(&mut receivers) => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    let tables = self.inner.tables.read();
                    let idx = tables.index_of(keys);
                    return (read(&tables, idx), idx);
                }
            }
        }
    }

    /// The cache of serialised answers by query (see `Store::answer`).
    pub(crate) fn answers(&self) -> &Mutex<AnswerCache> {
        &self.inner.answers
    }

    /// Whether `node` has an instance of `service` registered: the service itself, or a
    /// Connect proxy (or native Connect service) for it. A client agent may have leafs signed
    /// only for what its node offers.
    pub fn node_offers(&self, node: &str, service: &str) -> bool {
        let tables = self.inner.tables.read();
        let start = (node.to_string(), String::new());
        tables
            .services
            .range(start..)
            .take_while(|((n, _), _)| n == node)
            .any(|(_, svc)| {
                svc.service == service
                    || svc
                        .proxy
                        .as_ref()
                        .is_some_and(|p| p.destination_service_name == service)
            })
    }

    /// The CA state's version (its last change index), without copying it.
    pub fn ca_version(&self) -> Option<u64> {
        self.inner.tables.read().ca.as_ref().map(|c| c.modify_index)
    }

    /// The CA state, secrets included (for the server's CA manager only).
    pub fn ca_state(&self) -> Option<crate::CaState> {
        self.inner.tables.read().ca.clone()
    }

    /// The token with this secret, its policies and roles, and the index of the ACL tables:
    /// what an agent compiles the token's authorizer from. `None`: no such token.
    pub fn acl_identity(&self, secret: &str) -> (Option<trellis_api::AclIdentity>, u64) {
        self.read_at(&[WatchKey::Acl], |t, _| {
            t.acl.token_by_secret(secret).map(|tok| t.acl.identity(tok))
        })
    }

    /// Every token with an expiration time: (AccessorID, ExpirationTime as stored). The
    /// leader deletes those past (the store itself never reads the clock).
    pub fn acl_expiring_tokens(&self) -> Vec<(String, String)> {
        self.inner
            .tables
            .read()
            .acl
            .tokens
            .values()
            .filter_map(|t| Some((t.accessor_id.clone(), t.expiration_time.clone()?)))
            .collect()
    }

    /// The index the ACL system was bootstrapped at (0: not yet).
    pub fn acl_bootstrap_index(&self) -> u64 {
        self.inner.tables.read().acl.bootstrap_index
    }

    /// Number of watch keys with live waiters (for tests and metrics).
    pub fn watched_keys(&self) -> usize {
        self.inner.watches.len()
    }

    /// Slots the watch registry's table holds (for tests).
    #[cfg(test)]
    pub(crate) fn watch_capacity(&self) -> usize {
        self.inner.watches.capacity()
    }

    /// Many blocking waits in one: for each `(key, index)`, the key's current change index
    /// when it differs from `index`. Answers at once when any differs; otherwise waits until
    /// one changes or `wait` passes (then answers with whatever differs, possibly nothing).
    /// Positions in the answer are positions in `keys`. This is what lets an agent hold one
    /// request per few hundred cache entries instead of one blocking query each. More than
    /// [`MAX_WATCH_KEYS`] keys is [`StateError::TooManyWatchKeys`].
    pub async fn wait_for_keys(
        &self,
        keys: &[(WatchKey, u64)],
        wait: Duration,
    ) -> Result<Vec<(u32, u64)>, StateError> {
        if keys.len() > MAX_WATCH_KEYS {
            return Err(StateError::TooManyWatchKeys {
                keys: keys.len(),
                max: MAX_WATCH_KEYS,
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        let changed = |tables: &Tables| -> Vec<(u32, u64)> {
            keys.iter()
                .enumerate()
                .filter_map(|(i, (key, index))| {
                    let now = tables.index_of(std::slice::from_ref(key));
                    (now != *index).then_some((u32::try_from(i).unwrap_or(u32::MAX), now))
                })
                .collect()
        };
        loop {
            let mut receivers = {
                let tables = self.inner.tables.read();
                let out = changed(&tables);
                if !out.is_empty() {
                    return Ok(out);
                }
                // Subscribe before the read lock goes, so no write slips in between.
                keys.iter()
                    .map(|(k, _)| self.inner.watches.subscribe(k))
                    .collect::<Vec<_>>()
            };
            tokio::select! {
                _ = futures_any(&mut receivers) => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(changed(&self.inner.tables.read()));
                }
            }
        }
    }
}

/// Resolves when any subscription sees a change or its sender goes away.
async fn futures_any(receivers: &mut [Subscription<'_>]) {
    if receivers.is_empty() {
        return std::future::pending().await;
    }
    let futs = receivers.iter_mut().map(|rx| Box::pin(rx.changed()));
    futures::future::select_all(futs).await;
}

/// Validation of a registration against the current tables, before any row changes, so a
/// rejected registration leaves the store untouched.
fn preflight_register(tables: &Tables, reg: &CatalogRegistration) -> Result<(), String> {
    validate_registration(reg)?;
    let svc_id = reg.service.as_ref().map(|s| {
        if s.id.is_empty() {
            s.service.as_str()
        } else {
            s.id.as_str()
        }
    });
    for check in reg.check.iter().chain(reg.checks.iter()) {
        if check.service_id.is_empty() || Some(check.service_id.as_str()) == svc_id {
            continue;
        }
        if !tables
            .services
            .contains_key(&(reg.node.clone(), check.service_id.clone()))
        {
            return Err(format!(
                "Unknown service ID {:?} for check ID {:?}",
                check.service_id,
                if check.check_id.is_empty() {
                    &check.name
                } else {
                    &check.check_id
                }
            ));
        }
    }
    Ok(())
}

/// Whether entries of `kind` feed resolved service configuration.
fn shapes_service_config(kind: &str) -> bool {
    kind == trellis_api::config_kind::SERVICE_DEFAULTS
        || kind == trellis_api::config_kind::PROXY_DEFAULTS
}
