//! Health checks: how they are defined on registration and how they are returned.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::null_as_default;

/// Check states, as Consul spells them.
pub mod status {
    /// Healthy.
    pub const PASSING: &str = "passing";
    /// Degraded.
    pub const WARNING: &str = "warning";
    /// Failing.
    pub const CRITICAL: &str = "critical";
    /// Filter value matching every state.
    pub const ANY: &str = "any";

    /// True for the three states a check can be in.
    pub fn is_valid(s: &str) -> bool {
        matches!(s, PASSING | WARNING | CRITICAL)
    }
}

/// A check as registered (`PUT /v1/agent/check/register`, or inside a service definition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// Check ID; defaults to the name (or `service:<id>` inside a service definition).
    #[serde(
        default,
        rename = "CheckID",
        alias = "ID",
        alias = "id",
        alias = "check_id"
    )]
    pub id: String,
    /// Human-readable name.
    #[serde(default, alias = "name")]
    pub name: String,
    /// Free-form notes.
    #[serde(default, alias = "notes")]
    pub notes: String,
    /// Service the check belongs to, on this agent.
    #[serde(default, rename = "ServiceID", alias = "service_id")]
    pub service_id: String,
    /// Initial status.
    #[serde(default, alias = "status")]
    pub status: String,
    /// TTL check: the check turns critical unless updated within this duration.
    #[serde(
        default,
        rename = "TTL",
        alias = "ttl",
        deserialize_with = "go_duration_string"
    )]
    pub ttl: String,
    /// HTTP check URL.
    #[serde(default, rename = "HTTP", alias = "http")]
    pub http: String,
    /// HTTP method (default GET).
    #[serde(default, alias = "method")]
    pub method: String,
    /// HTTP request headers.
    #[serde(default, alias = "header", deserialize_with = "null_as_default")]
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP request body.
    #[serde(default, alias = "body")]
    pub body: String,
    /// Skip TLS verification for an HTTPS check.
    #[serde(default, rename = "TLSSkipVerify", alias = "tls_skip_verify")]
    pub tls_skip_verify: bool,
    /// TCP check address `host:port`.
    #[serde(default, rename = "TCP", alias = "tcp")]
    pub tcp: String,
    /// Alias check: mirror the health of this service ID.
    #[serde(default, alias = "alias_service")]
    pub alias_service: String,
    /// Alias check: the node of the aliased service (local when empty).
    #[serde(default, alias = "alias_node")]
    pub alias_node: String,
    /// Interval between runs of an HTTP or TCP check.
    #[serde(default, alias = "interval", deserialize_with = "go_duration_string")]
    pub interval: String,
    /// Timeout of one HTTP or TCP run.
    #[serde(default, alias = "timeout", deserialize_with = "go_duration_string")]
    pub timeout: String,
    /// Remove the service when the check stays critical this long.
    #[serde(
        default,
        alias = "deregister_critical_service_after",
        deserialize_with = "go_duration_string"
    )]
    pub deregister_critical_service_after: String,
}

impl CheckDefinition {
    /// The check's type name as Consul reports it (`ttl`, `http`, `tcp`, `alias`), or `""`.
    pub fn type_name(&self) -> &'static str {
        if !self.ttl.is_empty() {
            "ttl"
        } else if !self.http.is_empty() {
            "http"
        } else if !self.tcp.is_empty() {
            "tcp"
        } else if !self.alias_service.is_empty() {
            "alias"
        } else {
            ""
        }
    }
}

/// The node-level check the servers keep on every agent's node: passing while the agent is
/// alive and reachable, critical once it is not (Consul's Serf health check).
pub mod serf_check {
    /// Its check ID.
    pub const ID: &str = "serfHealth";
    /// Its name.
    pub const NAME: &str = "Serf Health Status";
    /// Its output while the agent is alive.
    pub const ALIVE: &str = "Agent alive and reachable";
    /// Its output once the agent has failed.
    pub const FAILED: &str = "Agent not live or unreachable";
}

/// A node's agent health as the servers record it in its [`serf_check`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MemberHealth {
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// The check's status (`passing` or `critical`).
    pub status: String,
}

/// A check as stored in the catalog and returned by health and agent endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Node the check runs on.
    #[serde(default)]
    pub node: String,
    /// Check ID, unique per node.
    #[serde(default, rename = "CheckID", alias = "ID")]
    pub check_id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Output of the last run.
    #[serde(default)]
    pub output: String,
    /// Service ID, or empty for a node-level check.
    #[serde(default, rename = "ServiceID")]
    pub service_id: String,
    /// Service name, or empty for a node-level check.
    #[serde(default)]
    pub service_name: String,
    /// Tags of the service.
    #[serde(default, deserialize_with = "null_as_default")]
    pub service_tags: Vec<String>,
    /// Check type (`ttl`, `http`, `tcp`, `alias`, or empty).
    #[serde(default)]
    pub r#type: String,
    /// Interval, for checks the agent runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    /// Timeout, for checks the agent runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    /// Raft index that created the row.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index that last changed the row.
    #[serde(default)]
    pub modify_index: u64,
}

impl HealthCheck {
    /// True when the parts a catalog sync compares are the same (indexes ignored).
    pub fn same_as(&self, other: &HealthCheck) -> bool {
        let mut a = self.clone();
        a.create_index = other.create_index;
        a.modify_index = other.modify_index;
        &a == other
    }
}

/// Accepts a Go duration either as a string (`"10s"`) or as integer nanoseconds.
fn go_duration_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
        Null(()),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => {
            if !s.is_empty() {
                parse_go_duration(&s).map_err(serde::de::Error::custom)?;
            }
            s
        }
        Either::N(ns) => format!("{ns}ns"),
        Either::Null(()) => String::new(),
    })
}

/// Parses a Go duration string (`"1h2m3.5s"`, `"300ms"`, `"0"`) into a [`Duration`].
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "-1s", "10x", "1..2s", "ms10"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn check_definition_accepts_both_id_spellings_and_ns_numbers() {
        let c: CheckDefinition =
            serde_json::from_str(r#"{"ID":"a","TTL":"15s","Interval":1000000000}"#).unwrap();
        assert_eq!(c.id, "a");
        assert_eq!(c.ttl, "15s");
        assert_eq!(
            parse_go_duration(&c.interval).unwrap(),
            Duration::from_secs(1)
        );
        let c: CheckDefinition = serde_json::from_str(r#"{"CheckID":"b"}"#).unwrap();
        assert_eq!(c.id, "b");
        assert!(serde_json::from_str::<CheckDefinition>(r#"{"TTL":"soon"}"#).is_err());
    }
}
