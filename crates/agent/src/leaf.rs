//! Leaf certificates for this agent's services: the agent makes the key and the CSR (the key
//! never leaves the agent), the leader signs, and the agent keeps the result until it is due
//! for renewal or the active root changes.
//!
//! Leafs are held by [`Key`] — datacenter, ACL token, service name — so two tokens never
//! share a certificate. What the store needs from the servers (the roots, a signature) comes
//! through [`LeafSource`]; what a request does next is the pure function [`decide`]; all time
//! comes from one clock (the wall clock read once, advanced by tokio's clock), so the whole
//! store runs on paused time in tests. A leaf nobody asked for during the last-get TTL is
//! dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_api::IssuedCert;
use trellis_identity::{SpiffeId, TrustDomain};
use trellis_rpc::Error as RpcError;
use trellis_state::{Query, QueryOutput};

use crate::cache::Key;
use crate::{AgentError, Backend};

/// Whether a failure to issue is worth riding out with the certificate held: the servers
/// cannot be reached (or have no leader) right now.
fn unreachable(e: &AgentError) -> bool {
    match e {
        AgentError::Server(s) => s.is_transport() || matches!(s, RpcError::NoLeader),
        AgentError::Cache(crate::cache::FetchError::Server(s)) => {
            s.is_transport() || matches!(&**s, RpcError::NoLeader)
        }
        _ => false,
    }
}

/// Whether an error is the CA's rate limit (from this server or a remote one: the code
/// crosses the wire).
fn rate_limited(e: &AgentError) -> bool {
    matches!(e, AgentError::Server(RpcError::RateLimited(_)))
}

/// A refusal the held certificate rides out: retried later rather than answered with.
fn refused_for_now(e: &AgentError) -> bool {
    rate_limited(e) || unreachable(e)
}

/// Refuses a leaf for a name no workload may carry: `*`, the intentions wildcard ("every
/// service"). A 400; the servers refuse such a CSR too.
pub fn check_leaf_service(service: &str) -> Result<(), AgentError> {
    if service == trellis_identity::WILDCARD {
        return Err(AgentError::BadRequest(format!(
            "Invalid service name {service:?}: {:?} is the intentions wildcard, which means \
             every service; no certificate is issued for it",
            trellis_identity::WILDCARD
        )));
    }
    Ok(())
}

fn internal(msg: impl Into<String>) -> AgentError {
    AgentError::Unavailable(msg.into())
}

/// What the leaf store needs from the servers' roots: parsed once per roots index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootsView {
    /// The roots' index (`X-Consul-Index`); it moves whenever the roots change.
    pub index: u64,
    /// The active root's ID; empty while the CA is not initialised.
    pub active_root_id: String,
    /// The trust domain leafs are issued in; empty while the CA is not initialised.
    pub trust_domain: String,
}

/// The two things the leaf store needs from the servers, so that tests can stand in for them.
pub trait LeafSource: Send + Sync + 'static {
    /// The current roots. With `min_index > 0` it is a blocking read: it returns once the
    /// roots' index differs from `min_index` or `wait` has passed.
    fn roots(
        &self,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<Arc<RootsView>, AgentError>> + Send;

    /// Has the leader sign a leaf CSR (PEM).
    fn sign(&self, csr_pem: &str) -> impl Future<Output = Result<IssuedCert, AgentError>> + Send;
}

/// Where the production source reads the roots: the agent's cache, under the agent's own key.
pub struct Roots {
    /// The agent's store-read cache.
    pub cache: Arc<crate::cache::Cache<crate::cache::StoreQuery>>,
    /// The roots' key in it (this datacenter, the agent's token).
    pub key: Key<Query>,
}

/// The production [`LeafSource`]: roots from the agent's cache (from memory, so leafs keep
/// being served while the servers are unreachable), signatures through the backend.
pub struct Servers {
    backend: Backend,
    roots: Roots,
    /// The last roots parsed, reused while their index stays.
    parsed: Mutex<Option<Arc<RootsView>>>,
}

impl Servers {
    /// A source signing through `backend` and reading roots from `roots`.
    pub fn new(backend: Backend, roots: Roots) -> Servers {
        Servers {
            backend,
            roots,
            parsed: Mutex::default(),
        }
    }
}

impl LeafSource for Servers {
    async fn roots(&self, min_index: u64, wait: Duration) -> Result<Arc<RootsView>, AgentError> {
        let hit = self
            .roots
            .cache
            .get(self.roots.key.clone(), min_index, wait)
            .await?;
        if let Some(view) = self.parsed.lock().as_ref().filter(|v| v.index == hit.index) {
            return Ok(view.clone());
        }
        let QueryOutput::Found(body) = hit.value else {
            return Err(internal("CA roots not found"));
        };
        let roots = body
            .ca_roots()
            .map_err(|e| internal(e.to_string()))?
            .clone();
        let view = Arc::new(RootsView {
            index: hit.index,
            active_root_id: roots.active_root_id,
            trust_domain: roots.trust_domain,
        });
        *self.parsed.lock() = Some(view.clone());
        Ok(view)
    }

    async fn sign(&self, csr_pem: &str) -> Result<IssuedCert, AgentError> {
        Ok(self.backend.sign(csr_pem).await?)
    }
}

