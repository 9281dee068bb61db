//! The agent's local state: services and checks registered on this node.
//!
//! The agent is the source of truth for its node: [`crate::sync`] makes the catalog match this
//! state. Every change bumps a version (for hash-based blocking on agent endpoints) and, when
//! the catalog must learn of it promptly, wakes the sync loop.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use trellis_api::{status, AgentService, CheckDefinition, HealthCheck, ServiceConfigResponse};

/// A check the agent owns: its stored row and the definition it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LocalCheck {
    /// The row as the catalog should hold it.
    pub check: HealthCheck,
    /// How to run it.
    pub definition: CheckDefinition,
}

/// Services by ID (`None`: gone) and the present ones' checks by service ID.
pub type ServiceRows = (
    Vec<(String, Option<AgentService>)>,
    HashMap<String, Vec<HealthCheck>>,
);

/// Services and checks (by ID) changed since the anti-entropy loop last synced them: present
/// ones are registered again, absent ones deregistered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Service IDs.
    pub services: std::collections::BTreeSet<String>,
    /// Check IDs.
    pub checks: std::collections::BTreeSet<String>,
}

impl Dirty {
    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.checks.is_empty()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    services: BTreeMap<String, AgentService>,
    checks: BTreeMap<String, LocalCheck>,
}

/// Services and checks of this agent, shared by the HTTP API, check runners and sync.
pub struct LocalState {
    node: String,
    inner: Mutex<Persisted>,
    /// Each proxy's configuration resolved from config entries, merged under its registration
    /// when read ([`crate::service_config`] keeps it current). Not persisted: it is fetched
    /// again after a restart.
    resolved: Mutex<HashMap<String, Arc<ServiceConfigResponse>>>,
    /// When each check last turned critical (for `DeregisterCriticalServiceAfter`).
    critical_since: Mutex<HashMap<String, Instant>>,
    version: watch::Sender<u64>,
    /// Per-service change signals, made on demand for the services someone watches (alias
    /// checks): a change to one service or its checks wakes only its own watchers.
    service_versions: Mutex<HashMap<String, watch::Sender<()>>>,
    /// Services and checks changed since the sync loop last looked.
    dirty: Mutex<Dirty>,
    sync_now: Notify,
    persist_dir: Option<PathBuf>,
    /// Held while files are written and renamed into place: concurrent changes must not share
    /// a temporary file (one rename would find it gone), and the last to write must write the
    /// latest state.
    persisting: Mutex<()>,
}

impl LocalState {
    /// Empty state for `node`; with `persist_dir`, loaded from and saved to that directory:
    /// one file per service and per check (`services/`, `checks/`), so a change rewrites only
    /// what it touched, as Consul's agent does. A single-file state (`local-state.json` beside
    /// the directory, as older Trellis wrote) is read once and moved into it.
    pub fn open(node: &str, persist_dir: Option<PathBuf>) -> Result<LocalState, String> {
        let mut persisted = Persisted::default();
        if let Some(dir) = &persist_dir {
            persisted = load_dir(dir)?;
            let legacy = dir.with_file_name("local-state.json");
            match std::fs::read(&legacy) {
                Ok(bytes) => {
                    let old: Persisted = serde_json::from_slice(&bytes).map_err(|e| {
                        format!("agent state file {} is corrupt: {e}", legacy.display())
                    })?;
                    persisted.services.extend(old.services);
                    persisted.checks.extend(old.checks);
                    for (id, svc) in &persisted.services {
                        write_entity(dir, SERVICES, id, svc)?;
                    }
                    for (id, check) in &persisted.checks {
                        write_entity(dir, CHECKS, id, check)?;
                    }
                    std::fs::remove_file(&legacy)
                        .map_err(|e| format!("removing {}: {e}", legacy.display()))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading {}: {e}", legacy.display())),
            }
        }
        for c in persisted.checks.values_mut() {
            c.check.node = node.to_string();
        }
        Ok(LocalState {
            node: node.to_string(),
            inner: Mutex::new(persisted),
            resolved: Mutex::new(HashMap::new()),
            critical_since: Mutex::new(HashMap::new()),
            version: watch::channel(0).0,
            service_versions: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty::default()),
            sync_now: Notify::new(),
            persist_dir,
            persisting: Mutex::new(()),
        })
    }

