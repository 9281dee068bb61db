//! The Trellis agent: the process every host runs.
//!
//! It serves Consul's HTTP API ([`http`]), owns the services and checks registered on its node
//! ([`local`]), runs their checks ([`checks`]), keeps the catalog in step with them
//! ([`sync`], anti-entropy), and sends everything else to the servers through a [`Backend`]:
//! the in-process server in dev and server mode, or servers reached over their server port
//! in client mode.

#![forbid(unsafe_code)]

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
