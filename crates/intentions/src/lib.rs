//! The intentions engine: who may talk to whom.
//!
//! Pure and synchronous. [`parse_entry`] turns a `service-intentions` config entry into
//! [`Intention`]s, reporting every problem at once; [`Engine`] holds them indexed by destination
//! and source so that [`Engine::decide`] finds the one intention that applies with at most four
//! hash lookups, whatever the number of intentions, and changes one entry at a time
//! ([`Engine::set_destination`]). Each [`Decision`] says why (which intention, or the default).
//!
//! Semantics follow Consul (single default namespace and partition): precedence 9 (exact
//! source, exact destination), 8 (`*` source), 6 (exact source, `*` destination), 5 (`*`, `*`);
//! only the highest-precedence match applies; an L7 intention's permissions are tried in order,
//! the first match decides, and if none matches the default decides. L7 intentions only apply
//! to a destination whose [`Protocol`] is HTTP-based ([`resolve_protocol`]).

#![forbid(unsafe_code)]

mod engine;
mod model;
pub mod path;
mod protocol;
mod wire;

pub use engine::{Decision, Engine, Reason};
pub use model::{
    parse_entry, parse_intentions, parse_sources, precedence, Action, HeaderMatch, HeaderTest,
    HttpRequest, Intention, PathMatch, Permission,
};
pub use protocol::{resolve_protocol, Protocol};

#[cfg(test)]
mod tests;
