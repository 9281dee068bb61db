//! The Trellis agent: the process every host runs.
//!
//! It serves Consul's HTTP API ([`http`]), owns the services and checks registered on its node
//! ([`local`]), runs their checks ([`checks`]), keeps the catalog in step with them
//! ([`sync`], anti-entropy), and sends everything else to the servers through a [`Backend`]:
//! the in-process server in dev and server mode, or servers reached over their server port
//! in client mode.

#![forbid(unsafe_code)]

pub mod acl;
mod agent;
mod backend;
pub mod cache;
pub mod checks;
mod definition;
mod error;
pub mod http;
pub mod intentions;
pub mod leaf;
pub mod local;
pub mod service_config;
pub mod sync;
pub mod watcher;

pub use agent::{Agent, AgentConfig};
pub use backend::Backend;
pub use error::AgentError;
/// Allow or deny, as `default_intention_policy` takes it.
pub use trellis_intentions::Action as IntentionAction;

/// A one-voter dev server in-process on a free loopback port, with a leader: the real server
/// the agent's unit tests run against.
#[cfg(test)]
pub(crate) async fn test_server() -> std::sync::Arc<trellis_server::Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = trellis_server::Server::start(trellis_server::ServerConfig {
        node_name: "s1".into(),
        datacenter: "dc1".into(),
        data_dir: None,
        rpc_addr: ([127, 0, 0, 1], port).into(),
        bootstrap_expect: 1,
        retry_join: vec![],
        snapshot_threshold: 10_000,
        pkcs11_modules: Default::default(),
        rpc_max_conns_per_client: trellis_server::listen::Limits::RPC.max_conns_per_client,
        rpc_hold_timeout: trellis_server::RPC_HOLD_TIMEOUT,
        tls: None,
        acl: None,
    })
    .await
    .expect("server starts");
    assert!(
        server
            .wait_for_leader(std::time::Duration::from_secs(10))
            .await
    );
    server
}
