//! Leaf certificates for this agent's services: the agent makes the key and the CSR (the key
//! never leaves the agent), the leader signs, and the agent keeps the result until it is due
//! for renewal or the active root changes.
//!
//! This is the minimal store the leaf endpoint needs; background refresh, rate-limit backoff
//! and the rest of the agent cache come with the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use trellis_api::{IndexedCaRoots, IssuedCert};
use trellis_identity::{SpiffeId, TrustDomain};
use trellis_server::ServerError;
use trellis_state::{Query, QueryOutput};

use crate::{AgentError, Backend};

/// A leaf the agent holds, with its response body serialised once.
#[derive(Clone)]
struct Held {
    cert: IssuedCert,
    body: Bytes,
    root_id: String,
    /// Unix seconds at which to renew.
    renew_at: i64,
    /// Unix seconds at which the certificate expires.
    expires_at: i64,
}

/// Whether an error is the CA's rate limit (from this server or a remote one).
/// Whether a failure to issue is worth riding out with the certificate held: the servers
/// cannot be reached (or have no leader) right now.
fn unreachable(e: &AgentError) -> bool {
    match e {
        AgentError::Server(ServerError::Rpc { .. } | ServerError::NoLeader) => true,
        AgentError::Cache(crate::cache::FetchError::Server(s)) => {
            matches!(&**s, ServerError::Rpc { .. } | ServerError::NoLeader)
        }
        _ => false,
    }
}

fn rate_limited(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Server(ServerError::Ca(trellis_ca::CaError::RateLimited))
            | AgentError::Server(ServerError::Remote { status: 429, .. })
    )
}

/// Where the leaf store reads the roots: the agent's cache, under the agent's own key.
pub struct Roots {
    /// The agent's store-read cache.
    pub cache: Arc<crate::cache::Cache<crate::cache::StoreQuery>>,
    /// The roots' key in it (this datacenter, the agent's token).
    pub key: crate::cache::Key<Query>,
}

/// What the leaf path needs from the roots, parsed once per roots index.
struct RootsView {
    index: u64,
    active_root_id: String,
    trust_domain: String,
}