    /// This agent's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells watchers, and writes the named services and checks as they now are (a file
    /// for each one present, none for each one gone).
    fn changed(&self, sync: bool, services: &[&str], checks: &[&str]) -> Result<(), String> {
        self.mark(services, checks);
        self.notify(sync);
        self.persist(services, checks)
    }

    /// Records services and checks the catalog has to learn about.
    fn mark(&self, services: &[&str], checks: &[&str]) {
        let mut dirty = self.dirty.lock();
        dirty
            .services
            .extend(services.iter().map(|s| s.to_string()));
        dirty.checks.extend(checks.iter().map(|c| c.to_string()));
    }

    /// What changed since the last call (the anti-entropy loop's partial sync), leaving
    /// nothing marked.
    pub fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock())
    }

    /// Marks again what a failed partial sync took.
    pub fn restore_dirty(&self, taken: Dirty) {
        let mut dirty = self.dirty.lock();
        dirty.services.extend(taken.services);
        dirty.checks.extend(taken.checks);
    }

    /// Tells watchers (and, with `sync`, the anti-entropy loop) that something changed.
    fn notify(&self, sync: bool) {
        self.version.send_modify(|v| *v += 1);
        if sync {
            self.sync_now.notify_one();
        }
    }

    fn persist(&self, services: &[&str], checks: &[&str]) -> Result<(), String> {
        let Some(dir) = &self.persist_dir else {
            return Ok(());
        };
        let _one_writer = self.persisting.lock();
        // Serialised under the state lock, written outside it.
        let (service_bytes, check_bytes) = {
            let inner = self.inner.lock();
            let svc: Vec<(&str, Option<Vec<u8>>)> = services
                .iter()
                .map(|id| (*id, inner.services.get(*id).map(to_json)))
                .collect();
            let chk: Vec<(&str, Option<Vec<u8>>)> = checks
                .iter()
                .map(|id| (*id, inner.checks.get(*id).map(to_json)))
                .collect();
            (svc, chk)
        };
        for (kind, entries) in [(SERVICES, service_bytes), (CHECKS, check_bytes)] {
            for (id, bytes) in entries {
                match bytes {
                    Some(bytes) => write_file(dir, kind, id, &bytes)?,
                    None => remove_file(dir, kind, id)?,
                }
            }
        }
        Ok(())
    }

    /// Adds or replaces a service with its checks. With `replace_checks`, the service's other
    /// checks are removed; their IDs are returned so their runners can stop.
    pub fn add_service(
        &self,
        svc: AgentService,
        checks: Vec<LocalCheck>,
        replace_checks: bool,
    ) -> Result<Vec<String>, String> {
        let (removed, id, written) = {
            let mut inner = self.inner.lock();
            let mut removed = Vec::new();
            if replace_checks {
                let keep: Vec<&str> = checks.iter().map(|c| c.check.check_id.as_str()).collect();
                inner.checks.retain(|id, c| {
                    let drop = c.check.service_id == svc.id && !keep.contains(&id.as_str());
                    if drop {
                        removed.push(id.clone());
                    }
                    !drop
                });
            }
            let mut written = removed.clone();
            for c in checks {
                let id = c.check.check_id.clone();
                written.push(id.clone());
                let keep_status = inner
                    .checks
                    .get(&id)
                    .map(|old| (old.check.status.clone(), old.check.output.clone()));
                let mut c = c;
                // Re-registering keeps a running check's current state unless a status is given.
                if let (Some((status, output)), true) =
                    (keep_status, c.definition.status.is_empty())
                {
                    c.check.status = status;
                    c.check.output = output;
                }
                inner.checks.insert(id, c);
            }
            let id = svc.id.clone();
            inner.services.insert(svc.id.clone(), svc);
            (removed, id, written)
        };
        self.service_changed(&id);
        let written: Vec<&str> = written.iter().map(String::as_str).collect();
        self.changed(true, &[&id], &written)?;
        Ok(removed)
    }

    /// Removes a service and its checks; returns the removed check IDs, or `None` if unknown.
    pub fn remove_service(&self, id: &str) -> Result<Option<Vec<String>>, String> {
        let removed = {
            let mut inner = self.inner.lock();
            if inner.services.remove(id).is_none() {
                return Ok(None);
            }
            self.resolved.lock().remove(id);
            let ids: Vec<String> = inner
                .checks
                .iter()
                .filter(|(_, c)| c.check.service_id == id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &ids {
                inner.checks.remove(k);
            }
            ids
        };
        self.service_changed(id);
        let checks: Vec<&str> = removed.iter().map(String::as_str).collect();
        self.changed(true, &[id], &checks)?;
        Ok(Some(removed))
    }

    /// Adds or replaces a check.
    pub fn add_check(&self, check: LocalCheck) -> Result<(), String> {
        let service = check.check.service_id.clone();
        let id = check.check.check_id.clone();
        let old = self
            .inner
            .lock()
            .checks
            .insert(check.check.check_id.clone(), check);
        self.service_changed(&service);
        if let Some(old) = old.filter(|o| o.check.service_id != service) {
            self.service_changed(&old.check.service_id);
        }
        self.changed(true, &[], &[&id])
    }

    /// Removes a check; false if it was unknown.
    pub fn remove_check(&self, id: &str) -> Result<bool, String> {
        let Some(old) = self.inner.lock().checks.remove(id) else {
            return Ok(false);
        };
        self.service_changed(&old.check.service_id);
        self.changed(true, &[], &[id])?;
        Ok(true)
    }

    /// Sets a check's status and output. Returns `None` for an unknown check, otherwise whether
    /// anything changed. A status change is synced at once; an output-only change waits for the
    /// next periodic sync, as Consul does, to spare the servers.
    pub fn update_check(&self, id: &str, new_status: &str, output: &str) -> Option<bool> {
        let mut service = None;
        let (status_changed, keep) = {
            let mut inner = self.inner.lock();
            let c = inner.checks.get_mut(id)?;
            // Only a TTL check's status is worth keeping across a restart (as Consul keeps
            // it): every other check runs again at start and finds its status anew.
            let ttl = !c.definition.ttl.is_empty();
            if c.check.status == new_status && c.check.output == output {
                return Some(false);
            }
            let status_changed = c.check.status != new_status;
            if status_changed {
                let mut since = self.critical_since.lock();
                if new_status == status::CRITICAL {
                    since.insert(id.to_string(), Instant::now());
                } else {
                    since.remove(id);
                }
            }
            c.check.status = new_status.to_string();
            c.check.output = output.to_string();
            if status_changed {
                service = Some(c.check.service_id.clone());
            }
            (status_changed, ttl && status_changed)
        };
        if let Some(service) = service {
            self.service_changed(&service);
        }
        if keep {
            if let Err(e) = self.changed(status_changed, &[], &[id]) {
                tracing::warn!(error = %e, "could not persist a check update");
            }
        } else {
            self.mark(&[], &[id]);
            self.notify(status_changed);
        }
        Some(true)
    }

    /// How long a check has been critical, counted from when this agent saw it turn critical
    /// (or was registered critical); `None` when it is not critical.
    pub fn critical_for(&self, id: &str) -> Option<Duration> {
        let critical = self.inner.lock().checks.get(id)?.check.status == status::CRITICAL;
        if !critical {
            return None;
        }
        let mut since = self.critical_since.lock();
        Some(
            since
                .entry(id.to_string())
                .or_insert_with(Instant::now)
                .elapsed(),
        )
    }

    /// One service by ID, with any resolved proxy configuration merged under its own.
    pub fn service(&self, id: &str) -> Option<AgentService> {
        let mut svc = self.inner.lock().services.get(id).cloned()?;
        self.merge_resolved(&mut svc);
        Some(svc)
    }

    /// Every service by ID, with resolved proxy configuration merged in.
    pub fn services(&self) -> BTreeMap<String, AgentService> {
        let mut all = self.inner.lock().services.clone();
        let resolved = self.resolved.lock();
        if !resolved.is_empty() {
            for (id, svc) in all.iter_mut() {
                if let (Some(r), Some(proxy)) = (resolved.get(id), svc.proxy.as_mut()) {
                    r.merge_into(proxy);
                }
            }
        }
        all
    }

    /// For each of `ids`, the service (merged as [`LocalState::service`] merges it) or `None`
    /// when gone, and the checks of the present ones by service ID: the anti-entropy loop's
    /// partial sync, with one pass over the checks.
    pub fn service_rows(&self, ids: &std::collections::BTreeSet<String>) -> ServiceRows {
        let (mut services, checks) = {
            let inner = self.inner.lock();
            let services: Vec<(String, Option<AgentService>)> = ids
                .iter()
                .map(|id| (id.clone(), inner.services.get(id).cloned()))
                .collect();
            let mut checks: HashMap<String, Vec<HealthCheck>> = HashMap::new();
            for c in inner.checks.values() {
                if ids.contains(&c.check.service_id)
                    && inner.services.contains_key(&c.check.service_id)
                {
                    checks
                        .entry(c.check.service_id.clone())
                        .or_default()
                        .push(c.check.clone());
                }
            }
            (services, checks)
        };
        for (_, svc) in services.iter_mut() {
            if let Some(svc) = svc {
                self.merge_resolved(svc);
            }
        }
        (services, checks)
    }

    /// One service by ID as it was registered, without resolved configuration.
    pub fn registration(&self, id: &str) -> Option<AgentService> {
        self.inner.lock().services.get(id).cloned()
    }

    fn merge_resolved(&self, svc: &mut AgentService) {
        let Some(proxy) = svc.proxy.as_mut() else {
            return;
        };
        if let Some(r) = self.resolved.lock().get(&svc.id) {
            r.merge_into(proxy);
        }
    }

    /// Records (or with `None`, forgets) the resolved configuration of the proxy `id`. A
    /// change wakes watchers and the sync loop, since the catalog holds the merged view.
    pub fn set_resolved(&self, id: &str, value: Option<Arc<ServiceConfigResponse>>) {
        // Lock order: `inner`, then `resolved` (as `remove_service`).
        let changed = {
            let inner = self.inner.lock();
            let mut resolved = self.resolved.lock();
            match value {
                Some(v) if inner.services.contains_key(id) => {
                    if resolved.get(id).is_some_and(|old| **old == *v) {
                        false
                    } else {
                        resolved.insert(id.to_string(), v);
                        true
                    }
                }
                Some(_) => false,
                None => resolved.remove(id).is_some(),
            }
        };
        if changed {
            self.mark(&[id], &[]);
            self.notify(true);
        }
    }

    /// One check by ID.
    pub fn check(&self, id: &str) -> Option<LocalCheck> {
        self.inner.lock().checks.get(id).cloned()
    }

    /// Every check by ID.
    pub fn checks(&self) -> BTreeMap<String, LocalCheck> {
        self.inner.lock().checks.clone()
    }

    /// Ports already held by services of this agent other than `except`.
    pub fn ports_in_use(&self, except: &str) -> Vec<u16> {
        self.inner
            .lock()
            .services
            .values()
            .filter(|s| s.id != except)
            .map(|s| s.port)
            .collect()
    }

    /// The worst status among a service's checks other than `except`; passing with none.
    pub fn service_health(&self, service_id: &str, except: &str) -> Option<String> {
        let inner = self.inner.lock();
        inner.services.get(service_id)?;
        let mut worst = status::PASSING;
        for c in inner.checks.values() {
            if c.check.service_id != service_id || c.check.check_id == except {
                continue;
            }
            match c.check.status.as_str() {
                status::CRITICAL => worst = status::CRITICAL,
                status::WARNING if worst == status::PASSING => worst = status::WARNING,
                _ => {}
            }
        }
        Some(worst.to_string())
    }

    /// A receiver that sees every change (hash blocking).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A receiver that sees changes to the service `id`: its registration and its checks'
    /// statuses (alias checks). Watching a service not registered yet is allowed.
    pub fn watch_service(&self, id: &str) -> watch::Receiver<()> {
        let mut versions = self.service_versions.lock();
        if let Some(tx) = versions.get(id) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(());
        versions.insert(id.to_string(), tx);
        rx
    }

    /// Wakes the watchers of service `id`, and forgets its signal once nobody watches it.
    fn service_changed(&self, id: &str) {
        if id.is_empty() {
            return;
        }
        let mut versions = self.service_versions.lock();
        if let Some(tx) = versions.get(id) {
            if tx.receiver_count() == 0 {
                versions.remove(id);
            } else {
                tx.send_replace(());
            }
        }
    }

    /// Resolves when a change needs to reach the catalog promptly.
    pub async fn sync_requested(&self) {
        self.sync_now.notified().await
    }
}

