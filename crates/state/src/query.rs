//! Read queries over the store, the answers they produce, and the keys they watch.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trellis_api::{
    config_kind, serf_check, status, AgentService, HealthCheck, IndexedCaRoots, MemberHealth, Node,
    NodeServices, NodeState, ServiceEntry, ServiceNode,
};

use crate::answer::{Answer, Typed};

use crate::intentions;
use crate::tables::{node_rows, NodeKey, Tables};
use crate::{Store, WatchKey};

/// A read the store can answer, as the HTTP layer parsed it. Serialisable so a client agent
/// can send it to a server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    /// `/v1/catalog/nodes`
    CatalogNodes,
    /// `/v1/catalog/services`
    CatalogServices,
    /// `/v1/catalog/node/:node`
    CatalogNode {
        /// Node name.
        node: String,
    },
    /// `/v1/catalog/service/:name` (or `/v1/catalog/connect/:name` with `connect`)
    CatalogService {
        /// Service name.
        name: String,
        /// Every tag must be present.
        tags: Vec<String>,
        /// Connect-capable instances for `name` instead of `name`'s instances.
        connect: bool,
    },
    /// `/v1/health/node/:node`
    HealthNode {
        /// Node name.
        node: String,
    },
    /// `/v1/health/checks/:service`
    HealthChecks {
        /// Service name.
        service: String,
    },
    /// `/v1/health/service/:name` (or `/v1/health/connect/:name` with `connect`)
    HealthService {
        /// Service name.
        name: String,
        /// Every tag must be present.
        tags: Vec<String>,
        /// Only instances whose checks all pass.
        passing: bool,
        /// Connect-capable instances for `name`.
        connect: bool,
    },
    /// `/v1/health/state/:state`
    HealthState {
        /// `passing`, `warning`, `critical` or `any`.
        state: String,
    },
    /// `/v1/config/:kind`
    ConfigList {
        /// Entry kind.
        kind: String,
    },
    /// `/v1/config/:kind/:name`
    ConfigGet {
        /// Entry kind.
        kind: String,
        /// Entry name.
        name: String,
    },
    /// The services and checks the catalog holds for one node (agent anti-entropy).
    NodeState {
        /// Node name.
        node: String,
    },
    /// `/v1/connect/ca/roots`
    CaRoots,
    /// `/v1/connect/ca/configuration`
    CaConfig,
    /// `GET /v1/connect/intentions`: every intention, in precedence order.
    IntentionList,
    /// `GET /v1/connect/intentions/exact`
    IntentionExact {
        /// Source name or `*`.
        source: String,
        /// Destination name or `*`.
        destination: String,
    },
    /// `GET /v1/connect/intentions/:id` (legacy ID).
    IntentionGet {
        /// The legacy ID.
        id: String,
    },
    /// `GET /v1/connect/intentions/match`: for each name, the intentions that apply to it as
    /// a destination (or as a source), in evaluation order.
    IntentionMatch {
        /// Match sources instead of destinations.
        by_source: bool,
        /// The names.
        names: Vec<String>,
    },
    /// A service's configuration resolved from `service-defaults` and `proxy-defaults`, with
    /// its upstreams' (Consul's `ConfigEntry.ResolveServiceConfig`).
    ResolveServiceConfig {
        /// The service (a proxy's destination).
        name: String,
        /// The upstreams' destination names.
        upstreams: Vec<String>,
    },
    /// Every node carrying the servers' agent health check ([`trellis_api::serf_check`]),
    /// with its status: the datacenter's members (`/v1/agent/members`).
    Members,
    /// `GET /v1/acl/token/:accessor` (secrets included: the caller redacts).
    AclTokenRead {
        /// The AccessorID.
        accessor: String,
    },
    /// `GET /v1/acl/tokens`.
    AclTokenList(crate::TokenFilter),
    /// `GET /v1/acl/policy/:id` or, with `by_name`, `/v1/acl/policy/name/:name`.
    AclPolicyRead {
        /// The ID or name.
        key: String,
        /// `key` is a name.
        by_name: bool,
    },
    /// `GET /v1/acl/policies`.
    AclPolicyList,
    /// `GET /v1/acl/role/:id` or, with `by_name`, `/v1/acl/role/name/:name`.
    AclRoleRead {
        /// The ID or name.
        key: String,
        /// `key` is a name.
        by_name: bool,
    },
    /// `GET /v1/acl/roles` (`?policy=`: those linking that policy ID).
    AclRoleList {
        /// Only roles linking this policy ID.
        policy: Option<String>,
    },
}

/// The answer to a query, or "not found" with Consul's message.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryOutput {
    /// The answer: typed, and JSON at the edges.
    Found(Answer),
    /// Nothing by that name (404 with this message).
    NotFound(String),
}