/// The store's time: the wall clock read once at construction, advanced by tokio's clock
/// since then, so that tests on paused time move it. Unix milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// Wall-clock time since the Unix epoch at `start`.
    wall: Duration,
    start: Instant,
}

impl Clock {
    /// A clock starting at the wall clock's now.
    pub(crate) fn new() -> Clock {
        Clock {
            wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            start: Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from((self.wall + self.start.elapsed()).as_millis()).unwrap_or(i64::MAX)
    }

    /// The instant at which [`Clock::now_ms`] reaches `unix_ms` (`None` if beyond the
    /// representable future).
    fn instant_at(&self, unix_ms: i64) -> Option<Instant> {
        let target = Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
        self.start.checked_add(target.saturating_sub(self.wall))
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds of an RFC 3339 time.
fn unix_ms_of(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The window in which a leaf valid from `after` to `before` should be renewed: between 60% and
/// 90% of its lifetime (Consul's `calculateSoftExpiry`), in the unit of its inputs. A pure
/// function.
pub fn renew_window(after: i64, before: i64) -> (i64, i64) {
    let life = before.saturating_sub(after).max(0);
    (
        after + life.saturating_mul(6) / 10,
        after + life.saturating_mul(9) / 10,
    )
}

/// How long a watcher waits before re-issuing after a root change: `fraction` (in [0, 1)) of
/// the jitter window. A pure function, so the spread is tested exactly.
pub fn root_change_delay(window: Duration, fraction: f64) -> Duration {
    let fraction = if fraction.is_finite() { fraction } else { 0.0 };
    window.mul_f64(fraction.clamp(0.0, 1.0))
}

/// Consul's default window for re-issuing after a root change.
pub const ROOT_CHANGE_JITTER: Duration = Duration::from_secs(30);

/// The shortest wait before retrying an issue the servers refused for now.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// The longest a blocking get waits (a guard against absurd waits; HTTP caps it at 10 min).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest between two sweeps for unread leafs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A held leaf as [`decide`] sees it. Times are Unix milliseconds of the store's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLeaf<'a> {
    /// The root that was active when it was issued.
    pub root_id: &'a str,
    /// Its index (`X-Consul-Index`).
    pub index: u64,
    /// When it is due for renewal (a random point of [`renew_window`]).
    pub renew_at: i64,
    /// When it expires.
    pub expires_at: i64,
    /// A re-issue already scheduled: the jittered point after a root change, or the retry
    /// point after the servers refused. Cleared when a new leaf is issued.
    pub reissue_at: Option<i64>,
}

/// What a get does next, as [`decide`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer with the held leaf.
    Serve,
    /// Issue a new leaf now.
    Issue,
    /// Block until this time (Unix ms), a roots change or a new leaf, then decide again.
    WaitUntil(i64),
    /// Schedule the re-issue at a random point of the root-change jitter window, then decide
    /// again.
    Jitter,
}

/// The leaf store's policy, a pure function: given the held leaf (if any), the active root,
/// now (Unix ms) and the request's `min_index` (0: not blocking), what to do.
///
/// A leaf of the active root before its renewal time is served (or, for a blocking request
/// that already has it, waited on until its renewal time). Otherwise a request without an
/// index gets a new leaf at once — unless the servers refused recently and the held leaf is
/// still valid under the active root, which is then served. A blocking request waits for a
/// scheduled re-issue, jitters after a root change, and issues otherwise.
pub fn decide(
    held: Option<HeldLeaf<'_>>,
    active_root_id: &str,
    now: i64,
    min_index: u64,
) -> Decision {
    let Some(h) = held else {
        return Decision::Issue;
    };
    let current_root = h.root_id == active_root_id;
    let unexpired = now < h.expires_at;
    let usable = current_root && unexpired;
    if usable && now < h.renew_at {
        return if min_index == 0 || h.index > min_index {
            Decision::Serve
        } else {
            Decision::WaitUntil(h.renew_at)
        };
    }
    // Due: renewal time, expiry, or a root change.
    let backing_off = h.reissue_at.filter(|&t| now < t);
    if min_index == 0 {
        return if usable && backing_off.is_some() {
            Decision::Serve
        } else {
            Decision::Issue
        };
    }
    match (h.reissue_at, backing_off) {
        (_, Some(_)) if usable && h.index > min_index => Decision::Serve,
        (_, Some(t)) => Decision::WaitUntil(t),
        (Some(_), None) => Decision::Issue,
        (None, _) if !current_root && unexpired => Decision::Jitter,
        (None, _) => Decision::Issue,
    }
}

/// A leaf the store holds, with its response body serialised once.
struct Held {
    body: Bytes,
    index: u64,
    /// The root that was active when it was issued.
    root_id: String,
    /// Unix ms at which to renew.
    renew_at: i64,
    /// Unix ms at which the certificate expires.
    expires_at: i64,
}

impl Held {
    fn view(&self, reissue_at: Option<i64>) -> HeldLeaf<'_> {
        HeldLeaf {
            root_id: &self.root_id,
            index: self.index,
            renew_at: self.renew_at,
            expires_at: self.expires_at,
            reissue_at,
        }
    }

    fn answer(&self, hit: bool) -> (Bytes, u64, bool) {
        (self.body.clone(), self.index, hit)
    }
}

/// One key's mutable state.
#[derive(Default)]
struct Slot {
    held: Option<Arc<Held>>,
    /// See [`HeldLeaf::reissue_at`].
    reissue_at: Option<i64>,
    /// Bumped on every new leaf and every refusal recorded, so an issuer that waited for the
    /// key's turn sees whether someone else settled the matter meanwhile.
    generation: u64,
    /// Unix ms of the latest get.
    last_get: i64,
    /// The key and CSR of an attempt the servers refused for now, with the SPIFFE ID they ask
    /// for: the retry sends the same CSR rather than making a key per attempt (after a
    /// rotation, with the CSR limit reached, attempts outnumber leafs several times over).
    pending: Option<(String, trellis_ca::LeafKey)>,
}

/// One key: its state, the channel its watchers wait on, and the lock issuing takes.
struct Entry {
    slot: Mutex<Slot>,
    /// The index of the latest leaf; sent on whenever one is stored.
    issued: watch::Sender<u64>,
    /// Serialises issuing, so concurrent requests for one key share one certificate.
    issuing: tokio::sync::Mutex<()>,
}

impl Entry {
    fn new(now: i64) -> Entry {
        Entry {
            slot: Mutex::new(Slot {
                last_get: now,
                ..Slot::default()
            }),
            issued: watch::channel(0).0,
            issuing: tokio::sync::Mutex::default(),
        }
    }
}

/// The held leafs by key, and when they are next swept for unread ones.
#[derive(Default)]
struct Entries {
    map: HashMap<Key<String>, Arc<Entry>>,
    next_sweep: i64,
}

/// The agent's leaf certificates by (datacenter, ACL token, service name).
pub struct LeafStore<S = Servers> {
    source: S,
    clock: Clock,
    /// Window over which watchers re-issue after a root change.
    root_change_jitter: Duration,
    /// A leaf not read for this long is dropped.
    last_get_ttl: Duration,
    entries: Mutex<Entries>,
    /// The highest index handed out; indexes only grow, across keys and renewals.
    last_index: AtomicU64,
}

impl<S: LeafSource> LeafStore<S> {
    /// An empty store over `source`; watchers re-issue within `root_change_jitter` of a root
    /// change, and a leaf not read for `last_get_ttl` is dropped.
    pub fn new(source: S, root_change_jitter: Duration, last_get_ttl: Duration) -> LeafStore<S> {
        LeafStore::with_clock(source, Clock::new(), root_change_jitter, last_get_ttl)
    }

