//! Service definitions as registered with an agent and as returned by agent endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CheckDefinition;

/// Service kinds Consul knows; the empty string is a typical (non-proxy) service.
pub mod kind {
    /// A sidecar or standalone Connect proxy.
    pub const CONNECT_PROXY: &str = "connect-proxy";
    /// A mesh gateway.
    pub const MESH_GATEWAY: &str = "mesh-gateway";
    /// A terminating gateway.
    pub const TERMINATING_GATEWAY: &str = "terminating-gateway";
    /// An ingress gateway.
    pub const INGRESS_GATEWAY: &str = "ingress-gateway";
    /// An API gateway.
    pub const API_GATEWAY: &str = "api-gateway";
    /// Every kind accepted on registration.
    pub const ALL: &[&str] = &[
        "",
        CONNECT_PROXY,
        MESH_GATEWAY,
        TERMINATING_GATEWAY,
        INGRESS_GATEWAY,
        API_GATEWAY,
    ];
}

/// An address and port published under a name (`lan`, `wan`, ...).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    /// Address, host name or IP.
    #[serde(default)]
    pub address: String,
    /// Port number.
    #[serde(default)]
    pub port: u16,
}

/// DNS SRV weights of a service instance by health state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while passing.
    #[serde(default = "one")]
    pub passing: i32,
    /// Weight while warning.
    #[serde(default = "one")]
    pub warning: i32,
}

fn one() -> i32 {
    1
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// An upstream of a Connect proxy: a local listener that reaches a destination service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Upstream {
    /// `service` (default, written as empty) or `prepared_query`.
    #[serde(
        default,
        alias = "destination_type",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_type: String,
    /// Namespace of the destination (Enterprise; kept for round trips).
    #[serde(
        default,
        alias = "destination_namespace",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_namespace: String,
    /// The service or prepared query to reach.
    #[serde(default, alias = "destination_name")]
    pub destination_name: String,
    /// Datacenter to resolve the destination in; empty means the local one.
    #[serde(
        default,
        alias = "datacenter",
        skip_serializing_if = "String::is_empty"
    )]
    pub datacenter: String,
    /// Address the local listener binds.
    #[serde(
        default,
        alias = "local_bind_address",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_bind_address: String,
    /// Port the local listener binds.
    #[serde(default, alias = "local_bind_port", skip_serializing_if = "is_zero")]
    pub local_bind_port: u16,
    /// Unix socket path the local listener binds, instead of an address and port.
    #[serde(
        default,
        alias = "local_bind_socket_path",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_bind_socket_path: String,
    /// Opaque per-upstream configuration.
    #[serde(default, alias = "config", skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, Value>>,
    /// Per-upstream mesh gateway mode.
    #[serde(default, alias = "mesh_gateway")]
    pub mesh_gateway: MeshGatewayConfig,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// How a proxy uses mesh gateways: `""`, `none`, `local` or `remote`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MeshGatewayConfig {
    /// The mode.
    #[serde(default, alias = "mode")]
    pub mode: String,
}

/// Proxy configuration of a `connect-proxy` service (`Proxy` in Consul's JSON).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectProxyConfig {
    /// The service this proxy fronts.
    #[serde(default, alias = "destination_service_name")]
    pub destination_service_name: String,
    /// The instance this sidecar fronts on the same agent.
    #[serde(
        default,
        rename = "DestinationServiceID",
        alias = "destination_service_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_service_id: String,
    /// Address of the local application.
    #[serde(
        default,
        alias = "local_service_address",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_service_address: String,
    /// Port of the local application.
    #[serde(default, alias = "local_service_port", skip_serializing_if = "is_zero")]
    pub local_service_port: u16,
    /// Unix socket of the local application.
    #[serde(
        default,
        alias = "local_service_socket_path",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_service_socket_path: String,
    /// `""`, `direct` or `transparent`.
    #[serde(default, alias = "mode", skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Opaque proxy configuration (`protocol`, ...).
    #[serde(default, alias = "config", skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, Value>>,
    /// The proxy's upstreams.
    #[serde(
        default,
        alias = "upstreams",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstreams: Vec<Upstream>,
    /// Mesh gateway mode.
    #[serde(default, alias = "mesh_gateway")]
    pub mesh_gateway: MeshGatewayConfig,
    /// Expose configuration, kept opaque.
    #[serde(default, alias = "expose", deserialize_with = "null_as_default")]
    pub expose: serde_json::Map<String, Value>,
}

