//! The legacy, flattened view of intentions that `/v1/connect/intentions*` serves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Consul's zero `time.Time`, which it prints for intentions that have no legacy timestamps.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One intention as the legacy API shows it: one source of a `service-intentions` entry, with
/// the entry's destination and Raft indexes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    /// Legacy UUID; empty for intentions written through config entries or the exact API.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Source namespace (`default` in this edition).
    #[serde(rename = "SourceNS", default)]
    pub source_ns: String,
    /// Source service name or `*`.
    #[serde(default)]
    pub source_name: String,
    /// Destination namespace (`default` in this edition).
    #[serde(rename = "DestinationNS", default)]
    pub destination_ns: String,
    /// Destination service name or `*`.
    #[serde(default)]
    pub destination_name: String,
    /// Source partition (`default` in this edition).
    #[serde(default)]
    pub source_partition: String,
    /// Destination partition (`default` in this edition).
    #[serde(default)]
    pub destination_partition: String,
    /// Always `consul`.
    #[serde(default)]
    pub source_type: String,
    /// `allow` or `deny` for an L4 intention; empty for an L7 one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// L7 permissions, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Value>,
    /// Legacy metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's precedence (9, 8, 6 or 5 in this edition).
    #[serde(default)]
    pub precedence: u32,
    /// Legacy creation time (RFC 3339), or [`ZERO_TIME`].
    #[serde(default)]
    pub created_at: String,
    /// Legacy update time (RFC 3339), or [`ZERO_TIME`].
    #[serde(default)]
    pub updated_at: String,
    /// Raft index of the entry holding this intention.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the entry's last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// `{"Authorized": bool, "Reason": "..."}` from `/v1/agent/connect/authorize`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AuthorizeResponse {
    /// Whether the connection may proceed.
    pub authorized: bool,
    /// Why, in Consul's wording.
    pub reason: String,
}

/// The body of `/v1/agent/connect/authorize`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AuthorizeRequest {
    /// The destination service.
    #[serde(default)]
    pub target: String,
    /// The client certificate's URI SAN.
    #[serde(rename = "ClientCertURI", default)]
    pub client_cert_uri: String,
    /// The client certificate's serial (accepted, not checked: there is no revocation).
    #[serde(default)]
    pub client_cert_serial: String,
    /// Enterprise namespace; only empty or `default` is accepted.
    #[serde(default)]
    pub namespace: String,
}
