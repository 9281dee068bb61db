//! The agent's cache of data fetched from the servers, after Consul's `agent/cache`.
//!
//! Each kind of data is a [`CacheType`] with its own request and value types, and gets its own
//! [`Cache`]: there is no registry keyed by strings and no downcasting. Entries are keyed by
//! [`Key`] — datacenter, ACL token and request — so one token never sees what another
//! token's request fetched.
//!
//! An entry is created by the first [`Cache::get`] for its key (a MISS) and owned by one task,
//! its *driver*, which does every fetch for it: the first one, then (for refreshing types) a
//! loop of blocking fetches with the last index, backing off after errors as Consul does
//! ([`backoff`]). The value and its index live in a `tokio::sync::watch` channel, so readers
//! take no exclusive lock: a HIT is one shared lock on the map and one on the channel.
//! Concurrent getters of one key wait on the same channel and so share one fetch. The
//! driver also ends the entry when nobody has read it for [`Options::last_get_ttl`]
//! (dropping any fetch in flight) or when the cache itself is dropped.
//!
//! While fetches fail, the last good value keeps being served, with [`Hit::age`] saying
//! how long contact has been lost. Only a first fetch's failure reaches a getter; the entry
//! is then dropped so that the next get starts over.

use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use trellis_rpc::Error as ServerError;

mod types;
pub(crate) use types::match_engine;
pub use types::{IntentionMatch, ResolvedServiceConfig, ServiceConfigRequest, StoreQuery};

#[cfg(test)]
mod tests;

/// How long an entry may go unread before it is evicted (Consul's `LastGetTTL` default).
pub const DEFAULT_LAST_GET_TTL: Duration = Duration::from_secs(72 * 3600);
/// The longest a single blocking fetch waits (Consul's `QueryTimeout` default).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(600);
/// The ceiling of the error backoff's base wait (Consul's `CacheRefreshMaxWait`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failures tolerated before backing off (Consul's `CacheRefreshBackoffMin`).
const BACKOFF_AFTER: u32 = 3;
/// A refresh fetch still blocked after this long means the servers are reachable again
/// (Consul's heuristic: longer than the 30 s keepalive that would have failed it).
const CONNECTED_AFTER: Duration = Duration::from_secs(31);

/// One kind of cached data (CA roots, intention match, health/connect, ...).
pub trait CacheType: Send + Sync + 'static {
    /// What identifies one entry besides datacenter and token (a destination, a service
    /// name and its filters, ...).
    type Request: Clone + Eq + Hash + Send + Sync + Debug + 'static;
    /// What a fetch yields; cloned out to every getter, so typically an `Arc`.
    type Value: Clone + Send + Sync + 'static;
    /// The type's name in logs.
    const NAME: &'static str;

    /// One fetch from the servers. With `min_index > 0` it is a blocking query: it returns
    /// once the data's index differs from `min_index` or `wait` has passed. Returns the
    /// value and its index (the servers' `X-Consul-Index`).
    fn fetch(
        &self,
        key: &Key<Self::Request>,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<(Self::Value, u64), FetchError>> + Send;
}

/// What one entry is cached under. The token is part of the key so that answers are never
/// shared across tokens; it is never logged (see the `Debug` impl).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key<R> {
    /// The datacenter asked.
    pub datacenter: String,
    /// The ACL token the request carried (empty: anonymous).
    pub token: String,
    /// The type-specific request.
    pub request: R,
}

impl<R> Key<R> {
    /// A key for `request` in `datacenter` under `token`.
    pub fn new(datacenter: impl Into<String>, token: impl Into<String>, request: R) -> Key<R> {
        Key {
            datacenter: datacenter.into(),
            token: token.into(),
            request,
        }
    }
}

impl<R: Debug> Debug for Key<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("Key")
            .field("datacenter", &self.datacenter)
            .field("token", &token)
            .field("request", &self.request)
            .finish()
    }
}

