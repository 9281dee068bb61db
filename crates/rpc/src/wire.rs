//! The server port's requests and answers, and the paths they are sent to.
//!
//! Client agents and followers send intents ([`Write`], [`SignRequest`], [`Heartbeat`], ...);
//! a server turns each into the state-machine commands it needs and decides what its caller may
//! do. No raw `Command` crosses the wire: the CA's state and batches are written only by the
//! leader itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trellis_api::{CatalogDeregistration, CatalogRegistration, ConfigEntry};
use trellis_raft::ServerNode;
use trellis_state::{Applied, Command, IntentionRef, Query, QueryOutput, WatchKey};

pub use trellis_raft::{RPC_APPEND, RPC_SNAPSHOT, RPC_VOTE};

/// Path of the write RPC: a [`Write`] in, an [`ApplyResponse`] out.
pub const RPC_APPLY: &str = "/v1/internal/apply";
/// Path of the read RPC: a [`QueryRequest`] in, the body and index headers out.
pub const RPC_QUERY: &str = "/v1/internal/query";
/// Path of the status RPC: a [`StatusResponse`] out.
pub const RPC_STATUS: &str = "/v1/internal/status";
/// Path of the leaf-signing RPC: a [`SignRequest`] in, an `IssuedCert` out.
pub const RPC_CA_SIGN: &str = "/v1/internal/ca/sign";
/// Path of the CA configuration RPC: a `CAConfiguration` in, `true` out.
pub const RPC_CA_CONFIG: &str = "/v1/internal/ca/config";
/// Path of auto-encrypt's signing RPC: an [`AutoEncryptSignRequest`] in, an
/// [`AutoEncryptSignResponse`] out. The one RPC a caller without a certificate may make on a
/// port with `verify_incoming` (Consul's `AutoEncrypt.Sign`).
pub const RPC_AUTO_ENCRYPT_SIGN: &str = "/v1/internal/auto-encrypt/sign";
/// Path of the many-keys blocking wait: a [`WatchRequest`] in, a [`WatchResponse`] out.
pub const RPC_WATCH: &str = "/v1/internal/watch";
/// Path of the member heartbeat: a [`Heartbeat`] in, a [`StatusResponse`] out.
pub const RPC_HEARTBEAT: &str = "/v1/internal/heartbeat";
/// Path of the greeting servers exchange while forming a cluster: a [`Hello`] out.
pub const RPC_HELLO: &str = "/v1/internal/raft/hello";
/// Path of a server's request to join the cluster: a [`JoinRequest`] in.
pub const RPC_JOIN: &str = "/v1/internal/raft/join";
/// Path of removing a server: a [`RemoveRequest`] in.
pub const RPC_REMOVE: &str = "/v1/internal/raft/remove";
/// Path of ACL token resolution: an [`AclIdentityRequest`] in, an `Option<AclIdentity>` out
/// (the token with that secret, its policies and roles, from the server's own copy).
pub const RPC_ACL_IDENTITY: &str = "/v1/internal/acl/identity";
/// Path of the Raft configuration: a [`RaftConfiguration`] out (`?local`: this server's view).
pub const RPC_CONFIGURATION: &str = "/v1/internal/raft/configuration";

/// The most keys one [`WatchRequest`] may carry (the store's limit; more is a 400).
pub const MAX_WATCH_KEYS: usize = trellis_state::MAX_WATCH_KEYS;
/// The longest one [`WatchRequest`] waits (Consul's blocking-query ceiling).
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(600);

/// The heartbeat period client agents use unless told otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// The shortest heartbeat period accepted.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// The longest heartbeat period accepted.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(10);

