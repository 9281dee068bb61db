//! Catalog rows and the bodies of catalog and health endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    null_as_default, AgentService, ConnectProxyConfig, HealthCheck, ServiceAddress, ServiceConnect,
    Weights,
};

/// A node in the catalog.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node ID (a UUID), may be empty for externally registered nodes.
    #[serde(default, rename = "ID")]
    pub id: String,
    /// Node name, unique in the datacenter.
    #[serde(default)]
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Named addresses (`lan`, `wan`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// Raft index that created the row.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index that last changed the row.
    #[serde(default)]
    pub modify_index: u64,
}

/// Body of `PUT /v1/catalog/register`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogRegistration {
    /// Node ID.
    #[serde(default, rename = "ID")]
    pub id: String,
    /// Node name (required).
    #[serde(default)]
    pub node: String,
    /// Node address (required unless SkipNodeUpdate).
    #[serde(default)]
    pub address: String,
    /// Datacenter; empty means the local one.
    #[serde(default)]
    pub datacenter: String,
    /// Named node addresses.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_meta: BTreeMap<String, String>,
    /// A service to register on the node.
    #[serde(default)]
    pub service: Option<AgentService>,
    /// A check to register.
    #[serde(default)]
    pub check: Option<HealthCheck>,
    /// Several checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
    /// Leave the node row as it is.
    #[serde(default)]
    pub skip_node_update: bool,
}

/// Body of `PUT /v1/catalog/deregister`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogDeregistration {
    /// Node name (required).
    #[serde(default)]
    pub node: String,
    /// Datacenter; empty means the local one.
    #[serde(default)]
    pub datacenter: String,
    /// Remove only this check.
    #[serde(default, rename = "CheckID")]
    pub check_id: String,
    /// Remove only this service (and its checks).
    #[serde(default, rename = "ServiceID")]
    pub service_id: String,
}

/// A flat service-on-node row (`/v1/catalog/service/:name`, `/v1/catalog/connect/:name`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceNode {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Named node addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// Service kind.
    pub service_kind: String,
    /// Service instance ID.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Service tags.
    pub service_tags: Vec<String>,
    /// Service address.
    pub service_address: String,
    /// Named service addresses.
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Service weights.
    pub service_weights: Weights,
    /// Service metadata.
    pub service_meta: BTreeMap<String, String>,
    /// Service port.
    pub service_port: u16,
    /// Service socket path.
    pub service_socket_path: String,
    /// Tag override flag.
    pub service_enable_tag_override: bool,
    /// Proxy configuration.
    pub service_proxy: ConnectProxyConfig,
    /// Connect settings.
    pub service_connect: ServiceConnect,
    /// Raft index that created the service row.
    pub create_index: u64,
    /// Raft index that last changed the service row.
    pub modify_index: u64,
}

impl ServiceNode {
    /// Flattens a node and one of its services into a catalog row.
    pub fn new(node: &Node, svc: &AgentService) -> Self {
        ServiceNode {
            id: node.id.clone(),
            node: node.node.clone(),
            address: node.address.clone(),
            datacenter: node.datacenter.clone(),
            tagged_addresses: node.tagged_addresses.clone(),
            node_meta: node.meta.clone(),
            service_kind: svc.kind.clone(),
            service_id: svc.id.clone(),
            service_name: svc.service.clone(),
            service_tags: svc.tags.clone(),
            service_address: svc.address.clone(),
            service_tagged_addresses: svc.tagged_addresses.clone(),
            service_weights: svc.weights,
            service_meta: svc.meta.clone(),
            service_port: svc.port,
            service_socket_path: svc.socket_path.clone(),
            service_enable_tag_override: svc.enable_tag_override,
            service_proxy: svc.proxy.clone().unwrap_or_default(),
            service_connect: svc.connect.clone().unwrap_or_default(),
            create_index: svc.create_index,
            modify_index: svc.modify_index,
        }
    }
}

/// One element of `/v1/health/service/:name`: the node, the instance and all relevant checks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node.
    pub node: Node,
    /// The service instance.
    pub service: AgentService,
    /// Node-level checks and the instance's own checks.
    pub checks: Vec<HealthCheck>,
}

/// Body of `/v1/catalog/node/:node`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServices {
    /// The node.
    pub node: Node,
    /// Its services by ID.
    pub services: BTreeMap<String, AgentService>,
}

/// What the catalog holds for one node: its row, services and checks (the answer a client
/// agent's anti-entropy compares its local state with).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeState {
    /// The node, if the catalog has it.
    pub node: Option<Node>,
    /// Its services.
    pub services: Vec<AgentService>,
    /// Its checks (node-level and services').
    pub checks: Vec<HealthCheck>,
}
