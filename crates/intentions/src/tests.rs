//! Engine tests: Consul's precedence table, L7 fall-through, validation, and a differential
//! property test against a brute-force evaluator.

use proptest::prelude::*;
use serde_json::json;

use crate::{parse_entry, precedence, Action, Engine, HttpRequest, Intention, Reason};

fn load(engine: &mut Engine, destination: &str, sources: serde_json::Value) {
    engine.set_destination(destination, parse_entry(destination, &sources).unwrap());
}

#[test]
fn precedence_table_and_first_match_wins() {
    assert_eq!(precedence("web", "db"), 9);
    assert_eq!(precedence("*", "db"), 8);
    assert_eq!(precedence("web", "*"), 6);
    assert_eq!(precedence("*", "*"), 5);
    let mut e = Engine::new();
    load(
        &mut e,
        "db",
        json!([{"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}]),
    );
    load(
        &mut e,
        "*",
        json!([{"Name": "api", "Action": "allow"}, {"Name": "*", "Action": "deny"}]),
    );
    let d = e.decide("web", "db", false);
    assert!(d.allowed);
    assert!(matches!(d.reason, Reason::Intention { precedence: 9, .. }));
    // `* -> db` (8) beats `api -> *` (6): exact destination first.
    let d = e.decide("api", "db", true);
    assert!(!d.allowed);
    assert!(matches!(d.reason, Reason::Intention { precedence: 8, .. }));
    assert!(e.decide("api", "cache", false).allowed);
    assert!(!e.decide("other", "cache", true).allowed);
    // Removing the wildcard destination leaves the default.
    e.set_destination("*", vec![]);
    assert_eq!(e.decide("other", "cache", true).reason, Reason::Default);
    assert_eq!(e.len(), 2);
}

#[test]
fn l7_permissions_first_match_then_default() {
    let mut e = Engine::new();
    load(
        &mut e,
        "api",
        json!([{"Name": "web", "Permissions": [
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "allow", "HTTP": {"PathRegex": "/v[0-9]+/.*", "Methods": ["get", "HEAD"]}},
            {"Action": "allow", "HTTP": {"Header": [{"Name": "X-Debug", "Present": true}]}},
            {"Action": "allow", "HTTP": {"Header": [{"Name": "x-env", "Exact": "prod", "Invert": true}], "PathExact": "/health"}}
        ]}]),
    );
    let req = |method, path, headers| HttpRequest {
        method,
        path,
        headers,
    };
    let check = |r: HttpRequest<'_>, default| e.decide_request("web", "api", &r, default).allowed;
    assert!(
        !check(req("GET", "/admin/x", &[]), true),
        "deny permission first"
    );
    assert!(check(req("GET", "/v2/users", &[]), false));
    assert!(
        !check(req("POST", "/v2/users", &[]), false),
        "method not allowed falls to the default"
    );
    assert!(check(req("POST", "/v2/users", &[]), true), "default allow");
    assert!(check(req("DELETE", "/x", &[("x-debug", "1")]), false));
    assert!(check(req("GET", "/health", &[("x-env", "dev")]), false));
    assert!(
        !check(req("GET", "/health", &[("x-env", "prod")]), false),
        "inverted header"
    );
    assert!(
        !check(req("GET", "/v2", &[]), false),
        "regex matches the whole path"
    );
    // At L4 an L7 intention cannot decide.
    let d = e.decide("web", "api", true);
    assert!(!d.allowed);
    assert!(matches!(d.reason, Reason::L7AtL4 { .. }));
}

#[test]
fn validation_reports_every_problem_at_once() {
    let bad = json!([
        {"Name": "web", "Action": "allow", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/"}}]},
        {"Name": "web", "Action": "maybe"},
        {"Name": "we*b", "Action": "deny"},
        {"Name": "api", "Permissions": [
            {"Action": "allow", "HTTP": {"PathExact": "no-slash"}},
            {"Action": "allow", "HTTP": {"PathRegex": "(unclosed"}},
            {"Action": "allow", "HTTP": {}},
            {"Action": "allow", "HTTP": {"Methods": ["FETCH", "GET", "get"]}},
            {"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Exact": "a", "Prefix": "b"}]}}
        ]},
        {"Action": "allow"}
    ]);
    let problems = parse_entry("db", &bad).unwrap_err();
    for needle in [
        "mutually exclusive",
        "listed more than once",
        "must be \"allow\" or \"deny\"",
        "wildcards must be the whole name",
        "must start with '/'",
        "does not compile",
        "should not be empty",
        "\"FETCH\" is not an HTTP method",
        "listed twice",
        "exactly one of Present",
        "Name is required",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle:?} missing from {problems:#?}"
        );
    }
    let wild = parse_entry(
        "*",
        &json!([{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/"}}]}]),
    );
    assert!(wild.unwrap_err()[0].contains("wildcard destination"));
}

/// The obvious evaluator: every intention that covers (source, destination), highest
/// precedence first.
fn reference(all: &[Intention], source: &str, destination: &str, default_allow: bool) -> bool {
    let mut matching: Vec<&Intention> = all
        .iter()
        .filter(|i| {
            (&*i.source == "*" || &*i.source == source)
                && (&*i.destination == "*" || &*i.destination == destination)
        })
        .collect();
    matching.sort_by_key(|i| std::cmp::Reverse(i.precedence));
    match matching.first() {
        None => default_allow,
        Some(i) => i.action == Some(Action::Allow),
    }
}

fn names() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("*")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn engine_agrees_with_brute_force(
        entries in prop::collection::btree_map(names(), prop::collection::btree_map(names(), any::<bool>(), 1..4), 0..5),
        queries in prop::collection::vec((prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")], prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")]), 1..10),
        default_allow in any::<bool>(),
    ) {
        let mut engine = Engine::new();
        let mut all = Vec::new();
        for (dest, sources) in &entries {
            let json: Vec<_> = sources.iter()
                .map(|(s, allow)| json!({"Name": s, "Action": if *allow { "allow" } else { "deny" }}))
                .collect();
            let parsed = parse_entry(dest, &serde_json::Value::Array(json)).unwrap();
            all.extend(parsed.clone());
            engine.set_destination(dest, parsed);
        }
        for (src, dst) in queries {
            prop_assert_eq!(engine.decide(src, dst, default_allow).allowed, reference(&all, src, dst, default_allow), "{} -> {}", src, dst);
        }
    }
}
