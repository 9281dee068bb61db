//! Blocking reads of a client agent, multiplexed: instead of one parked blocking query per
//! cache entry, the agent watches the entries' store keys in shards of [`SHARD_SIZE`], one
//! long-poll request each ([`trellis_rpc::RPC_WATCH`]), and reads an entry again (without
//! blocking) only when its key's change index moved.
//!
//! A parked blocking query costs the agent a request future, an HTTP/2 stream and their
//! buffers — about ten kilobytes — and the server a waiter; a watched key costs a map entry
//! and a channel. The semantics are the blocking query's: [`wait_past`] returns once the
//! key's index exceeds the caller's, or when the wait passes, and the caller's read then
//! answers with an index past it (or the same one after a timeout).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use trellis_rpc::{Error, WatchRequest, MAX_WATCH_KEYS};
use trellis_state::WatchKey;

use crate::backend::Remote;

/// Keys per long-poll request. Adding a key restarts its shard's request, so this bounds what
/// one new cache entry costs to re-send.
pub const SHARD_SIZE: usize = 256;
/// How long one long-poll waits before it is renewed.
const POLL_WAIT: Duration = Duration::from_secs(300);
/// After a shard's membership changes, how long to gather further changes before re-sending
/// (registering many services at once adds many keys).
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A key nobody has waited on for this long is dropped from its shard.
const LINGER: Duration = Duration::from_secs(30);
/// The longest pause between failed long-polls.
const MAX_RETRY: Duration = Duration::from_secs(30);

const _: () = assert!(SHARD_SIZE <= MAX_WATCH_KEYS);

/// What waiters on one key see.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The key's change index as last reported (or as the first waiter held it).
    index: u64,
    /// Failed long-polls covering this key so far.
    failures: u64,
    /// The latest failure, for the waiters it ends.
    error: Option<Error>,
}

struct KeyState {
    tx: watch::Sender<Seen>,
    /// Since when nobody waits on it (checked when its shard re-sends).
    idle_since: Option<Instant>,
}

struct Shard {
    members: HashSet<WatchKey>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<WatchKey, KeyState>,
    shards: Vec<Shard>,
}

/// The watched keys of one client agent's remote servers and their shards.
#[derive(Default)]
pub struct Watcher {
    inner: Mutex<Inner>,
}

impl Watcher {
    /// How many keys are watched (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().keys.len()
    }

    /// Whether no key is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many long-poll shards exist.
    pub fn shards(&self) -> usize {
        self.inner.lock().shards.len()
    }
}

