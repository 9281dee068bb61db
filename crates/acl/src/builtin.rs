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

/// A templated policy (Consul's `builtin/service`, `builtin/node`, `builtin/dns`): shown by
/// `/v1/acl/templated-policies` and previewed with its variables. Tokens and roles that name
/// one are compiled from the same rules built directly ([`service_identity`],
/// [`node_identity`]), never from this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// `builtin/service`, ...
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The rule text, `{{.Name}}` standing for the `Name` variable.
    pub template: &'static str,
    /// The JSON schema of its variables (empty when it takes none).
    pub schema: &'static str,
}

const NAME_SCHEMA: &str = r##"{
  "type": "object",
  "properties": {
    "name": { "type": "string", "$ref": "#/definitions/min-length-one" }
  },
  "required": ["name"],
  "definitions": {
    "min-length-one": { "type": "string", "minLength": 1 }
  }
}"##;

/// The templated policies Trellis knows.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "builtin/service",
        description: "Gives the token or role permissions to register a service and discover services in the Consul catalog. It also gives the specified service's sidecar proxy the permission to discover and route traffic to other services.",
        template: r#"service "{{.Name}}" {
  policy = "write"
}
service "{{.Name}}-sidecar-proxy" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
"#,
        schema: NAME_SCHEMA,
    },
    Template {
        name: "builtin/node",
        description: "Gives the token or role permissions for a register an agent/node into the catalog. A node is typically a consul agent but can also be a physical server, cloud instance or a container.",
        template: r#"node "{{.Name}}" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
"#,
        schema: NAME_SCHEMA,
    },
    Template {
        name: "builtin/dns",
        description: "Gives the token or role permissions for the Consul DNS to query services in the network.",
        template: r#"node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
query_prefix "" {
  policy = "read"
}
"#,
        schema: "",
    },
];

/// The templated policy called `name`.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

impl Template {
    /// Its rule text for the variable `name` (for display; the name is written as an HCL string
    /// with its quotes and backslashes escaped).
    pub fn render(&self, name: &str) -> String {
        let escaped: String = name
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        self.template.replace("{{.Name}}", &escaped)
    }
}

/// The ID Consul gives a synthetic policy: the FNV-1a 128-bit hash of its rule text in hex.
pub fn synthetic_policy_id(rules: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in rules.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("{h:032x}")
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn templates_render_to_rules_that_match_the_built_ones() {
        let t = template("builtin/service").unwrap();
        let text = t.render("web");
        assert!(text.contains(r#"service "web" {"#));
        let parsed = Rules::parse(&text).unwrap();
        let a = crate::Authorizer::new([&parsed], crate::DefaultPolicy::Deny);
        let b = crate::Authorizer::new([&service_identity("web")], crate::DefaultPolicy::Deny);
        for name in ["web", "web-sidecar-proxy", "db"] {
            assert_eq!(a.service_write(name), b.service_write(name));
            assert_eq!(a.service_read(name), b.service_read(name));
        }
        // A name cannot add rules of its own to the shown text.
        let evil = t.render("x\" { policy = \"write\" } acl = \"write");
        assert!(
            Rules::parse(&evil).is_err()
                || !Rules::parse(&evil)
                    .unwrap()
                    .single
                    .iter()
                    .any(Option::is_some)
        );
        assert!(template("builtin/nope").is_none());
    }

    #[test]
    fn synthetic_ids_are_fnv128a() {
        // FNV-1a 128 of the empty string is its offset basis.
        assert_eq!(synthetic_policy_id(""), "6c62272e07bb014262b821756295c58d");
        assert_ne!(synthetic_policy_id("a"), synthetic_policy_id("b"));
    }
}
