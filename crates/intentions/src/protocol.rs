//! A destination's protocol, which decides whether its L7 intentions can be enforced.
//!
//! Consul's rule: the service's `service-defaults` entry's `Protocol` if set, else the
//! `proxy-defaults` entry's (`global`) `Config.protocol`, else `tcp`. Only an HTTP-based
//! protocol lets a proxy look at requests; with `tcp` an L7 intention can only deny (see
//! [`Reason::L7AtL4`](crate::Reason::L7AtL4)).

use std::fmt;

use trellis_api::{ProxyDefaults, ServiceDefaults};

/// The protocol a service speaks, as far as intentions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// Plain TCP (Consul's default): connections are authorized, requests are not seen.
    #[default]
    Tcp,
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// gRPC (over HTTP/2).
    Grpc,
}

impl Protocol {
    /// Whether requests can be inspected, so L7 intentions apply: `http`, `http2`, `grpc`.
    pub fn is_l7(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// Reads a protocol name (`tcp`, `http`, `http2`, `grpc`, any case); `None` for anything
    /// else, including `""`.
    pub fn parse(s: &str) -> Option<Protocol> {
        [
            Protocol::Tcp,
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// The name as Consul writes it (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol of a service, from its `service-defaults` entry and the `proxy-defaults`
/// entry (Consul has one, named `global`), either of which may be missing.
///
/// The setting is [`trellis_api::configured_protocol`], the rule the servers' resolved service
/// configuration uses too: `service_defaults.Protocol` when set and non-empty, otherwise
/// `proxy_defaults.Config.protocol` (`Protocol` accepted too, the lower-case key first). No
/// setting is [`Protocol::Tcp`]; so is a set but unknown value, without falling through:
/// writes validate the value, so this only guards against old or foreign data, and under
/// `Tcp` an L7 intention never allows anything.
pub fn resolve_protocol(
    service_defaults: Option<&ServiceDefaults>,
    proxy_defaults: Option<&ProxyDefaults>,
) -> Protocol {
    trellis_api::configured_protocol(service_defaults, proxy_defaults)
        .and_then(|p| Protocol::parse(&p))
        .unwrap_or(Protocol::Tcp)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use trellis_api::{ConfigEntry, ProxyDefaults, ServiceDefaults};

    use super::Protocol;

    fn body(v: &Value) -> ConfigEntry {
        ConfigEntry {
            body: v.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// [`super::resolve_protocol`] over entry bodies given as JSON.
    fn resolve_protocol(service: Option<&Value>, proxy: Option<&Value>) -> Protocol {
        let service: Option<ServiceDefaults> = service.map(|v| body(v).service_defaults());
        let proxy: Option<ProxyDefaults> = proxy.map(|v| body(v).proxy_defaults());
        super::resolve_protocol(service.as_ref(), proxy.as_ref())
    }

    #[test]
    fn names_round_trip_and_l7_is_http_based() {
        for p in [
            Protocol::Tcp,
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
        ] {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(p.is_l7(), p != Protocol::Tcp);
        }
        assert_eq!(Protocol::parse("HTTP2"), Some(Protocol::Http2));
        assert_eq!(Protocol::parse("gRPC"), Some(Protocol::Grpc));
        assert_eq!(Protocol::parse(""), None);
        assert_eq!(Protocol::parse("smtp"), None);
        assert_eq!(Protocol::parse(" http"), None);
        assert_eq!(Protocol::default(), Protocol::Tcp);
    }

    #[test]
    fn nothing_configured_is_tcp() {
        assert_eq!(resolve_protocol(None, None), Protocol::Tcp);
        assert_eq!(
            resolve_protocol(
                Some(&json!({"Name": "web"})),
                Some(&json!({"Name": "global"}))
            ),
            Protocol::Tcp
        );
        assert_eq!(
            resolve_protocol(None, Some(&json!({"Config": {"connect_timeout_ms": 5000}}))),
            Protocol::Tcp
        );
    }

    #[test]
    fn service_defaults_wins() {
        let proxy = json!({"Config": {"protocol": "grpc"}});
        assert_eq!(
            resolve_protocol(Some(&json!({"Protocol": "http"})), Some(&proxy)),
            Protocol::Http
        );
        // Explicit tcp on the service overrides an L7 global default.
        assert_eq!(
            resolve_protocol(Some(&json!({"Protocol": "tcp"})), Some(&proxy)),
            Protocol::Tcp
        );
        assert_eq!(
            resolve_protocol(Some(&json!({"Protocol": "http2"})), None),
            Protocol::Http2
        );
    }

    #[test]
    fn empty_or_null_service_protocol_falls_through_to_proxy_defaults() {
        let proxy = json!({"Config": {"protocol": "http"}});
        for service in [
            json!({}),
            json!({"Protocol": ""}),
            json!({"Protocol": null}),
        ] {
            assert_eq!(
                resolve_protocol(Some(&service), Some(&proxy)),
                Protocol::Http,
                "{service}"
            );
        }
        assert_eq!(resolve_protocol(None, Some(&proxy)), Protocol::Http);
    }

    #[test]
    fn proxy_defaults_config_key_forms() {
        let resolve = |config| resolve_protocol(None, Some(&json!({"Config": config})));
        assert_eq!(resolve(json!({"protocol": "grpc"})), Protocol::Grpc);
        assert_eq!(resolve(json!({"Protocol": "http2"})), Protocol::Http2);
        assert_eq!(
            resolve(json!({"protocol": "http", "Protocol": "grpc"})),
            Protocol::Http,
            "lower-case key first"
        );
        assert_eq!(
            resolve(json!({"protocol": "", "Protocol": "grpc"})),
            Protocol::Grpc,
            "an empty lower-case key is not set"
        );
        assert_eq!(resolve(json!({"protocol": "HTTP"})), Protocol::Http);
        // A top-level Protocol on proxy-defaults is not where Consul reads it.
        assert_eq!(
            resolve_protocol(None, Some(&json!({"Protocol": "http"}))),
            Protocol::Tcp
        );
    }

    #[test]
    fn unknown_protocols_resolve_to_tcp_without_falling_through() {
        let proxy = json!({"Config": {"protocol": "http"}});
        assert_eq!(
            resolve_protocol(Some(&json!({"Protocol": "smtp"})), Some(&proxy)),
            Protocol::Tcp
        );
        assert_eq!(
            resolve_protocol(Some(&json!({"Protocol": 7})), Some(&proxy)),
            Protocol::Tcp
        );
        assert_eq!(
            resolve_protocol(None, Some(&json!({"Config": {"protocol": "websocket"}}))),
            Protocol::Tcp
        );
    }
}
