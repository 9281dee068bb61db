//! Intentions on the agent: building a decision engine from the servers' match answer. The
//! agent keeps one engine per destination asked about in its cache
//! ([`crate::cache::IntentionMatch`]), so `/v1/agent/connect/authorize` decides from memory.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use trellis_api::Intention;
use trellis_intentions::Engine;

/// Builds an engine from a match answer: the intentions grouped back into one entry per
/// destination. The servers validated them on write, so a failure here means a newer server
/// wrote something this agent does not understand; that destination's intentions are then
/// left out rather than guessed at.
pub fn engine_from_match(intentions: &[Intention]) -> Engine {
    let mut by_destination: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for i in intentions {
        let mut src = json!({ "Name": i.source_name });
        if i.permissions.is_empty() {
            src["Action"] = Value::String(i.action.clone());
        } else {
            src["Permissions"] = Value::Array(i.permissions.clone());
        }
        by_destination
            .entry(i.destination_name.as_str())
            .or_default()
            .push(src);
    }
    let mut engine = Engine::new();
    for (destination, sources) in by_destination {
        match trellis_intentions::parse_entry(destination, &Value::Array(sources)) {
            Ok(list) => engine.set_destination(destination, list),
            Err(problems) => tracing::warn!(
                destination,
                problems = %problems.join("; "),
                "intentions from the servers do not validate here; leaving them out"
            ),
        }
    }
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intention(src: &str, dst: &str, action: &str) -> Intention {
        Intention {
            source_name: src.into(),
            destination_name: dst.into(),
            action: action.into(),
            ..Default::default()
        }
    }

    #[test]
    fn engine_from_a_match_answer() {
        let list = vec![
            intention("web", "db", "allow"),
            intention("*", "db", "deny"),
            intention("api", "*", "allow"),
        ];
        let e = engine_from_match(&list);
        assert!(e.decide("web", "db", false).allowed);
        assert!(!e.decide("other", "db", true).allowed);
        assert!(e.decide("api", "cache", false).allowed);
        assert_eq!(e.len(), 3);
    }
}
