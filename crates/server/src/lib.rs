//! A Trellis server: one Raft voter holding the datacenter's state.
//!
//! [`Server`] owns the Raft node and the [`trellis_state::Store`] it drives. Writes become Raft
//! commands ([`Server::apply`]); reads run against the local store ([`Server::query`]), as
//! blocking queries when asked, after forwarding to the leader unless `?stale`. The server port
//! carries Raft RPCs between servers and the intent-level RPCs of
//! [`trellis_rpc`], which client agents and other servers call through [`trellis_rpc::Client`].

#![forbid(unsafe_code)]

pub mod acl;
mod batch;
mod ca;
pub mod cluster;
pub mod listen;
pub mod members;
mod rpc;
mod server;

pub use server::{
    Server, ServerConfig, ServerError, DB_FILE, MEMBER_MARKER, PEER_FAILED_AFTER, RPC_HOLD_TIMEOUT,
};
/// The type of [`ServerConfig::pkcs11_modules`]: the PKCS#11 modules the CA may load.
pub use trellis_ca::Pkcs11Modules;
