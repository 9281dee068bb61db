//! Property tests for the parsers that take outside input.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use crate::{
    canonicalize_keys, config_kind, configured_protocol, parse_go_duration, CheckDefinition,
    ConfigEntry, ServiceDefinition,
};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z_ ]{0,12}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("ID".to_string()),
        Just("meta".to_string()),
        Just("Proxy".to_string()),
        Just("config".to_string()),
        Just("tagged_addresses".to_string()),
        Just("Checks".to_string()),
        Just("Sources".to_string()),
        Just("Name".to_string()),
        Just("Action".to_string()),
        Just("Permissions".to_string()),
        Just("HTTP".to_string()),
        Just("Header".to_string()),
        Just("Methods".to_string()),
        Just("Protocol".to_string()),
        Just("protocol".to_string()),
        Just("MeshGateway".to_string()),
        Just("LegacyMeta".to_string()),
        "[a-zA-Z_]{1,10}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn go_duration_never_panics(s in "\\PC{0,24}") {
        let _ = parse_go_duration(&s);
    }

    #[test]
    fn go_duration_reads_what_go_writes(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        let got = parse_go_duration(&text).unwrap();
        prop_assert!((got.as_secs_f64() - want.as_secs_f64()).abs() < 1e-6, "{text}: {got:?} vs {want:?}");
    }

    #[test]
    fn canonicalisation_is_idempotent_and_decoding_never_panics(v in json_value()) {
        let mut once = v.clone();
        canonicalize_keys(&mut once);
        let mut twice = once.clone();
        canonicalize_keys(&mut twice);
        prop_assert_eq!(&once, &twice);
        let _ = serde_json::from_value::<ServiceDefinition>(once.clone());
        let _ = serde_json::from_value::<CheckDefinition>(once);
    }

    /// Any object, as the body of any kind, decodes to a view without panicking, and its
    /// problems are worded at a path.
    #[test]
    fn typed_decoding_never_panics(v in json_value(), kind in prop::sample::select(config_kind::ALL)) {
        let mut body = match v {
            Value::Object(m) => m,
            other => [("Sources".to_string(), Value::Array(vec![other]))].into_iter().collect(),
        };
        if let Some(Value::Object(m)) = body.get("Sources").cloned() {
            body.insert("Sources".into(), Value::Array(vec![Value::Object(m)]));
        }
        let entry = ConfigEntry { kind: kind.to_string(), name: "x".into(), body, ..Default::default() };
        let (_, problems) = entry.typed().expect("a stored kind");
        prop_assert!(problems.iter().all(|p| p.contains(" must be ")), "{:?}", problems);
        let _ = configured_protocol(Some(&entry.service_defaults()), Some(&entry.proxy_defaults()));
        for (_, src) in entry.service_intentions().source_specs() {
            prop_assert!(src.raw.keys().all(|k| entry.body["Sources"].to_string().contains(k.as_str())));
        }
    }
}
