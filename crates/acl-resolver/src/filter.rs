//! What an identity may read of an answer, and what a config entry needs.
//!
//! [`answer`] makes, from a catalog, health, config or intentions answer, the answer without
//! the rows the authorizer does not allow reading (`node:read` on the node, `service:read` on
//! the service, `intentions:read` on the destination), as Consul's servers filter before
//! answering; `None` when nothing goes. The caller sets `X-Consul-Results-Filtered-By-ACLs`
//! when something went.

use trellis_acl::{Access, Authorizer, Decision, Resource};
use trellis_api::{config_kind, ConfigEntry};
use trellis_state::Typed;

/// The permission reading (`write == false`) or writing a config entry needs, as
/// `(decision, permission, name)`.
pub fn config_entry(
    authz: &Authorizer,
    kind: &str,
    name: &str,
    write: bool,
) -> (Decision, &'static str, Option<String>) {
    match (kind, write) {
        (config_kind::SERVICE_INTENTIONS, false) => (
            authz.intention_read(name),
            "intentions:read",
            Some(name.into()),
        ),
        (config_kind::SERVICE_INTENTIONS, true) => (
            authz.intention_write(name),
            "intentions:write",
            Some(name.into()),
        ),
        // proxy-defaults is readable by anyone (Consul's `ProxyConfigEntry.CanRead`); writing
        // it is mesh:write, which falls back to operator.
        (config_kind::PROXY_DEFAULTS, false) => (Decision::Allow, "", None),
        (config_kind::PROXY_DEFAULTS, true) => (authz.mesh_write(), "mesh:write", None),
        (_, false) => (authz.service_read(name), "service:read", Some(name.into())),
        (_, true) => (
            authz.service_write(name),
            "service:write",
            Some(name.into()),
        ),
    }
}

fn entry_readable(authz: &Authorizer, e: &ConfigEntry) -> bool {
    config_entry(authz, &e.kind, &e.name, false).0.is_allowed()
}

/// The rows of `v` that `keep` accepts, or `None` when it accepts them all (nothing is copied
/// then).
fn kept<T: Clone>(v: &[T], keep: impl Fn(&T) -> bool) -> Option<Vec<T>> {
    if v.iter().all(&keep) {
        return None;
    }
    Some(v.iter().filter(|x| keep(x)).cloned().collect())
}

