//! Consul-compatible service-mesh identities for Trellis.
//!
//! Consul Connect names every workload in its mesh with a [SPIFFE ID], a URI placed in the
//! URI SAN of each leaf certificate. This crate models those identities exactly as Consul
//! writes them (Consul's `agent/connect/uri*.go`), so that certificates issued by Trellis are
//! accepted by Consul's proxies and the other way round:
//!
//! * [`TrustDomain`] — the `<cluster-id>.consul` host every identity in a cluster shares.
//! * [`SpiffeId`] — a parsed identity: the CA's signing ID, a service, a client agent, a
//!   server or a mesh gateway. [`FromStr`](std::str::FromStr) and [`Display`](std::fmt::Display)
//!   round-trip, with path segments percent-encoded.
//! * [`can_sign`] — which identities a CA for a trust domain may put in a certificate.
//! * [`service_sni`] — the TLS SNI name under which a service's upstreams reach it.
//!
//! The crate does no I/O; it is pure parsing, formatting and comparison.
//!
//! ```
//! use trellis_identity::{can_sign, SpiffeId, TrustDomain};
//!
//! let id: SpiffeId = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
//!     .parse()
//!     .unwrap();
//! let SpiffeId::Service(svc) = &id else { panic!("a service ID") };
//! assert_eq!(svc.service, "web");
//! assert_eq!(svc.datacenter, "dc1");
//!
//! let td = TrustDomain::for_cluster("11111111-2222-3333-4444-555555555555").unwrap();
//! assert!(can_sign(&td, &id));
//! assert_eq!(id.to_string(), format!("spiffe://{td}/ns/default/dc/dc1/svc/web"));
//! ```
//!
//! [SPIFFE ID]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod escape;
mod serde_impls;
mod sign;
mod sni;
mod spiffe_id;
mod trust_domain;

#[cfg(test)]
mod proptests;

pub use error::{IdError, Segment};
pub use sign::can_sign;
pub use sni::service_sni;
pub use spiffe_id::{
    ServiceId, SpiffeId, DEFAULT_NAMESPACE, DEFAULT_PARTITION, MAX_ID_LEN, WILDCARD,
};
pub use trust_domain::{TrustDomain, CONSUL_TLD, MAX_TRUST_DOMAIN_LEN};