/// A write, as its caller means it. The server makes the state-machine command from it; the
/// CA's state and batches of commands are not writes a caller can send.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "Type")]
pub enum Write {
    /// Register or update a node, optionally with a service and checks.
    Register(Box<CatalogRegistration>),
    /// Remove a node, a service or a check.
    Deregister(CatalogDeregistration),
    /// Create or replace a config entry; with `cas`, only if its ModifyIndex equals it (0:
    /// only if it does not exist).
    ConfigSet {
        /// The entry.
        entry: ConfigEntry,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Delete a config entry; with `cas`, only if its ModifyIndex equals it.
    ConfigDelete {
        /// Entry kind.
        kind: String,
        /// Entry name.
        name: String,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Create or replace one intention (the legacy intentions API).
    IntentionUpsert {
        /// Destination name or `*`.
        destination: String,
        /// The source object: `Name`, `Action` or `Permissions`, `Description`, legacy fields.
        source: serde_json::Map<String, serde_json::Value>,
        /// Refuse when an intention for this pair exists (legacy create).
        create_only: bool,
        /// Replace the intention with this legacy ID, which may move to this pair.
        replace_id: Option<String>,
    },
    /// Remove one intention.
    IntentionDelete {
        /// Which intention.
        target: IntentionRef,
    },
    /// Bootstrap the ACL system with this management token (the leader adds its reset index).
    AclBootstrap {
        /// The token.
        token: trellis_api::AclToken,
    },
    /// Create (`create`) or update a token.
    AclTokenSet {
        /// The token.
        token: trellis_api::AclToken,
        /// Create rather than update.
        create: bool,
    },
    /// Delete a token.
    AclTokenDelete {
        /// Its AccessorID.
        accessor: String,
    },
    /// Create (`create`) or update a policy.
    AclPolicySet {
        /// The policy.
        policy: trellis_api::AclPolicy,
        /// Create rather than update.
        create: bool,
    },
    /// Delete a policy.
    AclPolicyDelete {
        /// Its ID.
        id: String,
    },
    /// Create (`create`) or update a role.
    AclRoleSet {
        /// The role.
        role: trellis_api::AclRole,
        /// Create rather than update.
        create: bool,
    },
    /// Delete a role.
    AclRoleDelete {
        /// Its ID.
        id: String,
    },
}

/// A token's secret to resolve (sent in the body, never in a URL).
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct AclIdentityRequest {
    /// The SecretID.
    pub secret: String,
}

impl std::fmt::Debug for AclIdentityRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AclIdentityRequest { secret: <hidden> }")
    }
}

impl From<Write> for Command {
    fn from(w: Write) -> Command {
        match w {
            Write::Register(reg) => Command::Register(reg),
            Write::Deregister(dereg) => Command::Deregister(dereg),
            Write::ConfigSet { entry, cas } => Command::ConfigSet { entry, cas },
            Write::ConfigDelete { kind, name, cas } => Command::ConfigDelete { kind, name, cas },
            Write::IntentionUpsert {
                destination,
                source,
                create_only,
                replace_id,
            } => Command::IntentionUpsert {
                destination,
                source,
                create_only,
                replace_id,
            },
            Write::IntentionDelete { target } => Command::IntentionDelete { target },
            Write::AclBootstrap { token } => Command::AclBootstrap {
                token,
                reset_index: None,
            },
            Write::AclTokenSet { token, create } => Command::AclTokenSet { token, create },
            Write::AclTokenDelete { accessor } => Command::AclTokenDelete { accessor },
            Write::AclPolicySet { policy, create } => Command::AclPolicySet { policy, create },
            Write::AclPolicyDelete { id } => Command::AclPolicyDelete { id },
            Write::AclRoleSet { role, create } => Command::AclRoleSet { role, create },
            Write::AclRoleDelete { id } => Command::AclRoleDelete { id },
        }
    }
}

