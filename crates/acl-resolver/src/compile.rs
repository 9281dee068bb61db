//! A token's authorizer from its policies, roles and identities.

use trellis_acl::builtin::{node_identity, service_identity};
use trellis_acl::{Access, Authorizer, DefaultPolicy, Resource, Rule, Rules};
use trellis_api::{AclIdentity, AclNodeIdentity, AclServiceIdentity, AclTemplatedPolicy};

/// The rules of the `builtin/dns` templated policy: read on every node, service and prepared
/// query.
pub fn dns_rules() -> Rules {
    Rules {
        rules: vec![
            Rule::prefix(Resource::Node, "", Access::Read),
            Rule::prefix(Resource::Service, "", Access::Read),
            Rule::prefix(Resource::Query, "", Access::Read),
        ],
        single: Default::default(),
    }
}

fn applies_in(datacenters: &[String], dc: &str) -> bool {
    datacenters.is_empty() || datacenters.iter().any(|d| d == dc)
}

fn identities<'a>(
    services: &'a [AclServiceIdentity],
    nodes: &'a [AclNodeIdentity],
    templated: &'a [AclTemplatedPolicy],
    dc: &'a str,
) -> impl Iterator<Item = Rules> + 'a {
    let services = services
        .iter()
        .filter(move |s| applies_in(&s.datacenters, dc))
        .map(|s| service_identity(&s.service_name));
    let nodes = nodes
        .iter()
        .filter(move |n| n.datacenter == dc)
        .map(|n| node_identity(&n.node_name));
    let templated = templated
        .iter()
        .filter(move |t| applies_in(&t.datacenters, dc))
        .filter_map(|t| {
            let name = t
                .template_variables
                .as_ref()
                .map(|v| v.name.as_str())
                .unwrap_or("");
            match t.template_name.as_str() {
                "builtin/service" => Some(service_identity(name)),
                "builtin/node" => Some(node_identity(name)),
                "builtin/dns" => Some(dns_rules()),
                _ => None,
            }
        });
    services.chain(nodes).chain(templated)
}

/// The authorizer of `identity` in datacenter `dc`: its policies (and its roles') that apply in
/// `dc`, and the synthetic policies of its identities (a node identity only in its own
/// datacenter), over the default policy. A stored policy whose rules no longer parse (written by
/// another version) is left out and logged.
pub fn compile(identity: &AclIdentity, dc: &str, default: DefaultPolicy) -> Authorizer {
    let mut all: Vec<Rules> = Vec::new();
    for p in &identity.policies {
        if !applies_in(&p.datacenters, dc) {
            continue;
        }
        match Rules::parse(&p.rules) {
            Ok(r) => all.push(r),
            Err(e) => {
                tracing::warn!(policy = %p.id, error = %e, "policy rules do not parse; left out")
            }
        }
    }
    let t = &identity.token;
    all.extend(identities(
        &t.service_identities,
        &t.node_identities,
        &t.templated_policies,
        dc,
    ));
    for r in &identity.roles {
        all.extend(identities(
            &r.service_identities,
            &r.node_identities,
            &r.templated_policies,
            dc,
        ));
    }
    Authorizer::new(all.iter(), default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::{AclPolicy, AclRole, AclTemplateVariables, AclToken};

    fn identity() -> AclIdentity {
        AclIdentity {
            token: AclToken {
                service_identities: vec![AclServiceIdentity {
                    service_name: "web".into(),
                    datacenters: vec![],
                }],
                node_identities: vec![AclNodeIdentity {
                    node_name: "n1".into(),
                    datacenter: "dc2".into(),
                }],
                ..Default::default()
            },
            policies: vec![
                AclPolicy {
                    id: "p1".into(),
                    rules: r#"key_prefix "app/" { policy = "write" }"#.into(),
                    ..Default::default()
                },
                AclPolicy {
                    id: "p2".into(),
                    rules: r#"operator = "write""#.into(),
                    datacenters: vec!["dc9".into()],
                    ..Default::default()
                },
            ],
            roles: vec![AclRole {
                templated_policies: vec![AclTemplatedPolicy {
                    template_name: "builtin/service".into(),
                    template_variables: Some(AclTemplateVariables { name: "db".into() }),
                    datacenters: vec![],
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn policies_identities_and_roles_all_count_where_they_apply() {
        let a = compile(&identity(), "dc1", DefaultPolicy::Deny);
        assert!(a.service_write("web").is_allowed());
        assert!(a.service_write("web-sidecar-proxy").is_allowed());
        assert!(
            a.service_write("db").is_allowed(),
            "the role's templated policy"
        );
        assert!(!a.service_write("api").is_allowed());
        assert!(a.service_read("api").is_allowed());
        assert!(a.key_write("app/x").is_allowed());
        // p2 applies in dc9 only, the node identity in dc2 only.
        assert!(!a.operator_write().is_allowed());
        assert!(!a.node_write("n1").is_allowed());
        let b = compile(&identity(), "dc2", DefaultPolicy::Deny);
        assert!(b.node_write("n1").is_allowed());
    }
}
