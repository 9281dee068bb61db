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
}

/// Senders for keys that currently have waiters.
#[derive(Default)]
pub(crate) struct Watches {
    senders: Mutex<HashMap<WatchKey, watch::Sender<()>>>,
}

impl Watches {
    /// Subscribes to a key. Call while holding the store's read lock, so no write can slip
    /// between the read and the subscription.
    pub(crate) fn subscribe(&self, key: &WatchKey) -> watch::Receiver<()> {
        let mut senders = self.senders.lock();
        if let Some(tx) = senders.get(key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(());
        senders.insert(key.clone(), tx);
        rx
    }

    /// Wakes every waiter on these keys and forgets keys nobody waits on any more.
    pub(crate) fn notify<'a>(&self, keys: impl IntoIterator<Item = &'a WatchKey>) {
        let mut senders = self.senders.lock();
        for key in keys {
            if let Some(tx) = senders.get(key) {
                if tx.receiver_count() == 0 {
                    senders.remove(key);
                } else {
                    tx.send_replace(());
                }
            }
        }
    }

    /// Wakes every waiter (snapshot restore).
    pub(crate) fn notify_all(&self) {
        let mut senders = self.senders.lock();
        for tx in senders.values() {
            tx.send_replace(());
        }
        senders.clear();
    }

    /// Number of keys with a live sender (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.senders.lock().len()
    }
}