/// The subdirectory of the state directory holding services.
const SERVICES: &str = "services";
/// The subdirectory holding checks.
const CHECKS: &str = "checks";

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("local state serialises")
}

/// A file name for an ID whatever characters it holds: its bytes in hex.
fn file_name(id: &str) -> String {
    let mut name = String::with_capacity(id.len() * 2 + 5);
    for b in id.bytes() {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".json");
    name
}

fn write_file(dir: &Path, kind: &str, id: &str, bytes: &[u8]) -> Result<(), String> {
    let sub = dir.join(kind);
    std::fs::create_dir_all(&sub).map_err(|e| format!("creating {}: {e}", sub.display()))?;
    let path = sub.join(file_name(id));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn write_entity<T: Serialize>(dir: &Path, kind: &str, id: &str, v: &T) -> Result<(), String> {
    write_file(dir, kind, id, &to_json(v))
}

fn remove_file(dir: &Path, kind: &str, id: &str) -> Result<(), String> {
    let path = dir.join(kind).join(file_name(id));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// Reads every `*.json` file of `dir/kind`, keyed by the ID each holds.
fn load_kind<T: serde::de::DeserializeOwned>(
    dir: &Path,
    kind: &str,
    id_of: impl Fn(&T) -> String,
) -> Result<BTreeMap<String, T>, String> {
    let sub = dir.join(kind);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&sub) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("reading {}: {e}", sub.display())),
    };
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", sub.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let v: T = serde_json::from_slice(&bytes)
            .map_err(|e| format!("agent state file {} is corrupt: {e}", path.display()))?;
        out.insert(id_of(&v), v);
    }
    Ok(out)
}

