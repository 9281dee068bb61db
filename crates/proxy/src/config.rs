//! What a proxy does, as read from its registration on the agent (with the service's resolved
//! configuration merged in) or from command-line flags: Consul's built-in proxy settings and
//! defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Map, Value};
use trellis_api::{kind, AgentService};
use trellis_intentions::Protocol;

use crate::balance::Policy;
use crate::ProxyError;

/// Dialling the local application gives up after this long (`local_connect_timeout_ms`).
pub const DEFAULT_LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// An inbound mTLS handshake gives up after this long (`handshake_timeout_ms`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Dialling an upstream instance gives up after this long (`connect_timeout_ms`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The proxy's whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxySpec {
    /// The service the proxy stands for: its identity and the intentions' destination.
    pub service: String,
    /// Where the public (mTLS) listener binds; `None`: no inbound side.
    pub public_listener: Option<SocketAddr>,
    /// The local application inbound traffic goes to, as `host:port`.
    pub local_app: String,
    /// What the local application speaks: `tcp` is authorized per connection, the HTTP-based
    /// protocols per request.
    pub protocol: Protocol,
    /// Dialling the local application gives up after this long.
    pub local_connect_timeout: Duration,
    /// An inbound handshake gives up after this long.
    pub handshake_timeout: Duration,
    /// The upstreams, one local listener each.
    pub upstreams: Vec<UpstreamSpec>,
}

/// One upstream: a local listener that reaches instances of a destination service.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSpec {
    /// The destination service.
    pub name: String,
    /// Its datacenter; empty for the agent's own.
    pub datacenter: String,
    /// The local listener.
    pub bind: SocketAddr,
    /// What the destination speaks (`protocol` in the upstream's config, resolved from its
    /// `service-defaults` by the agent).
    pub protocol: Protocol,
    /// Dialling an instance gives up after this long.
    pub connect_timeout: Duration,
    /// How instances are chosen (`lb_policy`: `least_request` or `round_robin`).
    pub policy: Policy,
}

fn bad(msg: impl Into<String>) -> ProxyError {
    ProxyError::Config(msg.into())
}

/// A millisecond setting from an opaque config map (a number or a numeric string).
fn millis(
    config: &Map<String, Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, ProxyError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_millis)
            .ok_or_else(|| bad(format!("{key} must be a whole number of milliseconds"))),
        Some(Value::String(s)) => s.parse::<u64>().map(Duration::from_millis).map_err(|_| {
            bad(format!(
                "{key} must be a whole number of milliseconds, not {s:?}"
            ))
        }),
        Some(other) => Err(bad(format!("{key} must be a number, not {other}"))),
    }
}

fn protocol(config: &Map<String, Value>) -> Result<Protocol, ProxyError> {
    match config.get("protocol").and_then(Value::as_str) {
        None | Some("") => Ok(Protocol::Tcp),
        Some(p) => Protocol::parse(p).ok_or_else(|| bad(format!("unknown protocol {p:?}"))),
    }
}

fn ip(s: &str, what: &str) -> Result<IpAddr, ProxyError> {
    s.parse()
        .map_err(|_| bad(format!("{what} {s:?} is not an IP address")))
}

