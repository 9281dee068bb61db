//! Built-in policies and the synthetic policies of service and node identities.
//!
//! Synthetic policies are built as [`Rules`] directly, never by putting a name into rule
//! text, so that no service or node name can add rules of its own.

use crate::rules::{Access, Resource, Rule, Rules, Single};

/// ID of the built-in `global-management` policy.
pub const GLOBAL_MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Name of the built-in `global-management` policy (renaming it is allowed).
pub const GLOBAL_MANAGEMENT_POLICY_NAME: &str = "global-management";
/// ID of the built-in `builtin/global-read-only` policy.
pub const GLOBAL_READ_ONLY_POLICY_ID: &str = "00000000-0000-0000-0000-000000000002";
/// Name of the built-in `builtin/global-read-only` policy.
pub const GLOBAL_READ_ONLY_POLICY_NAME: &str = "builtin/global-read-only";
/// Policy IDs starting with this are reserved for built-ins.
pub const RESERVED_POLICY_ID_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// The rule text of `global-management`, as its `Rules` field shows it. Immutable.
pub const GLOBAL_MANAGEMENT_RULES: &str = r#"acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"#;

/// The rule text of `builtin/global-read-only`. Immutable.
pub const GLOBAL_READ_ONLY_RULES: &str = r#"acl = "read"
agent_prefix "" {
  policy = "read"
}
event_prefix "" {
  policy = "read"
}
key_prefix "" {
  policy = "read"
}
keyring = "read"
node_prefix "" {
  policy = "read"
}
operator = "read"
mesh = "read"
peering = "read"
query_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
  intentions = "read"
}
session_prefix "" {
  policy = "read"
}
"#;

/// Every resource at one level: `acl`, `keyring`, `operator`, `mesh`, `peering`, and a
/// `_prefix ""` rule on every labelled resource (services with `intentions` at that level).
fn everything(access: Access) -> Rules {
    let mut rules = Rules::default();
    for which in Single::ALL {
        rules.set_single(which, access);
    }
    for resource in Resource::ALL {
        let rule = Rule::prefix(resource, "", access);
        rules.rules.push(if resource == Resource::Service {
            rule.with_intentions(access)
        } else {
            rule
        });
    }
    rules
}

/// `global-management`: write on everything ([`GLOBAL_MANAGEMENT_RULES`]).
pub fn global_management() -> Rules {
    everything(Access::Write)
}

/// `builtin/global-read-only`: read on everything ([`GLOBAL_READ_ONLY_RULES`]).
pub fn global_read_only() -> Rules {
    everything(Access::Read)
}

/// The synthetic policy of a service identity `name`: write on the service and on
/// `<name>-sidecar-proxy`, read on every service and every node.
pub fn service_identity(name: &str) -> Rules {
    Rules {
        rules: vec![
            Rule::exact(Resource::Service, name, Access::Write),
            Rule::exact(
                Resource::Service,
                format!("{name}-sidecar-proxy"),
                Access::Write,
            ),
            Rule::prefix(Resource::Service, "", Access::Read),
            Rule::prefix(Resource::Node, "", Access::Read),
        ],
        single: Default::default(),
    }
}

/// The synthetic policy of a node identity `name`: write on the node, read on every
/// service.
pub fn node_identity(name: &str) -> Rules {
    Rules {
        rules: vec![
            Rule::exact(Resource::Node, name, Access::Write),
            Rule::prefix(Resource::Service, "", Access::Read),
        ],
        single: Default::default(),
    }
}