/// How a [`Cache`] behaves; Consul's per-type registration options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Evict an entry not read for this long, stopping its refresher (default 72 h).
    pub last_get_ttl: Duration,
    /// The `wait` passed to every fetch (default 10 min).
    pub query_timeout: Duration,
    /// Keep every entry fresh with a background loop of blocking fetches (default). Without
    /// it, an entry is fetched once and then only when a getter blocks for a newer index.
    pub refresh: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            last_get_ttl: DEFAULT_LAST_GET_TTL,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            refresh: true,
        }
    }
}

/// What [`Cache::get`] answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit<V> {
    /// The value.
    pub value: V,
    /// Its index (`X-Consul-Index`); at least 1.
    pub index: u64,
    /// Whether it was served from memory without waiting (`X-Cache: HIT`, else `MISS`).
    pub cache_hit: bool,
    /// `Age`: for refreshing types, how long the servers have been out of contact (zero
    /// while the refresher is connected); otherwise the time since the value was fetched.
    pub age: Duration,
}

/// Why a get produced no value.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    /// The servers failed or could not be reached; kept whole so the agent can answer with
    /// the status it would give without the cache.
    #[error(transparent)]
    Server(Arc<ServerError>),
    /// The servers answered, but with nothing usable (not found, undecodable).
    #[error("{0}")]
    Invalid(String),
    /// The entry ended before it had a value (evicted, the cache dropped, or no runtime to
    /// fetch on).
    #[error("the cache entry was stopped before it held a value")]
    Stopped,
}

impl From<ServerError> for FetchError {
    fn from(e: ServerError) -> FetchError {
        FetchError::Server(Arc::new(e))
    }
}