    /// [`LeafStore::new`] on a given clock.
    pub(crate) fn with_clock(
        source: S,
        clock: Clock,
        root_change_jitter: Duration,
        last_get_ttl: Duration,
    ) -> LeafStore<S> {
        LeafStore {
            source,
            clock,
            root_change_jitter,
            last_get_ttl,
            entries: Mutex::default(),
            last_index: AtomicU64::default(),
        }
    }

    /// How many leafs (keys) are held.
    pub fn len(&self) -> usize {
        self.entries.lock().map.len()
    }

    /// Whether no leaf is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for `key`, made if absent, marked as read at `now`. Sweeps unread entries
    /// first when a sweep is due (at most once a minute, so it stays cheap).
    fn entry(&self, key: &Key<String>, now: i64) -> Arc<Entry> {
        let mut entries = self.entries.lock();
        if now >= entries.next_sweep {
            let ttl = millis(self.last_get_ttl);
            entries.next_sweep = now.saturating_add(millis(SWEEP_EVERY.min(self.last_get_ttl)));
            let before = entries.map.len();
            entries
                .map
                .retain(|_, e| now.saturating_sub(e.slot.lock().last_get) < ttl);
            let dropped = before - entries.map.len();
            if dropped > 0 {
                tracing::debug!(dropped, "dropped leaf certificates nobody asked for");
            }
        }
        let entry = match entries.map.get(key) {
            Some(e) => e.clone(),
            None => {
                let e = Arc::new(Entry::new(now));
                entries.map.insert(key.clone(), e.clone());
                e
            }
        };
        let mut slot = entry.slot.lock();
        slot.last_get = slot.last_get.max(now);
        drop(slot);
        entry
    }

    /// A random wait before retrying an issue the servers refused: a point of the next
    /// jitter window, at least [`MIN_RETRY`].
    fn retry_delay(&self) -> Duration {
        let window = self.root_change_jitter.max(MIN_RETRY);
        root_change_delay(window, rand::random()).max(MIN_RETRY)
    }

    /// Indexes only grow: one past the last handed out, or the servers' if higher.
    fn next_index(&self, at_least: u64) -> u64 {
        let bump = |last: u64| last.saturating_add(1).max(at_least);
        match self
            .last_index
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(bump(last)))
        {
            Ok(last) | Err(last) => bump(last),
        }
    }

