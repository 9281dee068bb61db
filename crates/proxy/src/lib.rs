//! The Trellis sidecar proxy: a public mutual-TLS listener in front of the local application
//! (authorizing each connection, or each HTTP request, against intentions) and one local
//! listener per upstream (reaching the destination's sidecars over mutual TLS), all configured
//! and kept current from the local agent's API.

#![forbid(unsafe_code)]

/// The `tracing` target of the access log: one event per decision and per closed connection.
pub const ACCESS_LOG: &str = "trellis::access";

pub mod balance;
pub mod config;
pub mod follow;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod outbound_http;
pub mod pipe;
pub mod run;
pub mod traffic;

/// What can go wrong configuring or running a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy's configuration (registration or flags) is unusable.
    #[error("proxy configuration: {0}")]
    Config(String),
    /// The local agent could not be asked, or refused.
    #[error("agent: {0}")]
    Agent(String),
    /// A call to the local agent's HTTP API failed.
    #[error("agent: {0}")]
    AgentApi(#[from] trellis_client::Error),
}

/// Resolves once `stop` holds `true` (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// A duration in milliseconds, to the microsecond, for logs.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}
