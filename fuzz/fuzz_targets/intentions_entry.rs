//! Any JSON as a `service-intentions` entry: `parse_entry` answers or lists problems, never
//! panics; what it accepts keeps the engine's invariants (one intention per source, L4 xor L7,
//! Consul's precedence, highest first), and an engine built from it decides every source the
//! way the accepted intentions say, at L4 and per request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trellis_intentions::{parse_entry, precedence, Action, Engine, HttpRequest, Reason};

const REQUESTS: &[HttpRequest<'static>] = &[
    HttpRequest {
        method: "GET",
        path: "/",
        headers: &[],
    },
    HttpRequest {
        method: "POST",
        path: "/admin/users",
        headers: &[("x-debug", "1"), ("x-env", "prod")],
    },
    HttpRequest {
        method: "DELETE",
        path: "/v1/items/42",
        headers: &[("x-env", "dev"), ("x-env", "staging")],
    },
];

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let name = entry.get("Name").and_then(Value::as_str).unwrap_or("");
    let sources = entry.get("Sources").cloned().unwrap_or(Value::Null);
    let Ok(intentions) = parse_entry(name, &sources) else {
        return;
    };
    assert!(!intentions.is_empty());
    for (k, i) in intentions.iter().enumerate() {
        assert_eq!(&*i.destination, name);
        assert!(!i.source.is_empty());
        assert_eq!(i.precedence, precedence(&i.source, name));
        assert!(
            i.action.is_some() == i.permissions.is_empty(),
            "an intention is L4 (an action) or L7 (permissions): {i:?}"
        );
        assert!(name != "*" || i.permissions.is_empty());
        assert!(intentions[..k].iter().all(|j| j.source != i.source));
        if k > 0 {
            assert!(intentions[k - 1].precedence >= i.precedence);
        }
    }

    let mut engine = Engine::new();
    engine.set_destination(name, intentions.clone());
    assert_eq!(engine.len(), intentions.len());
    // A destination the entry covers: its own name, or any name for `*`.
    let destination = if name == "*" { "some-service" } else { name };
    let wildcard = intentions.iter().find(|i| &*i.source == "*");
    for i in intentions.iter().filter(|i| &*i.source != "*") {
        let d = engine.decide(&i.source, destination, true);
        match i.action {
            Some(a) => {
                assert_eq!(d.allowed, a == Action::Allow);
                assert!(
                    matches!(&d.reason, Reason::Intention { intention, permission: None } if intention.source == i.source)
                );
            }
            None => {
                assert!(!d.allowed);
                assert!(matches!(&d.reason, Reason::L7AtL4 { intention } if intention.source == i.source));
            }
        }
        for req in REQUESTS {
            for default_allow in [false, true] {
                let d = engine.decide_request(&i.source, destination, req, default_allow);
                let want = match i.action {
                    Some(a) => a == Action::Allow,
                    None => match i.permissions.iter().find(|p| p.matches(req)) {
                        Some(p) => p.action == Action::Allow,
                        None => default_allow,
                    },
                };
                assert_eq!(d.allowed, want);
            }
        }
    }
    // A source the entry does not name gets the `*` source's answer, or the default.
    let stranger = "\u{0}not-a-listed-source";
    for default_allow in [false, true] {
        if intentions.iter().any(|i| &*i.source == stranger) {
            break;
        }
        let d = engine.decide(stranger, destination, default_allow);
        match wildcard.and_then(|w| w.action) {
            Some(a) => assert_eq!(d.allowed, a == Action::Allow),
            None if wildcard.is_some() => assert!(!d.allowed),
            None => assert_eq!(
                d,
                trellis_intentions::Decision {
                    allowed: default_allow,
                    reason: Reason::Default
                }
            ),
        }
    }
    // Removing the entry leaves nothing.
    engine.set_destination(name, Vec::new());
    assert!(engine.is_empty());
});