fn found(typed: Typed) -> QueryOutput {
    QueryOutput::Found(Answer::new(typed))
}

impl Query {
    /// The one watch key whose change index covers everything this query reads. The store
    /// bumps a key for every change that can alter an answer depending on it.
    pub fn key(&self) -> WatchKey {
        match self {
            Query::CatalogNodes => WatchKey::Nodes,
            Query::CatalogServices => WatchKey::Services,
            Query::HealthState { .. } | Query::Members => WatchKey::Checks,
            Query::CatalogNode { node }
            | Query::HealthNode { node }
            | Query::NodeState { node } => WatchKey::Node(node.clone()),
            Query::HealthChecks { service } => WatchKey::Service(service.clone()),
            Query::CatalogService { name, connect, .. }
            | Query::HealthService { name, connect, .. } => {
                if *connect {
                    WatchKey::Connect(name.clone())
                } else {
                    WatchKey::Service(name.clone())
                }
            }
            Query::ConfigList { kind } => WatchKey::ConfigKind(kind.clone()),
            Query::ConfigGet { kind, name } => WatchKey::Config(kind.clone(), name.clone()),
            Query::CaRoots => WatchKey::CaRoots,
            Query::CaConfig => WatchKey::CaConfig,
            Query::IntentionExact { destination, .. } => {
                WatchKey::Config(config_kind::SERVICE_INTENTIONS.into(), destination.clone())
            }
            Query::IntentionList | Query::IntentionGet { .. } | Query::IntentionMatch { .. } => {
                WatchKey::ConfigKind(config_kind::SERVICE_INTENTIONS.into())
            }
            Query::ResolveServiceConfig { .. } => WatchKey::ServiceConfig,
            Query::AclTokenRead { .. }
            | Query::AclTokenList(_)
            | Query::AclPolicyRead { .. }
            | Query::AclPolicyList
            | Query::AclRoleRead { .. }
            | Query::AclRoleList { .. } => WatchKey::Acl,
        }
    }

    /// Bytes the query's strings hold on the heap (the answer cache counts them).
    pub(crate) fn heap_bytes(&self) -> usize {
        let all = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        match self {
            Query::CatalogNodes
            | Query::CatalogServices
            | Query::CaRoots
            | Query::CaConfig
            | Query::IntentionList
            | Query::Members
            | Query::AclPolicyList => 0,
            Query::AclTokenRead { accessor: s }
            | Query::AclPolicyRead { key: s, .. }
            | Query::AclRoleRead { key: s, .. } => s.len(),
            Query::AclTokenList(f) => [&f.policy, &f.role, &f.auth_method]
                .iter()
                .map(|s| s.as_ref().map_or(0, String::len))
                .sum(),
            Query::AclRoleList { policy } => policy.as_ref().map_or(0, String::len),
            Query::CatalogNode { node }
            | Query::HealthNode { node }
            | Query::NodeState { node } => node.len(),
            Query::HealthChecks { service } => service.len(),
            Query::HealthState { state } => state.len(),
            Query::ConfigList { kind } => kind.len(),
            Query::IntentionGet { id } => id.len(),
            Query::CatalogService { name, tags, .. } | Query::HealthService { name, tags, .. } => {
                name.len() + all(tags)
            }
            Query::ConfigGet { kind, name } => kind.len() + name.len(),
            Query::IntentionExact {
                source,
                destination,
            } => source.len() + destination.len(),
            Query::IntentionMatch { names, .. } => all(names),
            Query::ResolveServiceConfig { name, upstreams } => name.len() + all(upstreams),
        }
    }

