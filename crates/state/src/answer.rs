//! A query's answer as a value: typed for in-process callers, JSON for the edges (the HTTP API
//! and the server port), each made at most once and shared by every holder of the answer.
//!
//! The store computes [`Typed`] answers; whoever sends one out asks for its JSON
//! ([`Answer::json`]), made once and kept with it (the answer cache and every blocked reader
//! share it). A client agent receives the JSON from a server ([`Answer::from_json`]) and
//! decodes it only if an in-process caller asks ([`Answer::typed`]); what it serves over HTTP
//! is the bytes it received.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use trellis_api::{
    AclPolicy, AclRole, AclToken, CaConfiguration, ConfigEntry, HealthCheck, IndexedCaRoots,
    Intention, MemberHealth, Node, NodeServices, NodeState, ServiceConfigResponse, ServiceEntry,
    ServiceNode,
};

use crate::Query;

/// A query's answer, by the kind of query it answers.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Typed {
    /// `CatalogNodes`.
    Nodes(Vec<Node>),
    /// `CatalogServices`: service names and their tags.
    Services(BTreeMap<String, Vec<String>>),
    /// `CatalogNode` (`null` when the node is unknown).
    NodeServices(Option<NodeServices>),
    /// `CatalogService`.
    ServiceNodes(Vec<ServiceNode>),
    /// `HealthNode`, `HealthChecks`, `HealthState`.
    Checks(Vec<HealthCheck>),
    /// `HealthService`.
    ServiceEntries(Vec<ServiceEntry>),
    /// `Members`.
    Members(Vec<MemberHealth>),
    /// `ConfigList`.
    ConfigEntries(Vec<ConfigEntry>),
    /// `ConfigGet`.
    ConfigEntry(ConfigEntry),
    /// `NodeState`.
    NodeState(NodeState),
    /// `CaRoots`.
    CaRoots(IndexedCaRoots),
    /// `CaConfig`.
    CaConfig(CaConfiguration),
    /// `IntentionList`.
    Intentions(Vec<Intention>),
    /// `IntentionExact`, `IntentionGet`.
    Intention(Intention),
    /// `IntentionMatch`: the matches by name.
    IntentionMatches(BTreeMap<String, Vec<Intention>>),
    /// `ResolveServiceConfig`.
    ServiceConfig(ServiceConfigResponse),
    /// `AclTokenRead`.
    AclToken(AclToken),
    /// `AclTokenList`.
    AclTokens(Vec<AclToken>),
    /// `AclPolicyRead`.
    AclPolicy(AclPolicy),
    /// `AclPolicyList`.
    AclPolicies(Vec<AclPolicy>),
    /// `AclRoleRead`.
    AclRole(AclRole),
    /// `AclRoleList`.
    AclRoles(Vec<AclRole>),
}

fn decode<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    wrap: fn(T) -> Typed,
) -> Result<Typed, AnswerError> {
    serde_json::from_slice(body)
        .map(wrap)
        .map_err(|e| AnswerError(e.to_string()))
}

impl Typed {
    /// Decodes the JSON answer to `q`.
    pub fn decode(q: &Query, body: &[u8]) -> Result<Typed, AnswerError> {
        match q {
            Query::CatalogNodes => decode(body, Typed::Nodes),
            Query::CatalogServices => decode(body, Typed::Services),
            Query::CatalogNode { .. } => decode(body, Typed::NodeServices),
            Query::CatalogService { .. } => decode(body, Typed::ServiceNodes),
            Query::HealthNode { .. } | Query::HealthChecks { .. } | Query::HealthState { .. } => {
                decode(body, Typed::Checks)
            }
            Query::HealthService { .. } => decode(body, Typed::ServiceEntries),
            Query::Members => decode(body, Typed::Members),
            Query::ConfigList { .. } => decode(body, Typed::ConfigEntries),
            Query::ConfigGet { .. } => decode(body, Typed::ConfigEntry),
            Query::NodeState { .. } => decode(body, Typed::NodeState),
            Query::CaRoots => decode(body, Typed::CaRoots),
            Query::CaConfig => decode(body, Typed::CaConfig),
            Query::IntentionList => decode(body, Typed::Intentions),
            Query::IntentionExact { .. } | Query::IntentionGet { .. } => {
                decode(body, Typed::Intention)
            }
            Query::IntentionMatch { .. } => decode(body, Typed::IntentionMatches),
            Query::ResolveServiceConfig { .. } => decode(body, Typed::ServiceConfig),
            Query::AclTokenRead { .. } => decode(body, Typed::AclToken),
            Query::AclTokenList(_) => decode(body, Typed::AclTokens),
            Query::AclPolicyRead { .. } => decode(body, Typed::AclPolicy),
            Query::AclPolicyList => decode(body, Typed::AclPolicies),
            Query::AclRoleRead { .. } => decode(body, Typed::AclRole),
            Query::AclRoleList { .. } => decode(body, Typed::AclRoles),
        }
    }
}