fn load_dir(dir: &Path) -> Result<Persisted, String> {
    Ok(Persisted {
        services: load_kind(dir, SERVICES, |s: &AgentService| s.id.clone())?,
        checks: load_kind(dir, CHECKS, |c: &LocalCheck| c.check.check_id.clone())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_changes_all_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local");
        let state = std::sync::Arc::new(LocalState::open("n1", Some(path.clone())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let svc = AgentService {
                            id: format!("svc-{t}-{i}"),
                            service: format!("svc-{t}-{i}"),
                            ..Default::default()
                        };
                        state.add_service(svc, Vec::new(), false).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let reopened = LocalState::open("n1", Some(path)).unwrap();
        assert_eq!(reopened.services().len(), 200);
    }

    #[test]
    fn each_service_and_check_has_its_own_file_and_old_state_files_move_in() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("local-state.json");
        let svc = |id: &str| AgentService {
            id: id.into(),
            service: id.into(),
            ..Default::default()
        };
        let old = Persisted {
            services: [("old/one".to_string(), svc("old/one"))].into(),
            checks: BTreeMap::new(),
        };
        std::fs::write(&legacy, serde_json::to_vec(&old).unwrap()).unwrap();
        let path = dir.path().join("local");
        let state = LocalState::open("n1", Some(path.clone())).unwrap();
        assert!(!legacy.exists(), "the single file was moved in");
        assert!(state.service("old/one").is_some());

        state.add_service(svc("web"), Vec::new(), false).unwrap();
        state.add_service(svc("db"), Vec::new(), false).unwrap();
        let files = || std::fs::read_dir(path.join(SERVICES)).unwrap().count();
        assert_eq!(files(), 3);
        state.remove_service("web").unwrap();
        assert_eq!(files(), 2);
        drop(state);
        let reopened = LocalState::open("n1", Some(path)).unwrap();
        let ids: Vec<String> = reopened.services().into_keys().collect();
        assert_eq!(ids, ["db", "old/one"]);
    }
}