    /// Answers the query from the tables.
    pub(crate) fn run(&self, t: &Tables, dc: &str) -> QueryOutput {
        match self {
            Query::CatalogNodes => found(Typed::Nodes(
                t.nodes.values().map(|n| with_dc(n, dc)).collect(),
            )),
            Query::CatalogServices => {
                let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for svc in t.services.values() {
                    let tags = out.entry(svc.service.clone()).or_default();
                    for tag in &svc.tags {
                        if !tags.contains(tag) {
                            tags.push(tag.clone());
                        }
                    }
                }
                found(Typed::Services(out))
            }
            Query::CatalogNode { node } => found(Typed::NodeServices(t.nodes.get(node).map(|n| {
                NodeServices {
                    node: with_dc(n, dc),
                    services: node_rows(&t.services, node)
                        .map(|(k, s)| (k.1.clone(), s.clone()))
                        .collect(),
                }
            }))),
            Query::CatalogService {
                name,
                tags,
                connect,
            } => {
                let rows: Vec<ServiceNode> = instances(t, name, *connect)
                    .filter(|(_, s)| has_tags(s, tags))
                    .filter_map(|(k, s)| {
                        t.nodes
                            .get(&k.0)
                            .map(|n| ServiceNode::new(&with_dc(n, dc), s))
                    })
                    .collect();
                found(Typed::ServiceNodes(rows))
            }
            Query::HealthNode { node } => found(Typed::Checks(
                node_rows(&t.checks, node).map(|(_, c)| c.clone()).collect(),
            )),
            Query::HealthChecks { service } => found(Typed::Checks(
                t.by_name
                    .get(service)
                    .into_iter()
                    .flatten()
                    .flat_map(|k| service_checks(t, k))
                    .cloned()
                    .collect(),
            )),
            Query::HealthService {
                name,
                tags,
                passing,
                connect,
            } => {
                let entries: Vec<ServiceEntry> = instances(t, name, *connect)
                    .filter(|(_, s)| has_tags(s, tags))
                    .filter_map(|(k, s)| {
                        let node = t.nodes.get(&k.0)?;
                        let checks: Vec<HealthCheck> = node_rows(&t.checks, &k.0)
                            .map(|(_, c)| c)
                            .filter(|c| c.service_id.is_empty() || c.service_id == k.1)
                            .cloned()
                            .collect();
                        if *passing && checks.iter().any(|c| c.status != status::PASSING) {
                            return None;
                        }
                        Some(ServiceEntry {
                            node: with_dc(node, dc),
                            service: s.clone(),
                            checks,
                        })
                    })
                    .collect();
                found(Typed::ServiceEntries(entries))
            }
            Query::Members => {
                let members: Vec<MemberHealth> = t
                    .nodes
                    .values()
                    .filter_map(|n| {
                        let key = (n.node.clone(), serf_check::ID.to_string());
                        t.checks.get(&key).map(|c| MemberHealth {
                            node: n.node.clone(),
                            address: n.address.clone(),
                            status: c.status.clone(),
                        })
                    })
                    .collect();
                found(Typed::Members(members))
            }
            Query::HealthState { state } => found(Typed::Checks(
                t.checks
                    .values()
                    .filter(|c| state == status::ANY || c.status == *state)
                    .cloned()
                    .collect(),
            )),
            Query::ConfigList { kind } => found(Typed::ConfigEntries(
                t.config
                    .range((kind.clone(), String::new())..)
                    .take_while(|(k, _)| k.0 == *kind)
                    .map(|(_, e)| e.clone())
                    .collect(),
            )),
            Query::ConfigGet { kind, name } => match t.config.get(&(kind.clone(), name.clone())) {
                Some(e) => found(Typed::ConfigEntry(e.clone())),
                None => {
                    QueryOutput::NotFound(format!("Config entry not found for {kind:?} / {name:?}"))
                }
            },
            Query::NodeState { node } => found(Typed::NodeState(NodeState {
                node: t.nodes.get(node).cloned(),
                services: node_rows(&t.services, node)
                    .map(|(_, s)| s.clone())
                    .collect(),
                checks: node_rows(&t.checks, node).map(|(_, c)| c.clone()).collect(),
            })),
            Query::CaRoots => {
                let roots = match &t.ca {
                    None => IndexedCaRoots::default(),
                    Some(ca) => IndexedCaRoots {
                        active_root_id: ca.active_root().map(|r| r.id.clone()).unwrap_or_default(),
                        trust_domain: ca.trust_domain.clone(),
                        roots: ca.roots.iter().map(|r| r.root.clone()).collect(),
                    },
                };
                found(Typed::CaRoots(roots))
            }
            Query::CaConfig => match &t.ca {
                None => QueryOutput::NotFound("CA has not finished initializing".into()),
                Some(ca) => {
                    let mut cfg = ca.config.clone();
                    // Never shown: an operator-supplied key, and the provider's own state.
                    for secret in ["PrivateKey", "Pin"] {
                        cfg.config.remove(secret);
                    }
                    cfg.state = None;
                    found(Typed::CaConfig(cfg))
                }
            },
            Query::IntentionList => found(Typed::Intentions(intentions::list(t))),
            Query::IntentionExact {
                source,
                destination,
            } => match intentions::exact(t, source, destination) {
                Some(i) => found(Typed::Intention(i)),
                None => QueryOutput::NotFound("Intention not found".into()),
            },
            Query::IntentionGet { id } => match intentions::by_id(t, id) {
                Some(i) => found(Typed::Intention(i)),
                None => QueryOutput::NotFound("Intention not found".into()),
            },
            Query::IntentionMatch { by_source, names } => found(Typed::IntentionMatches(
                intentions::matches(t, *by_source, names),
            )),
            Query::ResolveServiceConfig { name, upstreams } => {
                let defaults = |service: &str| {
                    t.config
                        .get(&(config_kind::SERVICE_DEFAULTS.into(), service.into()))
                };
                found(Typed::ServiceConfig(
                    trellis_api::ServiceConfigResponse::resolve(
                        defaults(name),
                        t.config
                            .get(&(config_kind::PROXY_DEFAULTS.into(), "global".into())),
                        upstreams,
                        defaults,
                    ),
                ))
            }
            Query::AclTokenRead { accessor } => match t.acl.tokens.get(accessor) {
                Some(tok) => found(Typed::AclToken(t.acl.token_view(tok))),
                None => QueryOutput::NotFound(ACL_NOT_FOUND.into()),
            },
            Query::AclTokenList(filter) => found(Typed::AclTokens(
                t.acl
                    .tokens
                    .values()
                    .map(|tok| t.acl.token_view(tok))
                    .filter(|tok| filter.keeps(tok))
                    .collect(),
            )),
            Query::AclPolicyRead { key, by_name } => {
                let p = if *by_name {
                    t.acl.policies.values().find(|p| &p.name == key)
                } else {
                    t.acl.policies.get(key)
                };
                match p {
                    Some(p) => found(Typed::AclPolicy(p.clone())),
                    None => QueryOutput::NotFound(ACL_NOT_FOUND.into()),
                }
            }
            Query::AclPolicyList => found(Typed::AclPolicies(
                t.acl.policies.values().cloned().collect(),
            )),
            Query::AclRoleRead { key, by_name } => {
                let r = if *by_name {
                    t.acl.roles.values().find(|r| &r.name == key)
                } else {
                    t.acl.roles.get(key)
                };
                match r {
                    Some(r) => found(Typed::AclRole(t.acl.role_view(r))),
                    None => QueryOutput::NotFound(ACL_NOT_FOUND.into()),
                }
            }
            Query::AclRoleList { policy } => found(Typed::AclRoles(
                t.acl
                    .roles
                    .values()
                    .map(|r| t.acl.role_view(r))
                    .filter(|r| {
                        policy
                            .as_ref()
                            .is_none_or(|p| r.policies.iter().any(|l| &l.id == p))
                    })
                    .collect(),
            )),
        }
    }
}

