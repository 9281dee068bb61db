//! Leaf certificates for this agent's services: the agent makes the key and the CSR (the key
//! never leaves the agent), the leader signs, and the agent keeps the result until it is due
//! for renewal or the active root changes.
//!
//! This is the minimal store the leaf endpoint needs; background refresh, rate-limit backoff
//! and the rest of the agent cache come with the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use trellis_api::{IndexedCaRoots, IssuedCert};
use trellis_identity::{SpiffeId, TrustDomain};
use trellis_server::{QueryOptions, ServerError};
use trellis_state::{Query, QueryOutput};

use crate::{AgentError, Backend};

/// A leaf the agent holds.
#[derive(Clone)]
struct Held {
    cert: IssuedCert,
    root_id: String,
    /// Unix seconds at which to renew.
    renew_at: i64,
}

/// The agent's leaf certificates by service name.
#[derive(Default)]
pub struct LeafStore {
    held: Mutex<HashMap<String, Held>>,
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

/// The window in which a leaf valid from `after` to `before` should be renewed: between 60% and
/// 90% of its lifetime (Consul's `calculateSoftExpiry`). A pure function of its inputs.
pub fn renew_window(after: i64, before: i64) -> (i64, i64) {
    let life = (before - after).max(0);
    (after + life * 6 / 10, after + life * 9 / 10)
}

impl LeafStore {
    async fn roots(
        backend: &Backend,
        min_index: u64,
        wait: Duration,
    ) -> Result<(IndexedCaRoots, u64), AgentError> {
        let resp = backend
            .query(
                Query::CaRoots,
                QueryOptions {
                    index: min_index,
                    wait,
                    ..Default::default()
                },
            )
            .await?;
        let QueryOutput::Found(body) = resp.output else {
            return Err(AgentError::Server(ServerError::Raft(
                "CA roots not found".into(),
            )));
        };
        let roots: IndexedCaRoots = serde_json::from_slice(&body)
            .map_err(|e| AgentError::Server(ServerError::Raft(e.to_string())))?;
        Ok((roots, resp.index))
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
        roots: &IndexedCaRoots,
    ) -> Result<Held, AgentError> {
        let _one_at_a_time = self.issuing.lock().await;
        if let Some(h) = self.current(service, &roots.active_root_id) {
            return Ok(h);
        }
        let td = TrustDomain::parse(&roots.trust_domain).map_err(|e| {
            AgentError::Server(ServerError::Raft(format!("bad trust domain in roots: {e}")))
        })?;
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
        let held = Held {
            cert,
            root_id: roots.active_root_id.clone(),
            renew_at,
        };
        self.held.lock().insert(service.to_string(), held.clone());
        Ok(held)
    }

    /// The leaf for `service`. With `min_index`, blocks (up to `wait`) until a certificate with
    /// a higher index is issued: at renewal time or when the active root changes.
    pub async fn get(
        &self,
        backend: &Backend,
        datacenter: &str,
        service: &str,
        min_index: u64,
        wait: Duration,
    ) -> Result<IssuedCert, AgentError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (roots, roots_index) = Self::roots(backend, 0, Duration::ZERO).await?;
            if roots.trust_domain.is_empty() || roots.active_root_id.is_empty() {
                return Err(AgentError::Server(ServerError::Ca(
                    trellis_ca::CaError::Uninitialized,
                )));
            }
            let held = match self.current(service, &roots.active_root_id) {
                Some(h) => h,
                None => self.issue(backend, datacenter, service, &roots).await?,
            };
            if min_index == 0 || held.cert.modify_index > min_index {
                return Ok(held.cert);
            }
            // Wait for the renewal time, a roots change, or the deadline.
            let until_renew = Duration::from_secs((held.renew_at - now_unix()).max(0) as u64);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(held.cert);
            }
            let nap = until_renew.min(remaining);
            tokio::select! {
                r = Self::roots(backend, roots_index, nap) => { r?; }
                _ = tokio::time::sleep(nap) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let held = self.held.lock().get(service).cloned();
                return Ok(held.map(|h| h.cert).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
