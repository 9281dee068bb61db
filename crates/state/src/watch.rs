//! Watch keys and the registry that wakes blocking queries.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Something a query reads and a write can change. A blocking query subscribes to the keys it
/// read; a write notifies the keys it changed.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum WatchKey {
    /// The set of nodes or any node row.
    Nodes,
    /// The set of service names or any service's tags.
    Services,
    /// Every check (health by state).
    Checks,
    /// One node: its row, services and checks.
    Node(String),
    /// The instances of one service name, their checks and their nodes.
    Service(String),
    /// The Connect-capable instances for one destination service name.
    Connect(String),
    /// Every config entry of one kind.
    ConfigKind(String),
    /// One config entry (kind, name).
    Config(String, String),
    /// The CA roots.
    CaRoots,
    /// The CA configuration.
    CaConfig,
    /// Every `service-defaults` and `proxy-defaults` entry (resolved service configuration).
    ServiceConfig,
    /// ACL tokens, policies and roles.
    Acl,
}

/// The most keys one many-keys wait ([`crate::Store::wait_for_keys`], the server port's
/// `/v1/internal/watch`) may carry. A client agent's shard is 256 keys; each key of a wait is
/// one subscription held for the whole wait.
pub const MAX_WATCH_KEYS: usize = 4096;

/// A sender per key that currently has waiters, and no other: a key's entry is made by its
/// first subscription and dropped with its last ([`Subscription`]'s drop), so keys that were
/// waited on once (random names, say) leave nothing behind.
#[derive(Default)]
pub(crate) struct Watches {
    senders: Mutex<HashMap<WatchKey, watch::Sender<()>>>,
}

/// A waiter on one key. Dropping it (woken, timed out, or its request abandoned) removes the
/// key's sender when it was the key's last waiter.
pub(crate) struct Subscription<'a> {
    watches: &'a Watches,
    key: WatchKey,
    /// Always `Some` until drop, which takes it under the registry's lock.
    rx: Option<watch::Receiver<()>>,
}

impl Subscription<'_> {
    /// Resolves when the key is notified, or when its sender goes (a restore drops them all).
    pub(crate) async fn changed(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            let _ = rx.changed().await;
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut senders = self.watches.senders.lock();
        // Under the lock, so a concurrent subscribe either sees this receiver still counted
        // (and the sender stays) or finds the key gone and makes a new sender.
        drop(self.rx.take());
        if senders
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            senders.remove(&self.key);
            shrink(&mut senders);
        }
    }
}

/// Gives back a map's table once most of it is empty (a burst of waiters has left), so the
/// memory a burst took does not stay. Amortised: the map must have lost three quarters of its
/// capacity since it last shrank.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    const MIN_CAPACITY: usize = 1024;
    if map.capacity() > MIN_CAPACITY && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(MIN_CAPACITY));
    }
}

impl Watches {
    /// Subscribes to a key. Call while holding the store's read lock, so no write can slip
    /// between the read and the subscription.
    pub(crate) fn subscribe(&self, key: &WatchKey) -> Subscription<'_> {
        let mut senders = self.senders.lock();
        let rx = match senders.get(key) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(());
                senders.insert(key.clone(), tx);
                rx
            }
        };
        Subscription {
            watches: self,
            key: key.clone(),
            rx: Some(rx),
        }
    }

    /// Wakes every waiter on these keys and forgets keys nobody waits on any more.
    pub(crate) fn notify<'a>(&self, keys: impl IntoIterator<Item = &'a WatchKey>) {
        let mut senders = self.senders.lock();
        let mut removed = false;
        for key in keys {
            if let Some(tx) = senders.get(key) {
                if tx.receiver_count() == 0 {
                    senders.remove(key);
                    removed = true;
                } else {
                    tx.send_replace(());
                }
            }
        }
        if removed {
            shrink(&mut senders);
        }
    }

    /// Wakes every waiter (snapshot restore): their senders go, which wakes them.
    pub(crate) fn notify_all(&self) {
        let mut senders = self.senders.lock();
        for tx in senders.values() {
            tx.send_replace(());
        }
        *senders = HashMap::new();
    }

    /// Number of keys with a live sender (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.senders.lock().len()
    }

    /// Slots the registry's table holds (for tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.senders.lock().capacity()
    }
}
