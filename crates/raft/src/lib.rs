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
pub use network::{Network, RpcClient, RPC_APPEND, RPC_SNAPSHOT, RPC_VOTE};
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

/// A command as the Raft log carries it: the command's JSON, tagged with its type
/// (`"Type": "ConfigSet"`, ...), and `"IgnoreUnknown": true` when a server that does not know
/// the type may skip it safely.
///
/// The log keeps commands undecoded so that a server meets a type it does not know (one
/// written by a newer server) only when applying it, where [`LoggedCommand::decode`] says
/// whether to skip it or to refuse it: a refused entry stops this server's state machine
/// instead of letting it diverge from the others.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct LoggedCommand(serde_json::Value);

/// A logged command this server cannot decode.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodedCommand {
    /// Its `Type` tag ("" when it has none).
    pub type_name: String,
    /// Whether its writer marked it as safe to skip.
    pub ignorable: bool,
    /// Why it did not decode.
    pub reason: String,
}

impl LoggedCommand {
    /// The log form of `cmd`, which every server must apply.
    pub fn new(cmd: &trellis_state::Command) -> LoggedCommand {
        LoggedCommand(serde_json::to_value(cmd).expect("commands serialise"))
    }

    /// The log form of `cmd`, which a server that does not know its type may skip.
    pub fn ignorable(cmd: &trellis_state::Command) -> LoggedCommand {
        let mut v = serde_json::to_value(cmd).expect("commands serialise");
        if let Some(map) = v.as_object_mut() {
            map.insert("IgnoreUnknown".into(), serde_json::Value::Bool(true));
        }
        LoggedCommand(v)
    }

    /// The command, or what is known of one this server cannot decode.
    pub fn decode(&self) -> Result<trellis_state::Command, UndecodedCommand> {
        trellis_state::Command::deserialize(&self.0).map_err(|e| UndecodedCommand {
            type_name: self
                .0
                .get("Type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string(),
            ignorable: self.0.get("IgnoreUnknown") == Some(&serde_json::Value::Bool(true)),
            reason: e.to_string(),
        })
    }

    /// A log entry from raw JSON (tests, and tools that write entries of other versions).
    pub fn from_json(value: serde_json::Value) -> LoggedCommand {
        LoggedCommand(value)
    }
}

openraft::declare_raft_types!(
    /// Raft types of a Trellis datacenter.
    pub TypeConfig:
        D = LoggedCommand,
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
        // Purging waits for this many purgeable entries; never more than a snapshot's worth.
        purge_batch_size: threshold.min(256),
        ..Default::default()
    }
}

#[cfg(test)]
mod corruption_tests;
#[cfg(test)]
mod tests;
