//! The authorizer: policies merged, then compiled into one byte trie per resource, so that a
//! decision walks the name once, whatever the number of rules.

use std::collections::HashMap;

use crate::rules::{Access, Resource, Rule, Rules, Single};

/// What the agent does when no rule applies (`acl.default_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Everything no rule denies is allowed, except managing ACLs (and snapshots).
    Allow,
    /// Only what a rule grants is allowed.
    Deny,
}

/// An answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Permitted.
    Allow,
    /// Not permitted.
    Deny,
}

impl Decision {
    /// `true` for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    fn from_bool(allowed: bool) -> Decision {
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

/// The trie node's rules: one for the exact name ending here, one for the prefix ending here.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, u32)>,
    exact: Option<Access>,
    prefix: Option<Access>,
}

/// Rules of one resource, keyed byte by byte.
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree {
            nodes: vec![Node::default()],
        }
    }
}

impl Tree {
    fn child(&self, node: usize, byte: u8) -> Option<usize> {
        let children = &self.nodes[node].children;
        children
            .binary_search_by_key(&byte, |(b, _)| *b)
            .ok()
            .map(|i| children[i].1 as usize)
    }

    fn insert(&mut self, name: &str, prefix: bool, access: Access) {
        let mut node = 0;
        for byte in name.bytes() {
            node = match self.child(node, byte) {
                Some(c) => c,
                None => {
                    let id = self.nodes.len();
                    self.nodes.push(Node::default());
                    let children = &mut self.nodes[node].children;
                    let at = children.partition_point(|(b, _)| *b < byte);
                    // Fewer nodes than bytes of rule text, which is far below `u32::MAX`.
                    children.insert(at, (byte, u32::try_from(id).unwrap_or(u32::MAX)));
                    id
                }
            };
        }
        let slot = if prefix {
            &mut self.nodes[node].prefix
        } else {
            &mut self.nodes[node].exact
        };
        *slot = Some(slot.map_or(access, |old| old.merge(access)));
    }

    /// The rule that applies to `name`: its exact rule, else the longest prefix rule that
    /// starts it; `None` when there is neither.
    fn get(&self, name: &str) -> Option<Access> {
        let mut node = 0;
        let mut best = None;
        for byte in name.bytes() {
            best = self.nodes[node].prefix.or(best);
            match self.child(node, byte) {
                Some(c) => node = c,
                None => return best,
            }
        }
        let n = &self.nodes[node];
        n.exact.or(n.prefix).or(best)
    }

    /// The node whose path is `prefix`, if any rule lies at or under it.
    fn find(&self, prefix: &str) -> Option<usize> {
        prefix
            .bytes()
            .try_fold(0, |node, byte| self.child(node, byte))
    }

    /// Whether every rule of the tree grants `needed`.
    fn all_grant(&self, needed: Access) -> bool {
        self.nodes.iter().all(|n| {
            [n.exact, n.prefix]
                .into_iter()
                .flatten()
                .all(|a| a.grants(needed))
        })
    }

    /// Whether every rule (exact or prefix) at or under `node` grants write.
    fn all_write_under(&self, node: usize) -> bool {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let n = &self.nodes[n];
            if [n.exact, n.prefix]
                .into_iter()
                .flatten()
                .any(|a| a != Access::Write)
            {
                return false;
            }
            stack.extend(n.children.iter().map(|(_, c)| *c as usize));
        }
        true
    }
}

/// Decides what a token may do, from the policies it holds (its own, its roles', and the
/// synthetic ones of its service and node identities) and the agent's default policy.
///
/// Built once per token resolution ([`Authorizer::new`]); every check is a walk of the name
/// through a trie, O(length of the name).
#[derive(Debug, Clone)]
pub struct Authorizer {
    default: DefaultPolicy,
    trees: [Tree; 7],
    intentions: Tree,
    single: [Option<Access>; 5],
}

