//! Consul-compatible wire types for Trellis.
//!
//! Every type here serialises with Consul's JSON field names (PascalCase, `ID` spelled in
//! capitals) so that existing Consul clients work unmodified. The types carry no behaviour
//! beyond defaults and small helpers; validation lives with the component that owns the data.

#![forbid(unsafe_code)]

mod catalog;
mod config;
mod connect;
mod entry;
pub mod filter;
mod health;
mod intention;
mod keys;
pub mod lenient;
mod meta;
mod operator;
#[cfg(test)]
mod proptests;
mod service;

pub use catalog::*;
pub use config::*;
pub use connect::*;
pub use entry::*;
pub use health::*;
pub use intention::*;
pub use keys::canonicalize_keys;
pub use meta::*;
pub use operator::*;
pub use service::*;

/// The default datacenter name, as Consul's.
pub const DEFAULT_DATACENTER: &str = "dc1";