/// Consul's answer for a token, policy or role that does not exist (a 403 on the HTTP API).
pub const ACL_NOT_FOUND: &str = "ACL not found";

/// The instances of a service name, or the Connect-capable instances for it.
fn instances<'a>(
    t: &'a Tables,
    name: &str,
    connect: bool,
) -> impl Iterator<Item = (&'a NodeKey, &'a AgentService)> + 'a {
    let index = if connect {
        t.by_connect.get(name)
    } else {
        t.by_name.get(name)
    };
    index
        .into_iter()
        .flatten()
        .filter_map(move |k| t.services.get(k).map(|s| (k, s)))
}

fn service_checks<'a>(
    t: &'a Tables,
    key: &'a NodeKey,
) -> impl Iterator<Item = &'a HealthCheck> + 'a {
    node_rows(&t.checks, &key.0)
        .map(|(_, c)| c)
        .filter(move |c| c.service_id == key.1)
}

fn has_tags(svc: &AgentService, tags: &[String]) -> bool {
    tags.iter().all(|t| svc.tags.contains(t))
}

fn with_dc(node: &Node, dc: &str) -> Node {
    let mut n = node.clone();
    n.datacenter = dc.to_string();
    n
}

impl Store {
    /// The answer for `q` at key index `idx`: from the answer cache when it holds one for that
    /// index, else computed and cached. Called under the tables' read lock, so `idx` and the
    /// tables agree; an answer is only reused for the exact index it was computed at.
    fn answer(&self, t: &Tables, q: &Query, idx: u64) -> QueryOutput {
        let cache = self.answers();
        if let Some(out) = cache.lock().get(q, idx) {
            return out;
        }
        let out = q.run(t, self.datacenter());
        // Its JSON is made now, outside the cache's lock: the cache counts answers by it, and
        // whoever reads a cached answer next serves it.
        if let QueryOutput::Found(answer) = &out {
            answer.json();
        }
        cache.lock().insert(q, idx, &out);
        out
    }

    /// Answers a query now, with the index of its answer.
    pub fn query(&self, q: &Query) -> (QueryOutput, u64) {
        let key = [q.key()];
        self.read_at(&key, |t, idx| self.answer(t, q, idx))
    }

    /// Answers a query as a Consul blocking query: at once when `min_index` is 0, otherwise
    /// when its answer's index passes `min_index` or after `wait`.
    pub async fn blocking_query(
        &self,
        q: &Query,
        min_index: u64,
        wait: Duration,
    ) -> (QueryOutput, u64) {
        let key = [q.key()];
        self.blocking(min_index, wait, &key, |t, idx| self.answer(t, q, idx))
            .await
    }
}
