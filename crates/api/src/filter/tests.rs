use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// The intentions endpoint's selectors plus a few of the catalog's, for list and nested tests.
const SELECTORS: &[&str] = &[
    "Action",
    "Description",
    "DestinationNS",
    "DestinationName",
    "ID",
    "Meta",
    "Precedence",
    "SourceNS",
    "SourceName",
    "SourceType",
    "Tags",
    "Enabled",
    "Weight",
    "Checks",
    "Service.Tags",
    "Service.Service",
];

fn item() -> Value {
    json!({
        "ID": "a1b2",
        "Action": "allow",
        "Description": "",
        "SourceName": "web",
        "SourceNS": "default",
        "DestinationName": "db",
        "DestinationNS": "default",
        "SourceType": "consul",
        "Precedence": 9,
        "Weight": 1.5,
        "Enabled": true,
        "Meta": {"env": "prod", "some key": "v", "x-y": "z", "empty": ""},
        "Tags": ["a", "b", "primary"],
        "Checks": [
            {"Status": "passing", "Name": "ping"},
            {"Status": "critical", "Name": "http"}
        ],
        "Service": {"Service": "db", "Tags": ["v1"]},
        "Nothing": null
    })
}

fn parse(expr: &str) -> Filter {
    Filter::parse(expr, SELECTORS).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

fn eval(expr: &str) -> bool {
    parse(expr).matches(&item())
}

fn err(expr: &str) -> FilterError {
    match Filter::parse(expr, SELECTORS) {
        Ok(f) => panic!("{expr:?} parsed: {f:?}"),
        Err(e) => e,
    }
}

fn syntax_at(expr: &str) -> (usize, String) {
    match err(expr) {
        FilterError::Syntax { pos, message } => (pos, message),
        other => panic!("{expr:?}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn equality_on_strings() {
    assert!(eval(r#"Action == "allow""#));
    assert!(eval("Action == allow"));
    assert!(eval("Action == `allow`"));
    assert!(eval("Action==allow"));
    assert!(!eval(r#"Action == "deny""#));
    assert!(eval(r#"Action != "deny""#));
    assert!(!eval(r#"Action != "allow""#));
    assert!(eval(r#"Description == """#));
    assert!(
        !eval(r#"Action == "Allow""#),
        "comparison is case-sensitive"
    );
}

#[test]
fn numbers_compare_numerically_and_strings_as_text() {
    assert!(eval("Precedence == 9"));
    assert!(eval(r#"Precedence == "9""#));
    assert!(eval("Precedence == 9.0"));
    assert!(!eval("Precedence == 8"));
    assert!(eval("Precedence != 8"));
    assert!(
        !eval("Precedence == nine"),
        "unconvertible value is unequal"
    );
    assert!(eval("Precedence != nine"));
    assert!(eval("Weight == 1.5"));
    assert!(eval("Weight == `1.50`"));
    assert!(!eval("Weight == 1"));

    let v = json!({"Action": "9", "Precedence": -3, "Weight": u64::MAX});
    assert!(parse("Action == 9").matches(&v));
    assert!(
        !parse("Action == 9.0").matches(&v),
        "strings compare as text"
    );
    assert!(parse("Precedence == -3").matches(&v));
    assert!(parse(&format!("Weight == {}", u64::MAX)).matches(&v));
    assert!(!parse(&format!("Weight == {}", u64::MAX - 1)).matches(&v));
}

#[test]
fn bools_convert_like_go() {
    for yes in ["true", "True", "TRUE", "t", "T", "1", r#""true""#] {
        assert!(eval(&format!("Enabled == {yes}")), "{yes}");
    }
    for no in ["false", "F", "0"] {
        assert!(eval(&format!("Enabled != {no}")), "{no}");
    }
    assert!(!eval("Enabled == yes"));
}

#[test]
fn emptiness() {
    assert!(eval("Description is empty"));
    assert!(!eval("Description is not empty"));
    assert!(eval("Action is not empty"));
    assert!(eval("Tags is not empty"));
    assert!(eval("Meta is not empty"));
    assert!(eval("Meta.empty is empty"));
    assert!(eval("Meta.missing is empty"));
    let v = json!({"Tags": [], "Meta": {}});
    assert!(parse("Tags is empty").matches(&v));
    assert!(parse("Meta is empty").matches(&v));
    assert!(!parse("Precedence is empty and Enabled is empty").matches(&item()));
    assert!(eval("Precedence is not empty"), "numbers are never empty");
    assert!(eval("Description is\n\tempty"));
}

#[test]
fn in_and_contains_on_lists_maps_and_strings() {
    assert!(eval(r#""a" in Tags"#));
    assert!(eval("primary in Tags"));
    assert!(eval("Tags contains primary"));
    assert!(!eval(r#""c" in Tags"#));
    assert!(eval(r#""c" not in Tags"#));
    assert!(eval(r#"Tags not contains "c""#));
    assert!(!eval(r#"Tags not contains "a""#));
    assert!(
        !eval(r#""prim" in Tags"#),
        "list membership is whole-element"
    );
    // Map: key membership.
    assert!(eval(r#""env" in Meta"#));
    assert!(eval(r#"Meta contains "some key""#));
    assert!(!eval(r#""prod" in Meta"#));
    // String: substring.
    assert!(eval(r#""llo" in Action"#));
    assert!(eval(r#"SourceName contains "e""#));
    assert!(eval(r#""" in SourceName"#));
    assert!(!eval(r#"SourceName contains "x""#));
    // Numbers in lists convert like ==; a number is not a container.
    let v = json!({"Tags": [1, "two", true], "Precedence": 9});
    assert!(parse("1 in Tags").matches(&v));
    assert!(parse("1.0 in Tags").matches(&v));
    assert!(parse("two in Tags").matches(&v));
    assert!(parse("t in Tags").matches(&v));
    assert!(!parse("3 in Tags").matches(&v));
    assert!(!parse("9 in Precedence").matches(&v));
    assert!(parse("9 not in Precedence").matches(&v));
}

#[test]
fn matches_is_an_unanchored_regex() {
    assert!(eval(r#"Action matches "^al""#));
    assert!(eval("SourceName matches `e`"));
    assert!(eval(r#"ID matches "\\d""#));
    assert!(eval(r"ID matches `^[a-z]\d[a-z]\d$`"));
    assert!(!eval(r#"Action matches "^deny$""#));
    assert!(eval(r#"Action not matches "^deny$""#));
    assert!(
        !eval("Precedence matches `9`"),
        "only strings match regexes"
    );
    assert!(eval("Precedence not matches `9`"));
    assert!(!eval("Tags matches `a`"));
}

#[test]
fn missing_and_null_selectors() {
    for sel in ["Meta.nope", "Meta.env.deeper", "Nothing", "SourceType.x"] {
        let allowed = ["Meta", "Nothing", "SourceType"];
        let f = |e: String| Filter::parse(&e, &allowed).unwrap().matches(&item());
        assert!(f(format!("{sel} is empty")), "{sel}");
        assert!(!f(format!("{sel} is not empty")), "{sel}");
        assert!(!f(format!("{sel} == x")), "{sel}");
        assert!(f(format!("{sel} != x")), "{sel}");
        assert!(!f(format!("x in {sel}")), "{sel}");
        assert!(f(format!("x not in {sel}")), "{sel}");
        assert!(!f(format!("{sel} contains x")), "{sel}");
        assert!(f(format!("{sel} not contains x")), "{sel}");
        assert!(!f(format!("{sel} matches `.*`")), "{sel}");
        assert!(f(format!("{sel} not matches `.*`")), "{sel}");
    }
    // A non-object item has nothing to select.
    let f = parse("Action == allow or Action is empty");
    assert!(f.matches(&json!("allow")));
    assert!(f.matches(&json!(null)));
}

#[test]
fn list_and_object_values_never_equal_a_scalar() {
    assert!(!eval("Tags == a"));
    assert!(eval("Tags != a"));
    assert!(!eval("Meta == prod"));
    assert!(eval("Meta != prod"));
}

#[test]
fn map_selectors() {
    assert!(eval("Meta.env == prod"));
    assert!(eval(r#"Meta["env"] == prod"#));
    assert!(eval(r#"Meta[ "some key" ] == v"#));
    assert!(eval(r#"Meta["x-y"] == z"#));
    assert!(eval(r#"Meta."x-y" == z"#));
    assert!(eval("Meta.`some key` == v"));
    assert!(!eval("Meta.env == dev"));
    assert!(eval(r#"Service.Tags contains "v1""#));
    assert!(eval("Service.Service == db"));
}

#[test]
fn selecting_through_a_list_is_any_element() {
    assert!(eval("Checks.Status == passing"));
    assert!(eval("Checks.Status == critical"));
    assert!(!eval("Checks.Status == warning"));
    // bexpr applies the negated operator per element: some check is not passing.
    assert!(eval("Checks.Status != passing"));
    assert!(!eval("not Checks.Status == critical"));
    assert!(!parse("Checks.Status == passing").matches(&json!({"Checks": []})));
    // A number part indexes the list.
    assert!(eval("Tags.0 == a"));
    assert!(eval("Tags.2 == primary"));
    assert!(eval("Tags.9 is empty"));
    assert!(eval("Checks.1.Name == http"));
}

#[test]
fn precedence_not_and_or() {
    // or binds loosest: (false and false) or true.
    assert!(eval("Action == deny and Action == deny or Action == allow"));
    // and binds tighter than or: true or (false and false).
    assert!(eval("Action == allow or Action == deny and Action == deny"));
    // Parentheses override: (true or false) and false.
    assert!(!eval(
        "(Action == allow or Action == deny) and Action == deny"
    ));
    // not binds tightest: (not false) and true.
    assert!(eval("not Action == deny and Action == allow"));
    assert!(!eval("not (Action == allow and Action == allow)"));
    assert!(eval("not not Action == allow"));
    assert!(eval("not(Action == deny)"));
    assert!(eval("((((Action == allow))))"));
    assert!(eval("  Action == allow  "));
    assert!(eval("Action == allow\nand\tSourceName == web"));
    assert!(eval(
        r#"Action == allow and (SourceName == "api" or "prod" in Meta.env) and not Tags is empty"#
    ));
}

#[test]
fn keywords_are_whole_words() {
    let allowed = ["order", "notes", "index", "android", "is_x"];
    let v = json!({"order": 1, "notes": "n", "index": "i", "android": "a", "is_x": ""});
    for expr in [
        "order == 1",
        "notes == n",
        "index == i",
        "android == a and order == 1",
        "is_x is empty",
        "notes == n or order == 2",
        "x not in notes",
    ] {
        let f = Filter::parse(expr, &allowed).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert!(f.matches(&v), "{expr}");
    }
    assert!(Filter::parse("order == 1 order == 1", &allowed).is_err());
}

#[test]
fn quoted_and_raw_strings() {
    let v = json!({
        "Description": "say \"hi\"\n\tback\\slash é ✓",
        "ID": r"C:\path\n",
    });
    let f = |e: &str| {
        Filter::parse(e, &["Description", "ID"])
            .unwrap_or_else(|err| panic!("{e}: {err}"))
            .matches(&v)
    };
    assert!(f(
        r#"Description == "say \"hi\"\n\tback\\slash \u00e9 \U00002713""#
    ));
    assert!(f(r#"Description contains "\x5c""#));
    assert!(f(r#"Description contains "\134slash""#));
    assert!(f(r#"Description contains "\"hi\"""#));
    assert!(f(r"ID == `C:\path\n`"));
    assert!(f("ID matches `^C:\\\\path`"));
    assert!(f(r#"Description contains "é ✓""#));
    assert!(f("Description contains `\"hi\"`"));
}

#[test]
fn apply_keeps_matching_items_in_order() {
    let items = vec![
        json!({"SourceName": "a", "Action": "allow"}),
        json!({"SourceName": "b", "Action": "deny"}),
        json!({"SourceName": "c", "Action": "allow"}),
    ];
    let out = parse("Action == allow").apply(items);
    let names: Vec<_> = out.iter().map(|v| v["SourceName"].clone()).collect();
    assert_eq!(names, vec![json!("a"), json!("c")]);
}

#[test]
fn display_and_debug_show_the_source() {
    let f = parse("Action == allow");
    assert_eq!(f.to_string(), "Action == allow");
    assert!(format!("{f:?}").contains("Action == allow"));
}

// ---- errors ---------------------------------------------------------------------------------

#[test]
fn unknown_selectors() {
    assert_eq!(
        err("Foo == 1"),
        FilterError::UnknownSelector {
            selector: "Foo".into(),
            pos: 1
        }
    );
    let e = err("Action == allow and \"x\" in Bogus.Sub");
    assert_eq!(
        e,
        FilterError::UnknownSelector {
            selector: "Bogus.Sub".into(),
            pos: 28
        }
    );
    assert_eq!(
        e.to_string(),
        "Failed to create boolean expression evaluator: Selector \"Bogus.Sub\" is not valid (at position 28)"
    );
    // Only the allowed dotted prefixes: Service.Tags yes, Service.ID and Service no.
    assert!(matches!(
        err("Service.ID == x"),
        FilterError::UnknownSelector { .. }
    ));
    assert!(matches!(
        err("Service is empty"),
        FilterError::UnknownSelector { .. }
    ));
    // The index form names the same path as the dotted form.
    assert!(eval(r#"Service["Tags"] contains v1"#));
    // Case matters, as in Consul.
    assert!(matches!(
        err("action == allow"),
        FilterError::UnknownSelector { .. }
    ));
    // With no selectors allowed, nothing parses.
    assert!(Filter::parse("Action == allow", &[]).is_err());
    // A bare value before `in` is not a selector and is not checked.
    assert!(Filter::parse("Whatever in Tags", SELECTORS).is_ok());
}

#[test]
fn bad_regex() {
    match err("Action matches `a(`") {
        FilterError::BadRegex {
            pattern,
            pos,
            reason,
        } => {
            assert_eq!(pattern, "a(");
            assert_eq!(pos, 16);
            assert!(!reason.contains('\n'), "{reason}");
            assert!(reason.contains("unclosed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err("Action not matches \"[z-a]\""),
        FilterError::BadRegex { .. }
    ));
    // At most MAX_REGEXES patterns per expression.
    let many = vec!["Action matches `a`"; MAX_REGEXES].join(" or ");
    assert!(parse(&many).matches(&item()));
    let (pos, message) = syntax_at(&format!("{many} or Action not matches `a`"));
    assert_eq!(pos, many.len() + 24);
    assert!(message.contains("'matches' operators"), "{message}");
    // Too big to compile within the size limit.
    assert!(matches!(
        err(r"Action matches `(\w{1000}){1000}`"),
        FilterError::BadRegex { .. }
    ));
}

#[test]
fn unterminated_strings() {
    assert_eq!(
        err(r#"Action == "allow"#),
        FilterError::UnterminatedString { pos: 11 }
    );
    assert_eq!(
        err("Action == `allow"),
        FilterError::UnterminatedString { pos: 11 }
    );
    assert_eq!(
        err(r#"Action == "allow\"#),
        FilterError::UnterminatedString { pos: 17 }
    );
    assert_eq!(
        err(r#"Action == "allow\""#),
        FilterError::UnterminatedString { pos: 11 }
    );
    assert_eq!(
        err(r#""a in Tags"#),
        FilterError::UnterminatedString { pos: 1 }
    );
    assert!(err(r#"Meta["env] == x"#)
        .to_string()
        .contains("unterminated string literal starting at position 6"));
}

#[test]
fn bad_escapes() {
    for (expr, what) in [
        (r#"Action == "\.""#, "unknown escape"),
        (r#"Action == "\x4""#, "\\x"),
        (r#"Action == "\xff""#, "above"),
        (r#"Action == "\377""#, "above"),
        (r#"Action == "\12""#, "octal"),
        (r#"Action == "\ud800""#, "Unicode"),
        (r#"Action == "\U00110000""#, "Unicode"),
        (r#"Action == "\u12""#, "\\u"),
    ] {
        let (pos, message) = syntax_at(expr);
        assert_eq!(pos, 12, "{expr}");
        assert!(message.contains(what), "{expr}: {message}");
    }
}

#[test]
fn trailing_garbage_and_unbalanced_parentheses() {
    let (pos, message) = syntax_at("Action == allow deny");
    assert_eq!(pos, 17);
    assert!(message.contains("'d'"), "{message}");
    assert_eq!(syntax_at("Action == allow)").0, 16);
    assert!(syntax_at("Action == allow)").1.contains("unmatched ')'"));
    let (pos, message) = syntax_at("(Action == allow");
    assert_eq!(pos, 17);
    assert!(message.contains("position 1"), "{message}");
    assert_eq!(syntax_at("(Action == allow or (Tags is empty)").0, 36);
    assert_eq!(syntax_at("Action == allow and").0, 20);
    assert_eq!(syntax_at("Action == allow or or").0, 22);
    assert_eq!(syntax_at("()").0, 2);
    assert_eq!(syntax_at("Action == 1 ) or (").0, 13);
}

#[test]
fn other_syntax_errors() {
    assert!(syntax_at("").1.contains("empty"));
    assert!(syntax_at("  \n ").1.contains("empty"));
    let (pos, message) = syntax_at("Action");
    assert_eq!(pos, 7);
    assert!(message.contains("expected an operator"), "{message}");
    assert_eq!(syntax_at("Action = allow").0, 8);
    assert_eq!(syntax_at("Action ==").0, 10);
    assert_eq!(syntax_at("Action is").0, 10);
    assert_eq!(syntax_at("Action is not").0, 14);
    assert_eq!(syntax_at("Action not equal x").0, 12);
    assert_eq!(syntax_at(r#""x" Tags"#).0, 5);
    assert_eq!(syntax_at(r#""x" in "Tags""#).0, 8);
    assert_eq!(syntax_at(r#""x" not Tags"#).0, 9);
    assert_eq!(syntax_at("1abc in Tags").0, 1);
    assert_eq!(syntax_at("Precedence == 1.2.3").0, 15);
    assert_eq!(syntax_at("Precedence == -").0, 15);
    assert_eq!(syntax_at("Meta. == x").0, 5);
    assert_eq!(syntax_at("Meta[env] == x").0, 6);
    assert_eq!(syntax_at(r#"Meta["env" == x"#).0, 12);
    assert_eq!(syntax_at("== x").0, 1);
    assert_eq!(syntax_at("Action == allow and ! Action == deny").0, 21);
    assert_eq!(syntax_at("Action == ☃").0, 11);
    // Positions count characters, not bytes.
    assert_eq!(syntax_at("Action == \"☃☃\" x").0, 16);
    let deep = format!("Meta{} == x", ".a".repeat(MAX_SELECTOR_PARTS));
    assert!(syntax_at(&deep).1.contains("more than"));
    let ok = format!("Meta{} == x", ".a".repeat(MAX_SELECTOR_PARTS - 1));
    assert!(Filter::parse(&ok, SELECTORS).is_ok());
}

#[test]
fn too_deep_and_too_long() {
    let ok = format!(
        "{}Action == allow{}",
        "(".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    assert!(parse(&ok).matches(&item()));
    let deep = format!(
        "{}Action == allow{}",
        "(".repeat(MAX_NESTING_DEPTH + 1),
        ")".repeat(MAX_NESTING_DEPTH + 1)
    );
    assert_eq!(
        err(&deep),
        FilterError::TooDeep {
            pos: MAX_NESTING_DEPTH + 1,
            max: MAX_NESTING_DEPTH
        }
    );
    let nots = format!("{}Action == allow", "not ".repeat(MAX_NESTING_DEPTH + 1));
    assert!(matches!(err(&nots), FilterError::TooDeep { .. }));
    let nots = format!("{}Action == allow", "not ".repeat(MAX_NESTING_DEPTH));
    assert!(parse(&nots).matches(&item()));
    // A huge, unbalanced pile of parentheses fails fast on depth, not the stack.
    assert!(matches!(
        err(&"(".repeat(MAX_EXPRESSION_LEN)),
        FilterError::TooDeep { .. }
    ));

    // Long flat chains are fine: they do not nest.
    let clause = "Action == allow and ";
    let n = (MAX_EXPRESSION_LEN - 20) / clause.len();
    let long = format!("{}Action == allow", clause.repeat(n));
    assert!(long.len() <= MAX_EXPRESSION_LEN);
    assert!(parse(&long).matches(&item()));
    let long_or = format!("{}Action == allow", "Action == deny or ".repeat(n));
    assert!(parse(&long_or).matches(&item()));

    let too_long = "x".repeat(MAX_EXPRESSION_LEN + 1);
    assert_eq!(
        err(&too_long),
        FilterError::TooLong {
            len: MAX_EXPRESSION_LEN + 1,
            max: MAX_EXPRESSION_LEN
        }
    );
    assert!(err(&too_long).to_string().contains("limit"));
}

// ---- properties -----------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..12).prop_map(Value::from),
        Just(json!(1.5)),
        prop_oneof![
            Just(""),
            Just("allow"),
            Just("deny"),
            Just("web"),
            Just("prod"),
            Just("9"),
            Just("a b")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    let keys = prop_oneof![
        Just("Action".to_string()),
        Just("Precedence".to_string()),
        Just("Meta".to_string()),
        Just("Tags".to_string()),
        Just("env".to_string()),
        Just("a b".to_string()),
        Just("SourceName".to_string()),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("Action".to_string()),
        Just("Precedence".to_string()),
        Just("Meta".to_string()),
        Just("Tags".to_string()),
        Just("SourceName".to_string()),
    ];
    prop::collection::btree_map(keys, json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn selector() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("Action"),
        Just("Precedence"),
        Just("Meta"),
        Just("Tags"),
        Just("SourceName"),
        Just("Meta.env"),
        Just(r#"Meta["a b"]"#),
        Just("Tags.0"),
        Just("Meta.Tags.env"),
    ]
}

fn value() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(r#""allow""#),
        Just("deny"),
        Just("`web`"),
        Just("9"),
        Just("-2"),
        Just("1.5"),
        Just("true"),
        Just(r#""""#),
        Just("env"),
        Just(r#""a b""#),
    ]
}

/// A match with a positive operator and its negated form.
fn match_pair() -> impl Strategy<Value = (String, String)> {
    (selector(), value(), 0..5usize).prop_map(|(s, v, op)| match op {
        0 => (format!("{s} == {v}"), format!("{s} != {v}")),
        1 => (format!("{s} is empty"), format!("{s} is not empty")),
        2 => (format!("{v} in {s}"), format!("{v} not in {s}")),
        3 => (format!("{s} contains {v}"), format!("{s} not contains {v}")),
        _ => (
            format!("{s} matches `^(a|w|9)`"),
            format!("{s} not matches `^(a|w|9)`"),
        ),
    })
}

fn expression() -> impl Strategy<Value = String> {
    let leaf = match_pair().prop_flat_map(|(p, n)| prop_oneof![Just(p), Just(n)]);
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

/// Strings built from the language's own tokens, to get past the first character more often
/// than arbitrary text does.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("("),
        Just(")"),
        Just("not"),
        Just("and"),
        Just("or"),
        Just("=="),
        Just("!="),
        Just("is"),
        Just("empty"),
        Just("in"),
        Just("contains"),
        Just("matches"),
        Just("\"x\""),
        Just("`a.*`"),
        Just("`(`"),
        Just("Action"),
        Just("Meta.env"),
        Just("Meta[\"k\"]"),
        Just("Tags.0"),
        Just("1"),
        Just("-2.5"),
        Just("\""),
        Just("["),
        Just("\\"),
        Just("."),
        Just("é"),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.join(" "))
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(s in "\\PC{0,128}", v in json_value()) {
        if let Ok(f) = Filter::parse(&s, SELECTORS) {
            let _ = f.matches(&v);
        }
    }

    #[test]
    fn parsing_token_soup_never_panics(s in token_soup(), v in json_value()) {
        if let Ok(f) = Filter::parse(&s, SELECTORS) {
            let _ = f.matches(&v);
            let wrapped = Filter::parse(&format!("not ({s})"), SELECTORS).unwrap();
            prop_assert_eq!(wrapped.matches(&v), !f.matches(&v));
        }
    }

    #[test]
    fn not_is_negation(e in expression(), v in json_value()) {
        let f = Filter::parse(&e, SELECTORS).unwrap();
        let n = Filter::parse(&format!("not ({e})"), SELECTORS).unwrap();
        prop_assert_eq!(n.matches(&v), !f.matches(&v), "{}", e);
    }

    #[test]
    fn negated_operators_are_negations_on_top_level_selectors(
        (pos, neg) in match_pair(),
        v in json_object(),
    ) {
        // Only where no list is walked through: there bexpr applies the operator per element.
        let top_level = ["Action", "Precedence", "Meta", "Tags", "SourceName"];
        let sel_ok = top_level.iter().any(|s| {
            pos.starts_with(&format!("{s} ")) || pos.ends_with(&format!(" {s}"))
        });
        prop_assume!(sel_ok);
        let p = Filter::parse(&pos, SELECTORS).unwrap();
        let n = Filter::parse(&neg, SELECTORS).unwrap();
        prop_assert_eq!(n.matches(&v), !p.matches(&v), "{} / {}", pos, neg);
    }
}