/// The agent's leaf certificates by service name.
pub struct LeafStore {
    /// Window over which watchers re-issue after a root change.
    root_change_jitter: Duration,
    held: Mutex<HashMap<String, Held>>,
    roots: Mutex<Option<Arc<RootsView>>>,
    /// Serialises issuing so concurrent requests for one service share one certificate.
    issuing: tokio::sync::Mutex<()>,
    last_index: AtomicU64,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn unix_of(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn internal(msg: impl Into<String>) -> AgentError {
    AgentError::Server(ServerError::Raft(msg.into()))
}

/// The window in which a leaf valid from `after` to `before` should be renewed: between 60% and
/// 90% of its lifetime (Consul's `calculateSoftExpiry`). A pure function of its inputs.
pub fn renew_window(after: i64, before: i64) -> (i64, i64) {
    let life = (before - after).max(0);
    (after + life * 6 / 10, after + life * 9 / 10)
}

/// How long a watcher waits before re-issuing after a root change: `fraction` (in [0, 1)) of
/// the jitter window. A pure function, so the spread is tested exactly.
pub fn root_change_delay(window: Duration, fraction: f64) -> Duration {
    window.mul_f64(fraction.clamp(0.0, 1.0))
}

/// Consul's default window for re-issuing after a root change.
pub const ROOT_CHANGE_JITTER: Duration = Duration::from_secs(30);

impl LeafStore {
    /// An empty store; watchers re-issue within `root_change_jitter` of a root change.
    pub fn new(root_change_jitter: Duration) -> LeafStore {
        LeafStore {
            root_change_jitter,
            held: Mutex::default(),
            roots: Mutex::default(),
            issuing: tokio::sync::Mutex::default(),
            last_index: AtomicU64::default(),
        }
    }

    /// The roots from the agent's cache (blocking on it when `min_index` is set), parsed only
    /// when their index moved. From memory, so leafs keep being served while the servers are
    /// unreachable.
    async fn roots(
        &self,
        roots: &Roots,
        min_index: u64,
        wait: Duration,
    ) -> Result<Arc<RootsView>, AgentError> {
        let hit = roots.cache.get(roots.key.clone(), min_index, wait).await?;
        if let Some(view) = self.roots.lock().as_ref().filter(|v| v.index == hit.index) {
            return Ok(view.clone());
        }
        let QueryOutput::Found(body) = hit.value else {
            return Err(internal("CA roots not found"));
        };
        let roots: IndexedCaRoots =
            serde_json::from_slice(&body).map_err(|e| internal(e.to_string()))?;
        let view = Arc::new(RootsView {
            index: hit.index,
            active_root_id: roots.active_root_id,
            trust_domain: roots.trust_domain,
        });
        *self.roots.lock() = Some(view.clone());
        Ok(view)
    }

    fn current(&self, service: &str, active_root: &str) -> Option<Held> {
        let held = self.held.lock().get(service).cloned()?;
        let fresh = held.root_id == active_root && now_unix() < held.renew_at;
        fresh.then_some(held)
    }

    async fn issue(
        &self,
        backend: &Backend,
        datacenter: &str,
        service: &str,
        roots: &RootsView,
    ) -> Result<Held, AgentError> {
        let _one_at_a_time = self.issuing.lock().await;
        if let Some(h) = self.current(service, &roots.active_root_id) {
            return Ok(h);
        }
        let td = TrustDomain::parse(&roots.trust_domain)
            .map_err(|e| internal(format!("bad trust domain in roots: {e}")))?;
        let uri = SpiffeId::service(td, datacenter, service).to_string();
        let key = trellis_ca::leaf_key_and_csr(&uri).map_err(ServerError::from)?;
        let mut cert = backend.sign(&key.csr_pem).await?;
        cert.private_key_pem = key.private_key_pem;
        // Indexes only grow, across services and renewals (issuing is serialised).
        let index = (self.last_index.load(Ordering::SeqCst) + 1).max(cert.modify_index);
        self.last_index.store(index, Ordering::SeqCst);
        cert.create_index = index;
        cert.modify_index = index;
        let (after, before) = (
            unix_of(&cert.valid_after).unwrap_or(0),
            unix_of(&cert.valid_before).unwrap_or(0),
        );
        let (lo, hi) = renew_window(after, before);
        let renew_at = if hi > lo {
            rand::random_range(lo..hi)
        } else {
            lo
        };
        let body = Bytes::from(serde_json::to_vec(&cert).map_err(|e| internal(e.to_string()))?);
        let held = Held {
            cert,
            body,
            root_id: roots.active_root_id.clone(),
            renew_at,
            expires_at: before,
        };
        self.held.lock().insert(service.to_string(), held.clone());
        Ok(held)
    }

    /// The leaf for `service` as its JSON body, its index, and whether it was already held
    /// (a cache hit). With `min_index`, blocks (up to `wait`) until a certificate with a higher
    /// index is issued: at renewal time or when the active root changes. While the servers
    /// cannot be reached, a held certificate keeps being served until it expires.
    pub async fn get(
        &self,
        backend: &Backend,
        roots_cache: &Roots,
        datacenter: &str,
        service: &str,
        min_index: u64,
        wait: Duration,
    ) -> Result<(Bytes, u64, bool), AgentError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut jittered = false;
        loop {
            let roots = self.roots(roots_cache, 0, Duration::ZERO).await?;
            if roots.trust_domain.is_empty() || roots.active_root_id.is_empty() {
                return Err(AgentError::Server(ServerError::Ca(
                    trellis_ca::CaError::Uninitialized,
                )));
            }
            // A watcher whose leaf was signed under a root that just stopped being active waits a
            // random part of the jitter window first, so one rotation does not make every
            // proxy of the datacenter ask for a certificate in the same second. Requests
            // without an index never get such a leaf: they are re-issued at once.
            if min_index > 0 && !jittered {
                let stale_root = self
                    .held
                    .lock()
                    .get(service)
                    .is_some_and(|h| h.root_id != roots.active_root_id);
                if stale_root {
                    jittered = true;
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(
                        root_change_delay(self.root_change_jitter, rand::random()).min(remaining),
                    )
                    .await;
                    continue;
                }
            }
            let mut hit = true;
            let held = match self.current(service, &roots.active_root_id) {
                Some(h) => h,
                None => match self.issue(backend, datacenter, service, &roots).await {
                    Ok(h) => {
                        hit = false;
                        h
                    }
                    Err(e) if rate_limited(&e) || unreachable(&e) => {
                        // Consul's answer to "Rate limit reached": keep using the certificate
                        // held (if it is still valid under the active root) and retry at a
                        // random point of the next window; a first fetch gets the error.
                        let usable = self.held.lock().get(service).cloned().filter(|h| {
                            h.root_id == roots.active_root_id && now_unix() < h.expires_at
                        });
                        let remaining =
                            deadline.saturating_duration_since(tokio::time::Instant::now());
                        let newer = usable
                            .as_ref()
                            .is_some_and(|h| h.cert.modify_index > min_index);
                        if min_index == 0 || newer || remaining.is_zero() {
                            return usable.map(|h| (h.body, h.cert.modify_index, true)).ok_or(e);
                        }
                        let window = self.root_change_jitter.max(Duration::from_secs(1));
                        tracing::debug!(%service, error = %e, "cannot issue now; retrying within {window:?}");
                        tokio::time::sleep(
                            root_change_delay(window, rand::random()).min(remaining),
                        )
                        .await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if min_index == 0 || held.cert.modify_index > min_index || remaining.is_zero() {
                return Ok((held.body, held.cert.modify_index, hit));
            }
            // Wait for the renewal time, a roots change, or the deadline; then look again.
            let until_renew = Duration::from_secs((held.renew_at - now_unix()).max(0) as u64);
            let nap = until_renew.min(remaining);
            tokio::select! {
                r = self.roots(roots_cache, roots.index, nap) => { r?; }
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_change_delay_spreads_over_the_window() {
        let w = Duration::from_secs(30);
        assert_eq!(root_change_delay(w, 0.0), Duration::ZERO);
        assert_eq!(root_change_delay(w, 0.5), Duration::from_secs(15));
        assert_eq!(root_change_delay(w, 2.0), w, "clamped");
        assert_eq!(root_change_delay(Duration::ZERO, 0.7), Duration::ZERO);
    }

    #[test]
    fn renewal_window_is_sixty_to_ninety_percent_of_the_lifetime() {
        assert_eq!(renew_window(0, 100), (60, 90));
        assert_eq!(
            renew_window(1000, 1000 + 72 * 3600),
            (1000 + 155_520, 1000 + 233_280)
        );
        assert_eq!(
            renew_window(10, 5),
            (10, 10),
            "an inverted range renews at once"
        );
    }
}