impl Write {
    /// Whether applying this write twice leaves the state, and the answer, as applying it
    /// once: only such a write is sent again when it is not known whether the first copy
    /// arrived ([`Command::idempotent`]).
    pub fn idempotent(&self) -> bool {
        match self {
            Write::Register(_) | Write::Deregister(_) => true,
            Write::ConfigSet { cas, .. } | Write::ConfigDelete { cas, .. } => cas.is_none(),
            Write::IntentionDelete { .. } => false,
            Write::IntentionUpsert { create_only, .. } => !create_only,
            Write::AclBootstrap { .. } => false,
            Write::AclTokenSet { create, .. }
            | Write::AclPolicySet { create, .. }
            | Write::AclRoleSet { create, .. } => !create,
            Write::AclTokenDelete { .. }
            | Write::AclPolicyDelete { .. }
            | Write::AclRoleDelete { .. } => true,
        }
    }
}

/// The outcome of a write and the log index it was committed at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApplyResponse {
    /// What applying the command did.
    pub applied: Applied,
    /// Its Raft log index.
    pub index: u64,
}

/// Consistency and blocking parameters of a read, as parsed from `?index&wait&stale&consistent`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct QueryOptions {
    /// Block until the answer's index exceeds this (0: answer at once).
    pub index: u64,
    /// Longest time to block, jitter included.
    pub wait: Duration,
    /// Any server may answer from its own copy.
    pub stale: bool,
    /// The leader must confirm its leadership first.
    pub consistent: bool,
}

impl QueryOptions {
    /// A default-consistency read, blocking past `index` for up to `wait` (0: at once).
    pub fn blocking(index: u64, wait: Duration) -> QueryOptions {
        QueryOptions {
            index,
            wait,
            stale: false,
            consistent: false,
        }
    }
}

/// A read sent to a server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QueryRequest {
    /// What to read.
    pub query: Query,
    /// How to read it.
    pub options: QueryOptions,
}

/// A read's answer with the metadata Consul returns in headers.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResponse {
    /// The body, or not found.
    pub output: QueryOutput,
    /// `X-Consul-Index` (≥ 1).
    pub index: u64,
    /// `X-Consul-KnownLeader`.
    pub known_leader: bool,
    /// `X-Consul-LastContact` in milliseconds.
    pub last_contact_ms: u64,
}

/// Watch keys and the change index the caller holds for each: answered when any key's index
/// differs, or after the wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WatchRequest {
    /// The keys and the indexes held (0: none yet, answered at once).
    pub keys: Vec<(WatchKey, u64)>,
    /// How long to wait for a change, in milliseconds (capped at [`MAX_WATCH_WAIT`]).
    pub wait_ms: u64,
}

/// The keys of a [`WatchRequest`] whose index moved: (position in the request, index now).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WatchResponse {
    /// The changed keys; empty when the wait passed without a change.
    pub changed: Vec<(u32, u64)>,
}

/// A leaf CSR sent to a server for signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignRequest {
    /// The CSR, PEM.
    pub csr: String,
    /// The node whose client agent asked: its CSR is signed only for a service registered on
    /// that node. Set by the server that took the request from the agent's certificate (never
    /// from the caller's say-so) and carried with it to the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_node: Option<String>,
}

/// A client agent asking the servers for its server-port certificate (Consul's
/// `AutoEncrypt.Sign`): a CSR for its agent SPIFFE ID,
/// `spiffe://unknown/agent/client/dc/<dc>/id/<node>` (the trust domain a placeholder).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AutoEncryptSignRequest {
    /// The agent's datacenter; a server of another refuses.
    pub datacenter: String,
    /// The CSR, PEM.
    pub csr: String,
}

/// What auto-encrypt answers: the agent's certificate and what to trust.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AutoEncryptSignResponse {
    /// The certificate (chain in `cert_pem`), for the agent ID in the cluster's trust domain.
    pub issued_cert: trellis_api::IssuedCert,
    /// The cluster's trust domain.
    pub trust_domain: String,
    /// The Connect CA roots, PEM (Consul's `ConnectCARoots`).
    pub connect_ca_roots: Vec<String>,
    /// The servers' own CA bundle (`ca_file`), PEM (Consul's `ManualCARoots`).
    pub manual_ca_roots: Vec<String>,
    /// Whether the servers check `server.<dc>.<domain>` (Consul's `VerifyServerHostname`).
    pub verify_server_hostname: bool,
}

