//! L4 decisions with 100,000 intentions, against one hash lookup per decision on the same
//! data (the floor any indexed engine pays), alternating rounds on one thread.
//!
//! `cargo bench -p trellis-intentions --bench decide`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use trellis_intentions::{parse_entry, Engine};

const DESTINATIONS: usize = 10_000;
const SOURCES: usize = 10;
const QUERIES: usize = 2_000_000;

fn main() {
    let mut engine = Engine::new();
    let mut flat: HashMap<(String, String), bool> = HashMap::new();
    for d in 0..DESTINATIONS {
        let dest = format!("svc-{d}");
        let mut sources: Vec<_> = (1..SOURCES)
            .map(|s| {
                let allow = (d + s) % 3 != 0;
                flat.insert((format!("svc-{}", (d + s) % DESTINATIONS), dest.clone()), allow);
                json!({"Name": format!("svc-{}", (d + s) % DESTINATIONS), "Action": if allow { "allow" } else { "deny" }})
            })
            .collect();
        sources.push(json!({"Name": "*", "Action": "deny"}));
        engine.set_destination(
            &dest,
            parse_entry(&dest, &serde_json::Value::Array(sources)).unwrap(),
        );
    }
    assert_eq!(engine.len(), DESTINATIONS * SOURCES);
    let queries: Vec<(String, String)> = (0..4096)
        .map(|i| {
            (
                format!("svc-{}", (i * 7919 + i % 13) % DESTINATIONS),
                format!("svc-{}", (i * 104_729) % DESTINATIONS),
            )
        })
        .collect();
    let (mut engine_ns, mut lookup_ns) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let start = Instant::now();
        for k in 0..QUERIES {
            let (s, d) = &queries[k % queries.len()];
            black_box(engine.decide(s, d, false).allowed);
        }
        engine_ns.push(start.elapsed().as_nanos() as f64 / QUERIES as f64);
        let start = Instant::now();
        for k in 0..QUERIES {
            let (s, d) = &queries[k % queries.len()];
            black_box(flat.get(&(s.clone(), d.clone())).copied().unwrap_or(false));
        }
        lookup_ns.push(start.elapsed().as_nanos() as f64 / QUERIES as f64);
    }
    engine_ns.sort_by(f64::total_cmp);
    lookup_ns.sort_by(f64::total_cmp);
    let (e, l) = (engine_ns[1], lookup_ns[1]);
    println!("intentions: {}", engine.len());
    println!("engine decide:            {e:>8.1} ns per decision (median of 3 rounds)");
    println!("baseline one hash lookup: {l:>8.1} ns per lookup");
    println!("ratio engine/baseline:    {:>8.2}x", e / l);
}
