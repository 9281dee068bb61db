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

/// What the servers resolve from config entries for one service and its upstreams: Consul's
/// `ServiceConfigResponse` (the `ResolvedServiceConfig` cache type). The agent merges it under
/// a proxy's own registration, which wins wherever both set something.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceConfigResponse {
    /// Proxy configuration: `proxy-defaults`' `Config`, with `protocol` set to what
    /// [`crate::configured_protocol`] gives the service.
    #[serde(default)]
    pub proxy_config: Map<String, Value>,
    /// Per-upstream configuration (`protocol`: [`crate::configured_protocol`] of the
    /// upstream), in request order.
    #[serde(default)]
    pub upstream_configs: Vec<UpstreamConfig>,
    /// Mesh gateway mode (service-defaults, else proxy-defaults).
    #[serde(default)]
    pub mesh_gateway: crate::MeshGatewayConfig,
    /// Expose configuration (service-defaults, else proxy-defaults), kept opaque.
    #[serde(default)]
    pub expose: Map<String, Value>,
    /// Proxy mode (service-defaults, else proxy-defaults).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// One upstream's resolved configuration in a [`ServiceConfigResponse`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpstreamConfig {
    /// The upstream's destination service name.
    pub upstream: String,
    /// Its configuration (`protocol`, ...).
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl ServiceConfigResponse {
    /// Resolves the configuration of `service` and its `upstreams` from its `service-defaults`
    /// entry, the `proxy-defaults` entry, and a lookup of any other service's defaults. A
    /// pure function of the entries given.
    pub fn resolve<'a>(
        service_defaults: Option<&'a ConfigEntry>,
        proxy_defaults: Option<&'a ConfigEntry>,
        upstreams: &[String],
        defaults_of: impl Fn(&str) -> Option<&'a ConfigEntry>,
    ) -> ServiceConfigResponse {
        let mut out = ServiceConfigResponse::default();
        let service = service_defaults.map(ConfigEntry::service_defaults);
        let proxy = proxy_defaults.map(ConfigEntry::proxy_defaults);
        if let Some(config) = proxy.as_ref().and_then(|p| p.config.get()) {
            out.proxy_config = config.clone();
        }
        if let Some(protocol) = crate::configured_protocol(service.as_ref(), proxy.as_ref()) {
            out.proxy_config
                .insert("protocol".into(), Value::String(protocol));
        }
        let sides = [
            service
                .as_ref()
                .map(|s| (&s.mode, &s.mesh_gateway, &s.expose)),
            proxy
                .as_ref()
                .map(|p| (&p.mode, &p.mesh_gateway, &p.expose)),
        ];
        for (mode, mesh_gateway, expose) in sides.into_iter().flatten() {
            if out.mode.is_empty() {
                out.mode = mode.text().to_string();
            }
            if out.mesh_gateway.mode.is_empty() {
                if let Some(mg) = mesh_gateway.get() {
                    out.mesh_gateway.mode = mg.mode.text().to_string();
                }
            }
            if out.expose.is_empty() {
                if let Some(expose) = expose.get() {
                    out.expose = expose.clone();
                }
            }
        }
        for name in upstreams {
            let own = defaults_of(name).map(ConfigEntry::service_defaults);
            let mut config = Map::new();
            if let Some(protocol) = crate::configured_protocol(own.as_ref(), proxy.as_ref()) {
                config.insert("protocol".into(), Value::String(protocol));
            }
            out.upstream_configs.push(UpstreamConfig {
                upstream: name.clone(),
                config,
            });
        }
        out
    }

    /// Merges this resolved configuration under a proxy's own: every key the proxy's
    /// registration sets is kept, the rest is filled from here (Consul's
    /// `MergeServiceConfig`).
    pub fn merge_into(&self, proxy: &mut crate::ConnectProxyConfig) {
        if !self.proxy_config.is_empty() {
            let config = proxy.config.get_or_insert_with(Default::default);
            for (k, v) in &self.proxy_config {
                config.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if proxy.mode.is_empty() {
            proxy.mode.clone_from(&self.mode);
        }
        if proxy.mesh_gateway.mode.is_empty() {
            proxy.mesh_gateway.mode.clone_from(&self.mesh_gateway.mode);
        }
        if proxy.expose.is_empty() {
            proxy.expose.clone_from(&self.expose);
        }
        for upstream in &mut proxy.upstreams {
            let is_service =
                upstream.destination_type.is_empty() || upstream.destination_type == "service";
            let resolved = self
                .upstream_configs
                .iter()
                .find(|u| u.upstream == upstream.destination_name);
            let Some(resolved) = resolved.filter(|_| is_service) else {
                continue;
            };
            if resolved.config.is_empty() {
                continue;
            }
            let config = upstream.config.get_or_insert_with(Default::default);
            for (k, v) in &resolved.config {
                config.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, name: &str, body: Value) -> ConfigEntry {
        ConfigEntry {
            kind: kind.into(),
            name: name.into(),
            body: body.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_protocols_modes_and_gateways_by_precedence() {
        let web = entry(
            config_kind::SERVICE_DEFAULTS,
            "web",
            json!({"Protocol": "http", "MeshGateway": {"Mode": "local"}}),
        );
        let db = entry(
            config_kind::SERVICE_DEFAULTS,
            "db",
            json!({"Protocol": "grpc"}),
        );
        let global = entry(
            config_kind::PROXY_DEFAULTS,
            "global",
            json!({"Config": {"protocol": "http2", "local_connect_timeout_ms": 500},
                   "Mode": "direct", "MeshGateway": {"Mode": "remote"}}),
        );
        let lookup = |name: &str| match name {
            "db" => Some(&db),
            "web" => Some(&web),
            _ => None,
        };
        let r = ServiceConfigResponse::resolve(
            Some(&web),
            Some(&global),
            &["db".into(), "cache".into()],
            lookup,
        );
        assert_eq!(r.proxy_config["protocol"], "http", "service-defaults wins");
        assert_eq!(r.proxy_config["local_connect_timeout_ms"], 500);
        assert_eq!(r.mode, "direct");
        assert_eq!(r.mesh_gateway.mode, "local");
        assert_eq!(r.upstream_configs.len(), 2);
        assert_eq!(r.upstream_configs[0].config["protocol"], "grpc");
        assert_eq!(
            r.upstream_configs[1].config["protocol"], "http2",
            "an upstream without defaults takes the global protocol"
        );

        let bare = ServiceConfigResponse::resolve(None, None, &["db".into()], |_| None);
        assert!(bare.proxy_config.is_empty());
        assert!(bare.upstream_configs[0].config.is_empty());
    }

    #[test]
    fn an_empty_service_protocol_falls_through_as_the_intentions_engine_reads_it() {
        let web = entry(
            config_kind::SERVICE_DEFAULTS,
            "web",
            json!({"Protocol": ""}),
        );
        let global = entry(
            config_kind::PROXY_DEFAULTS,
            "global",
            json!({"Config": {"Protocol": "grpc"}}),
        );
        let r = ServiceConfigResponse::resolve(Some(&web), Some(&global), &["web".into()], |n| {
            (n == "web").then_some(&web)
        });
        assert_eq!(r.proxy_config["protocol"], "grpc");
        assert_eq!(r.upstream_configs[0].config["protocol"], "grpc");
    }

    #[test]
    fn the_registration_wins_over_what_is_resolved() {
        let resolved = ServiceConfigResponse {
            proxy_config: json!({"protocol": "http", "extra": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            upstream_configs: vec![UpstreamConfig {
                upstream: "db".into(),
                config: json!({"protocol": "grpc"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            }],
            mode: "transparent".into(),
            ..Default::default()
        };
        let mut proxy: crate::ConnectProxyConfig = serde_json::from_value(json!({
            "DestinationServiceName": "web",
            "Config": {"protocol": "tcp"},
            "Upstreams": [
                {"DestinationName": "db", "LocalBindPort": 9191},
                {"DestinationName": "q", "DestinationType": "prepared_query", "LocalBindPort": 9192}
            ]
        }))
        .expect("a proxy");
        resolved.merge_into(&mut proxy);
        let config = proxy.config.as_ref().expect("config");
        assert_eq!(
            config["protocol"], "tcp",
            "the registration's own value stays"
        );
        assert_eq!(config["extra"], 1);
        assert_eq!(proxy.mode, "transparent");
        assert_eq!(
            proxy.upstreams[0].config.as_ref().expect("upstream config")["protocol"],
            "grpc"
        );
        assert!(
            proxy.upstreams[1].config.is_none(),
            "prepared queries are not services"
        );
    }
}