impl Authorizer {
    /// Merges `policies` as Consul does (for one name, or one prefix, of one resource, the
    /// level that takes precedence: deny, write, list, read; `intentions` likewise, then
    /// defaulted from the merged service level when no policy set it) and compiles them.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = &'a Rules>,
        default: DefaultPolicy,
    ) -> Authorizer {
        let mut merged: HashMap<(Resource, bool, &str), (Access, Option<Access>)> = HashMap::new();
        let mut single: [Option<Access>; 5] = [None; 5];
        for rules in policies {
            for (slot, given) in single.iter_mut().zip(rules.single) {
                if let Some(given) = given {
                    *slot = Some(slot.map_or(given, |old| old.merge(given)));
                }
            }
            for Rule {
                resource,
                prefix,
                name,
                access,
                intentions,
            } in &rules.rules
            {
                let entry = merged
                    .entry((*resource, *prefix, name.as_str()))
                    .or_insert((*access, None));
                entry.0 = entry.0.merge(*access);
                entry.1 = match (entry.1, *intentions) {
                    (Some(a), Some(b)) => Some(a.merge(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let mut trees: [Tree; 7] = Default::default();
        let mut intentions = Tree::default();
        for ((resource, prefix, name), (access, given)) in merged {
            trees[resource.index()].insert(name, prefix, access);
            if resource == Resource::Service {
                intentions.insert(name, prefix, intentions_level(access, given));
            }
        }
        Authorizer {
            default,
            trees,
            intentions,
            single,
        }
    }

    /// An authorizer with no rules: the default policy decides everything.
    pub fn default_only(default: DefaultPolicy) -> Authorizer {
        Authorizer::new([], default)
    }

    /// The default policy this authorizer falls back to; also the default intention
    /// behaviour when ACLs are enabled (`IntentionDefaultAllow`).
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    fn fallback(&self) -> Decision {
        Decision::from_bool(self.default == DefaultPolicy::Allow)
    }

    fn enforce(&self, rule: Option<Access>, needed: Access) -> Decision {
        match rule {
            Some(rule) => Decision::from_bool(rule.grants(needed)),
            None => self.fallback(),
        }
    }

    fn grants_everywhere(&self, tree: &Tree, needed: Access) -> bool {
        let covered = tree.nodes[0].prefix.is_some() || self.default == DefaultPolicy::Allow;
        covered && tree.all_grant(needed)
    }

    /// Whether `needed` is granted on every name of `resource`: every rule grants it, and a
    /// name no rule names falls to a `_prefix ""` rule or to the default, which grant it too.
    /// Lets a caller skip checking each row of a long answer (a management token's reads).
    pub fn grants_all(&self, resource: Resource, needed: Access) -> bool {
        self.grants_everywhere(&self.trees[resource.index()], needed)
    }

    /// Whether intentions may be read whatever their destination ([`Authorizer::grants_all`]
    /// for `intentions`).
    pub fn intentions_read_all(&self) -> bool {
        self.grants_everywhere(&self.intentions, Access::Read)
    }

    /// The level of the rule that applies to `name` for `resource` (exact beats prefix,
    /// longest prefix wins), if any.
    pub fn rule_for(&self, resource: Resource, name: &str) -> Option<Access> {
        self.trees[resource.index()].get(name)
    }

    /// The level on intentions whose destination is `name`, if a service rule applies.
    pub fn intentions_rule_for(&self, destination: &str) -> Option<Access> {
        self.intentions.get(destination)
    }

    /// Whether the rule that applies to `name` grants `needed`; the default policy when no
    /// rule applies.
    pub fn check(&self, resource: Resource, name: &str, needed: Access) -> Decision {
        self.enforce(self.rule_for(resource, name), needed)
    }

    /// The level given for a single-valued resource (after merging), if any.
    pub fn single_rule(&self, which: Single) -> Option<Access> {
        self.single[which.index()]
    }

    fn check_single(&self, which: Single, needed: Access) -> Decision {
        let rule = self.single[which.index()];
        let rule = match which {
            // Unset `mesh` and `peering` fall back to `operator`.
            Single::Mesh | Single::Peering => rule.or(self.single[Single::Operator.index()]),
            _ => rule,
        };
        match (which, rule) {
            // Managing ACLs is never granted by the default policy alone.
            (Single::Acl, None) => Decision::Deny,
            _ => self.enforce(rule, needed),
        }
    }

    /// `service:read` on `name`.
    pub fn service_read(&self, name: &str) -> Decision {
        self.check(Resource::Service, name, Access::Read)
    }

    /// `service:write` on `name`.
    pub fn service_write(&self, name: &str) -> Decision {
        self.check(Resource::Service, name, Access::Write)
    }

    /// `intentions:read` on intentions whose destination is `destination`.
    pub fn intention_read(&self, destination: &str) -> Decision {
        self.enforce(self.intentions.get(destination), Access::Read)
    }

    /// `intentions:write` on intentions whose destination is `destination`.
    pub fn intention_write(&self, destination: &str) -> Decision {
        self.enforce(self.intentions.get(destination), Access::Write)
    }

    /// `node:read` on `name`.
    pub fn node_read(&self, name: &str) -> Decision {
        self.check(Resource::Node, name, Access::Read)
    }

    /// `node:write` on `name`.
    pub fn node_write(&self, name: &str) -> Decision {
        self.check(Resource::Node, name, Access::Write)
    }

    /// `agent:read` on the agent of node `node`.
    pub fn agent_read(&self, node: &str) -> Decision {
        self.check(Resource::Agent, node, Access::Read)
    }

    /// `agent:write` on the agent of node `node`.
    pub fn agent_write(&self, node: &str) -> Decision {
        self.check(Resource::Agent, node, Access::Write)
    }

    /// `key:read` on `key`.
    pub fn key_read(&self, key: &str) -> Decision {
        self.check(Resource::Key, key, Access::Read)
    }

    /// `key:list` on `prefix` (listing keys; `read` does not grant it, `list` and `write` do).
    pub fn key_list(&self, prefix: &str) -> Decision {
        self.check(Resource::Key, prefix, Access::List)
    }

    /// `key:write` on `key`.
    pub fn key_write(&self, key: &str) -> Decision {
        self.check(Resource::Key, key, Access::Write)
    }

    /// Write on every key under `prefix` (a recursive delete): denied if the longest prefix
    /// rule that applies to `prefix` does not grant write, or if any rule at or under
    /// `prefix` does not; allowed if that prefix rule grants write; else the default.
    pub fn key_write_prefix(&self, prefix: &str) -> Decision {
        let tree = &self.trees[Resource::Key.index()];
        // The longest prefix rule on the path to `prefix`, the node at `prefix` included
        // (an exact rule there does not count).
        let mut node = Some(0);
        let mut base = None;
        for byte in prefix.bytes() {
            let Some(n) = node else { break };
            base = tree.nodes[n].prefix.or(base);
            node = tree.child(n, byte);
        }
        if let Some(n) = node {
            base = tree.nodes[n].prefix.or(base);
        }
        if base.is_some_and(|a| a != Access::Write) {
            return Decision::Deny;
        }
        if tree.find(prefix).is_some_and(|n| !tree.all_write_under(n)) {
            return Decision::Deny;
        }
        match base {
            Some(_) => Decision::Allow,
            None => self.fallback(),
        }
    }

    /// `session:read` on sessions of node `node`.
    pub fn session_read(&self, node: &str) -> Decision {
        self.check(Resource::Session, node, Access::Read)
    }

    /// `session:write` on sessions of node `node`.
    pub fn session_write(&self, node: &str) -> Decision {
        self.check(Resource::Session, node, Access::Write)
    }

    /// `event:read` on user event `name`.
    pub fn event_read(&self, name: &str) -> Decision {
        self.check(Resource::Event, name, Access::Read)
    }

    /// `event:write` (fire) on user event `name`.
    pub fn event_write(&self, name: &str) -> Decision {
        self.check(Resource::Event, name, Access::Write)
    }

    /// `query:read` on prepared query `name`.
    pub fn query_read(&self, name: &str) -> Decision {
        self.check(Resource::Query, name, Access::Read)
    }

    /// `query:write` on prepared query `name`.
    pub fn query_write(&self, name: &str) -> Decision {
        self.check(Resource::Query, name, Access::Write)
    }

    /// `operator:read`.
    pub fn operator_read(&self) -> Decision {
        self.check_single(Single::Operator, Access::Read)
    }

    /// `operator:write`.
    pub fn operator_write(&self) -> Decision {
        self.check_single(Single::Operator, Access::Write)
    }

    /// `acl:read`; denied when no rule gives `acl`, whatever the default policy.
    pub fn acl_read(&self) -> Decision {
        self.check_single(Single::Acl, Access::Read)
    }

    /// `acl:write`; denied when no rule gives `acl`, whatever the default policy.
    pub fn acl_write(&self) -> Decision {
        self.check_single(Single::Acl, Access::Write)
    }

    /// Taking or restoring a snapshot: `acl:write`.
    pub fn snapshot(&self) -> Decision {
        self.acl_write()
    }

    /// `keyring:read`.
    pub fn keyring_read(&self) -> Decision {
        self.check_single(Single::Keyring, Access::Read)
    }

    /// `keyring:write`.
    pub fn keyring_write(&self) -> Decision {
        self.check_single(Single::Keyring, Access::Write)
    }

    /// `mesh:read` (the `operator` rule when no `mesh` rule is given).
    pub fn mesh_read(&self) -> Decision {
        self.check_single(Single::Mesh, Access::Read)
    }

    /// `mesh:write` (the `operator` rule when no `mesh` rule is given).
    pub fn mesh_write(&self) -> Decision {
        self.check_single(Single::Mesh, Access::Write)
    }

    /// `peering:read` (the `operator` rule when no `peering` rule is given).
    pub fn peering_read(&self) -> Decision {
        self.check_single(Single::Peering, Access::Read)
    }

    /// `peering:write` (the `operator` rule when no `peering` rule is given).
    pub fn peering_write(&self) -> Decision {
        self.check_single(Single::Peering, Access::Write)
    }
}

/// The level on intentions a (merged) service rule gives: as set, or `read` when the service
/// level is `read` or `write` and `deny` otherwise.
pub fn intentions_level(service: Access, given: Option<Access>) -> Access {
    given.unwrap_or(match service {
        Access::Read | Access::Write => Access::Read,
        Access::Deny | Access::List => Access::Deny,
    })
}
