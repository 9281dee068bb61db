//! Raft commands: the only way state changes, and their validation.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_api::lenient::Lenient;
use trellis_api::{
    config_kind, kind, status, CatalogDeregistration, CatalogRegistration, ConfigEntry,
    ProxyDefaults, ServiceDefaults, TypedEntry,
};

/// A write to the replicated state. Every replica applies the same commands in log order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "Type")]
pub enum Command {
    /// Register or update a node, optionally with a service and checks.
    Register(Box<CatalogRegistration>),
    /// Remove a node, a service or a check.
    Deregister(CatalogDeregistration),
    /// Create or replace a config entry; with `cas`, only if its ModifyIndex equals it
    /// (0 meaning "only if it does not exist").
    ConfigSet {
        /// The validated entry.
        entry: ConfigEntry,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Delete a config entry; with `cas`, only if its ModifyIndex equals it.
    ConfigDelete {
        /// Entry kind.
        kind: String,
        /// Entry name.
        name: String,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Replaces the CA state (initialisation, configuration change, rotation, pruning) if its
    /// current `modify_index` equals `cas` (0: only if the CA is not initialised).
    CaSet {
        /// The new state.
        state: Box<crate::CaState>,
        /// Check-and-set index.
        cas: u64,
    },
    /// Creates or replaces one intention, as the legacy intentions API does: the
    /// `service-intentions` entry of `destination` is created or changed around it.
    IntentionUpsert {
        /// Destination name or `*`.
        destination: String,
        /// The source object: `Name`, `Action` or `Permissions`, `Description`, legacy fields.
        source: serde_json::Map<String, serde_json::Value>,
        /// Refuse when an intention for this pair exists (legacy create).
        create_only: bool,
        /// Replace the intention with this legacy ID, which may move to this pair.
        replace_id: Option<String>,
    },
    /// Removes one intention; its entry goes when its last source does.
    IntentionDelete {
        /// Which intention.
        target: crate::IntentionRef,
    },
    /// Bootstraps the ACL system with this management token: once, or again when
    /// `reset_index` is the index it was bootstrapped at (the leader's reset file).
    AclBootstrap {
        /// The token: AccessorID, SecretID, Description and CreateTime set.
        token: trellis_api::AclToken,
        /// The bootstrap reset index the leader read, if any.
        reset_index: Option<u64>,
    },
    /// The leader's ACL initialisation: the built-in policy and anonymous token, and the
    /// `initial_management` token when configured and missing.
    AclInit {
        /// The initial management token (AccessorID, SecretID, CreateTime set).
        initial_management: Option<trellis_api::AclToken>,
        /// When the leader wrote it (RFC 3339): the built-ins' `CreateTime`.
        #[serde(default)]
        create_time: String,
    },
    /// Creates (`create`) or updates a token.
    AclTokenSet {
        /// The token; links by ID or name.
        token: trellis_api::AclToken,
        /// Create: refused when the AccessorID or SecretID is in use.
        create: bool,
    },
    /// Deletes a token.
    AclTokenDelete {
        /// Its AccessorID.
        accessor: String,
    },
    /// Creates (`create`) or updates a policy.
    AclPolicySet {
        /// The policy.
        policy: trellis_api::AclPolicy,
        /// Create: refused when the ID is in use.
        create: bool,
    },
    /// Deletes a policy.
    AclPolicyDelete {
        /// Its ID.
        id: String,
    },
    /// Creates (`create`) or updates a role.
    AclRoleSet {
        /// The role; policy links by ID or name.
        role: trellis_api::AclRole,
        /// Create: refused when the ID is in use.
        create: bool,
    },
    /// Deletes a role.
    AclRoleDelete {
        /// Its ID.
        id: String,
    },
    /// Writes that arrived together, committed as one Raft entry: each is applied on its own,
    /// in order, at the entry's index. Batches do not nest.
    Batch {
        /// The commands, in arrival order.
        commands: Vec<Command>,
    },
}

impl Command {
    /// Whether applying this command twice leaves the state, and the answer its writer gets,
    /// as applying it once: only such a write may be sent again when it is not known whether
    /// the first copy arrived. Check-and-set writes, legacy creates and intention deletes are
    /// not (the second copy would be refused, or answer "not found", after the first took).
    pub fn idempotent(&self) -> bool {
        match self {
            Command::Register(_) | Command::Deregister(_) => true,
            Command::ConfigSet { cas, .. } | Command::ConfigDelete { cas, .. } => cas.is_none(),
            Command::CaSet { .. } | Command::IntentionDelete { .. } => false,
            Command::IntentionUpsert { create_only, .. } => !create_only,
            Command::AclBootstrap { .. } => false,
            Command::AclTokenSet { create, .. }
            | Command::AclPolicySet { create, .. }
            | Command::AclRoleSet { create, .. } => !create,
            Command::AclInit { .. }
            | Command::AclTokenDelete { .. }
            | Command::AclPolicyDelete { .. }
            | Command::AclRoleDelete { .. } => true,
            Command::Batch { commands } => commands.iter().all(Command::idempotent),
        }
    }
}

/// The outcome of applying a command, returned to the writer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command took effect (or changed nothing because nothing differed).
    Done,
    /// A check-and-set command: whether it took effect.
    Cas(bool),
    /// The command was refused and changed nothing.
    Rejected(String),
    /// The command names something that does not exist (404 with this message).
    NotFound(String),
    /// The command is not allowed (403 `Permission denied: <message>`), and changed nothing.
    Denied(String),
    /// The outcomes of a [`Command::Batch`], in order.
    Batch(Vec<Applied>),
    /// A logged command of this type is not known to this server and its writer marked it as
    /// safe to skip: nothing changed here.
    Skipped(String),
}

/// Checks a catalog registration the way Consul does, before it is proposed and again when it
/// is applied. Returns the message a 400 carries.
pub fn validate_registration(reg: &CatalogRegistration) -> Result<(), String> {
    if reg.node.is_empty() {
        return Err("Must provide node".into());
    }
    if !reg.skip_node_update && reg.address.is_empty() {
        return Err("Must provide address if SkipNodeUpdate is not set".into());
    }
    if let Some(svc) = &reg.service {
        if svc.service.is_empty() {
            return Err("Must provide service name (Service.Service) with Service.ID".into());
        }
        if !kind::ALL.contains(&svc.kind.as_str()) {
            return Err(format!("Invalid service kind: {:?}", svc.kind));
        }
        if svc.kind == kind::CONNECT_PROXY {
            let dest = svc
                .proxy
                .as_ref()
                .map(|p| p.destination_service_name.as_str());
            if dest.unwrap_or("").is_empty() {
                return Err("Proxy.DestinationServiceName must be set for a connect-proxy".into());
            }
        }
    }
    for check in reg.check.iter().chain(reg.checks.iter()) {
        if !check.node.is_empty() && check.node != reg.node {
            return Err(format!(
                "Check node {:?} does not match registration node {:?}",
                check.node, reg.node
            ));
        }
        if check.check_id.is_empty() && check.name.is_empty() {
            return Err("Check must have a CheckID or a Name".into());
        }
        if !check.status.is_empty() && !status::is_valid(&check.status) {
            return Err(format!("Invalid check status: {:?}", check.status));
        }
    }
    Ok(())
}

/// Checks a config entry's kind, name and the shape of the fields this version understands.
pub fn validate_config_entry(entry: &ConfigEntry) -> Result<(), String> {
    if !config_kind::ALL.contains(&entry.kind.as_str()) {
        return Err(format!("invalid config entry kind: {:?}", entry.kind));
    }
    if entry.name.is_empty() {
        return Err("config entry Name is required".into());
    }
    if entry.kind == config_kind::PROXY_DEFAULTS && entry.name != "global" {
        return Err(format!(
            "invalid name ({:?}), only \"global\" is supported for proxy-defaults",
            entry.name
        ));
    }
    match entry.typed().map(|(typed, _)| typed) {
        Some(TypedEntry::ServiceDefaults(ServiceDefaults { protocol, .. }))
        | Some(TypedEntry::ProxyDefaults(ProxyDefaults { protocol, .. })) => {
            if let Some(problem) = protocol.problem("Protocol") {
                return Err(problem);
            }
            if let Some(p) = protocol.get() {
                if !matches!(p.as_str(), "tcp" | "http" | "http2" | "grpc") {
                    return Err(format!("invalid protocol {p:?}"));
                }
            }
        }
        Some(TypedEntry::ServiceIntentions(view)) => crate::intentions::validate(entry, &view)?,
        None => {}
    }
    Ok(())
}

/// Fills the fields Consul computes for a config entry before storing it: each intention
/// source's `Type` (`consul`) and `Precedence`, with sources ordered by precedence.
pub fn normalize_config_entry(entry: &mut ConfigEntry) {
    if entry.kind != config_kind::SERVICE_INTENTIONS {
        return;
    }
    let dest_wild = entry.name == "*";
    let Some(Value::Array(sources)) = entry.body.get_mut("Sources") else {
        return;
    };
    for src in sources.iter_mut() {
        let Some(obj) = src.as_object_mut() else {
            continue;
        };
        let src_wild = Lenient::<String>::field(obj, "Name").text() == "*";
        let precedence = match (dest_wild, src_wild) {
            (false, false) => 9,
            (false, true) => 8,
            (true, false) => 6,
            (true, true) => 5,
        };
        obj.insert("Precedence".into(), precedence.into());
        if Lenient::<String>::field(obj, "Type").text().is_empty() {
            obj.insert("Type".into(), "consul".into());
        }
        // Methods are stored upper-case, as Consul normalises them.
        if let Some(Value::Array(perms)) = obj.get_mut("Permissions") {
            for perm in perms {
                if let Some(Value::Array(methods)) = perm.pointer_mut("/HTTP/Methods") {
                    for m in methods {
                        if let Some(s) = m.as_str() {
                            *m = s.to_ascii_uppercase().into();
                        }
                    }
                }
            }
        }
    }
    let key = |v: &Value| {
        let obj = v.as_object();
        (
            std::cmp::Reverse(
                obj.and_then(|o| Lenient::<u64>::field(o, "Precedence").get().copied())
                    .unwrap_or(0),
            ),
            obj.map(|o| Lenient::<String>::field(o, "Name").text().to_string())
                .unwrap_or_default(),
        )
    };
    sources.sort_by_key(key);
}

#[cfg(test)]
mod tests {
    use crate::Command;