/// Consul's `backOffWait`: no wait for the first three failures in a row, then
/// `2^(failures − 3)` seconds capped at [`MAX_BACKOFF`], plus a stagger of up to the same
/// amount. `rand01` is a uniform sample from `[0, 1)`; anything outside is clamped (NaN
/// counts as 0), so this never panics.
pub fn backoff(failures: u32, rand01: f64) -> Duration {
    if failures <= BACKOFF_AFTER {
        return Duration::ZERO;
    }
    // 2^6 s already exceeds the cap.
    let shift = (failures - BACKOFF_AFTER).min(6);
    let base = Duration::from_secs(1 << shift).min(MAX_BACKOFF);
    let r = if rand01.is_finite() {
        rand01.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base + base.mul_f64(r)
}

/// One entry's value as its driver last published it.
struct State<V> {
    /// The last good value, if any fetch has succeeded.
    value: Option<V>,
    /// Its index (≥ 1 once there is a value).
    index: u64,
    /// When the value was fetched.
    fetched_at: Option<Instant>,
    /// Refreshing types: when the first of the current run of failures happened.
    lost_contact: Option<Instant>,
    /// The latest fetch's error, cleared by a success.
    error: Option<FetchError>,
    /// Fetches completed, successful or not (wrapping).
    fetches: u64,
    /// The driver has ended; nothing will change any more.
    stopped: bool,
}

/// One cached key: its state channel and what its driver needs to hear from getters.
struct Entry<V> {
    /// The state; getters subscribe, the driver publishes.
    state: watch::Sender<State<V>>,
    /// The latest get, in nanoseconds since the cache's epoch.
    last_get: AtomicU64,
    /// Non-refreshing types: the highest `min_index` a getter is blocked on.
    wanted: AtomicU64,
    /// Non-refreshing types: a getter wants a fetch.
    demand: Notify,
}

impl<V> Entry<V> {
    fn new(now: u64) -> Entry<V> {
        let (state, _) = watch::channel(State {
            value: None,
            index: 0,
            fetched_at: None,
            lost_contact: None,
            error: None,
            fetches: 0,
            stopped: false,
        });
        Entry {
            state,
            last_get: AtomicU64::new(now),
            wanted: AtomicU64::new(0),
            demand: Notify::new(),
        }
    }

    /// Records a read at `now` (nanoseconds since the epoch).
    fn touch(&self, now: u64) {
        self.last_get.fetch_max(now, Ordering::Relaxed);
    }

    /// Asks the driver of a non-refreshing entry for a value newer than `min_index`.
    fn want(&self, min_index: u64) {
        self.wanted.fetch_max(min_index, Ordering::SeqCst);
        self.demand.notify_one();
    }
}

/// Nanoseconds from `epoch` to now, saturating.
fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// An entry as the map, its driver and its getters share it.
type Shared<V> = Arc<Entry<V>>;
/// A type's entries by key.
type Entries<T> = HashMap<Key<<T as CacheType>::Request>, Shared<<T as CacheType>::Value>>;

/// The cache for one [`CacheType`]: entries by key, each kept by its own driver task.
pub struct Cache<T: CacheType> {
    ty: Arc<T>,
    opts: Options,
    /// The origin of the entries' `last_get` clocks.
    epoch: Instant,
    entries: RwLock<Entries<T>>,
    /// Never sent on; drivers see it close when the cache is dropped, and stop.
    alive: watch::Sender<()>,
}

impl<T: CacheType> Cache<T> {
    /// An empty cache fetching through `ty`. Needs no runtime; the first get does.
    pub fn new(ty: T, opts: Options) -> Arc<Cache<T>> {
        let (alive, _) = watch::channel(());
        Arc::new(Cache {
            ty: Arc::new(ty),
            opts,
            epoch: Instant::now(),
            entries: RwLock::new(HashMap::new()),
            alive,
        })
    }

    /// Consul's `Get`. A held value with an index above `min_index` is returned at once
    /// (`cache_hit`). The first get of a key creates its entry and waits for its first
    /// fetch, sharing it with concurrent getters; that fetch's error is returned. With
    /// `min_index` at or above the held index, waits up to `wait` for a newer value and
    /// then returns the current one (a blocking query served from the cache). Once a key
    /// has a value, failures to refresh it are not errors: the value keeps being served.
    pub async fn get(
        self: &Arc<Self>,
        key: Key<T::Request>,
        min_index: u64,
        wait: Duration,
    ) -> Result<Hit<T::Value>, FetchError> {
        let existing = {
            let entries = self.entries.read();
            match entries.get(&key) {
                Some(entry) => {
                    entry.touch(nanos_since(self.epoch));
                    let state = entry.state.borrow();
                    if let Some(value) = state.value.as_ref().filter(|_| min_index < state.index) {
                        return Ok(self.hit(&state, value, true));
                    }
                    Some(entry.clone())
                }
                None => None,
            }
        };
        let (entry, created) = match existing {
            Some(entry) => (entry, false),
            None => self.entry_for(key)?,
        };
        self.wait_for(&entry, min_index, wait, !created).await
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The options the cache was made with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The entry for `key`, created (with its driver) if absent; `true` when created.
    fn entry_for(
        self: &Arc<Self>,
        key: Key<T::Request>,
    ) -> Result<(Shared<T::Value>, bool), FetchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| FetchError::Stopped)?;
        let entry = {
            let mut entries = self.entries.write();
            if let Some(entry) = entries.get(&key) {
                entry.touch(nanos_since(self.epoch));
                return Ok((entry.clone(), false));
            }
            let entry = Arc::new(Entry::new(nanos_since(self.epoch)));
            entries.insert(key.clone(), entry.clone());
            entry
        };
        let driver = Driver {
            cache: Arc::downgrade(self),
            ty: self.ty.clone(),
            opts: self.opts,
            epoch: self.epoch,
            key,
            entry: entry.clone(),
        };
        runtime.spawn(driver.run(self.alive.subscribe()));
        Ok((entry, true))
    }

    /// The slow path of [`Cache::get`]: waits on the entry's channel until it can answer.
    async fn wait_for(
        &self,
        entry: &Entry<T::Value>,
        min_index: u64,
        wait: Duration,
        mut first: bool,
    ) -> Result<Hit<T::Value>, FetchError> {
        let mut rx = entry.state.subscribe();
        let deadline = Instant::now().checked_add(wait);
        let fetches_before = rx.borrow().fetches;
        let mut closed = false;
        loop {
            entry.touch(nanos_since(self.epoch));
            let has_value = {
                let state = rx.borrow_and_update();
                match &state.value {
                    Some(value) => {
                        if min_index < state.index {
                            return Ok(self.hit(&state, value, first));
                        }
                        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
                        // A non-refreshing entry's fetch was made for the getters: if it
                        // failed, serve what there is rather than fetch again in a loop.
                        let failed = !self.opts.refresh
                            && state.fetches != fetches_before
                            && state.error.is_some();
                        if timed_out || failed || state.stopped || closed {
                            return Ok(self.hit(&state, value, false));
                        }
                        true
                    }
                    None => {
                        if let Some(e) = &state.error {
                            return Err(e.clone());
                        }
                        if state.stopped || closed {
                            return Err(FetchError::Stopped);
                        }
                        false
                    }
                }
            };
            first = false;
            if has_value {
                if !self.opts.refresh {
                    entry.want(min_index);
                }
                closed = match deadline {
                    Some(d) => matches!(tokio::time::timeout_at(d, rx.changed()).await, Ok(Err(_))),
                    None => rx.changed().await.is_err(),
                };
            } else {
                // The first fetch is not a blocking one; wait for it whatever `wait` says.
                closed = rx.changed().await.is_err();
            }
        }
    }

    fn hit(&self, state: &State<T::Value>, value: &T::Value, cache_hit: bool) -> Hit<T::Value> {
        let now = Instant::now();
        let since = if self.opts.refresh {
            state.lost_contact
        } else {
            state.fetched_at
        };
        Hit {
            value: value.clone(),
            index: state.index,
            cache_hit,
            age: since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
        }
    }
}

