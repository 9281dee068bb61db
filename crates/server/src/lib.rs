//! A Trellis server: one Raft voter holding the datacenter's state.
//!
//! [`Server`] owns the Raft node and the [`trellis_state::Store`] it drives. Writes become Raft
//! commands ([`Server::apply`]); reads run against the local store ([`Server::query`]), as
//! blocking queries when asked, after forwarding to the leader unless `?stale`. The server port
//! ([`Server::router`]) carries Raft RPCs between servers and the RPCs client agents use.

#![forbid(unsafe_code)]

mod batch;
mod ca;
pub mod cluster;
pub mod listen;
pub mod members;
mod rpc;
mod server;

pub use rpc::{
    error_status, post_json, post_json_within, remote_query, remote_watch, ApplyResponse,
    QueryRequest, SignRequest, StatusResponse, WatchRequest, WatchResponse, MAX_WATCH_KEYS,
    MAX_WATCH_WAIT, RPC_APPLY, RPC_CA_CONFIG, RPC_CA_SIGN, RPC_QUERY, RPC_STATUS, RPC_WATCH,
};
pub use server::{
    rpc_client, QueryOptions, QueryResponse, Server, ServerConfig, ServerError, DB_FILE,
    MEMBER_MARKER, PEER_FAILED_AFTER, RPC_HOLD_TIMEOUT,
};
/// The type of [`ServerConfig::pkcs11_modules`]: the PKCS#11 modules the CA may load.
pub use trellis_ca::Pkcs11Modules;
/// The client of server ports every caller dials through ([`rpc_client`] builds one).
pub use trellis_raft::RpcClient;
