//! ACL resolution for Trellis: from the secret a request carries to what it may do.
//!
//! A [`Resolver`] turns a token's secret into an [`Identity`]: the token's AccessorID and the
//! [`trellis_acl::Authorizer`] compiled from its policies, its roles' policies and its service,
//! node and templated identities ([`compile`]). Identities are cached per secret for
//! `token_ttl`; when the servers cannot be reached the `down_policy` decides (serve the cached
//! identity, or allow or deny everything). The identity source is a seam
//! ([`IdentitySource`]): a server's agent reads its own store, a client agent asks a server.
//!
//! [`Identity::require`] makes Consul's 403 texts; [`filter`] removes from an answer what the
//! identity may not read, as Consul's servers do before answering.

#![forbid(unsafe_code)]

mod compile;
pub mod filter;
mod resolver;

pub use compile::{compile, dns_rules};
pub use resolver::{
    expired, AclConfig, AclError, DownPolicy, Identity, IdentitySource, Resolver, SourceError,
};