impl ProxySpec {
    /// The configuration of the `connect-proxy` registration `svc`, read the way Consul's
    /// built-in proxy reads it (see the module's defaults).
    pub fn from_registration(svc: &AgentService) -> Result<ProxySpec, ProxyError> {
        if svc.kind != kind::CONNECT_PROXY {
            return Err(bad(format!(
                "service {:?} is not a connect-proxy (kind {:?})",
                svc.id, svc.kind
            )));
        }
        let proxy = svc
            .proxy
            .as_ref()
            .ok_or_else(|| bad(format!("service {:?} has no Proxy block", svc.id)))?;
        if proxy.destination_service_name.is_empty() {
            return Err(bad(format!(
                "proxy {:?} has no DestinationServiceName",
                svc.id
            )));
        }
        let config: Map<String, Value> = proxy
            .config
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let bind_ip = match config.get("bind_address").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => ip(a, "bind_address")?,
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let bind_port = match config.get("bind_port") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("bind_port must be a port number"))?,
            _ => svc.port,
        };
        if bind_port == 0 {
            return Err(bad(format!("proxy {:?} has no port to listen on", svc.id)));
        }
        let local_app = match config.get("local_service_address").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => {
                let host = if proxy.local_service_address.is_empty() {
                    "127.0.0.1"
                } else {
                    proxy.local_service_address.as_str()
                };
                if proxy.local_service_port == 0 {
                    return Err(bad(format!("proxy {:?} has no LocalServicePort", svc.id)));
                }
                format!("{host}:{}", proxy.local_service_port)
            }
        };
        let mut upstreams = Vec::new();
        for u in &proxy.upstreams {
            if !(u.destination_type.is_empty() || u.destination_type == "service") {
                tracing::warn!(upstream = %u.destination_name, kind = %u.destination_type, "only service upstreams are proxied; skipping");
                continue;
            }
            let ucfg: Map<String, Value> =
                u.config.clone().unwrap_or_default().into_iter().collect();
            let addr = if u.local_bind_address.is_empty() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip(&u.local_bind_address, "LocalBindAddress")?
            };
            if u.local_bind_port == 0 {
                return Err(bad(format!(
                    "upstream {:?} has no LocalBindPort",
                    u.destination_name
                )));
            }
            let policy = match ucfg.get("lb_policy").and_then(Value::as_str) {
                None => Policy::default(),
                Some(p) => {
                    Policy::parse(p).ok_or_else(|| bad(format!("unknown lb_policy {p:?}")))?
                }
            };
            upstreams.push(UpstreamSpec {
                name: u.destination_name.clone(),
                datacenter: u.datacenter.clone(),
                bind: SocketAddr::new(addr, u.local_bind_port),
                protocol: protocol(&ucfg)?,
                connect_timeout: millis(&ucfg, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT)?,
                policy,
            });
        }
        Ok(ProxySpec {
            service: proxy.destination_service_name.clone(),
            public_listener: Some(SocketAddr::new(bind_ip, bind_port)),
            local_app,
            protocol: protocol(&config)?,
            local_connect_timeout: millis(
                &config,
                "local_connect_timeout_ms",
                DEFAULT_LOCAL_CONNECT_TIMEOUT,
            )?,
            handshake_timeout: millis(&config, "handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT)?,
            upstreams,
        })
    }
}

