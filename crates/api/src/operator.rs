//! `/v1/operator/...` answers.

use serde::{Deserialize, Serialize};

/// One server of the Raft configuration, in Consul's `/v1/operator/raft/configuration` shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Server address.
    pub address: String,
    /// Whether it leads now.
    pub leader: bool,
    /// Raft protocol version (Consul reports "3").
    pub protocol_version: String,
    /// Whether it votes (a joining server is a non-voter until it has caught up).
    pub voter: bool,
    /// Last log index it is known to hold (the leader's view; 0 elsewhere).
    pub last_index: u64,
}

/// The Raft configuration as `/v1/operator/raft/configuration` answers it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfiguration {
    /// Every server, voters and learners.
    pub servers: Vec<RaftServer>,
    /// Log index of the configuration.
    pub index: u64,
}
