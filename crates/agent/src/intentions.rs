//! The agent's view of the intentions that apply to a destination, kept fresh by a blocking
//! query so that `/v1/agent/connect/authorize` decides from memory.
//!
//! A destination is loaded the first time it is asked about; from then on a background task
//! holds a blocking `IntentionMatch` query on the servers and swaps in a freshly built
//! [`Engine`] (this destination's intentions and the wildcard destination's) whenever the
//! answer changes. While the servers cannot be reached the last engine keeps answering.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::{json, Value};
use tokio::sync::watch;
use trellis_api::Intention;
use trellis_intentions::Engine;
use trellis_server::QueryOptions;
use trellis_state::{Query, QueryOutput};

use crate::backend::Backend;
use crate::AgentError;

/// How long one background blocking query waits at most.
const REFRESH_WAIT: Duration = Duration::from_secs(300);
/// The longest pause between retries after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What is known about one destination.
#[derive(Clone)]
enum Loaded {
    /// The first fetch has not finished.
    Pending,
    /// The first fetch failed and nothing has been loaded yet.
    Failed(String),
    /// The engine built from the latest answer.
    Ready(Arc<Engine>),
}

/// Intentions by destination, as far as this agent has been asked about them.
pub struct IntentionView {
    backend: Backend,
    destinations: RwLock<HashMap<String, watch::Receiver<Loaded>>>,
}

impl IntentionView {
    /// A view with nothing loaded, fetching through `backend`.
    pub fn new(backend: Backend) -> IntentionView {
        IntentionView {
            backend,
            destinations: RwLock::new(HashMap::new()),
        }
    }

    /// The engine for `destination`: from memory once loaded; the first call for a
    /// destination waits for its first fetch.
    pub async fn engine(&self, destination: &str) -> Result<Arc<Engine>, AgentError> {
        // The common case: loaded. A shared lock, no receiver clone, no await.
        if let Some(rx) = self.destinations.read().get(destination) {
            if let Loaded::Ready(engine) = &*rx.borrow() {
                return Ok(engine.clone());
            }
        }
        let mut rx = {
            let mut map = self.destinations.write();
            match map.get(destination) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(Loaded::Pending);
                    map.insert(destination.to_string(), rx.clone());
                    tokio::spawn(refresh(self.backend.clone(), destination.to_string(), tx));
                    rx
                }
            }
        };
        loop {
            match &*rx.borrow_and_update() {
                Loaded::Ready(engine) => return Ok(engine.clone()),
                Loaded::Failed(msg) => {
                    let msg = msg.clone();
                    // Let the next request start over.
                    self.destinations.write().remove(destination);
                    return Err(AgentError::Unavailable(msg));
                }
                Loaded::Pending => {}
            }
            if rx.changed().await.is_err() {
                return Err(AgentError::Unavailable(
                    "intentions refresher stopped".into(),
                ));
            }
        }
    }

    /// How many destinations are held.
    pub fn len(&self) -> usize {
        self.destinations.read().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

async fn refresh(backend: Backend, destination: String, tx: watch::Sender<Loaded>) {
    let query = Query::IntentionMatch {
        by_source: false,
        names: vec![destination.clone()],
    };
    let mut index = 0;
    let mut failures: u32 = 0;
    loop {
        let opts = QueryOptions {
            index,
            wait: REFRESH_WAIT,
            stale: false,
            consistent: false,
        };
        let outcome = backend.query(query.clone(), opts).await;
        let answer = outcome
            .map_err(|e| e.to_string())
            .and_then(|r| match r.output {
                QueryOutput::Found(body) => {
                    serde_json::from_slice::<HashMap<String, Vec<Intention>>>(&body)
                        .map(|m| (r.index, m))
                        .map_err(|e| format!("decoding intention match: {e}"))
                }
                QueryOutput::NotFound(msg) => Err(msg),
            });
        match answer {
            Ok((new_index, mut by_name)) => {
                failures = 0;
                if new_index != index || !matches!(*tx.borrow(), Loaded::Ready(_)) {
                    let list = by_name.remove(&destination).unwrap_or_default();
                    let engine = engine_from_match(&list);
                    tracing::debug!(%destination, intentions = engine.len(), index = new_index, "intentions refreshed");
                    tx.send_replace(Loaded::Ready(Arc::new(engine)));
                }
                // An index going backwards (a restored snapshot) restarts from scratch.
                index = if new_index < index { 0 } else { new_index };
            }
            Err(msg) => {
                failures += 1;
                tracing::warn!(%destination, error = %msg, failures, "refreshing intentions failed");
                if !matches!(*tx.borrow(), Loaded::Ready(_)) {
                    tx.send_replace(Loaded::Failed(msg));
                    return;
                }
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// Consul's cache backoff: none for the first three failures, then doubling from one second
/// up to [`MAX_BACKOFF`], with up to 10% jitter.
pub fn backoff(failures: u32) -> Duration {
    if failures <= 3 {
        return Duration::from_millis(0);
    }
    let base = Duration::from_secs(1 << (failures - 4).min(6)).min(MAX_BACKOFF);
    base + base.mul_f64(rand::random::<f64>() / 10.0)
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

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(3), Duration::ZERO);
        assert!(backoff(4) >= Duration::from_secs(1));
        assert!(backoff(5) >= Duration::from_secs(2));
        assert!(backoff(40) <= MAX_BACKOFF + MAX_BACKOFF / 10);
        assert!(backoff(40) >= MAX_BACKOFF);
    }
}
