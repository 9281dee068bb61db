//! The replicated state of a Trellis datacenter.
//!
//! [`Store`] holds the catalog (nodes, services, checks) and config entries in memory, with
//! secondary indexes and a per-key modify index. It changes only through [`Store::apply`],
//! which the Raft state machine calls with each committed [`Command`] and its log index, so
//! every replica computes the same rows and the same indexes. Reads run a [`Query`], and a
//! blocking read waits on exactly the [`WatchKey`]s the query touched, so a write wakes only
//! the queries whose answer it may have changed.

#![forbid(unsafe_code)]

mod acl;
mod answer;
mod answers;
mod ca;
mod command;
mod error;
mod intentions;
mod query;
mod tables;
mod watch;

pub use acl::{is_uuid, AclTables, TokenFilter, TEMPLATED_POLICIES};
pub use answer::{Answer, AnswerError, Typed};
pub use answers::{ANSWER_CACHE_BYTES, MAX_CACHED_ANSWER_BYTES};
pub use ca::{CaState, StoredRoot};
pub use command::{
    normalize_config_entry, validate_config_entry, validate_registration, Applied, Command,
};
pub use error::StateError;
pub use intentions::IntentionRef;
pub use query::{Query, QueryOutput, ACL_NOT_FOUND};
pub use tables::{Snapshot, Store};
pub use watch::{WatchKey, MAX_WATCH_KEYS};

#[cfg(test)]
mod tests;
