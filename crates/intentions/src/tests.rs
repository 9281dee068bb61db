//! Engine tests: Consul's precedence table, L7 fall-through, validation (including mistyped
//! fields), and differential property tests of `decide` (L4) and `decide_request` (L7) against
//! brute-force evaluators.

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
    assert_eq!(d.reason.intention().map(|i| i.precedence), Some(9));
    // `* -> db` (8) beats `api -> *` (6): exact destination first.
    let d = e.decide("api", "db", true);
    assert!(!d.allowed);
    assert_eq!(d.reason.intention().map(|i| i.precedence), Some(8));
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
    // As Envoy: an absent header does not satisfy an inverted value test, and repeated values
    // are tested joined.
    assert!(
        !check(req("GET", "/health", &[]), false),
        "absent header, inverted exact"
    );
    assert!(
        check(
            req("GET", "/health", &[("x-env", "prod"), ("x-env", "dev")]),
            false
        ),
        "\"prod,dev\" is not \"prod\""
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

#[test]
fn mistyped_fields_are_refused_not_ignored() {
    // Each of these used to be accepted: an intention with neither an action nor permissions,
    // or a permission wider than written (a method list, path or Invert silently dropped).
    let http = |extra: serde_json::Value| json!([{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": extra}]}]);
    for (sources, needle) in [
        (
            json!([{"Name": "web", "Action": 1}]),
            "Action must be \"allow\" or \"deny\", not 1",
        ),
        (
            json!([{"Name": "web", "Action": null}]),
            "Action is required",
        ),
        (
            json!([{"Name": "web", "Permissions": [{"Action": true, "HTTP": {"PathExact": "/"}}]}]),
            "Permissions[0].Action must be",
        ),
        (
            json!([{"Name": "web", "Permissions": [{"HTTP": {"PathExact": "/"}}]}]),
            "Permissions[0].Action is required",
        ),
        (
            json!([{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": "GET /"}]}]),
            "HTTP must be an object",
        ),
        (
            json!([{"Name": "web", "Action": "allow", "Permissions": {"HTTP": {}}}]),
            "Permissions must be a list",
        ),
        (
            http(json!({"PathExact": "/", "Methods": "GET"})),
            "HTTP.Methods must be a list",
        ),
        (
            http(json!({"PathExact": 5, "Methods": ["GET"]})),
            "HTTP.PathExact must be a string",
        ),
        (
            http(json!({"PathRegex": ["/a"]})),
            "HTTP.PathRegex must be a string",
        ),
        (
            http(json!({"Header": {"Name": "x", "Present": true}})),
            "HTTP.Header must be a list",
        ),
        (
            http(json!({"Header": [{"Name": "x", "Exact": "a", "Invert": "true"}]})),
            "Header[0].Invert must be true or false",
        ),
        (
            http(json!({"Header": [{"Name": "x", "Present": "yes"}]})),
            "Header[0].Present must be true or false",
        ),
        (
            http(json!({"Header": [{"Name": "x", "Suffix": 1}]})),
            "Header[0].Suffix must be a string",
        ),
    ] {
        let problems = parse_entry("db", &sources).expect_err(&sources.to_string());
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle:?} missing from {problems:#?}"
        );
        assert!(
            !problems.iter().any(|p| !p.contains(needle)
                && (p.contains("should not be empty")
                    || p.contains("exactly one of")
                    || p.contains("required when there are no Permissions"))),
            "a follow-on complaint in {problems:#?}"
        );
    }
    // `null` is absent, and `"Present": false` next to a value test is Go's zero value.
    let ok = parse_entry(
        "db",
        &json!([
            {"Name": "web", "Action": null, "Permissions": [{"Action": "deny", "Description": null, "HTTP": {
                "PathExact": null, "PathPrefix": "/a", "Methods": null,
                "Header": [{"Name": "X-A", "Present": false, "Exact": "1", "Invert": null}]}}]},
            {"Name": "api", "Action": "allow", "Permissions": null}
        ]),
    )
    .unwrap();
    assert!(ok
        .iter()
        .all(|i| i.action.is_some() == i.permissions.is_empty()));
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

// ---------------------------------------------------------------------------------------------
// L7: a differential property test of `decide_request` (and `decide` on L7 intentions) against
// an evaluator written from the contract, working on the generated description of the entries
// rather than on what `parse_entry` made of them.

/// Path regexes the generator may use, each with a hand-written predicate for "the whole path
/// matches" (so the reference does not use the regex crate at all).
#[allow(clippy::type_complexity)]
const PATH_REGEXES: &[(&str, fn(&str) -> bool)] = &[
    ("/a.*", |p: &str| p.starts_with("/a")),
    ("/v[0-9]+/.*", |p: &str| {
        p.strip_prefix("/v").is_some_and(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with('/')
        })
    }),
    ("/[ab]", |p: &str| p == "/a" || p == "/b"),
    (".*/b", |p: &str| p.ends_with("/b")),
    // Alternation: only right if the engine anchors the whole pattern, not its first branch.
    ("/a|/b/a", |p: &str| p == "/a" || p == "/b/a"),
];

/// Header-value regexes, with predicates as above.
#[allow(clippy::type_complexity)]
const HEADER_REGEXES: &[(&str, fn(&str) -> bool)] = &[
    ("[0-9]+", |v: &str| {
        !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
    }),
    ("a.*", |v: &str| v.starts_with('a')),
    ("x|yz", |v: &str| v == "x" || v == "yz"),
];

#[derive(Debug, Clone)]
enum PathSpec {
    Exact(String),
    Prefix(&'static str),
    Regex(usize),
}

#[derive(Debug, Clone)]
enum HeaderTestSpec {
    Present,
    Exact(&'static str),
    Prefix(&'static str),
    Suffix(&'static str),
    Regex(usize),
}

#[derive(Debug, Clone)]
struct HeaderSpec {
    /// As written in the entry (mixed case allowed: names are case-insensitive).
    name: &'static str,
    test: HeaderTestSpec,
    invert: bool,
    /// Also write `"Present": false` next to a value test (valid: false does not count).
    explicit_not_present: bool,
}

#[derive(Debug, Clone)]
struct PermSpec {
    allow: bool,
    /// As written in the entry (mixed case allowed), distinct once upper-cased.
    methods: Vec<&'static str>,
    path: Option<PathSpec>,
    headers: Vec<HeaderSpec>,
}

#[derive(Debug, Clone)]
enum SourceSpec {
    L4(bool),
    L7(Vec<PermSpec>),
}

fn action_str(allow: bool) -> &'static str {
    if allow {
        "allow"
    } else {
        "deny"
    }
}

fn source_json(name: &str, spec: &SourceSpec) -> serde_json::Value {
    match spec {
        SourceSpec::L4(allow) => json!({"Name": name, "Action": action_str(*allow)}),
        SourceSpec::L7(perms) => {
            let perms: Vec<_> = perms
                .iter()
                .map(|p| {
                    let mut http = serde_json::Map::new();
                    match &p.path {
                        None => {}
                        Some(PathSpec::Exact(x)) => {
                            http.insert("PathExact".into(), json!(x));
                        }
                        Some(PathSpec::Prefix(x)) => {
                            http.insert("PathPrefix".into(), json!(x));
                        }
                        Some(PathSpec::Regex(k)) => {
                            http.insert("PathRegex".into(), json!(PATH_REGEXES[*k].0));
                        }
                    }
                    if !p.methods.is_empty() {
                        http.insert("Methods".into(), json!(p.methods));
                    }
                    if !p.headers.is_empty() {
                        let headers: Vec<_> = p
                            .headers
                            .iter()
                            .map(|h| {
                                let mut m = serde_json::Map::new();
                                m.insert("Name".into(), json!(h.name));
                                let (k, v) = match &h.test {
                                    HeaderTestSpec::Present => ("Present", json!(true)),
                                    HeaderTestSpec::Exact(x) => ("Exact", json!(x)),
                                    HeaderTestSpec::Prefix(x) => ("Prefix", json!(x)),
                                    HeaderTestSpec::Suffix(x) => ("Suffix", json!(x)),
                                    HeaderTestSpec::Regex(k) => {
                                        ("Regex", json!(HEADER_REGEXES[*k].0))
                                    }
                                };
                                m.insert(k.into(), v);
                                if h.explicit_not_present && k != "Present" {
                                    m.insert("Present".into(), json!(false));
                                }
                                if h.invert {
                                    m.insert("Invert".into(), json!(true));
                                }
                                serde_json::Value::Object(m)
                            })
                            .collect();
                        http.insert("Header".into(), json!(headers));
                    }
                    json!({"Action": action_str(p.allow), "HTTP": http})
                })
                .collect();
            json!({"Name": name, "Permissions": perms})
        }
    }
}

/// Consul's precedence for the default namespace, written out again: exact/exact 9, `*`
/// source 8, `*` destination 6, both 5.
fn reference_precedence(source: &str, destination: &str) -> u8 {
    match (source, destination) {
        ("*", "*") => 5,
        (_, "*") => 6,
        ("*", _) => 8,
        _ => 9,
    }
}

/// Envoy's header matching, written out again: absent headers match only "present" with
/// invert; repeated values are joined with `,`.
fn header_spec_matches(h: &HeaderSpec, headers: &[(&str, &str)]) -> bool {
    let name = h.name.to_ascii_lowercase();
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .collect();
    if values.is_empty() {
        return matches!(h.test, HeaderTestSpec::Present) && h.invert;
    }
    let v = values.join(",");
    let hit = match &h.test {
        HeaderTestSpec::Present => true,
        HeaderTestSpec::Exact(x) => v == *x,
        HeaderTestSpec::Prefix(x) => v.starts_with(*x),
        HeaderTestSpec::Suffix(x) => v.ends_with(*x),
        HeaderTestSpec::Regex(k) => (HEADER_REGEXES[*k].1)(&v),
    };
    hit != h.invert
}

fn perm_spec_matches(p: &PermSpec, req: &HttpRequest<'_>) -> bool {
    let path = match &p.path {
        None => true,
        Some(PathSpec::Exact(x)) => req.path == x,
        Some(PathSpec::Prefix(x)) => req.path.starts_with(x),
        Some(PathSpec::Regex(k)) => (PATH_REGEXES[*k].1)(req.path),
    };
    let method = p.methods.is_empty()
        || p.methods
            .iter()
            .any(|m| m.to_ascii_uppercase() == req.method);
    path && method
        && p.headers
            .iter()
            .all(|h| header_spec_matches(h, req.headers))
}

/// The contract, by brute force: every intention, highest precedence first; the first that
/// covers (source, destination) applies. `req` is `None` for an L4 (connection) decision.
fn reference_decision(
    all: &[(&str, &str, SourceSpec)],
    source: &str,
    destination: &str,
    req: Option<&HttpRequest<'_>>,
    default_allow: bool,
) -> crate::Decision {
    let mut sorted: Vec<&(&str, &str, SourceSpec)> = all.iter().collect();
    sorted.sort_by_key(|(s, d, _)| std::cmp::Reverse(reference_precedence(s, d)));
    let default = crate::Decision {
        allowed: default_allow,
        reason: Reason::Default,
    };
    let Some((s, d, spec)) = sorted
        .into_iter()
        .find(|(s, d, _)| (*s == "*" || *s == source) && (*d == "*" || *d == destination))
    else {
        return default;
    };
    let named = || {
        std::sync::Arc::new(crate::Intention {
            source: (*s).into(),
            destination: (*d).into(),
            action: None,
            permissions: Vec::new(),
            precedence: reference_precedence(s, d),
        })
    };
    let by = |permission| Reason::Intention {
        intention: named(),
        permission,
    };
    match (spec, req) {
        (SourceSpec::L4(allow), _) => crate::Decision {
            allowed: *allow,
            reason: by(None),
        },
        (SourceSpec::L7(_), None) => crate::Decision {
            allowed: false,
            reason: Reason::L7AtL4 { intention: named() },
        },
        (SourceSpec::L7(perms), Some(req)) => {
            match perms.iter().position(|p| perm_spec_matches(p, req)) {
                Some(k) => crate::Decision {
                    allowed: perms[k].allow,
                    reason: by(Some(k)),
                },
                None => default,
            }
        }
    }
}

const SEGMENTS: &[&str] = &["a", "b", "v1", "v22", "admin", "ab"];

fn path_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..4),
        any::<bool>(),
    )
        .prop_map(|(segs, trailing)| {
            let mut p = format!("/{}", segs.join("/"));
            if trailing && !segs.is_empty() {
                p.push('/');
            }
            p
        })
}

fn path_spec() -> impl Strategy<Value = PathSpec> {
    prop_oneof![
        path_strategy().prop_map(PathSpec::Exact),
        prop::sample::select(&["/", "/a", "/v", "/a/", "/admin", "/b/a"][..])
            .prop_map(PathSpec::Prefix),
        (0..PATH_REGEXES.len()).prop_map(PathSpec::Regex),
    ]
}

const HEADER_TEXT: &[&str] = &["a", "b", "ab", "1", "x"];

fn header_spec() -> impl Strategy<Value = HeaderSpec> {
    let test = prop_oneof![
        Just(HeaderTestSpec::Present),
        prop::sample::select(HEADER_TEXT).prop_map(HeaderTestSpec::Exact),
        prop::sample::select(HEADER_TEXT).prop_map(HeaderTestSpec::Prefix),
        prop::sample::select(HEADER_TEXT).prop_map(HeaderTestSpec::Suffix),
        (0..HEADER_REGEXES.len()).prop_map(HeaderTestSpec::Regex),
    ];
    (
        prop::sample::select(&["x-a", "X-A", "x-b", "X-b"][..]),
        test,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(name, test, invert, explicit_not_present)| HeaderSpec {
            name,
            test,
            invert,
            explicit_not_present,
        })
}

fn perm_spec() -> impl Strategy<Value = PermSpec> {
    (
        any::<bool>(),
        prop::sample::subsequence(&["GET", "post", "PUT", "Delete"][..], 0..3),
        prop::option::weighted(0.7, path_spec()),
        prop::collection::vec(header_spec(), 0..3),
    )
        .prop_map(|(allow, methods, path, headers)| {
            let mut p = PermSpec {
                allow,
                methods,
                path,
                headers,
            };
            // An empty HTTP block is invalid ("should not be empty"); that rule has its own test.
            if p.path.is_none() && p.methods.is_empty() && p.headers.is_empty() {
                p.methods.push("GET");
            }
            p
        })
}

fn source_spec() -> impl Strategy<Value = SourceSpec> {
    prop_oneof![
        2 => any::<bool>().prop_map(SourceSpec::L4),
        3 => prop::collection::vec(perm_spec(), 1..4).prop_map(SourceSpec::L7),
    ]
}

fn request_strategy(
) -> impl Strategy<Value = (&'static str, String, Vec<(&'static str, &'static str)>)> {
    (
        prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH"][..]),
        path_strategy(),
        prop::collection::vec(
            (
                prop::sample::select(&["x-a", "x-b", "x-c"][..]),
                prop::sample::select(&["", "a", "ab", "ba", "1", "12", "x", "yz"][..]),
            ),
            0..4,
        ),
    )
}

fn query_names() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn l7_engine_agrees_with_brute_force(
        entries in prop::collection::btree_map(names(), prop::collection::btree_map(names(), source_spec(), 1..4), 0..5),
        queries in prop::collection::vec((query_names(), query_names(), request_strategy()), 1..12),
        default_allow in any::<bool>(),
    ) {
        let mut engine = Engine::new();
        let mut all: Vec<(&str, &str, SourceSpec)> = Vec::new();
        for (&dest, sources) in &entries {
            let mut sources = sources.clone();
            let json = |sources: &std::collections::BTreeMap<&str, SourceSpec>| {
                serde_json::Value::Array(sources.iter().map(|(s, spec)| source_json(s, spec)).collect())
            };
            if dest == "*" && sources.values().any(|s| matches!(s, SourceSpec::L7(_))) {
                let problems = parse_entry(dest, &json(&sources)).unwrap_err();
                prop_assert!(
                    problems.iter().all(|p| p.contains("wildcard destination")),
                    "{:?}", problems
                );
                // Keep the entry, at L4: the first permission's action.
                for spec in sources.values_mut() {
                    if let SourceSpec::L7(perms) = spec {
                        *spec = SourceSpec::L4(perms[0].allow);
                    }
                }
            }
            let parsed = match parse_entry(dest, &json(&sources)) {
                Ok(p) => p,
                Err(problems) => {
                    prop_assert!(false, "valid entry {} {:?} refused: {:?}", dest, json(&sources), problems);
                    unreachable!()
                }
            };
            prop_assert_eq!(parsed.len(), sources.len());
            engine.set_destination(dest, parsed);
            all.extend(sources.into_iter().map(|(s, spec)| (s, dest, spec)));
        }
        prop_assert_eq!(engine.len(), all.len());
        for (src, dst, (method, path, headers)) in &queries {
            let req = HttpRequest { method, path, headers };
            let got = engine.decide_request(src, dst, &req, default_allow);
            let want = reference_decision(&all, src, dst, Some(&req), default_allow);
            prop_assert_eq!(&got, &want, "L7 {} -> {} {:?}", src, dst, req);
            let got = engine.decide(src, dst, default_allow);
            let want = reference_decision(&all, src, dst, None, default_allow);
            prop_assert_eq!(&got, &want, "L4 {} -> {}", src, dst);
            if matches!(want.reason, Reason::L7AtL4 { .. }) {
                prop_assert!(!got.allowed);
            }
        }
    }
}
