//! Intentions on the agent: building a decision engine from the servers' match answer. The
//! agent keeps one engine per destination asked about in its cache
//! ([`crate::cache::IntentionMatch`]), so `/v1/agent/connect/authorize` decides from memory.

use trellis_api::Intention;
use trellis_intentions::Engine;

/// Builds an engine from a match answer ([`Engine::from_intentions`]), logging any
/// destination left out because its intentions do not validate here.
pub fn engine_from_match(intentions: &[Intention]) -> Engine {
    let (engine, refused) = Engine::from_intentions(intentions);
    for (destination, problems) in refused {
        tracing::warn!(
            %destination,
            problems = %problems.join("; "),
            "intentions from the servers do not validate here; leaving them out"
        );
    }
    engine
}
