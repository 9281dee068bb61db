//! Any bytes as ACL rule text (HCL or JSON): `Rules::parse` answers or names the problem,
//! never panics; an authorizer compiled from what it accepts answers every question, agrees
//! with the rules' own levels where they decide, and never lets the default policy manage
//! ACLs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_acl::{builtin, Access, Authorizer, Decision, DefaultPolicy, Resource, Rules};

const NAMES: &[&str] = &["", "web", "web-sidecar-proxy", "a/b", "\u{0}"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = Rules::parse(text) else {
        return;
    };
    for default in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
        let a = Authorizer::new([&rules], default);
        let fallback = if default == DefaultPolicy::Allow {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let mut names: Vec<&str> = NAMES.to_vec();
        names.extend(rules.rules.iter().map(|r| r.name.as_str()));
        for name in names {
            for resource in Resource::ALL {
                let rule = a.rule_for(resource, name);
                for needed in [Access::Read, Access::List, Access::Write] {
                    let d = a.check(resource, name, needed);
                    match rule {
                        Some(level) => assert_eq!(d.is_allowed(), level.grants(needed)),
                        None => assert_eq!(d, fallback),
                    }
                }
            }
            // An exact rule for the name decides it.
            if let Some(r) = rules
                .rules
                .iter()
                .find(|r| !r.prefix && r.name == name && r.resource == Resource::Service)
            {
                let merged = rules
                    .rules
                    .iter()
                    .filter(|o| !o.prefix && o.name == name && o.resource == Resource::Service)
                    .fold(r.access, |acc, o| acc.merge(o.access));
                assert_eq!(a.rule_for(Resource::Service, name), Some(merged));
            }
            let _ = (
                a.intention_read(name),
                a.intention_write(name),
                a.key_write_prefix(name),
            );
        }
        if rules.single(trellis_acl::Single::Acl).is_none() {
            assert_eq!(a.acl_write(), Decision::Deny);
        }
        let _ = (
            a.operator_write(),
            a.mesh_read(),
            a.peering_write(),
            a.keyring_read(),
        );
        // Adding global-management grants everything the rules do not deny.
        let m = Authorizer::new([&rules, &builtin::global_management()], default);
        assert_eq!(
            m.acl_write().is_allowed(),
            rules.single(trellis_acl::Single::Acl) != Some(Access::Deny)
        );
    }
});