/// `Connect` block of a service definition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceConnect {
    /// The service speaks mTLS itself.
    #[serde(default, alias = "native", skip_serializing_if = "std::ops::Not::not")]
    pub native: bool,
    /// A sidecar proxy to register alongside the service (registration only; never stored).
    #[serde(
        default,
        alias = "sidecar_service",
        skip_serializing_if = "Option::is_none"
    )]
    pub sidecar_service: Option<Box<ServiceDefinition>>,
}

impl ServiceConnect {
    /// True when nothing in the block is set, so it can be left out of responses.
    pub fn is_empty(&self) -> bool {
        !self.native && self.sidecar_service.is_none()
    }
}

/// The body of `PUT /v1/agent/service/register`, and a sidecar's nested definition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceDefinition {
    /// Kind of service (`""`, `connect-proxy`, gateways).
    #[serde(default, alias = "kind")]
    pub kind: String,
    /// Instance ID; defaults to the name.
    #[serde(default, rename = "ID", alias = "id")]
    pub id: String,
    /// Service name.
    #[serde(default, alias = "name")]
    pub name: String,
    /// Tags.
    #[serde(default, alias = "tags", deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Service address; empty means the node's.
    #[serde(default, alias = "address")]
    pub address: String,
    /// Named addresses.
    #[serde(
        default,
        alias = "tagged_addresses",
        deserialize_with = "null_as_default"
    )]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Free-form metadata.
    #[serde(default, alias = "meta", deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default, alias = "port")]
    pub port: u16,
    /// Unix socket path instead of a port.
    #[serde(default, alias = "socket_path")]
    pub socket_path: String,
    /// DNS weights.
    #[serde(default, alias = "weights")]
    pub weights: Option<Weights>,
    /// Let catalog writers change the tags.
    #[serde(default, alias = "enable_tag_override")]
    pub enable_tag_override: bool,
    /// Proxy configuration when Kind is a proxy.
    #[serde(default, alias = "proxy")]
    pub proxy: Option<ConnectProxyConfig>,
    /// Connect settings.
    #[serde(default, alias = "connect")]
    pub connect: Option<ServiceConnect>,
    /// A single check.
    #[serde(default, alias = "check")]
    pub check: Option<CheckDefinition>,
    /// Several checks.
    #[serde(default, alias = "checks", deserialize_with = "null_as_default")]
    pub checks: Vec<CheckDefinition>,
}

/// A service instance as the agent and the catalog return it (`AgentService`/`NodeService`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Kind; left out when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Instance ID.
    #[serde(default, rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(default)]
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Named addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Unix socket path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// DNS weights.
    #[serde(default)]
    pub weights: Weights,
    /// Tag override flag.
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Proxy configuration, for proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ConnectProxyConfig>,
    /// Connect settings (Native only once stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ServiceConnect>,
    /// Datacenter of the instance (agent endpoints).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    /// Raft index that created the row (catalog endpoints).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub create_index: u64,
    /// Raft index that last changed the row (catalog endpoints).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub modify_index: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

impl AgentService {
    /// The service name a Connect discovery query for this instance answers to, if any:
    /// a proxy's destination, or the service itself when it is Connect-native.
    pub fn connect_destination(&self) -> Option<&str> {
        if self.kind == kind::CONNECT_PROXY {
            return self
                .proxy
                .as_ref()
                .map(|p| p.destination_service_name.as_str())
                .filter(|d| !d.is_empty());
        }
        match &self.connect {
            Some(c) if c.native => Some(self.service.as_str()),
            _ => None,
        }
    }
}

/// Deserialises `null` as the type's default, as Go's JSON decoder does for slices and maps.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
