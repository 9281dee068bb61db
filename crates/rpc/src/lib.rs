//! The server port's wire and its one client.
//!
//! - [`wire`]: the paths, the intent-level requests ([`Write`], [`SignRequest`],
//!   [`Heartbeat`], [`QueryRequest`], [`WatchRequest`], cluster forming and changing) and
//!   their answers. A server turns each request into the commands it needs and decides what its
//!   caller may do; no raw state-machine command is accepted from the network.
//! - [`Error`]: what a call fails with, in process and across the wire alike: a server answers
//!   with a typed [`Code`] that decodes back into the same variant.
//! - [`Client`]: the typed client client agents, followers and forming servers share.
//! - [`auto_encrypt`]: a client agent getting its server-port certificate from the servers.

#![forbid(unsafe_code)]

pub mod auto_encrypt;
mod client;
mod error;
pub mod wire;

pub use client::{Client, CALL_TIMEOUT};
pub use error::{Code, Error, WireError};
pub use wire::*;
