//! The Trellis certificate authority.
//!
//! Everything a datacenter's CA does, with no I/O of its own: the CA configuration Consul
//! users know ([`CaConfig`], defaults and validation), the provider seam ([`CaProvider`], split
//! into primary and secondary roles), the built-in provider whose key lives in the replicated
//! state ([`BuiltinProvider`]), the HSM provider whose key never leaves a PKCS#11 token
//! ([`Pkcs11Provider`], the one part that talks to something outside: the module it loads,
//! only from the operator's allow-list, [`Pkcs11Modules`]),
//! validation of a leaf CSR in Consul's order ([`validate_csr`]), the CSR rate limit
//! ([`CsrLimiter`]), and the agent side: a fresh EC P-256 key and its CSR
//! ([`leaf_key_and_csr`]). rcgen, x509-parser and cryptoki stay behind this crate.

#![forbid(unsafe_code)]

mod builtin;
mod cert;
mod config;
mod csr;
mod error;
mod keyed;
mod leaf;
mod limit;
mod pkcs11;
mod provider;

pub use builtin::BuiltinProvider;
pub use cert::{colon_hex, key_id, CertInfo};
pub use config::{CaConfig, KeyType, Pkcs11Config, PROVIDERS};
pub use csr::{
    agent_placeholder_uri, validate_agent_csr, validate_csr, ValidatedCsr,
    AGENT_PLACEHOLDER_TRUST_DOMAIN,
};
pub use error::CaError;
pub use leaf::{leaf_key_and_csr, LeafKey};
pub use limit::{CsrLimiter, CsrPermit};
pub use pkcs11::{Pkcs11Modules, Pkcs11Provider};
pub use provider::{generate_provider, provider_from_state, CaProvider, IssuedLeaf, RootMaterial};

#[cfg(test)]
mod tests;
