//! openraft glue for Trellis.
//!
//! [`TypeConfig`] fixes the Raft types (commands are [`trellis_state::Command`]); [`LogStore`]
//! keeps the log, the vote and the committed pointer in redb, fsynced before openraft is told a
//! write is durable; [`StateMachine`] applies committed commands to a [`trellis_state::Store`]
//! and persists snapshots in the same database; [`Network`] carries Raft RPCs to peers as JSON
//! over HTTP on their server port.

#![forbid(unsafe_code)]
// openraft's StorageError is large by design and its traits return it; boxing ours would only
// add conversions at every call.
#![allow(clippy::result_large_err)]

mod db;
mod log_store;
mod network;
mod state_machine;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use db::{node_id, open_db, open_memory_db, RaftDb, StorageError};
pub use log_store::LogStore;
pub use network::{Network, RPC_APPEND, RPC_SNAPSHOT, RPC_VOTE};
pub use state_machine::StateMachine;

/// A server as Raft membership records it: where its server port listens and its node name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerNode {
    /// Server RPC address, `host:port`.
    pub addr: String,
    /// The server's node name.
    pub name: String,
}

impl fmt::Display for ServerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// Raft types of a Trellis datacenter.
    pub TypeConfig:
        D = trellis_state::Command,
        R = trellis_state::Applied,
        NodeId = u64,
        Node = ServerNode,
);

/// The Raft handle of a server.
pub type Raft = openraft::Raft<TypeConfig>;

/// Log entries between snapshots by default.
pub const SNAPSHOT_THRESHOLD: u64 = 8192;

/// Raft timing and compaction settings for a LAN datacenter; a snapshot is taken every
/// `snapshot_threshold` entries and the log before it purged (keeping an eighth of it).
pub fn raft_config(cluster_name: &str, snapshot_threshold: u64) -> openraft::Config {
    let threshold = snapshot_threshold.max(2);
    openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(threshold),
        max_in_snapshot_log_to_keep: threshold / 8,
        purge_batch_size: 256,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