fn kept_map<V: Clone>(
    m: &std::collections::BTreeMap<String, V>,
    keep: impl Fn(&str, &V) -> bool,
) -> Option<std::collections::BTreeMap<String, V>> {
    if m.iter().all(|(k, v)| keep(k, v)) {
        return None;
    }
    Some(
        m.iter()
            .filter(|(k, v)| keep(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// What `authz` may read of `typed`, when that is less than all of it (`None`: everything may
/// be read, and nothing was copied). Answers that are checked rather than filtered (a single
/// intention or config entry, the CA configuration, ACL objects) are never filtered here.
pub fn answer(authz: &Authorizer, typed: &Typed) -> Option<Typed> {
    // A token that reads every node and service (management, read-only, a service identity's
    // `_prefix ""` reads) has nothing removed: no row is checked.
    let all_nodes = authz.grants_all(Resource::Node, Access::Read);
    let all_services = authz.grants_all(Resource::Service, Access::Read);
    let node = |n: &str| all_nodes || authz.node_read(n).is_allowed();
    let service = |s: &str| all_services || authz.service_read(s).is_allowed();
    let everything = all_nodes && all_services;
    match typed {
        Typed::Intentions(_) | Typed::IntentionMatches(_) if authz.intentions_read_all() => {
            return None
        }
        Typed::Nodes(_)
        | Typed::Services(_)
        | Typed::NodeServices(_)
        | Typed::ServiceNodes(_)
        | Typed::Checks(_)
        | Typed::ServiceEntries(_)
        | Typed::Members(_)
            if everything =>
        {
            return None
        }
        _ => {}
    }
    let check = |c: &trellis_api::HealthCheck| {
        node(&c.node) && (c.service_name.is_empty() || service(&c.service_name))
    };
    match typed {
        Typed::Nodes(nodes) => kept(nodes, |n| node(&n.node)).map(Typed::Nodes),
        Typed::Services(services) => {
            kept_map(services, |name, _| service(name)).map(Typed::Services)
        }
        Typed::NodeServices(Some(inner)) if !node(&inner.node.node) => {
            Some(Typed::NodeServices(None))
        }
        Typed::NodeServices(Some(inner)) => kept_map(&inner.services, |_, s| service(&s.service))
            .map(|services| {
                Typed::NodeServices(Some(trellis_api::NodeServices {
                    node: inner.node.clone(),
                    services,
                }))
            }),
        Typed::ServiceNodes(rows) => {
            kept(rows, |r| node(&r.node) && service(&r.service_name)).map(Typed::ServiceNodes)
        }
        Typed::Checks(checks) => kept(checks, check).map(Typed::Checks),
        Typed::ServiceEntries(entries) => {
            let visible = |e: &trellis_api::ServiceEntry| {
                node(&e.node.node) && service(&e.service.service) && e.checks.iter().all(check)
            };
            kept(entries, visible).map(|_| {
                Typed::ServiceEntries(
                    entries
                        .iter()
                        .filter(|e| node(&e.node.node) && service(&e.service.service))
                        .map(|e| {
                            let mut e = e.clone();
                            e.checks.retain(check);
                            e
                        })
                        .collect(),
                )
            })
        }
        Typed::Members(members) => kept(members, |m| node(&m.node)).map(Typed::Members),
        Typed::ConfigEntries(entries) => {
            kept(entries, |e| entry_readable(authz, e)).map(Typed::ConfigEntries)
        }
        Typed::Intentions(list) => kept(list, |i| {
            authz.intention_read(&i.destination_name).is_allowed()
        })
        .map(Typed::Intentions),
        Typed::IntentionMatches(by_name) => {
            kept_map(by_name, |name, _| authz.intention_read(name).is_allowed())
                .map(Typed::IntentionMatches)
        }
        Typed::NodeServices(None)
        | Typed::ConfigEntry(_)
        | Typed::NodeState(_)
        | Typed::CaRoots(_)
        | Typed::CaConfig(_)
        | Typed::Intention(_)
        | Typed::ServiceConfig(_)
        | Typed::AclToken(_)
        | Typed::AclTokens(_)
        | Typed::AclPolicy(_)
        | Typed::AclPolicies(_)
        | Typed::AclRole(_)
        | Typed::AclRoles(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_acl::{DefaultPolicy, Rules};
    use trellis_api::Node;

    fn authz(rules: &str) -> Authorizer {
        Authorizer::new([&Rules::parse(rules).unwrap()], DefaultPolicy::Deny)
    }

    #[test]
    fn nodes_and_services_are_kept_only_where_readable() {
        let a =
            authz(r#"node_prefix "web-" { policy = "read" } service "api" { policy = "read" }"#);
        let nodes = Typed::Nodes(vec![
            Node {
                node: "web-1".into(),
                ..Default::default()
            },
            Node {
                node: "db-1".into(),
                ..Default::default()
            },
        ]);
        let Some(Typed::Nodes(n)) = answer(&a, &nodes) else {
            panic!()
        };
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].node, "web-1");
        let services = Typed::Services(
            [("api".to_string(), vec![]), ("db".to_string(), vec![])]
                .into_iter()
                .collect(),
        );
        let Some(Typed::Services(s)) = answer(&a, &services) else {
            panic!()
        };
        assert_eq!(s.keys().collect::<Vec<_>>(), ["api"]);
        // Nothing to remove: not filtered, nothing copied.
        assert!(answer(&a, &Typed::Services(s)).is_none());
    }

    #[test]
    fn config_entries_need_what_consul_asks() {
        let a = authz(r#"service "web" { policy = "read" intentions = "write" }"#);
        assert!(config_entry(&a, "service-defaults", "web", false)
            .0
            .is_allowed());
        assert!(!config_entry(&a, "service-defaults", "web", true)
            .0
            .is_allowed());
        assert!(config_entry(&a, "service-intentions", "web", true)
            .0
            .is_allowed());
        assert!(!config_entry(&a, "service-intentions", "db", false)
            .0
            .is_allowed());
        assert!(config_entry(&a, "proxy-defaults", "global", false)
            .0
            .is_allowed());
        assert!(!config_entry(&a, "proxy-defaults", "global", true)
            .0
            .is_allowed());
    }
}
