//! Case-insensitive JSON keys, as Consul accepts them.
//!
//! Consul decodes request bodies with Go's case-insensitive field matching and also accepts
//! snake_case, so clients send `"name"`, `"Name"`, `"service_id"` or `"ServiceID"` alike
//! (py-consul sends lower-case keys for agent registrations). [`canonicalize_keys`] rewrites
//! every key it recognises to Consul's spelling before typed decoding. Keys inside opaque maps
//! (`Meta`, `Config`, `Header`, ...) are user data and are left alone.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// Every field name of the request bodies Trellis decodes, in Consul's spelling.
const CANONICAL: &[&str] = &[
    // services and agents
    "ID",
    "Name",
    "Kind",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Meta",
    "Port",
    "SocketPath",
    "Weights",
    "Passing",
    "Warning",
    "EnableTagOverride",
    "Proxy",
    "Connect",
    "Native",
    "SidecarService",
    "Check",
    "Checks",
    "Service",
    "Namespace",
    "Partition",
    "Token",
    "Datacenter",
    // proxies
    "DestinationServiceName",
    "DestinationServiceID",
    "LocalServiceAddress",
    "LocalServicePort",
    "LocalServiceSocketPath",
    "Mode",
    "TransparentProxy",
    "OutboundListenerPort",
    "DialedDirectly",
    "Config",
    "Upstreams",
    "DestinationType",
    "DestinationNamespace",
    "DestinationPartition",
    "DestinationPeer",
    "DestinationName",
    "LocalBindAddress",
    "LocalBindPort",
    "LocalBindSocketPath",
    "LocalBindSocketMode",
    "MeshGateway",
    "Expose",
    "Paths",
    "ListenerPort",
    "Path",
    "LocalPathPort",
    "Protocol",
    "AccessLogs",
    // checks
    "CheckID",
    "Notes",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Status",
    "Output",
    "TTL",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "TLSServerName",
    "TCP",
    "AliasService",
    "AliasNode",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "Type",
    "Definition",
    // catalog
    "Node",
    "NodeMeta",
    "SkipNodeUpdate",
    // config entries
    "Sources",
    "Action",
    "Permissions",
    "Precedence",
    "Description",
    "PathExact",
    "PathPrefix",
    "PathRegex",
    "Methods",
    "Present",
    "Exact",
    "Prefix",
    "Suffix",
    "Regex",
    "Invert",
    "Peer",
    "SamenessGroup",
    "LegacyID",
    "LegacyMeta",
    "LegacyCreateTime",
    "LegacyUpdateTime",
    "JWT",
    "ExternalSNI",
    "MaxInboundConnections",
    "LocalConnectTimeoutMs",
    "LocalRequestTimeoutMs",
    "BalanceInboundConnections",
    "UpstreamConfig",
    "Defaults",
    "Overrides",
    "Destination",
    "Addresses",
    "MutualTLSMode",
    "FailoverPolicy",
    "PrioritizeByLocality",
    "Output",
    // legacy intentions and authorization
    "SourceNS",
    "SourceName",
    "DestinationNS",
    "SourcePartition",
    "SourcePeer",
    "SourceType",
    "CreatedAt",
    "UpdatedAt",
    "Target",
    "ClientCertURI",
    "ClientCertSerial",
    // ACLs
    "AccessorID",
    "SecretID",
    "Policies",
    "Roles",
    "ServiceIdentities",
    "NodeIdentities",
    "NodeName",
    "TemplatedPolicies",
    "TemplateName",
    "TemplateVariables",
    "Local",
    "AuthMethod",
    "ExpirationTime",
    "ExpirationTTL",
    "Rules",
    "Datacenters",
    "BootstrapSecret",
    "BearerToken",
    "Selector",
    "BindType",
    "BindName",
    "DisplayName",
    "MaxTokenTTL",
    "TokenLocality",
];

/// Keys whose value is a map of user-chosen keys: its keys stay as given.
const OPAQUE: &[&str] = &[
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "Config",
    "Header",
    "LegacyMeta",
    "TaggedAddresses",
];

fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn table() -> &'static HashMap<String, &'static str> {
    static TABLE: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| CANONICAL.iter().map(|k| (fold(k), *k)).collect())
}

/// Rewrites recognised object keys, at every depth, to Consul's spelling. A key that is
/// already canonical wins over a differently spelled duplicate.
pub fn canonicalize_keys(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(canonicalize_keys),
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut later = Vec::new();
            for (k, mut val) in old {
                let canonical = table().get(&fold(&k)).copied();
                let name = canonical.unwrap_or(k.as_str()).to_string();
                if OPAQUE.contains(&name.as_str()) {
                    // Keep the user's keys; still canonicalise structured values (the
                    // `{Address, Port}` of a service's tagged address, for one).
                    if name == "TaggedAddresses" {
                        if let Value::Object(inner) = &mut val {
                            inner.values_mut().for_each(canonicalize_keys);
                        }
                    }
                    // An L7 permission's `Header` is a list of matchers, not a map.
                    if name == "Header" && val.is_array() {
                        canonicalize_keys(&mut val);
                    }
                } else {
                    canonicalize_keys(&mut val);
                }
                if canonical.is_some_and(|c| c == k) {
                    map.insert(name, val);
                } else {
                    later.push((name, val));
                }
            }
            for (name, val) in later {
                map.entry(name).or_insert(val);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lower_and_snake_case_become_consul_spelling_but_user_keys_stay() {
        let mut v = json!({
            "name": "web", "id": "web1", "port": 80, "serviceid": "x",
            "meta": {"version": "1", "name": "keep"},
            "connect": {"sidecar_service": {"proxy": {"config": {"protocol": "http"},
                "upstreams": [{"destination_name": "db", "local_bind_port": 9000}]}}},
            "checks": [{"ttl": "10s", "tls_skip_verify": true}],
            "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}}
        });
        canonicalize_keys(&mut v);
        assert_eq!(v["Name"], "web");
        assert_eq!(v["ID"], "web1");
        assert_eq!(v["ServiceID"], "x");
        assert_eq!(v["Meta"], json!({"version": "1", "name": "keep"}));
        let proxy = &v["Connect"]["SidecarService"]["Proxy"];
        assert_eq!(proxy["Config"], json!({"protocol": "http"}));
        assert_eq!(proxy["Upstreams"][0]["DestinationName"], "db");
        assert_eq!(proxy["Upstreams"][0]["LocalBindPort"], 9000);
        assert_eq!(v["Checks"][0]["TTL"], "10s");
        assert_eq!(v["Checks"][0]["TLSSkipVerify"], true);
        assert_eq!(v["TaggedAddresses"]["lan"]["Address"], "10.0.0.1");
    }

    #[test]
    fn canonical_key_wins_over_a_variant() {
        let mut v = json!({"name": "a", "Name": "b"});
        canonicalize_keys(&mut v);
        assert_eq!(v, json!({"Name": "b"}));
    }
}