/// Why a driver ended.
#[derive(Debug)]
enum Stop {
    /// Nobody read the entry for the TTL.
    Evicted,
    /// The cache was dropped.
    CacheDropped,
    /// The first fetch failed.
    FirstFetchFailed,
}

/// The task that owns one entry: all its fetches, and its end.
struct Driver<T: CacheType> {
    cache: Weak<Cache<T>>,
    ty: Arc<T>,
    opts: Options,
    epoch: Instant,
    key: Key<T::Request>,
    entry: Arc<Entry<T::Value>>,
}

impl<T: CacheType> Driver<T> {
    async fn run(self, mut alive: watch::Receiver<()>) {
        let why = self.drive(&mut alive).await;
        tracing::debug!(cache = T::NAME, datacenter = %self.key.datacenter, request = ?self.key.request, ?why, "cache entry ended");
        self.entry.state.send_modify(|s| s.stopped = true);
    }

    async fn drive(&self, alive: &mut watch::Receiver<()>) -> Stop {
        // The min index of the next fetch, and the failures in a row so far.
        let mut index = 0;
        let mut failures: u32 = 0;
        loop {
            let outcome = match self.guard(alive, self.fetch(index)).await {
                Ok(outcome) => outcome,
                Err(stop) => return stop,
            };
            let now = Instant::now();
            match outcome {
                Ok((value, new_index)) => {
                    // An index of 0 is a misbehaving fetch: store it as 1 and count it as a
                    // failure, so that a fetch that never blocks is still backed off.
                    failures = if new_index == 0 {
                        failures.saturating_add(1)
                    } else {
                        0
                    };
                    let stored = new_index.max(1);
                    self.publish_value(value, stored, now);
                    index = if new_index == 0 {
                        1
                    } else if new_index < index {
                        // Gone backwards (a restored snapshot): start over from scratch.
                        0
                    } else {
                        new_index
                    };
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if self.entry.state.borrow().value.is_none() {
                        // Nothing to serve: hand the error to the waiting getters and let
                        // the next get start over. Out of the map first, so that a getter
                        // who sees the error and retries makes a new entry.
                        self.remove_from_map(false);
                        tracing::debug!(cache = T::NAME, datacenter = %self.key.datacenter, request = ?self.key.request, error = %e, "first fetch failed");
                        self.entry.state.send_modify(|s| {
                            s.error = Some(e);
                            s.fetches = s.fetches.wrapping_add(1);
                        });
                        return Stop::FirstFetchFailed;
                    }
                    tracing::warn!(cache = T::NAME, datacenter = %self.key.datacenter, request = ?self.key.request, error = %e, failures, "cache refresh failed; serving the last value");
                    self.publish_error(e, now);
                }
            }
            if self.opts.refresh {
                let pause = backoff(failures, rand::random::<f64>());
                if !pause.is_zero() {
                    if let Err(stop) = self.guard(alive, tokio::time::sleep(pause)).await {
                        return stop;
                    }
                }
            } else {
                // Fetch again only when a getter blocks on the index held now.
                loop {
                    if let Err(stop) = self.guard(alive, self.entry.demand.notified()).await {
                        return stop;
                    }
                    let held = self.entry.state.borrow().index;
                    if self.entry.wanted.load(Ordering::SeqCst) >= held {
                        break;
                    }
                }
            }
        }
    }