    /// Issues a leaf for `key` under `roots`, one issuer per key at a time. `None` when,
    /// by the time it was this caller's turn, the key's state had moved on from `seen` (a
    /// leaf issued or a refusal recorded by someone else): the caller decides again. A
    /// refusal for now schedules the retry on the key before the error is returned.
    async fn issue(
        &self,
        key: &Key<String>,
        entry: &Entry,
        roots: &RootsView,
        seen: u64,
    ) -> Result<Option<Arc<Held>>, AgentError> {
        let _one_at_a_time = entry.issuing.lock().await;
        if entry.slot.lock().generation != seen {
            return Ok(None);
        }
        let td = TrustDomain::parse(&roots.trust_domain)
            .map_err(|e| internal(format!("bad trust domain in roots: {e}")))?;
        let uri = SpiffeId::service(td, key.datacenter.as_str(), key.request.as_str()).to_string();
        let kept = entry
            .slot
            .lock()
            .pending
            .take()
            .filter(|(id, _)| *id == uri);
        let leaf = match kept {
            Some((_, leaf)) => leaf,
            None => trellis_ca::leaf_key_and_csr(&uri).map_err(RpcError::from)?,
        };
        let mut cert = match self.source.sign(&leaf.csr_pem).await {
            Ok(cert) => cert,
            Err(e) => {
                if refused_for_now(&e) {
                    let retry_at = self.clock.now_ms() + millis(self.retry_delay());
                    let mut slot = entry.slot.lock();
                    if slot.held.is_some() {
                        slot.reissue_at = Some(retry_at);
                        slot.generation += 1;
                    }
                    slot.pending = Some((uri, leaf));
                    drop(slot);
                    tracing::debug!(
                        service = %key.request,
                        datacenter = %key.datacenter,
                        error = %e,
                        "cannot issue a leaf now; will retry"
                    );
                }
                return Err(e);
            }
        };
        cert.private_key_pem = leaf.private_key_pem;
        let index = self.next_index(cert.modify_index);
        cert.create_index = index;
        cert.modify_index = index;
        let (Some(after), Some(before)) = (
            unix_ms_of(&cert.valid_after),
            unix_ms_of(&cert.valid_before),
        ) else {
            return Err(internal(format!(
                "the servers signed a leaf with an unreadable validity ({:?} to {:?})",
                cert.valid_after, cert.valid_before
            )));
        };
        // A random point of the renewal window, not before now (Consul's RandomStagger).
        let (lo, hi) = renew_window(after, before);
        let lo = lo.max(self.clock.now_ms());
        let renew_at = if hi > lo {
            rand::random_range(lo..hi)
        } else {
            lo
        };
        let body = Bytes::from(serde_json::to_vec(&cert).map_err(|e| internal(e.to_string()))?);
        let held = Arc::new(Held {
            body,
            index,
            root_id: roots.active_root_id.clone(),
            renew_at,
            expires_at: before,
        });
        let mut slot = entry.slot.lock();
        slot.held = Some(held.clone());
        slot.reissue_at = None;
        slot.generation += 1;
        drop(slot);
        entry.issued.send_replace(index);
        Ok(Some(held))
    }

