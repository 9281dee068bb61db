//! Consul-compatible wire types for Trellis.
//!
//! Every type here serialises with Consul's JSON field names (PascalCase, `ID` spelled in
//! capitals) so that existing Consul clients work unmodified. The types carry no behaviour
//! beyond defaults and small helpers; validation lives with the component that owns the data.

#![forbid(unsafe_code)]

mod acl;
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

pub use acl::*;
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

/// Decodes `null` as the type's default, as Go's JSON decoder leaves a field a client sent as
/// `null` (Go clients send `null` for empty lists).
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