/// Waits until `key`'s change index exceeds `min_index` (then returns `Ok`), `wait` passes
/// (`Ok` too: the caller reads and answers as a timed-out blocking query does), or a
/// long-poll covering the key fails (its error, so the caller backs off as after a failed
/// blocking query).
pub async fn wait_past(
    remote: &Arc<Remote>,
    key: WatchKey,
    min_index: u64,
    wait: Duration,
) -> Result<(), Error> {
    let mut rx = subscribe(remote, key, min_index);
    let failures_before = rx.borrow().failures;
    let deadline = Instant::now() + wait;
    loop {
        {
            let seen = rx.borrow_and_update();
            if seen.index > min_index {
                return Ok(());
            }
            if seen.failures > failures_before {
                return Err(seen.error.clone().unwrap_or(Error::NoLeader));
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            // The watcher went away (the agent is stopping) or the wait passed.
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
    }
}

/// The key's channel, adding the key to a shard (and waking or starting the shard) when new.
fn subscribe(remote: &Arc<Remote>, key: WatchKey, min_index: u64) -> watch::Receiver<Seen> {
    let watcher = remote.watcher();
    let mut inner = watcher.inner.lock();
    if let Some(state) = inner.keys.get_mut(&key) {
        state.idle_since = None;
        return state.tx.subscribe();
    }
    let shard = match inner
        .shards
        .iter()
        .position(|s| s.members.len() < SHARD_SIZE)
    {
        Some(i) => i,
        None => {
            let wake = Arc::new(Notify::new());
            inner.shards.push(Shard {
                members: HashSet::new(),
                wake: wake.clone(),
            });
            let i = inner.shards.len() - 1;
            tokio::spawn(run_shard(Arc::downgrade(remote), i, wake));
            i
        }
    };
    inner.shards[shard].members.insert(key.clone());
    inner.shards[shard].wake.notify_one();
    let (tx, rx) = watch::channel(Seen {
        index: min_index,
        ..Seen::default()
    });
    inner.keys.insert(
        key,
        KeyState {
            tx,
            idle_since: None,
        },
    );
    rx
}

/// The keys of `shard` with their indexes, after dropping the ones nobody waited on for
/// [`LINGER`].
fn batch(watcher: &Watcher, shard: usize) -> Vec<(WatchKey, u64)> {
    let now = Instant::now();
    let mut inner = watcher.inner.lock();
    let Inner { keys, shards } = &mut *inner;
    let Some(s) = shards.get_mut(shard) else {
        return Vec::new();
    };
    s.members.retain(|key| {
        let Some(state) = keys.get_mut(key) else {
            return false;
        };
        if state.tx.receiver_count() > 0 {
            state.idle_since = None;
            return true;
        }
        let since = *state.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= LINGER {
            keys.remove(key);
            return false;
        }
        true
    });
    s.members
        .iter()
        .filter_map(|k| keys.get(k).map(|st| (k.clone(), st.tx.borrow().index)))
        .collect()
}

/// One shard's long-poll loop; ends when the agent's [`Remote`] is dropped.
async fn run_shard(remote: Weak<Remote>, shard: usize, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        let Some(r) = remote.upgrade() else {
            return;
        };
        let keys = batch(r.watcher(), shard);
        if keys.is_empty() {
            drop(r);
            // Woken by a new member (or after a while, to notice the agent stopping).
            let _ = tokio::time::timeout(LINGER, wake.notified()).await;
            continue;
        }
        let req = WatchRequest {
            keys,
            wait_ms: u64::try_from(POLL_WAIT.as_millis()).unwrap_or(u64::MAX),
        };
        let call = r.with_failover(|addr| {
            let (r, req) = (&r, &req);
            async move { r.client().watch(&addr, req).await }
        });
        tokio::select! {
            out = call => match out {
                Ok(resp) => {
                    failures = 0;
                    let inner = r.watcher().inner.lock();
                    for (pos, index) in resp.changed {
                        let Some((key, _)) = usize::try_from(pos).ok().and_then(|p| req.keys.get(p)) else {
                            continue;
                        };
                        if let Some(state) = inner.keys.get(key) {
                            state.tx.send_modify(|s| s.index = index);
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(shard, error = %e, failures, "watch long-poll failed");
                    {
                        let inner = r.watcher().inner.lock();
                        for (key, _) in &req.keys {
                            if let Some(state) = inner.keys.get(key) {
                                state.tx.send_modify(|s| {
                                    s.failures += 1;
                                    s.error = Some(e.clone());
                                });
                            }
                        }
                    }
                    drop(r);
                    let base = Duration::from_millis(500)
                        .saturating_mul(1 << failures.min(6))
                        .min(MAX_RETRY);
                    tokio::time::sleep(base.mul_f64(0.5 + rand::random::<f64>() / 2.0)).await;
                }
            },
            () = wake.notified() => {
                // Membership changed: gather more changes, then re-send.
                tokio::time::sleep(DEBOUNCE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use trellis_api::{AgentService, CatalogRegistration};
    use trellis_rpc::{QueryOptions, Write};
    use trellis_state::Query;

    fn health(name: &str) -> Query {
        Query::HealthService {
            name: name.into(),
            tags: vec![],
            passing: false,
            connect: false,
        }
    }

    fn register(name: &str) -> Write {
        Write::Register(Box::new(CatalogRegistration {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            service: Some(AgentService {
                id: name.into(),
                service: name.into(),
                port: 1,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// Three hundred blocking reads from a client agent become two long-polls against a real
    /// server; a write wakes exactly the read of the key it changed.
    #[tokio::test]
    async fn many_blocking_reads_share_a_few_long_polls() {
        let server = crate::test_server().await;
        let remote = Arc::new(Remote::new(
            vec![server.config().rpc_addr.to_string()],
            None,
        ));
        let client = Backend::Remote(remote.clone());
        let now = |index| QueryOptions::blocking(index, Duration::from_secs(60));
        let mut waiters = Vec::new();
        for i in 0..300 {
            let first = client
                .query(health(&format!("svc-{i}")), now(0))
                .await
                .expect("a read");
            let client = client.clone();
            waiters.push(tokio::spawn(async move {
                client
                    .query(health(&format!("svc-{i}")), now(first.index))
                    .await
                    .map(|r| (first.index, r.index))
            }));
        }
        let start = Instant::now();
        while remote.watcher().len() < 300 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "keys never all watched"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(remote.watcher().shards(), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "a read returned early"
        );

        client.apply(register("svc-7")).await.expect("a write");
        let woken = waiters.remove(7);
        let (before, after) = tokio::time::timeout(Duration::from_secs(10), woken)
            .await
            .expect("the changed key's read returns")
            .expect("no panic")
            .expect("no error");
        assert!(after > before);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "a read of an unchanged key returned"
        );
        for w in waiters {
            w.abort();
        }
    }
}
