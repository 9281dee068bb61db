//! Building an engine from intentions as the HTTP API and the servers return them (the
//! flattened legacy shape of `/v1/connect/intentions/match`).

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_api::lenient::Lenient;
use trellis_api::{Intention, SourceSpec};

use crate::{parse_sources, Engine};

impl Engine {
    /// An engine holding `intentions`, grouped back into one entry per destination. The
    /// servers validated them on write, so a destination whose intentions do not validate here
    /// (written by a newer server) is left out rather than guessed at; its name and problems
    /// are returned for the caller to log.
    pub fn from_intentions(intentions: &[Intention]) -> (Engine, Vec<(String, Vec<String>)>) {
        let mut by_destination: BTreeMap<&str, Vec<Lenient<SourceSpec>>> = BTreeMap::new();
        for i in intentions {
            let mut src = SourceSpec {
                name: Lenient::from_value(Value::String(i.source_name.clone())),
                ..Default::default()
            };
            if i.permissions.is_empty() {
                src.action = Lenient::from_value(Value::String(i.action.clone()));
            } else {
                src.permissions = Lenient::Set(
                    i.permissions
                        .iter()
                        .map(|p| Lenient::from_value(p.clone()))
                        .collect(),
                );
            }
            by_destination
                .entry(i.destination_name.as_str())
                .or_default()
                .push(Lenient::Set(src));
        }
        let mut engine = Engine::new();
        let mut refused = Vec::new();
        for (destination, sources) in by_destination {
            match parse_sources(destination, &Lenient::Set(sources)) {
                Ok(list) => engine.set_destination(destination, list),
                Err(problems) => refused.push((destination.to_string(), problems)),
            }
        }
        (engine, refused)
    }
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
    fn an_engine_from_a_match_answer() {
        let list = vec![
            intention("web", "db", "allow"),
            intention("*", "db", "deny"),
            intention("api", "*", "allow"),
            intention("x", "bad", "maybe"),
        ];
        let (e, refused) = Engine::from_intentions(&list);
        assert!(e.decide("web", "db", false).allowed);
        assert!(!e.decide("other", "db", true).allowed);
        assert!(e.decide("api", "cache", false).allowed);
        assert_eq!(e.len(), 3);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "bad");
    }
}
