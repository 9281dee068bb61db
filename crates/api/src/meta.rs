//! Consul's rules for service and node `Meta` (`structs.ValidateServiceMetadata`,
//! `ValidateNodeMetadata`), with its messages: at most 64 pairs, keys of `[A-Za-z0-9_-]` up to
//! 128 bytes, values up to 512 bytes, and the `consul-` key prefix reserved for Consul's own use.

use std::collections::BTreeMap;

use crate::kind;

/// Most key/value pairs one `Meta` may hold (Consul's `metaMaxKeyPairs`).
pub const META_MAX_KEY_PAIRS: usize = 64;
/// Longest key, in bytes (Consul's `metaKeyMaxLength`).
pub const META_KEY_MAX_LENGTH: usize = 128;
/// Longest value, in bytes (Consul's `metaValueMaxLength`).
pub const META_VALUE_MAX_LENGTH: usize = 512;
/// The key prefix reserved for Consul's internal use (`MetaKeyReservedPrefix`).
pub const META_KEY_RESERVED_PREFIX: &str = "consul-";
/// The mesh gateway key marking a gateway usable for WAN federation, the one reserved key a
/// registration may set (on a mesh gateway).
pub const META_WAN_FEDERATION_KEY: &str = "consul-wan-federation";

/// Why a `Meta` map was refused; the text is Consul's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Too many pairs. Consul says "Node metadata" for services too.
    #[error("Node metadata cannot contain more than {META_MAX_KEY_PAIRS} key/value pairs")]
    TooManyPairs,
    /// One pair broke a rule.
    #[error("Couldn't load metadata pair ('{key}', '{value}'): {reason}")]
    Pair {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// The rule it broke.
        reason: MetaPairError,
    },
}

/// The rule a key/value pair broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetaPairError {
    /// An empty key.
    #[error("Key cannot be blank")]
    BlankKey,
    /// A key with a character outside `[A-Za-z0-9_-]`.
    #[error("Key contains invalid characters")]
    InvalidKey,
    /// A key over [`META_KEY_MAX_LENGTH`] bytes.
    #[error("Key is too long (limit: {META_KEY_MAX_LENGTH} characters)")]
    KeyTooLong,
    /// A key with the reserved prefix.
    #[error("Key prefix '{META_KEY_RESERVED_PREFIX}' is reserved for internal use")]
    ReservedPrefix,
    /// A value over [`META_VALUE_MAX_LENGTH`] bytes.
    #[error("Value is too long (limit: {META_VALUE_MAX_LENGTH} characters)")]
    ValueTooLong,
}

/// Checks a node's `Meta`. `allow_consul_prefix` admits keys with the reserved prefix (Consul
/// allows them where Consul itself writes them).
pub fn validate_node_meta(
    meta: &BTreeMap<String, String>,
    allow_consul_prefix: bool,
) -> Result<(), MetaError> {
    validate(meta, allow_consul_prefix, &[])
}

/// Checks a service's `Meta`; a mesh gateway may also carry
/// [`META_WAN_FEDERATION_KEY`].
pub fn validate_service_meta(
    service_kind: &str,
    meta: &BTreeMap<String, String>,
    allow_consul_prefix: bool,
) -> Result<(), MetaError> {
    let allowed: &[&str] = if service_kind == kind::MESH_GATEWAY {
        &[META_WAN_FEDERATION_KEY]
    } else {
        &[]
    };
    validate(meta, allow_consul_prefix, allowed)
}

fn validate(
    meta: &BTreeMap<String, String>,
    allow_consul_prefix: bool,
    allowed_consul_keys: &[&str],
) -> Result<(), MetaError> {
    if meta.len() > META_MAX_KEY_PAIRS {
        return Err(MetaError::TooManyPairs);
    }
    for (key, value) in meta {
        pair(key, value, allow_consul_prefix, allowed_consul_keys).map_err(|reason| {
            MetaError::Pair {
                key: key.clone(),
                value: value.clone(),
                reason,
            }
        })?;
    }
    Ok(())
}

/// Consul's `validateMetaPair`, its checks in its order.
fn pair(
    key: &str,
    value: &str,
    allow_consul_prefix: bool,
    allowed_consul_keys: &[&str],
) -> Result<(), MetaPairError> {
    if key.is_empty() {
        return Err(MetaPairError::BlankKey);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(MetaPairError::InvalidKey);
    }
    if key.len() > META_KEY_MAX_LENGTH {
        return Err(MetaPairError::KeyTooLong);
    }
    if key.starts_with(META_KEY_RESERVED_PREFIX)
        && !allow_consul_prefix
        && !allowed_consul_keys.contains(&key)
    {
        return Err(MetaPairError::ReservedPrefix);
    }
    if value.len() > META_VALUE_MAX_LENGTH {
        return Err(MetaPairError::ValueTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn consuls_limits_and_messages() {
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            validate_service_meta("", &many, false)
                .unwrap_err()
                .to_string(),
            "Node metadata cannot contain more than 64 key/value pairs"
        );
        let mut at_limit = many.clone();
        at_limit.remove("k0");
        assert!(validate_node_meta(&at_limit, false).is_ok());

        let long_key = "k".repeat(129);
        let long_value = "v".repeat(513);
        for (meta, want) in [
            (
                m(&[("", "v")]),
                "Couldn't load metadata pair ('', 'v'): Key cannot be blank",
            ),
            (
                m(&[("a.b", "v")]),
                "Couldn't load metadata pair ('a.b', 'v'): Key contains invalid characters",
            ),
            (
                m(&[("ü", "v")]),
                "Couldn't load metadata pair ('ü', 'v'): Key contains invalid characters",
            ),
            (
                m(&[(&long_key, "v")]),
                &format!(
                    "Couldn't load metadata pair ('{long_key}', 'v'): \
                     Key is too long (limit: 128 characters)"
                ),
            ),
            (
                m(&[("consul-x", "v")]),
                "Couldn't load metadata pair ('consul-x', 'v'): \
                 Key prefix 'consul-' is reserved for internal use",
            ),
            (
                m(&[("k", &long_value)]),
                &format!(
                    "Couldn't load metadata pair ('k', '{long_value}'): \
                     Value is too long (limit: 512 characters)"
                ),
            ),
        ] {
            assert_eq!(
                validate_service_meta("", &meta, false)
                    .unwrap_err()
                    .to_string(),
                want
            );
        }
        // The limits themselves pass.
        let edge = m(&[(&"K_-9".repeat(32), &"v".repeat(512))]);
        assert!(validate_service_meta("", &edge, false).is_ok());
    }

    #[test]
    fn reserved_prefix_exceptions() {
        let wan = m(&[("consul-wan-federation", "1")]);
        assert!(validate_service_meta(kind::MESH_GATEWAY, &wan, false).is_ok());
        assert!(validate_service_meta("", &wan, false).is_err());
        assert!(validate_node_meta(&wan, false).is_err());
        let version = m(&[("consul-version", "1.20")]);
        assert!(validate_node_meta(&version, true).is_ok());
        assert!(validate_service_meta("", &version, true).is_ok());
        // Sizes and characters hold even where the prefix is allowed.
        assert!(validate_node_meta(&m(&[("consul-a.b", "1")]), true).is_err());
    }
}