/// Parses a `-upstream` flag: `name:port` or `name:host:port` (Consul's `name.service` suffix
/// accepted; prepared queries are not proxied yet).
pub fn parse_upstream_flag(flag: &str) -> Result<UpstreamSpec, ProxyError> {
    let (name, addr) = flag.split_once(':').ok_or_else(|| {
        bad(format!(
            "upstream {flag:?} must be NAME:PORT or NAME:HOST:PORT"
        ))
    })?;
    let name = name.strip_suffix(".service").unwrap_or(name);
    if name.ends_with(".query") {
        return Err(bad(format!(
            "upstream {flag:?}: prepared-query upstreams are not supported"
        )));
    }
    if name.is_empty() {
        return Err(bad(format!("upstream {flag:?} has no service name")));
    }
    let bind = match addr.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => addr.parse::<SocketAddr>().map_err(|_| {
            bad(format!(
                "upstream {flag:?}: {addr:?} is not a port or host:port"
            ))
        })?,
    };
    if bind.port() == 0 {
        return Err(bad(format!("upstream {flag:?} needs a port")));
    }
    Ok(UpstreamSpec {
        name: name.to_string(),
        datacenter: String::new(),
        bind,
        protocol: Protocol::Tcp,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        policy: Policy::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(v: Value) -> AgentService {
        serde_json::from_value(v).expect("a service")
    }

    #[test]
    fn a_sidecar_registration_with_consuls_defaults() {
        let svc = proxy(json!({
            "ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
            "Port": 21000,
            "Proxy": {
                "DestinationServiceName": "web", "DestinationServiceID": "web",
                "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080,
                "Config": {"protocol": "http", "handshake_timeout_ms": 2500},
                "Upstreams": [
                    {"DestinationName": "db", "LocalBindPort": 9191, "Config": {"protocol": "grpc", "lb_policy": "round_robin"}},
                    {"DestinationName": "cache", "LocalBindAddress": "127.0.0.2", "LocalBindPort": 9192, "Datacenter": "dc2"},
                    {"DestinationName": "q", "DestinationType": "prepared_query", "LocalBindPort": 9193}
                ]
            }
        }));
        let spec = ProxySpec::from_registration(&svc).unwrap();
        assert_eq!(spec.service, "web");
        assert_eq!(spec.public_listener, Some("0.0.0.0:21000".parse().unwrap()));
        assert_eq!(spec.local_app, "127.0.0.1:8080");
        assert_eq!(spec.protocol, Protocol::Http);
        assert_eq!(spec.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(spec.local_connect_timeout, DEFAULT_LOCAL_CONNECT_TIMEOUT);
        assert_eq!(spec.upstreams.len(), 2, "the prepared query is skipped");
        let db = &spec.upstreams[0];
        assert_eq!(
            (db.name.as_str(), db.protocol, db.policy),
            ("db", Protocol::Grpc, Policy::RoundRobin)
        );
        assert_eq!(db.bind, "127.0.0.1:9191".parse().unwrap());
        let cache = &spec.upstreams[1];
        assert_eq!(
            (cache.datacenter.as_str(), cache.protocol),
            ("dc2", Protocol::Tcp)
        );
        assert_eq!(cache.bind, "127.0.0.2:9192".parse().unwrap());
    }

    #[test]
    fn bad_registrations_are_named() {
        let plain = proxy(json!({"ID": "web", "Service": "web", "Port": 80}));
        assert!(ProxySpec::from_registration(&plain)
            .unwrap_err()
            .to_string()
            .contains("not a connect-proxy"));
        let bad_proto = proxy(
            json!({"ID": "p", "Service": "p", "Kind": "connect-proxy", "Port": 1,
            "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 80, "Config": {"protocol": "smtp"}}}),
        );
        assert!(ProxySpec::from_registration(&bad_proto)
            .unwrap_err()
            .to_string()
            .contains("smtp"));
        let bad_timeout = proxy(
            json!({"ID": "p", "Service": "p", "Kind": "connect-proxy", "Port": 1,
            "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 80, "Config": {"local_connect_timeout_ms": "soon"}}}),
        );
        assert!(ProxySpec::from_registration(&bad_timeout).is_err());
        let no_port = proxy(
            json!({"ID": "p", "Service": "p", "Kind": "connect-proxy", "Port": 1,
            "Proxy": {"DestinationServiceName": "web"}}),
        );
        assert!(ProxySpec::from_registration(&no_port)
            .unwrap_err()
            .to_string()
            .contains("LocalServicePort"));
    }

    #[test]
    fn upstream_flags() {
        let u = parse_upstream_flag("db:9191").unwrap();
        assert_eq!(
            (u.name.as_str(), u.bind),
            ("db", "127.0.0.1:9191".parse().unwrap())
        );
        let u = parse_upstream_flag("db.service:0.0.0.0:7000").unwrap();
        assert_eq!(
            (u.name.as_str(), u.bind),
            ("db", "0.0.0.0:7000".parse().unwrap())
        );
        for bad in ["db", ":9191", "db:nope", "db:0", "q.query:9000"] {
            assert!(parse_upstream_flag(bad).is_err(), "{bad}");
        }
    }
}