/// An answer whose JSON does not decode as its query's (a server of another version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("undecodable answer: {0}")]
pub struct AnswerError(pub String);

struct Inner {
    typed: OnceLock<Result<Typed, AnswerError>>,
    json: OnceLock<Bytes>,
    /// The query a JSON-only answer decodes as.
    query: Option<Query>,
}

/// A query's answer: its typed value and its JSON, each made at most once (from the other)
/// and shared by every clone. Cheap to clone.
#[derive(Clone)]
pub struct Answer(Arc<Inner>);

impl Answer {
    /// An answer computed here.
    pub fn new(typed: Typed) -> Answer {
        Answer(Arc::new(Inner {
            typed: OnceLock::from(Ok(typed)),
            json: OnceLock::new(),
            query: None,
        }))
    }

    /// An answer to `q` received as JSON (from a server): kept as it came, decoded only when
    /// asked.
    pub fn from_json(q: &Query, json: Bytes) -> Answer {
        Answer(Arc::new(Inner {
            typed: OnceLock::new(),
            json: OnceLock::from(json),
            query: Some(q.clone()),
        }))
    }

    /// The typed value (decoded once from the JSON if that is what arrived).
    pub fn typed(&self) -> Result<&Typed, AnswerError> {
        self.0
            .typed
            .get_or_init(|| match (&self.0.query, self.0.json.get()) {
                (Some(q), Some(json)) => Typed::decode(q, json),
                _ => Err(AnswerError("an answer with neither value nor JSON".into())),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The JSON body (serialised once from the typed value if that is what was computed).
    pub fn json(&self) -> Bytes {
        self.0
            .json
            .get_or_init(|| match self.0.typed.get() {
                Some(Ok(typed)) => {
                    Bytes::from(serde_json::to_vec(typed).expect("wire types serialise"))
                }
                _ => Bytes::from_static(b"null"),
            })
            .clone()
    }
}

/// Typed accessors for the answers in-process callers read.
macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident: $variant:ident($ty:ty);)*) => {
        impl Answer {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Result<&$ty, AnswerError> {
                    match self.typed()? {
                        Typed::$variant(v) => Ok(v),
                        _ => Err(AnswerError(concat!(
                            "not a ",
                            stringify!($variant),
                            " answer"
                        ).into())),
                    }
                }
            )*
        }
    };
}

accessors! {
    /// A `Members` answer.
    members: Members(Vec<MemberHealth>);
    /// A `NodeState` answer.
    node_state: NodeState(NodeState);
    /// A `CaRoots` answer.
    ca_roots: CaRoots(IndexedCaRoots);
    /// An `IntentionList` answer.
    intentions: Intentions(Vec<Intention>);
    /// An `IntentionMatch` answer.
    intention_matches: IntentionMatches(BTreeMap<String, Vec<Intention>>);
    /// A `ResolveServiceConfig` answer.
    service_config: ServiceConfig(ServiceConfigResponse);
    /// An `AclTokenRead` answer.
    acl_token: AclToken(AclToken);
    /// An `AclTokenList` answer.
    acl_tokens: AclTokens(Vec<AclToken>);
    /// An `AclPolicyRead` answer.
    acl_policy: AclPolicy(AclPolicy);
    /// An `AclPolicyList` answer.
    acl_policies: AclPolicies(Vec<AclPolicy>);
    /// An `AclRoleRead` answer.
    acl_role: AclRole(AclRole);
    /// An `AclRoleList` answer.
    acl_roles: AclRoles(Vec<AclRole>);
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("typed", &self.0.typed.get().is_some())
            .field("json_bytes", &self.0.json.get().map(Bytes::len))
            .finish()
    }
}

/// Answers are equal when their JSON is.
impl PartialEq for Answer {
    fn eq(&self, other: &Answer) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.json() == other.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_made_once_and_decodes_back_to_the_same_value() {
        let typed = Typed::Members(vec![MemberHealth {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            status: "passing".into(),
        }]);
        let here = Answer::new(typed.clone());
        let json = here.json();
        assert_eq!(
            json.as_ptr(),
            here.clone().json().as_ptr(),
            "made once, shared by clones"
        );
        let there = Answer::from_json(&Query::Members, json.clone());
        assert_eq!(there.typed().unwrap(), &typed);
        assert_eq!(there.json(), json, "what arrived is what is served");
        assert_eq!(here, there);
        let bad = Answer::from_json(&Query::Members, Bytes::from_static(b"{\"not\":1}"));
        assert!(bad.typed().is_err());
        // An unknown node's answer is `null`, as Consul's.
        let none = Answer::new(Typed::NodeServices(None));
        assert_eq!(&none.json()[..], b"null");
        let none = Answer::from_json(&Query::CatalogNode { node: "x".into() }, none.json());
        assert_eq!(none.typed().unwrap(), &Typed::NodeServices(None));
    }
}