    /// Waits until `wake`, a leaf is stored for the entry `issued` watches, or the roots
    /// move on from `roots_index`, whichever comes first.
    async fn wait_for_news(
        &self,
        roots_index: u64,
        issued: &mut watch::Receiver<u64>,
        wake: Instant,
    ) -> Result<(), AgentError> {
        let nap = wake.saturating_duration_since(Instant::now());
        let new_leaf = async {
            if issued.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let roots_moved = async {
            let roots = self.source.roots(roots_index, nap).await?;
            if roots.index == roots_index {
                // Unchanged (the wait ran out): the timer ends the nap.
                std::future::pending::<()>().await;
            }
            Ok::<(), AgentError>(())
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => Ok(()),
            () = new_leaf => Ok(()),
            r = roots_moved => r,
        }
    }

    /// The leaf for `key` (its service in its datacenter, under its token) as its JSON body,
    /// its index, and whether it was already held (a cache hit).
    ///
    /// Without `min_index`, never answers with a leaf that has expired or was issued under a
    /// root no longer active: such a leaf is re-issued at once. With `min_index`, blocks (up
    /// to `wait`) until a leaf with a higher index is issued — at renewal time, or a random
    /// part of the jitter window after a root change. While the servers refuse for now (rate
    /// limit, unreachable), a held leaf still valid under the active root keeps being served
    /// and the issue is retried at a random point of the next window.
    pub async fn get(
        &self,
        key: &Key<String>,
        min_index: u64,
        wait: Duration,
    ) -> Result<(Bytes, u64, bool), AgentError> {
        check_leaf_service(&key.request)?;
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut last_error = None;
        loop {
            let roots = self.source.roots(0, Duration::ZERO).await?;
            if roots.trust_domain.is_empty() || roots.active_root_id.is_empty() {
                return Err(AgentError::Server(RpcError::from(
                    trellis_ca::CaError::Uninitialized,
                )));
            }
            let now = self.clock.now_ms();
            let entry = self.entry(key, now);
            // Subscribed before reading, so a leaf stored from here on wakes this request.
            let mut issued = entry.issued.subscribe();
            let (held, reissue_at, generation) = {
                let slot = entry.slot.lock();
                (slot.held.clone(), slot.reissue_at, slot.generation)
            };
            let view = held.as_deref().map(|h| h.view(reissue_at));
            match (decide(view, &roots.active_root_id, now, min_index), held) {
                (Decision::Serve, Some(h)) => return Ok(h.answer(true)),
                (Decision::WaitUntil(t), Some(h)) => {
                    if Instant::now() >= deadline {
                        // Nothing newer in time: the held leaf again, as a blocking query
                        // answers — unless it has expired meanwhile.
                        return if now < h.expires_at {
                            Ok(h.answer(true))
                        } else {
                            Err(last_error.unwrap_or_else(|| {
                                internal("the leaf certificate expired and could not be renewed")
                            }))
                        };
                    }
                    let wake = self
                        .clock
                        .instant_at(t)
                        .map_or(deadline, |w| w.min(deadline));
                    self.wait_for_news(roots.index, &mut issued, wake).await?;
                }
                (Decision::Jitter, Some(_)) => {
                    // Spread the datacenter's re-issues after a rotation over the window; the
                    // point is kept on the key, so a watcher that times out meanwhile comes
                    // back to the same one.
                    let delay = root_change_delay(self.root_change_jitter, rand::random());
                    entry
                        .slot
                        .lock()
                        .reissue_at
                        .get_or_insert(now.saturating_add(millis(delay)));
                }
                (_, held) => match self.issue(key, &entry, &roots, generation).await {
                    Ok(Some(h)) => return Ok(h.answer(false)),
                    Ok(None) => {}
                    Err(e) if refused_for_now(&e) => {
                        let Some(h) = held else {
                            // Nothing to ride it out with.
                            return Err(e);
                        };
                        if min_index == 0 {
                            let usable = h.root_id == roots.active_root_id
                                && self.clock.now_ms() < h.expires_at;
                            return if usable { Ok(h.answer(true)) } else { Err(e) };
                        }
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use trellis_ca::{validate_csr, BuiltinProvider, CaConfig, CaError, CaProvider};

    const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";
    const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
    const JITTER: Duration = Duration::from_secs(30);
    const TEN_MINUTES: Duration = Duration::from_secs(600);
    const HOUR: Duration = Duration::from_secs(3600);

    /// How the test CA refuses the next signs.
    #[derive(Clone, Copy, Debug)]
    enum Refusal {
        RateLimited,
        Unreachable,
    }

    /// A [`LeafSource`] signing with a real built-in CA in-process, whose roots the test
    /// rotates and which can be told to refuse the next signs.
    struct TestCa {
        clock: Clock,
        trust_domain: TrustDomain,
        signer: Mutex<Arc<BuiltinProvider>>,
        roots: watch::Sender<Arc<RootsView>>,
        refusals: Mutex<(u32, Refusal)>,
        /// Sign calls, refused or not.
        signs: AtomicU64,
        /// The CSRs of those calls.
        csrs: Mutex<Vec<String>>,
    }

    impl TestCa {
        fn new(clock: Clock) -> Arc<TestCa> {
            let trust_domain = TrustDomain::for_cluster(CLUSTER).expect("trust domain");
            let signer = BuiltinProvider::generate(&trust_domain, &CaConfig::default_consul())
                .expect("root");
            let view = RootsView {
                index: 1,
                active_root_id: "root-1".into(),
                trust_domain: trust_domain.as_str().to_string(),
            };
            Arc::new(TestCa {
                clock,
                trust_domain,
                signer: Mutex::new(Arc::new(signer)),
                roots: watch::channel(Arc::new(view)).0,
                refusals: Mutex::new((0, Refusal::RateLimited)),
                signs: AtomicU64::new(0),
                csrs: Mutex::new(Vec::new()),
            })
        }

        /// Makes a new root active; returns its subject.
        fn rotate(&self) -> String {
            let signer = BuiltinProvider::generate(&self.trust_domain, &CaConfig::default_consul())
                .expect("root");
            *self.signer.lock() = Arc::new(signer);
            self.roots.send_modify(|v| {
                let index = v.index + 1;
                *v = Arc::new(RootsView {
                    index,
                    active_root_id: format!("root-{index}"),
                    trust_domain: v.trust_domain.clone(),
                });
            });
            self.root_subject()
        }

        /// The active root's subject.
        fn root_subject(&self) -> String {
            subject(&self.signer.lock().root().root_pem)
        }

        fn refuse(&self, next: u32, how: Refusal) {
            *self.refusals.lock() = (next, how);
        }

        fn signs(&self) -> u64 {
            self.signs.load(Ordering::SeqCst)
        }

        /// The CSRs received, in order.
        fn csrs(&self) -> Vec<String> {
            self.csrs.lock().clone()
        }

        fn sign_now(&self, csr_pem: &str) -> Result<IssuedCert, AgentError> {
            let n = self.signs.fetch_add(1, Ordering::SeqCst) + 1;
            self.csrs.lock().push(csr_pem.to_string());
            {
                let mut refusals = self.refusals.lock();
                if refusals.0 > 0 {
                    refusals.0 -= 1;
                    return Err(match refusals.1 {
                        Refusal::RateLimited => {
                            AgentError::Server(RpcError::from(CaError::RateLimited))
                        }
                        Refusal::Unreachable => AgentError::Server(RpcError::Transport {
                            addr: "10.0.0.1:8300".into(),
                            message: "connection refused".into(),
                        }),
                    });
                }
            }
            let csr = validate_csr(csr_pem, &self.trust_domain, "dc1").map_err(RpcError::from)?;
            let signer = self.signer.lock().clone();
            let leaf = signer.sign_leaf(&csr, LEAF_TTL).map_err(RpcError::from)?;
            // The CA stamps validity from the wall clock; the store lives on the test clock,
            // so the validity it reads is rebased on that clock (backdated a minute, as the
            // CA does). The certificate itself stays as signed.
            let after = self.clock.now_ms() - 60_000;
            let service = match &csr.id {
                SpiffeId::Service(s) => s.service.clone(),
                _ => String::new(),
            };
            Ok(IssuedCert {
                serial_number: leaf.serial_hex,
                cert_pem: leaf.cert_pem,
                private_key_pem: String::new(),
                service,
                service_uri: csr.uri,
                valid_after: rfc3339(after),
                valid_before: rfc3339(after + millis(LEAF_TTL)),
                create_index: n,
                modify_index: n,
            })
        }
    }

    impl LeafSource for Arc<TestCa> {
        fn roots(
            &self,
            min_index: u64,
            wait: Duration,
        ) -> impl Future<Output = Result<Arc<RootsView>, AgentError>> + Send {
            let mut rx = self.roots.subscribe();
            async move {
                if min_index > 0 && rx.borrow_and_update().index == min_index {
                    let _ = tokio::time::timeout(wait, rx.changed()).await;
                }
                let view = rx.borrow().clone();
                Ok(view)
            }
        }

        fn sign(
            &self,
            csr_pem: &str,
        ) -> impl Future<Output = Result<IssuedCert, AgentError>> + Send {
            std::future::ready(self.sign_now(csr_pem))
        }
    }

    type Store = Arc<LeafStore<Arc<TestCa>>>;

    fn setup(last_get_ttl: Duration) -> (Arc<TestCa>, Store) {
        let clock = Clock::new();
        let ca = TestCa::new(clock);
        let store = LeafStore::with_clock(ca.clone(), clock, JITTER, last_get_ttl);
        (ca, Arc::new(store))
    }

    fn key(service: &str) -> Key<String> {
        Key::new("dc1", "", service.to_string())
    }

    fn rfc3339(unix_ms: i64) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    }

    fn cert_of(body: &Bytes) -> IssuedCert {
        serde_json::from_slice(body).expect("an IssuedCert")
    }

    fn parsed<T>(pem: &str, f: impl FnOnce(&x509_parser::certificate::X509Certificate) -> T) -> T {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("X.509");
        f(&cert)
    }

    fn subject(pem: &str) -> String {
        parsed(pem, |c| c.subject().to_string())
    }

    /// The leaf's issuer, read from the certificate.
    fn issuer(body: &Bytes) -> String {
        parsed(&cert_of(body).cert_pem, |c| c.issuer().to_string())
    }

    /// The leaf's serial, read from the certificate (and checked against `SerialNumber`).
    fn serial(body: &Bytes) -> String {
        let cert = cert_of(body);
        let serial = parsed(&cert.cert_pem, |c| c.raw_serial_as_string());
        assert!(serial.eq_ignore_ascii_case(&cert.serial_number));
        serial
    }

    /// Blocks like a proxy (ten-minute waits) until a leaf newer than `index` comes; returns
    /// it and the instant it came.
    async fn watch_for_new(store: Store, key: Key<String>, index: u64) -> (Bytes, u64, Instant) {
        loop {
            let (body, i, _) = store.get(&key, index, TEN_MINUTES).await.expect("leaf");
            if i != index {
                assert!(i > index, "indexes only grow");
                return (body, i, Instant::now());
            }
        }
    }

    #[test]
    fn root_change_delay_spreads_over_the_window() {
        let w = Duration::from_secs(30);
        assert_eq!(root_change_delay(w, 0.0), Duration::ZERO);
        assert_eq!(root_change_delay(w, 0.5), Duration::from_secs(15));
        assert_eq!(root_change_delay(w, 2.0), w, "clamped");
        assert_eq!(root_change_delay(w, f64::NAN), Duration::ZERO);
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

    #[test]
    fn decisions() {
        use Decision::*;
        // Held leafs at index 5, renewal due at 600, expiring at 1000; "A" is the active root.
        let h = |root_id, reissue_at| {
            Some(HeldLeaf {
                root_id,
                index: 5,
                renew_at: 600,
                expires_at: 1000,
                reissue_at,
            })
        };
        #[rustfmt::skip]
        let cases = [
            // (held, now, min_index, decision, case)
            (None, 0, 0, Issue, "nothing held"),
            (None, 0, 7, Issue, "nothing held, blocking"),
            (h("A", None), 100, 0, Serve, "current"),
            (h("A", None), 100, 4, Serve, "current, watcher behind"),
            (h("A", None), 100, 5, WaitUntil(600), "current, watcher has it"),
            (h("A", None), 100, 9, WaitUntil(600), "current, watcher ahead"),
            (h("A", Some(50)), 100, 5, WaitUntil(600), "current, old retry point"),
            (h("A", None), 600, 0, Issue, "renewal due"),
            (h("A", None), 600, 5, Issue, "renewal due, blocking"),
            (h("A", None), 700, 4, Issue, "renewal due, watcher behind"),
            (h("A", None), 1000, 0, Issue, "expired"),
            (h("A", None), 1000, 5, Issue, "expired, blocking"),
            (h("B", None), 100, 0, Issue, "old root"),
            (h("B", None), 100, 5, Jitter, "old root, blocking"),
            (h("B", None), 100, 4, Jitter, "old root, watcher behind"),
            (h("B", None), 1000, 5, Issue, "old root and expired, blocking"),
            (h("B", Some(130)), 100, 5, WaitUntil(130), "old root, jittered"),
            (h("B", Some(130)), 130, 5, Issue, "old root, jitter over"),
            (h("B", Some(130)), 100, 0, Issue, "old root, jittered, no index"),
            (h("A", Some(700)), 650, 0, Serve, "refused: held served"),
            (h("A", Some(700)), 650, 5, WaitUntil(700), "refused, blocking"),
            (h("A", Some(700)), 650, 4, Serve, "refused, watcher behind"),
            (h("A", Some(700)), 700, 0, Issue, "refused, retry due"),
            (h("A", Some(700)), 700, 5, Issue, "refused, retry due, blocking"),
            (h("A", Some(1100)), 1000, 0, Issue, "refused and expired"),
            (h("A", Some(1100)), 1000, 5, WaitUntil(1100), "refused, expired, blocking"),
            (h("A", Some(1100)), 1000, 4, WaitUntil(1100), "refused, expired, behind"),
            (h("B", Some(700)), 650, 0, Issue, "refused under an old root"),
            (h("B", Some(700)), 650, 4, WaitUntil(700), "refused, old root, behind"),
        ];
        for (held, now, min_index, want, case) in cases {
            assert_eq!(decide(held, "A", now, min_index), want, "{case}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_gets_the_renewed_leaf_inside_the_renewal_window() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        for service in ["web", "api", "db", "cache"] {
            let (body, index, hit) = store.get(&key(service), 0, Duration::ZERO).await.unwrap();
            assert!(!hit, "a first get is a miss");
            let first = cert_of(&body);
            assert!(!first.private_key_pem.is_empty());
            assert_eq!(first.service, service);
            let after = unix_ms_of(&first.valid_after).unwrap();
            let before = unix_ms_of(&first.valid_before).unwrap();
            let (soft, hard) = renew_window(after, before);
            let signs = ca.signs();
            let (renewed, new_index, _) = watch_for_new(store.clone(), key(service), index).await;
            let at = ca.clock.now_ms();
            assert!(at >= soft, "{service}: renewed {} ms before 60%", soft - at);
            assert!(at <= hard, "{service}: renewed {} ms after 90%", at - hard);
            assert!(new_index > index);
            assert_ne!(serial(&renewed), serial(&body));
            assert_eq!(issuer(&renewed), ca.root_subject());
            assert_eq!(ca.signs(), signs + 1, "one sign per renewal");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_root_change_reissues_watchers_after_a_jitter_and_others_at_once() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let old_root = ca.root_subject();
        let (web, web_index, _) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        let (api, _, _) = store.get(&key("api"), 0, Duration::ZERO).await.unwrap();
        assert_eq!(issuer(&web), old_root);
        let watcher = tokio::spawn(watch_for_new(store.clone(), key("web"), web_index));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watcher.is_finished());

        let rotated_at = Instant::now();
        let new_root = ca.rotate();
        assert_ne!(new_root, old_root);
        // Without an index: a leaf of the new root, at once.
        let (api2, _, hit) = store.get(&key("api"), 0, Duration::ZERO).await.unwrap();
        assert_eq!(Instant::now(), rotated_at);
        assert!(!hit);
        assert_eq!(issuer(&api2), new_root);
        assert_ne!(serial(&api2), serial(&api));

        let (web2, _, at) = watcher.await.unwrap();
        let delay = at - rotated_at;
        assert!(delay <= JITTER, "re-issued {delay:?} after the rotation");
        assert_eq!(issuer(&web2), new_root);
        assert_eq!(ca.signs(), 4);
        // And it is what a request without an index gets now.
        let (again, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert!(hit);
        assert_eq!(serial(&again), serial(&web2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_watchers_spread_their_reissues_over_the_jitter_window() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let mut watchers = Vec::new();
        for i in 0..100 {
            let k = key(&format!("svc-{i}"));
            let (_, index, _) = store.get(&k, 0, Duration::ZERO).await.unwrap();
            watchers.push(tokio::spawn(watch_for_new(store.clone(), k, index)));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rotated_at = Instant::now();
        let new_root = ca.rotate();
        let mut seconds = HashSet::new();
        for w in watchers {
            let (body, _, at) = w.await.unwrap();
            let delay = at - rotated_at;
            assert!(delay <= JITTER, "re-issued {delay:?} after the rotation");
            assert_eq!(issuer(&body), new_root);
            seconds.insert(delay.as_secs());
        }
        assert!(
            seconds.len() >= 10,
            "re-issues bunched into {} seconds: {seconds:?}",
            seconds.len()
        );
        assert_eq!(ca.signs(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_renewal_keeps_the_held_leaf_and_retries_later() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let (first, index, _) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        // Past every possible renewal point, well before expiry.
        tokio::time::advance(Duration::from_secs(66 * 3600)).await;
        ca.refuse(3, Refusal::RateLimited);

        let (held, i, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert_eq!((serial(&held), i, hit), (serial(&first), index, true));
        assert_eq!(ca.signs(), 2, "the renewal was tried, and refused");
        let (held, _, _) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert_eq!(serial(&held), serial(&first));
        assert_eq!(ca.signs(), 2, "no new attempt before the retry point");

        // A first fetch has nothing to ride the refusal out with.
        ca.refuse(1, Refusal::RateLimited);
        let err = store.get(&key("api"), 0, Duration::ZERO).await.unwrap_err();
        assert!(rate_limited(&err), "{err}");
        ca.refuse(2, Refusal::RateLimited);
        let signs = ca.signs();

        let started = Instant::now();
        let (renewed, new_index, at) = watch_for_new(store.clone(), key("web"), index).await;
        assert!(new_index > index);
        assert_ne!(serial(&renewed), serial(&first));
        assert_eq!(
            ca.signs(),
            signs + 3,
            "two refused retries, then the renewal"
        );
        let csrs = ca.csrs();
        let tail = &csrs[csrs.len() - 3..];
        assert!(
            tail[0] == tail[1] && tail[1] == tail[2],
            "a refused attempt's key and CSR are sent again, not made anew"
        );
        let took = at - started;
        assert!(
            took >= 2 * MIN_RETRY,
            "retried later, not at once: {took:?}"
        );
        assert!(took <= 3 * JITTER, "one retry per window: {took:?}");
        let (now, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert!(hit);
        assert_eq!(serial(&now), serial(&renewed));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_leaf_is_never_served() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let (first, index, _) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        ca.refuse(u32::MAX, Refusal::Unreachable);
        // Due for renewal, servers unreachable: the held leaf rides it out.
        tokio::time::advance(Duration::from_secs(66 * 3600)).await;
        let (held, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert!(hit);
        assert_eq!(serial(&held), serial(&first));
        // Past its expiry it is never the answer, with or without an index.
        tokio::time::advance(Duration::from_secs(7 * 3600)).await;
        let err = store.get(&key("web"), 0, Duration::ZERO).await.unwrap_err();
        assert!(unreachable(&err), "{err}");
        let err = store
            .get(&key("web"), index, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(unreachable(&err), "{err}");
        // Once the servers answer again, a new leaf.
        ca.refuse(0, Refusal::Unreachable);
        let (fresh, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert!(!hit);
        assert_ne!(serial(&fresh), serial(&first));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_never_share_a_leaf() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let a = Key::new("dc1", "token-a", "web".to_string());
        let b = Key::new("dc1", "token-b", "web".to_string());
        let (leaf_a, _, _) = store.get(&a, 0, Duration::ZERO).await.unwrap();
        let (leaf_b, _, _) = store.get(&b, 0, Duration::ZERO).await.unwrap();
        assert_ne!(serial(&leaf_a), serial(&leaf_b));
        let (again_a, _, hit) = store.get(&a, 0, Duration::ZERO).await.unwrap();
        assert!(hit);
        assert_eq!(serial(&again_a), serial(&leaf_a));
        assert_eq!(ca.signs(), 2);
        let (anonymous, _, _) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert_ne!(serial(&anonymous), serial(&leaf_a));
        assert_eq!(store.len(), 3);
        assert!(!format!("{a:?}").contains("token-a"));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_leaf_and_indexes_grow() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        let gets: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.get(&key("web"), 0, Duration::ZERO).await })
            })
            .collect();
        let mut serials = HashSet::new();
        let mut misses = 0;
        for g in gets {
            let (body, _, hit) = g.await.unwrap().unwrap();
            serials.insert(serial(&body));
            misses += usize::from(!hit);
        }
        assert_eq!((serials.len(), misses, ca.signs()), (1, 1, 1));
        let mut last = 0;
        for service in ["a", "b", "c"] {
            let (_, index, _) = store.get(&key(service), 0, Duration::ZERO).await.unwrap();
            assert!(index > last);
            last = index;
        }
    }

    /// `*` is the intentions wildcard: no leaf for it, and nothing is asked of the servers.
    #[tokio::test(start_paused = true)]
    async fn no_leaf_for_the_intentions_wildcard() {
        let (ca, store) = setup(crate::cache::DEFAULT_LAST_GET_TTL);
        match store.get(&key("*"), 0, Duration::ZERO).await {
            Err(e @ AgentError::BadRequest(_)) => {
                assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
                assert!(e.to_string().contains("intentions wildcard"), "{e}");
            }
            other => panic!("expected a 400, got {other:?}"),
        }
        assert_eq!((ca.signs(), store.len()), (0, 0));
        // A name that only contains '*' is an ordinary name.
        store.get(&key("web*"), 0, Duration::ZERO).await.unwrap();
        assert_eq!(ca.signs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unread_leafs_are_dropped_after_the_ttl() {
        let (ca, store) = setup(HOUR);
        store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(59 * 60)).await;
            let (_, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
            assert!(hit, "read within the TTL: kept");
        }
        assert_eq!(ca.signs(), 1);
        tokio::time::advance(HOUR + Duration::from_secs(60)).await;
        store.get(&key("api"), 0, Duration::ZERO).await.unwrap();
        assert_eq!(store.len(), 1, "web was dropped");
        let (_, _, hit) = store.get(&key("web"), 0, Duration::ZERO).await.unwrap();
        assert!(!hit);
        assert_eq!(ca.signs(), 3);
    }
}