    #[test]
    fn only_writes_that_applying_twice_leaves_alone_are_idempotent() {
        let dereg: trellis_api::CatalogDeregistration =
            serde_json::from_value(serde_json::json!({"Node": "n1"})).unwrap();
        let entry: trellis_api::ConfigEntry =
            serde_json::from_value(serde_json::json!({"Kind": "service-defaults", "Name": "web"}))
                .unwrap();
        let set = |cas| Command::ConfigSet {
            entry: entry.clone(),
            cas,
        };
        let upsert = |create_only| Command::IntentionUpsert {
            destination: "db".into(),
            source: serde_json::Map::new(),
            create_only,
            replace_id: None,
        };
        assert!(Command::Deregister(dereg.clone()).idempotent());
        assert!(set(None).idempotent());
        assert!(!set(Some(0)).idempotent(), "a check-and-set write");
        assert!(upsert(false).idempotent());
        assert!(!upsert(true).idempotent(), "a legacy create");
        let batch = |commands| Command::Batch { commands };
        assert!(batch(vec![set(None), Command::Deregister(dereg)]).idempotent());
        assert!(!batch(vec![set(None), set(Some(3))]).idempotent());
    }

    use super::*;
    use trellis_api::AgentService;

    #[test]
    fn registration_rules() {
        let mut reg = CatalogRegistration::default();
        assert_eq!(
            validate_registration(&reg).unwrap_err(),
            "Must provide node"
        );
        reg.node = "n1".into();
        assert!(validate_registration(&reg).is_err());
        reg.address = "10.0.0.1".into();
        assert!(validate_registration(&reg).is_ok());
        reg.service = Some(AgentService {
            kind: "connect-proxy".into(),
            service: "web-proxy".into(),
            ..Default::default()
        });
        assert!(validate_registration(&reg)
            .unwrap_err()
            .contains("DestinationServiceName"));
    }

    #[test]
    fn config_entry_rules() {
        let mk = |json: &str| serde_json::from_str::<ConfigEntry>(json).unwrap();
        assert!(validate_config_entry(&mk(
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"http"}"#
        ))
        .is_ok());
        assert!(validate_config_entry(&mk(
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"smtp"}"#
        ))
        .is_err());
        assert!(validate_config_entry(&mk(r#"{"Kind":"proxy-defaults","Name":"web"}"#)).is_err());
        assert!(validate_config_entry(&mk(r#"{"Kind":"nope","Name":"web"}"#)).is_err());
        assert!(validate_config_entry(&mk(
            r#"{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}"#
        ))
        .is_err());
        assert!(validate_config_entry(&mk(
            r#"{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"*","Action":"deny"}]}"#
        ))
        .is_ok());
    }
}
