//! Parser tests (HCL and JSON, every resource, every error text), authorizer semantics,
//! built-ins, and property tests: the authorizer against a brute-force evaluator, rules
//! rendered as HCL and JSON read back unchanged, and no input making the parser panic.

use proptest::prelude::*;

use crate::builtin::{self, GLOBAL_MANAGEMENT_RULES, GLOBAL_READ_ONLY_RULES};
use crate::{
    intentions_level, Access, Authorizer, Decision, DefaultPolicy, Resource, Rule, Rules,
    RulesError, Single,
};

use Access::{Deny, List, Read, Write};
use Decision::{Allow, Deny as No};

fn parse(text: &str) -> Rules {
    match Rules::parse(text) {
        Ok(r) => r,
        Err(e) => panic!("{text}: {e}"),
    }
}

fn err(text: &str) -> String {
    match Rules::parse(text) {
        Ok(r) => panic!("{text}: accepted as {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn sorted(mut rules: Rules) -> Rules {
    rules.rules.sort_by(|a, b| {
        (a.resource, a.prefix, &a.name, a.access.as_str()).cmp(&(
            b.resource,
            b.prefix,
            &b.name,
            b.access.as_str(),
        ))
    });
    rules
}

const EVERY_RESOURCE_HCL: &str = r#"
# every resource once, exact and prefix
acl = "read"
agent "n1" { policy = "write" }
agent_prefix "n" { policy = "read" }
event "deploy" { policy = "write" }
event_prefix "" { policy = "read" }
key "app/config" { policy = "list" }
key_prefix "app/" { policy = "write" }
node "n1" { policy = "write" }
node_prefix "" { policy = "read" }
query "q" { policy = "write" }
query_prefix "" { policy = "deny" }
service "web" {
  policy = "write"
  intentions = "write"
}
service_prefix "" { policy = "read" }
session "n1" { policy = "write" }
session_prefix "" { policy = "read" }
keyring = "deny"
operator = "write"
mesh = "read"
peering = "write"
"#;

const EVERY_RESOURCE_JSON: &str = r#"{
  "acl": "read",
  "agent": {"n1": {"policy": "write"}},
  "agent_prefix": {"n": {"policy": "read"}},
  "event": {"deploy": {"policy": "write"}},
  "event_prefix": {"": {"policy": "read"}},
  "key": {"app/config": {"policy": "list"}},
  "key_prefix": {"app/": {"policy": "write"}},
  "node": {"n1": {"policy": "write"}},
  "node_prefix": {"": {"policy": "read"}},
  "query": {"q": {"policy": "write"}},
  "query_prefix": {"": {"policy": "deny"}},
  "service": {"web": {"policy": "write", "intentions": "write"}},
  "service_prefix": {"": {"policy": "read"}},
  "session": {"n1": {"policy": "write"}},
  "session_prefix": {"": {"policy": "read"}},
  "keyring": "deny",
  "operator": "write",
  "mesh": "read",
  "peering": "write"
}"#;

fn every_resource() -> Rules {
    let mut r = Rules {
        rules: vec![
            Rule::exact(Resource::Agent, "n1", Write),
            Rule::prefix(Resource::Agent, "n", Read),
            Rule::exact(Resource::Event, "deploy", Write),
            Rule::prefix(Resource::Event, "", Read),
            Rule::exact(Resource::Key, "app/config", List),
            Rule::prefix(Resource::Key, "app/", Write),
            Rule::exact(Resource::Node, "n1", Write),
            Rule::prefix(Resource::Node, "", Read),
            Rule::exact(Resource::Query, "q", Write),
            Rule::prefix(Resource::Query, "", Deny),
            Rule::exact(Resource::Service, "web", Write).with_intentions(Write),
            Rule::prefix(Resource::Service, "", Read),
            Rule::exact(Resource::Session, "n1", Write),
            Rule::prefix(Resource::Session, "", Read),
        ],
        single: Default::default(),
    };
    r.set_single(Single::Acl, Read);
    r.set_single(Single::Keyring, Deny);
    r.set_single(Single::Operator, Write);
    r.set_single(Single::Mesh, Read);
    r.set_single(Single::Peering, Write);
    r
}

#[test]
fn management_grants_all_and_a_partial_policy_does_not() {
    let m = Authorizer::new([&crate::builtin::global_management()], DefaultPolicy::Deny);
    assert!(m.grants_all(Resource::Service, Read) && m.grants_all(Resource::Node, Write));
    assert!(m.intentions_read_all());
    let web = Authorizer::new(
        [&crate::builtin::service_identity("web")],
        DefaultPolicy::Deny,
    );
    assert!(web.grants_all(Resource::Service, Read) && !web.grants_all(Resource::Service, Write));
    let some = Authorizer::new(
        [&Rules::parse(r#"service_prefix "a" { policy = "read" }"#).unwrap()],
        DefaultPolicy::Deny,
    );
    assert!(!some.grants_all(Resource::Service, Read));
    let denies = Authorizer::new(
        [&Rules::parse(r#"service "x" { policy = "deny" }"#).unwrap()],
        DefaultPolicy::Allow,
    );
    assert!(!denies.grants_all(Resource::Service, Read));
    assert!(denies.grants_all(Resource::Node, Read));
}

#[test]
fn every_resource_in_hcl_and_json() {
    let want = sorted(every_resource());
    assert_eq!(sorted(parse(EVERY_RESOURCE_HCL)), want);
    assert_eq!(sorted(parse(EVERY_RESOURCE_JSON)), want);
    // JSON keeps the text's order.
    assert_eq!(parse(EVERY_RESOURCE_JSON), every_resource());
}

#[test]
fn hcl1_forms_consul_accepts() {
    // HCL 1 (Consul's reader) takes several items on one line, commas between them, and
    // quoted block types; HCL 2 does not, so such text is rewritten once before reading.
    let want = parse(
        "service \"web\" {\n  policy = \"write\"\n  intentions = \"read\"\n}\nkey_prefix \"\" {\n  policy = \"deny\"\n}\noperator = \"read\"\n",
    );
    for text in [
        r#"service "web" { policy = "write" intentions = "read" } key_prefix "" { policy = "deny" } operator = "read""#,
        r#"service "web" { policy = "write", intentions = "read" }, key_prefix "" { policy = "deny" }, operator = "read""#,
        r#""service" "web" { "policy" = "write" "intentions" = "read" } "key_prefix" "" { policy = "deny" } "operator" = "read""#,
        "service \"web\" { policy = \"write\" /* a comment */ intentions = \"read\" } # more\nkey_prefix \"\" { policy = \"deny\" } // and more\noperator = \"read\"",
    ] {
        assert_eq!(parse(text), want, "{text}");
    }
    // Strings keep their text, commas in lists stay.
    let r =
        parse(r#"key_prefix = [{ "a, b" = { policy = "list" } }, { "c" = { policy = "read" } }]"#);
    assert_eq!(
        r.rules,
        vec![
            Rule::prefix(Resource::Key, "a, b", List),
            Rule::prefix(Resource::Key, "c", Read)
        ]
    );
    // What neither reads is reported as HCL 2 saw it.
    let e = err(r#"service "web" { policy = "read" "#);
    assert!(e.starts_with("Failed to parse ACL rules: "), "{e}");
}

#[test]
fn blank_text_is_no_rules() {
    for text in ["", "   \n\t", "# only a comment\n"] {
        assert_eq!(parse(text), Rules::default(), "{text:?}");
    }
    assert_eq!(parse("{}"), Rules::default());
    assert_eq!("".parse::<Rules>(), Ok(Rules::default()));
}

#[test]
fn repeated_blocks_lists_and_case() {
    // The same label twice: two rules (merged later by the authorizer).
    let r = parse(
        "service \"a\" { policy = \"read\" }\nservice \"a\" { policy = \"deny\" }\nservice \"b\" { policy = \"write\" }",
    );
    assert_eq!(
        r.rules,
        vec![
            Rule::exact(Resource::Service, "a", Read),
            Rule::exact(Resource::Service, "a", Deny),
            Rule::exact(Resource::Service, "b", Write),
        ]
    );
    // JSON: a list of label objects, and a list of bodies.
    let r = parse(
        r#"{"service": [{"a": {"policy": "read"}}, {"a": [{"policy": "deny"}], "b": {"policy": "write"}}]}"#,
    );
    assert_eq!(r.rules.len(), 3);
    // Keywords, fields and levels are case-insensitive, as Consul's decoder.
    let r = parse(
        r#"{"Service_Prefix": {"": {"Policy": "READ", "Intentions": "Deny"}}, "OPERATOR": "Write"}"#,
    );
    assert_eq!(
        r.rules,
        vec![Rule::prefix(Resource::Service, "", Read).with_intentions(Deny)]
    );
    assert_eq!(r.single(Single::Operator), Some(Write));
    // An empty single value is no value.
    assert_eq!(parse(r#"operator = """#), Rules::default());
    // HCL's list-of-objects form.
    let r = parse("key_prefix = [{ \"a/\" = { policy = \"list\" } }]");
    assert_eq!(r.rules, vec![Rule::prefix(Resource::Key, "a/", List)]);
}

#[test]
fn invalid_policy_texts_for_every_labelled_resource() {
    let cases = [
        ("agent", r#"&acl.AgentRule{Node:"x", Policy:"nope"}"#),
        ("agent_prefix", r#"&acl.AgentRule{Node:"x", Policy:"nope"}"#),
        ("event", r#"&acl.EventRule{Event:"x", Policy:"nope"}"#),
        (
            "event_prefix",
            r#"&acl.EventRule{Event:"x", Policy:"nope"}"#,
        ),
        (
            "key",
            r#"&acl.KeyRule{Prefix:"x", Policy:"nope", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        (
            "key_prefix",
            r#"&acl.KeyRule{Prefix:"x", Policy:"nope", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        (
            "node",
            r#"&acl.NodeRule{Name:"x", Policy:"nope", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        (
            "node_prefix",
            r#"&acl.NodeRule{Name:"x", Policy:"nope", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        (
            "query",
            r#"&acl.PreparedQueryRule{Prefix:"x", Policy:"nope"}"#,
        ),
        (
            "query_prefix",
            r#"&acl.PreparedQueryRule{Prefix:"x", Policy:"nope"}"#,
        ),
        (
            "service",
            r#"&acl.ServiceRule{Name:"x", Policy:"nope", Intentions:"", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        (
            "service_prefix",
            r#"&acl.ServiceRule{Name:"x", Policy:"nope", Intentions:"", EnterpriseRule:acl.EnterpriseRule{}}"#,
        ),
        ("session", r#"&acl.SessionRule{Node:"x", Policy:"nope"}"#),
        (
            "session_prefix",
            r#"&acl.SessionRule{Node:"x", Policy:"nope"}"#,
        ),
    ];
    for (kw, shown) in cases {
        let want = format!("Invalid {kw} policy: {shown}");
        assert_eq!(err(&format!("{kw} \"x\" {{ policy = \"nope\" }}")), want);
        assert_eq!(
            err(&format!(r#"{{"{kw}": {{"x": {{"policy": "nope"}}}}}}"#)),
            want
        );
        // A missing policy is an empty one, which is invalid.
        assert_eq!(
            err(&format!("{kw} \"x\" {{}}")),
            want.replace("Policy:\"nope\"", "Policy:\"\"")
        );
        // `list` is for keys only (`key_rules_take_list`).
        if !kw.starts_with("key") {
            assert_eq!(
                err(&format!("{kw} \"x\" {{ policy = \"list\" }}")),
                want.replace("nope", "list")
            );
        }
    }
}

#[test]
fn key_rules_take_list() {
    let r = parse(r#"key "a" { policy = "list" } key_prefix "b" { policy = "LIST" }"#);
    assert_eq!(
        r.rules,
        vec![
            Rule::exact(Resource::Key, "a", List),
            Rule::prefix(Resource::Key, "b", List),
        ]
    );
}

#[test]
fn invalid_intentions_and_single_texts() {
    assert_eq!(
        err(r#"service "web" { policy = "read" intentions = "allow" }"#),
        r#"Invalid service intentions policy: &acl.ServiceRule{Name:"web", Policy:"read", Intentions:"allow", EnterpriseRule:acl.EnterpriseRule{}}"#
    );
    assert_eq!(
        err(r#"service_prefix "" { policy = "write" intentions = "list" }"#),
        r#"Invalid service_prefix intentions policy: &acl.ServiceRule{Name:"", Policy:"write", Intentions:"list", EnterpriseRule:acl.EnterpriseRule{}}"#
    );
    for kw in ["acl", "keyring", "operator", "mesh", "peering"] {
        assert_eq!(
            err(&format!("{kw} = \"allow\"")),
            format!("Invalid {kw} policy: \"allow\"")
        );
        assert_eq!(
            err(&format!("{kw} = \"list\"")),
            format!("Invalid {kw} policy: \"list\"")
        );
    }
    // Go quoting of what is shown.
    assert_eq!(
        err("{\"operator\": \"a\\\"b\\n\\u0001\"}"),
        r#"Invalid operator policy: "a\"b\n\x01""#
    );
}

#[test]
fn errors_come_in_consuls_order() {
    // `acl` first, then agent, key, node, service, session, event, query (exact before
    // prefix), then keyring, operator, mesh, peering: whatever the text's order.
    let text = r#"
peering = "x"
operator = "x"
query_prefix "q" { policy = "x" }
service "s" { policy = "x" }
key_prefix "k" { policy = "x" }
key "k" { policy = "x" }
acl = "x"
"#;
    let mut text = text.to_owned();
    let expected = [
        "Invalid acl policy",
        "Invalid key policy",
        "Invalid key_prefix policy",
        "Invalid service policy",
        "Invalid query_prefix policy",
        "Invalid operator policy",
        "Invalid peering policy",
    ];
    for want in expected {
        let e = err(&text);
        assert!(e.starts_with(want), "{e} (wanted {want})");
        // Fix the line that failed and go on.
        let kw = want
            .trim_start_matches("Invalid ")
            .trim_end_matches(" policy");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{kw} ")))
            .map(str::to_owned)
            .unwrap();
        text = text.replace(&line, &line.replace("\"x\"", "\"read\""));
    }
    parse(&text);
}

#[test]
fn unknown_resources_fields_and_shapes() {
    assert_eq!(
        err(r#"servce "web" { policy = "read" }"#),
        r#"Failed to parse ACL rules: unknown resource "servce""#
    );
    assert_eq!(
        err(r#"{"namespace_prefix": {"": {"policy": "read"}}}"#),
        r#"Failed to parse ACL rules: unknown resource "namespace_prefix""#
    );
    assert_eq!(
        err("service \"web\" {\n  policy = \"read\"\n  intentons = \"deny\"\n}"),
        r#"Failed to parse ACL rules: unknown field "intentons" in service "web""#
    );
    // `intentions` is for services only.
    assert_eq!(
        err(r#"node_prefix "" { policy = "read" intentions = "deny" }"#),
        r#"Failed to parse ACL rules: unknown field "intentions" in node_prefix """#
    );
    assert!(matches!(
        Rules::parse(r#"operator { policy = "read" }"#),
        Err(RulesError::Shape { .. })
    ));
    assert!(matches!(
        Rules::parse(r#"{"service": {"web": {"policy": 1}}}"#),
        Err(RulesError::Shape { .. })
    ));
    assert!(matches!(
        Rules::parse(r#"{"service": "web"}"#),
        Err(RulesError::Shape { .. })
    ));
    assert!(matches!(
        Rules::parse(r#"{"service": {"web": ["read"]}}"#),
        Err(RulesError::Shape { .. })
    ));
    // Only `{` starts JSON; anything else is HCL, where a list is no body.
    assert!(matches!(Rules::parse("[1, 2]"), Err(RulesError::Syntax(_))));
}

#[test]
fn syntax_errors_and_depth() {
    for text in [
        "service \"web\" {",
        "service \"web\" { policy = }",
        "{\"service\": ",
        "{\"service\": {}} trailing",
        "= = =",
    ] {
        let e = Rules::parse(text).unwrap_err();
        assert!(matches!(e, RulesError::Syntax(_)), "{text}: {e:?}");
        assert!(e.to_string().starts_with("Failed to parse ACL rules: "));
    }
    // The parsers bound nesting, in plain expressions and inside templates alike.
    for deep in [
        format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("a = {}", "{".repeat(100_000)),
        format!("a = \"${{{}\"", "[".repeat(100_000)),
        format!("a = \"${{\"]]]\"}}\" {}", "(".repeat(100_000)),
        format!("a = {}", "-".repeat(100_000)),
    ] {
        assert!(matches!(Rules::parse(&deep), Err(RulesError::Syntax(_))));
    }
    // JSON's own recursion limit answers for JSON.
    let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert!(matches!(Rules::parse(&deep), Err(RulesError::Syntax(_))));
    // Brackets inside strings and comments do not count.
    let text = format!(
        "# {}\nservice \"{}\" {{ policy = \"read\" }}",
        "[".repeat(100),
        "{".repeat(10)
    );
    assert_eq!(parse(&text).rules.len(), 1);
}

fn authorizer(texts: &[&str], default: DefaultPolicy) -> Authorizer {
    let rules: Vec<Rules> = texts.iter().map(|t| parse(t)).collect();
    Authorizer::new(&rules, default)
}

#[test]
fn exact_beats_prefix_and_longest_prefix_wins() {
    let a = authorizer(
        &[r#"
service_prefix "" { policy = "read" }
service_prefix "we" { policy = "write" }
service_prefix "web-" { policy = "deny" }
service "web-admin" { policy = "read" }
service "web" { policy = "deny" }
"#],
        DefaultPolicy::Deny,
    );
    assert_eq!(a.service_read("db"), Allow);
    assert_eq!(a.service_write("db"), No);
    assert_eq!(a.service_write("wedding"), Allow);
    assert_eq!(a.service_read("web"), No);
    assert_eq!(a.service_read("web-api"), No);
    assert_eq!(a.service_read("web-admin"), Allow);
    assert_eq!(a.service_write("web-admin"), No);
    assert_eq!(a.service_read(""), Allow);
    // A prefix rule matches the name equal to it.
    assert_eq!(a.service_read("web-"), No);
    assert_eq!(a.service_write("we"), Allow);
}

#[test]
fn merging_takes_deny_then_write_then_list_then_read() {
    let a = authorizer(
        &[
            r#"service "a" { policy = "read" } key_prefix "k" { policy = "read" } operator = "write""#,
            r#"service "a" { policy = "write" } key_prefix "k" { policy = "list" } operator = "read""#,
            r#"service "b" { policy = "write" }"#,
            r#"service "b" { policy = "deny" } service_prefix "" { policy = "write" }"#,
        ],
        DefaultPolicy::Allow,
    );
    assert_eq!(a.service_write("a"), Allow);
    assert_eq!(a.service_read("b"), No);
    assert_eq!(a.key_list("k/x"), Allow);
    assert_eq!(a.key_write("k/x"), No);
    assert_eq!(a.operator_write(), Allow);
    // A merged exact read beats a prefix write: match decides, not level.
    let a = authorizer(
        &[
            r#"service "a" { policy = "read" }"#,
            r#"service_prefix "" { policy = "write" }"#,
        ],
        DefaultPolicy::Allow,
    );
    assert_eq!(a.service_write("a"), No);
    assert_eq!(a.service_write("ab"), Allow);
}

#[test]
fn intentions_follow_the_service_rule_unless_set() {
    let a = authorizer(
        &[r#"
service "r" { policy = "read" }
service "w" { policy = "write" }
service "d" { policy = "deny" }
service "iw" { policy = "read" intentions = "write" }
service "id" { policy = "write" intentions = "deny" }
service_prefix "p" { policy = "deny" intentions = "read" }
"#],
        DefaultPolicy::Allow,
    );
    assert_eq!(a.intention_read("r"), Allow);
    assert_eq!(a.intention_write("r"), No);
    assert_eq!(a.intention_read("w"), Allow);
    assert_eq!(
        a.intention_write("w"),
        No,
        "service:write is not intentions:write"
    );
    assert_eq!(a.intention_read("d"), No);
    assert_eq!(a.intention_write("iw"), Allow);
    assert_eq!(a.intention_read("id"), No);
    assert_eq!(a.service_write("id"), Allow);
    assert_eq!(a.intention_read("px"), Allow);
    assert_eq!(a.service_read("px"), No);
    // No service rule: the default.
    assert_eq!(a.intention_write("other"), Allow);
    // Defaulting happens after merging: an explicit level in one policy wins over a
    // service level in another.
    let a = authorizer(
        &[
            r#"service "x" { policy = "write" }"#,
            r#"service "x" { policy = "read" intentions = "deny" }"#,
            r#"service "y" { policy = "deny" }"#,
            r#"service "y" { policy = "read" intentions = "write" }"#,
        ],
        DefaultPolicy::Allow,
    );
    assert_eq!(a.service_write("x"), Allow);
    assert_eq!(a.intention_read("x"), No);
    assert_eq!(a.service_read("y"), No);
    assert_eq!(a.intention_write("y"), Allow);
}

#[test]
fn defaults_and_single_valued_resources() {
    let allow = Authorizer::default_only(DefaultPolicy::Allow);
    let deny = Authorizer::default_only(DefaultPolicy::Deny);
    assert_eq!(allow.default_policy(), DefaultPolicy::Allow);
    for (a, d) in [(&allow, Allow), (&deny, No)] {
        assert_eq!(a.service_write("x"), d);
        assert_eq!(a.intention_write("x"), d);
        assert_eq!(a.node_write("x"), d);
        assert_eq!(a.agent_read("x"), d);
        assert_eq!(a.key_write_prefix(""), d);
        assert_eq!(a.operator_write(), d);
        assert_eq!(a.keyring_write(), d);
        assert_eq!(a.mesh_write(), d);
        assert_eq!(a.peering_read(), d);
        assert_eq!(a.session_write("x"), d);
        assert_eq!(a.event_write("x"), d);
        assert_eq!(a.query_write("x"), d);
        // Managing ACLs needs a rule, whatever the default.
        assert_eq!(a.acl_read(), No);
        assert_eq!(a.acl_write(), No);
        assert_eq!(a.snapshot(), No);
    }
    // `mesh` and `peering` fall back to `operator`, which falls back to the default.
    let a = authorizer(&[r#"operator = "read""#], DefaultPolicy::Allow);
    assert_eq!(a.mesh_read(), Allow);
    assert_eq!(a.mesh_write(), No);
    assert_eq!(a.peering_write(), No);
    let a = authorizer(
        &[r#"operator = "deny" mesh = "write" acl = "read""#],
        DefaultPolicy::Deny,
    );
    assert_eq!(a.mesh_write(), Allow);
    assert_eq!(a.peering_read(), No);
    assert_eq!(a.acl_read(), Allow);
    assert_eq!(a.acl_write(), No);
    assert_eq!(a.keyring_read(), No);
}

#[test]
fn key_list_and_write_prefix() {
    let a = authorizer(
        &[r#"
key_prefix "" { policy = "read" }
key_prefix "app/" { policy = "list" }
key_prefix "tmp/" { policy = "write" }
key "tmp/keep" { policy = "read" }
key_prefix "tmp/ok/" { policy = "write" }
"#],
        DefaultPolicy::Allow,
    );
    assert_eq!(a.key_read("x"), Allow);
    assert_eq!(a.key_list("x"), No);
    assert_eq!(a.key_list("app/"), Allow);
    assert_eq!(a.key_read("app/a"), Allow);
    assert_eq!(a.key_write("app/a"), No);
    assert_eq!(a.key_write("tmp/a"), Allow);
    assert_eq!(a.key_write("tmp/keep"), No);
    // Recursive delete: every rule under the prefix must grant write.
    assert_eq!(a.key_write_prefix("tmp/ok/"), Allow);
    assert_eq!(a.key_write_prefix("tmp/"), No);
    assert_eq!(a.key_write_prefix("tmp/k"), No);
    assert_eq!(a.key_write_prefix("tmp/x"), Allow);
    assert_eq!(a.key_write_prefix("app/"), No);
    assert_eq!(a.key_write_prefix(""), No);
    // No applicable prefix rule and nothing under it that refuses: the default.
    let a = authorizer(&[r#"key "a/b" { policy = "write" }"#], DefaultPolicy::Deny);
    assert_eq!(a.key_write_prefix("a/"), No);
    let a = authorizer(&[r#"key "a/b" { policy = "write" }"#], DefaultPolicy::Allow);
    assert_eq!(a.key_write_prefix("a/"), Allow);
    let a = authorizer(&[r#"key "a/b" { policy = "read" }"#], DefaultPolicy::Allow);
    assert_eq!(a.key_write_prefix("a/"), No);
}

#[test]
fn builtin_texts_match_their_rules() {
    assert_eq!(
        sorted(parse(GLOBAL_MANAGEMENT_RULES)),
        sorted(builtin::global_management())
    );
    assert_eq!(
        sorted(parse(GLOBAL_READ_ONLY_RULES)),
        sorted(builtin::global_read_only())
    );
    assert!(builtin::GLOBAL_MANAGEMENT_POLICY_ID.starts_with(builtin::RESERVED_POLICY_ID_PREFIX));
    assert!(builtin::GLOBAL_READ_ONLY_POLICY_ID.starts_with(builtin::RESERVED_POLICY_ID_PREFIX));
}

#[test]
fn global_management_allows_everything_and_read_only_reads() {
    let m = Authorizer::new(&[builtin::global_management()], DefaultPolicy::Deny);
    let r = Authorizer::new(&[builtin::global_read_only()], DefaultPolicy::Deny);
    for name in ["", "web", "a/b/c"] {
        for resource in Resource::ALL {
            assert_eq!(m.check(resource, name, Write), Allow);
            assert_eq!(r.check(resource, name, Read), Allow);
            assert_eq!(r.check(resource, name, Write), No);
        }
        assert_eq!(m.intention_write(name), Allow);
        assert_eq!(r.intention_read(name), Allow);
        assert_eq!(r.intention_write(name), No);
        assert_eq!(m.key_write_prefix(name), Allow);
    }
    for (m, r) in [
        (m.acl_write(), r.acl_read()),
        (m.operator_write(), r.operator_read()),
        (m.keyring_write(), r.keyring_read()),
        (m.mesh_write(), r.mesh_read()),
        (m.peering_write(), r.peering_read()),
        (m.snapshot(), Allow),
    ] {
        assert_eq!((m, r), (Allow, Allow));
    }
    assert_eq!(r.acl_write(), No);
    assert_eq!(r.operator_write(), No);
}

#[test]
fn service_and_node_identities() {
    let s = Authorizer::new(&[builtin::service_identity("web")], DefaultPolicy::Deny);
    assert_eq!(s.service_write("web"), Allow);
    assert_eq!(s.service_write("web-sidecar-proxy"), Allow);
    assert_eq!(s.service_write("web2"), No);
    assert_eq!(s.service_read("db"), Allow);
    assert_eq!(s.node_read("n1"), Allow);
    assert_eq!(s.node_write("n1"), No);
    assert_eq!(s.intention_read("web"), Allow);
    assert_eq!(s.intention_write("web"), No);
    assert_eq!(s.agent_read("n1"), No);
    assert_eq!(s.operator_read(), No);
    // A name cannot smuggle rules in: it is a label, never text.
    let odd = "x\" } service_prefix \"\" { policy = \"write\" } service \"y";
    let s = Authorizer::new(&[builtin::service_identity(odd)], DefaultPolicy::Deny);
    assert_eq!(s.service_write(odd), Allow);
    assert_eq!(s.service_write("other"), No);

    let n = Authorizer::new(&[builtin::node_identity("n1")], DefaultPolicy::Deny);
    assert_eq!(n.node_write("n1"), Allow);
    assert_eq!(n.node_read("n2"), No);
    assert_eq!(n.service_read("web"), Allow);
    assert_eq!(n.service_write("web"), No);
    // A token with both, plus a policy that denies one service.
    let deny_db = parse(r#"service "db" { policy = "deny" }"#);
    let both = Authorizer::new(
        &[
            builtin::service_identity("web"),
            builtin::node_identity("n1"),
            deny_db,
        ],
        DefaultPolicy::Deny,
    );
    assert_eq!(both.service_write("web"), Allow);
    assert_eq!(both.node_write("n1"), Allow);
    assert_eq!(both.service_read("db"), No);
}

// ---- property tests ----

/// The brute-force answer: scan every rule of every policy; the merged exact rules for the
/// name, else the merged rules of the longest matching prefix.
fn brute_rule(
    policies: &[Rules],
    resource: Resource,
    name: &str,
) -> Option<(Access, Option<Access>)> {
    let merge = |acc: Option<(Access, Option<Access>)>, r: &Rule| {
        Some(match acc {
            None => (r.access, r.intentions),
            Some((a, i)) => (
                a.merge(r.access),
                match (i, r.intentions) {
                    (Some(x), Some(y)) => Some(x.merge(y)),
                    (x, y) => x.or(y),
                },
            ),
        })
    };
    let all = || {
        policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .filter(move |r| r.resource == resource)
    };
    let exact = all()
        .filter(|r| !r.prefix && r.name == name)
        .fold(None, merge);
    if exact.is_some() {
        return exact;
    }
    let longest = all()
        .filter(|r| r.prefix && name.starts_with(&r.name))
        .map(|r| r.name.len())
        .max()?;
    all()
        .filter(|r| r.prefix && r.name.len() == longest && name.starts_with(&r.name))
        .fold(None, merge)
}

fn brute_check(
    policies: &[Rules],
    resource: Resource,
    name: &str,
    needed: Access,
    default: DefaultPolicy,
) -> bool {
    match brute_rule(policies, resource, name) {
        Some((a, _)) => a.grants(needed),
        None => default == DefaultPolicy::Allow,
    }
}

fn brute_intention(policies: &[Rules], name: &str, needed: Access, default: DefaultPolicy) -> bool {
    match brute_rule(policies, Resource::Service, name) {
        Some((_, Some(i))) => i.grants(needed),
        Some((Read | Write, None)) => needed == Read,
        Some((_, None)) => false,
        None => default == DefaultPolicy::Allow,
    }
}

fn brute_key_write_prefix(policies: &[Rules], prefix: &str, default: DefaultPolicy) -> bool {
    let keys = || {
        policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .filter(|r| r.resource == Resource::Key)
    };
    let longest = keys()
        .filter(|r| r.prefix && prefix.starts_with(&r.name))
        .map(|r| r.name.len())
        .max();
    let base = longest.and_then(|len| {
        keys()
            .filter(|r| r.prefix && r.name.len() == len && prefix.starts_with(&r.name))
            .map(|r| r.access)
            .reduce(Access::merge)
    });
    if base.is_some_and(|a| a != Write) {
        return false;
    }
    let under_all_write = keys().filter(|r| r.name.starts_with(prefix)).all(|r| {
        // The merged level of this rule's (kind, name).
        keys()
            .filter(|o| o.prefix == r.prefix && o.name == r.name)
            .fold(r.access, |acc, o| acc.merge(o.access))
            == Write
    });
    if !under_all_write {
        return false;
    }
    match base {
        Some(_) => true,
        None => default == DefaultPolicy::Allow,
    }
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Deny), Just(Read), Just(List), Just(Write)]
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        3 => Just(Resource::Service),
        3 => Just(Resource::Key),
        1 => Just(Resource::Node),
        1 => Just(Resource::Agent),
        1 => Just(Resource::Session),
        1 => Just(Resource::Event),
        1 => Just(Resource::Query),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        resource(),
        any::<bool>(),
        "[ab]{0,3}",
        access(),
        proptest::option::of(prop_oneof![Just(Deny), Just(Read), Just(Write)]),
    )
        .prop_map(|(resource, prefix, name, access, intentions)| Rule {
            resource,
            prefix,
            name,
            access: if access == List && resource != Resource::Key {
                Read
            } else {
                access
            },
            intentions: intentions.filter(|_| resource == Resource::Service),
        })
}

fn policy() -> impl Strategy<Value = Rules> {
    (
        prop::collection::vec(rule(), 0..8),
        prop::array::uniform5(proptest::option::of(prop_oneof![
            Just(Deny),
            Just(Read),
            Just(Write)
        ])),
    )
        .prop_map(|(rules, single)| Rules { rules, single })
}

fn default_policy() -> impl Strategy<Value = DefaultPolicy> {
    prop_oneof![Just(DefaultPolicy::Allow), Just(DefaultPolicy::Deny)]
}

/// Rules as HCL, one block per rule (repeated labels stay repeated blocks).
fn to_hcl(rules: &Rules) -> String {
    let mut out = String::new();
    for r in &rules.rules {
        let kw = r.resource.keyword();
        let suffix = if r.prefix { "_prefix" } else { "" };
        out.push_str(&format!(
            "{kw}{suffix} \"{}\" {{\n  policy = \"{}\"\n",
            r.name, r.access
        ));
        if let Some(i) = r.intentions {
            out.push_str(&format!("  intentions = \"{i}\"\n"));
        }
        out.push_str("}\n");
    }
    for which in Single::ALL {
        if let Some(a) = rules.single(which) {
            out.push_str(&format!("{} = \"{a}\"\n", which.keyword()));
        }
    }
    out
}

/// Rules as JSON, each resource a list of one-label objects.
fn to_json(rules: &Rules) -> String {
    let mut top = serde_json::Map::new();
    for r in &rules.rules {
        let kw = format!(
            "{}{}",
            r.resource.keyword(),
            if r.prefix { "_prefix" } else { "" }
        );
        let mut body = serde_json::Map::new();
        body.insert("policy".into(), r.access.as_str().into());
        if let Some(i) = r.intentions {
            body.insert("intentions".into(), i.as_str().into());
        }
        let mut label = serde_json::Map::new();
        label.insert(r.name.clone(), body.into());
        if let Some(list) = top
            .entry(kw)
            .or_insert_with(|| serde_json::Value::Array(vec![]))
            .as_array_mut()
        {
            list.push(label.into());
        }
    }
    for which in Single::ALL {
        if let Some(a) = rules.single(which) {
            top.insert(which.keyword().into(), a.as_str().into());
        }
    }
    serde_json::Value::Object(top).to_string()
}

fn rules_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[ \n{}\\[\\]\"=:,a-z_#/*$%]{0,40}",
        // Near-valid HCL: real keywords, bad values and shapes.
        r#"((service|key|node|agent|operator|acl|mesh|servce)(_prefix)? ("[ab"]{0,3}" )?(\{ ?(policy|intentions|x) ?= ?("(read|write|list|deny|nope)?"|1|\[\]|\{\}) ?\}|= ?"(read|write|x)"|\[\]) ?\n?){0,4}"#,
        // Near-valid JSON.
        r#"\{("(service|key_prefix|operator|x)": ?(\{"[ab]{0,2}": ?(\{"(policy|intentions)": ?"(read|write|list|z)"\}|\[\]|"read")\}|\[\]|"write"|1|null),? ?){0,3}\}"#,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn authorizer_agrees_with_brute_force(
        policies in prop::collection::vec(policy(), 1..4),
        names in prop::collection::vec("[ab]{0,4}", 1..8),
        default in default_policy(),
    ) {
        let a = Authorizer::new(&policies, default);
        for name in &names {
            for resource in Resource::ALL {
                for needed in [Read, List, Write] {
                    prop_assert_eq!(
                        a.check(resource, name, needed).is_allowed(),
                        brute_check(&policies, resource, name, needed, default),
                        "{:?} {:?} {:?}", resource, name, needed
                    );
                }
            }
            for needed in [Read, Write] {
                let got = if needed == Read { a.intention_read(name) } else { a.intention_write(name) };
                prop_assert_eq!(
                    got.is_allowed(),
                    brute_intention(&policies, name, needed, default),
                    "intentions {:?} {:?}", name, needed
                );
            }
            prop_assert_eq!(
                a.key_write_prefix(name).is_allowed(),
                brute_key_write_prefix(&policies, name, default),
                "key_write_prefix {:?}", name
            );
            // `grants_all` may only be claimed when every name is granted.
            for resource in Resource::ALL {
                for needed in [Read, Write] {
                    if a.grants_all(resource, needed) {
                        prop_assert!(
                            brute_check(&policies, resource, name, needed, default),
                            "grants_all {:?} {:?} but not on {:?}", resource, needed, name
                        );
                    }
                }
            }
            if a.intentions_read_all() {
                prop_assert!(brute_intention(&policies, name, Read, default));
            }
            prop_assert_eq!(a.service_write(name), a.check(Resource::Service, name, Write));
            prop_assert_eq!(a.key_list(name), a.check(Resource::Key, name, List));
        }
        // Single-valued: merged by precedence, `mesh`/`peering` fall back to `operator`,
        // `acl` never to the default.
        let merged = |w: Single| policies
            .iter()
            .filter_map(|p| p.single(w))
            .reduce(Access::merge);
        let single = |w: Single, needed: Access| {
            let rule = match w {
                Single::Mesh | Single::Peering => merged(w).or(merged(Single::Operator)),
                _ => merged(w),
            };
            match rule {
                Some(r) => r.grants(needed),
                None => w != Single::Acl && default == DefaultPolicy::Allow,
            }
        };
        prop_assert_eq!(a.acl_read().is_allowed(), single(Single::Acl, Read));
        prop_assert_eq!(a.acl_write().is_allowed(), single(Single::Acl, Write));
        prop_assert_eq!(a.operator_read().is_allowed(), single(Single::Operator, Read));
        prop_assert_eq!(a.operator_write().is_allowed(), single(Single::Operator, Write));
        prop_assert_eq!(a.keyring_read().is_allowed(), single(Single::Keyring, Read));
        prop_assert_eq!(a.mesh_read().is_allowed(), single(Single::Mesh, Read));
        prop_assert_eq!(a.mesh_write().is_allowed(), single(Single::Mesh, Write));
        prop_assert_eq!(a.peering_write().is_allowed(), single(Single::Peering, Write));
    }

    #[test]
    fn hcl_and_json_renderings_read_back(rules in policy()) {
        let want = sorted(rules.clone());
        let hcl = to_hcl(&rules);
        prop_assert_eq!(sorted(Rules::parse(&hcl).map_err(|e| TestCaseError::fail(format!("{hcl}: {e}")))?), want.clone());
        let json = to_json(&rules);
        prop_assert_eq!(sorted(Rules::parse(&json).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?), want);
        prop_assert_eq!(intentions_level(Write, None), Read);
    }

    #[test]
    fn parsing_never_panics(text in rules_text(), name in "[ab]{0,3}") {
        if let Ok(rules) = Rules::parse(&text) {
            let a = Authorizer::new([&rules], DefaultPolicy::Deny);
            let _ = (a.service_write(&name), a.intention_read(&name), a.key_write_prefix(&name));
            // Whatever was read renders back to the same rules (when its names need no
            // escaping in HCL).
            let plain = |n: &str| n.chars().all(|c| c.is_ascii_alphanumeric() || "-_/. ".contains(c));
            if rules.rules.iter().all(|r| plain(&r.name)) {
                prop_assert_eq!(sorted(Rules::parse(&to_hcl(&rules)).map_err(|e| TestCaseError::fail(e.to_string()))?), sorted(rules));
            }
        }
    }
}