/// Leader and voters as a server knows them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StatusResponse {
    /// Leader server address, empty when none is known.
    pub leader: String,
    /// Voter server addresses.
    pub peers: Vec<String>,
    /// Voter node names, parallel to `peers`.
    pub peer_names: Vec<String>,
    /// Datacenter of the server.
    pub datacenter: String,
}

/// A client agent telling the servers it is alive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// The agent's node name.
    pub node: String,
    /// The node's address (registered with the node if the catalog lacks it).
    pub address: String,
    /// How often the agent sends one, in milliseconds.
    pub interval_ms: u64,
    /// Set by a follower passing it to the leader, so that it travels one hop at most.
    #[serde(default)]
    pub forwarded: bool,
    /// The agent is leaving for good: its node is deregistered rather than failed.
    #[serde(default)]
    pub leaving: bool,
    /// A random number the agent draws at start: heartbeats of an agent process that has
    /// left (delayed in flight) are told from those of its next start.
    #[serde(default)]
    pub incarnation: u64,
}

impl Heartbeat {
    /// Refuses a heartbeat naming no node or address, or an interval outside
    /// [`MIN_HEARTBEAT`]..=[`MAX_HEARTBEAT`].
    pub fn validate(&self) -> Result<(), String> {
        if self.node.is_empty() || self.node.len() > 256 {
            return Err("heartbeat needs a node name of 1 to 256 bytes".into());
        }
        if self.address.is_empty() || self.address.len() > 256 {
            return Err("heartbeat needs a node address of 1 to 256 bytes".into());
        }
        check_interval(Duration::from_millis(self.interval_ms))
    }
}

/// Refuses a heartbeat interval outside [`MIN_HEARTBEAT`]..=[`MAX_HEARTBEAT`] (the servers,
/// the agent and the CLI apply the same rule).
pub fn check_interval(every: Duration) -> Result<(), String> {
    if (MIN_HEARTBEAT..=MAX_HEARTBEAT).contains(&every) {
        Ok(())
    } else {
        Err(format!(
            "heartbeat interval {every:?} is outside {MIN_HEARTBEAT:?} to {MAX_HEARTBEAT:?}"
        ))
    }
}

/// What a server says about itself when greeted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Hello {
    /// Its Raft node ID.
    pub node_id: u64,
    /// Its address and name.
    pub node: ServerNode,
    /// Its datacenter.
    pub datacenter: String,
    /// Whether it belongs to a cluster already.
    pub initialized: bool,
}

/// A server asking to be added to the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JoinRequest {
    /// Its Raft node ID.
    pub node_id: u64,
    /// Its address and name.
    pub node: ServerNode,
    /// Its datacenter; a server of another datacenter is refused.
    pub datacenter: String,
}

/// A server to remove from the cluster, by node ID or by address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RemoveRequest {
    /// The node ID, as `list-peers` shows it.
    #[serde(default)]
    pub id: Option<String>,
    /// The server address, `host:port`.
    #[serde(default)]
    pub address: Option<String>,
}

/// The Raft configuration's types are Consul's API shapes (`/v1/operator/raft/configuration`).
pub use trellis_api::{RaftConfiguration, RaftServer};

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw state-machine command does not decode as a write: the CA's state and batches
    /// cannot be sent.
    #[test]
    fn the_ca_state_and_batches_are_not_writes() {
        for raw in [
            r#"{"Type":"CaSet","state":{},"cas":0}"#,
            r#"{"Type":"Batch","commands":[]}"#,
        ] {
            assert!(serde_json::from_str::<Write>(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_write_becomes_the_same_command_it_names() {
        let w = Write::ConfigDelete {
            kind: "service-defaults".into(),
            name: "web".into(),
            cas: Some(3),
        };
        assert_eq!(w.idempotent(), Command::from(w.clone()).idempotent());
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::to_value(Command::from(w)).unwrap(),
            "the wire spelling is the command's"
        );
    }
}