    /// One fetch. For a refreshing entry out of contact, a fetch still blocked after
    /// [`CONNECTED_AFTER`] means the servers answer again: the age drops back to zero.
    async fn fetch(&self, index: u64) -> Result<(T::Value, u64), FetchError> {
        // Boxed: a fetch's state exists only while it runs, and the driver task that holds
        // it for the entry's whole life stays small.
        let mut fetch = Box::pin(self.ty.fetch(&self.key, index, self.opts.query_timeout));
        let lost = self.opts.refresh && self.entry.state.borrow().lost_contact.is_some();
        if lost {
            tokio::select! {
                out = &mut fetch => return out,
                () = tokio::time::sleep(CONNECTED_AFTER) => {
                    // No news for getters: no wake-up.
                    self.entry.state.send_if_modified(|s| {
                        s.lost_contact = None;
                        false
                    });
                }
            }
        }
        fetch.await
    }

    /// Runs `fut` unless the entry goes unread for the TTL or the cache is dropped first;
    /// then `fut` is dropped (an in-flight fetch is abandoned) and the reason returned.
    async fn guard<F: Future>(
        &self,
        alive: &mut watch::Receiver<()>,
        fut: F,
    ) -> Result<F::Output, Stop> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = tokio::time::sleep_until(self.idle_deadline()) => {
                    if self.remove_from_map(true) {
                        return Err(Stop::Evicted);
                    }
                }
                // Never sent on: this is the sender going away with the cache.
                _ = alive.changed() => return Err(Stop::CacheDropped),
            }
        }
    }

    /// When the entry becomes evictable if nobody reads it meanwhile.
    fn idle_deadline(&self) -> Instant {
        let last = Duration::from_nanos(self.entry.last_get.load(Ordering::Relaxed));
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        self.epoch
            .checked_add(last)
            .and_then(|t| t.checked_add(self.opts.last_get_ttl))
            .or_else(|| Instant::now().checked_add(far))
            .unwrap_or_else(Instant::now)
    }

    /// Removes this entry from the map — when `only_if_idle`, only if it is still unread
    /// for the TTL, checked under the map's write lock so a concurrent get either touched
    /// it first (kept) or comes after and makes a new entry. Returns whether the driver
    /// should end (also when the cache is gone).
    fn remove_from_map(&self, only_if_idle: bool) -> bool {
        let Some(cache) = self.cache.upgrade() else {
            return true;
        };
        let mut entries = cache.entries.write();
        if only_if_idle {
            let idle =
                nanos_since(self.epoch).saturating_sub(self.entry.last_get.load(Ordering::Relaxed));
            if u128::from(idle) < self.opts.last_get_ttl.as_nanos() {
                return false;
            }
        }
        if entries
            .get(&self.key)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
        {
            entries.remove(&self.key);
        }
        true
    }

    fn publish_value(&self, value: T::Value, index: u64, now: Instant) {
        let wake_all = !self.opts.refresh;
        self.entry.state.send_if_modified(|s| {
            let news = s.value.is_none() || s.index != index;
            s.value = Some(value);
            s.index = index;
            s.fetched_at = Some(now);
            s.lost_contact = None;
            s.error = None;
            s.fetches = s.fetches.wrapping_add(1);
            // Getters blocked on a refreshing entry care only about a new index; those of a
            // non-refreshing one wait for the fetch they asked for, whatever it brought.
            news || wake_all
        });
    }

    fn publish_error(&self, e: FetchError, now: Instant) {
        let refresh = self.opts.refresh;
        self.entry.state.send_if_modified(|s| {
            s.error = Some(e);
            s.fetches = s.fetches.wrapping_add(1);
            if refresh {
                s.lost_contact.get_or_insert(now);
            }
            !refresh
        });
    }
}
