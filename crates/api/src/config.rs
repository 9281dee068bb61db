//! Config entries (`service-defaults`, `proxy-defaults`, `service-intentions`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Config entry kinds Trellis stores.
pub mod config_kind {
    /// Per-service defaults (protocol, ...).
    pub const SERVICE_DEFAULTS: &str = "service-defaults";
    /// Global proxy defaults; the only valid name is `global`.
    pub const PROXY_DEFAULTS: &str = "proxy-defaults";
    /// Intentions for one destination.
    pub const SERVICE_INTENTIONS: &str = "service-intentions";
    /// Every kind accepted.
    pub const ALL: &[&str] = &[SERVICE_DEFAULTS, PROXY_DEFAULTS, SERVICE_INTENTIONS];
}

/// A stored config entry: its kind, name, the rest of its body, and its indexes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ConfigEntry {
    /// Entry kind.
    #[serde(rename = "Kind")]
    pub kind: String,
    /// Entry name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Every other field of the entry, as given (validated by kind before storing).
    #[serde(flatten)]
    pub body: Map<String, Value>,
    /// Raft index that created the entry.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Raft index that last changed the entry.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}
