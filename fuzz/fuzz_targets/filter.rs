//! Any text as a `?filter=` expression: parsing must never panic or overflow the stack, an
//! accepted filter must evaluate without panicking, and `not (E)` must be E's negation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::filter::Filter;

/// The intentions endpoint's selectors, plus a list selector walked through.
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
    "Checks",
];

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(expr, SELECTORS) else {
        return;
    };
    let items = [
        serde_json::json!({
            "ID": "a1b2", "Action": "allow", "Description": "", "Precedence": 9,
            "SourceName": "web", "SourceNS": "default", "SourceType": "consul",
            "DestinationName": "db", "DestinationNS": "default",
            "Meta": {"env": "prod", "some key": "v"},
            "Checks": [{"Status": "passing"}, {"Status": "critical"}],
        }),
        serde_json::json!({"Action": "deny", "Precedence": 1.5, "Meta": {}, "Checks": []}),
        serde_json::json!({"Action": null, "Meta": ["env"], "Precedence": "9"}),
        serde_json::json!("allow"),
    ];
    // Wrapping may go over the length or depth limit; otherwise it must parse and negate.
    let negated = Filter::parse(&format!("not ({expr})"), SELECTORS).ok();
    for item in &items {
        let m = filter.matches(item);
        if let Some(n) = &negated {
            assert_eq!(n.matches(item), !m, "{expr:?} on {item}");
        }
    }
    let _ = filter.apply(items.to_vec());
});
