//! Decisions with 100,000 intentions (random names, 10% `*` sources, ~5% L7 with regex paths
//! and header matches, a few `*`-destination intentions), all in one run on one thread:
//!
//! - L4 `decide` and L7 `decide_request` latency, p50/p99;
//! - a hash-lookup baseline on the same data (one `HashMap::get` per decision: the floor any
//!   indexed engine pays), alternating rounds with the engine;
//! - the brute-force evaluator a naive implementation would be (a linear scan of every
//!   intention sorted by precedence), and the engine's speedup over it (goal: ≥ 1000x);
//! - rebuild cost: `set_destination` replacing one entry with 100,000 intentions present, and a
//!   full rebuild from scratch.
//!
//! No criterion: `harness = false`, `Instant` and `black_box`, a fixed-seed generator.
//!
//! `cargo bench -p trellis-intentions --bench decide`

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_intentions::{parse_entry, Action, Decision, Engine, HttpRequest, Intention, Reason};

const INTENTIONS: usize = 100_000;
/// Service names to draw sources and destinations from (about a third become destinations).
const POOL: usize = 30_000;
/// Intentions on the `*` destination (exact sources; no `* -> *`, so some lookups default).
const WILDCARD_DESTINATION: usize = 24;
/// Share of exact-source intentions that are L7 (exact sources are 90% of all).
const L7_SHARE_OF_EXACT: f64 = 0.055;
/// Decisions timed together per latency sample.
const BATCH: usize = 64;
/// Latency samples per round and rounds (engine and baseline alternate between rounds).
const SAMPLES: usize = 20_000;
const ROUNDS: usize = 5;
const BRUTE_QUERIES: usize = 1_000;
const REBUILD_SAMPLES: usize = 20_000;

/// splitmix64: a fixed-seed generator, so every run measures the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_name(rng: &mut Rng) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 6 + rng.below(10);
    let mut s = String::with_capacity(len);
    s.push((b'a' + rng.below(26) as u8) as char);
    for _ in 1..len {
        s.push(*rng.pick(ALNUM) as char);
    }
    if rng.chance(0.3) {
        let suffix: &&str = rng.pick(&["-api", "-web", "-db", "-worker"]);
        s.push_str(suffix);
    }
    s
}

/// 2-5 permissions built from templates, with numbers drawn per intention so that the regexes
/// differ.
fn l7_permissions(rng: &mut Rng) -> Value {
    let mut perms = Vec::new();
    let n = 2 + rng.below(4);
    let start = rng.below(5);
    for k in 0..n {
        let p = match (start + k) % 5 {
            0 => json!({"Action": "deny", "HTTP": {"PathRegex": "/admin(/.*)?"}}),
            1 => json!({"Action": "allow", "HTTP": {
                "PathRegex": format!("/api/v[0-9]+/(users|orders|c{})/[0-9]+", rng.below(100)),
                "Methods": ["GET", "HEAD"]}}),
            2 => json!({"Action": "allow", "HTTP": {
                "PathPrefix": "/static/",
                "Header": [{"Name": "x-env", "Regex": format!("(staging|dev)-[0-{}]+", 1 + rng.below(9))}]}}),
            3 => json!({"Action": "deny", "HTTP": {
                "Header": [{"Name": "user-agent", "Suffix": "bot"}, {"Name": "x-debug", "Present": true, "Invert": true}]}}),
            _ => json!({"Action": "allow", "HTTP": {
                "PathExact": "/health",
                "Header": [{"Name": "x-env", "Exact": "prod-1", "Invert": true}]}}),
        };
        perms.push(p);
    }
    Value::Array(perms)
}

const METHODS: &[&str] = &["GET", "GET", "HEAD", "POST", "DELETE"];
const PATHS: &[&str] = &[
    "/admin",
    "/admin/users",
    "/api/v1/users/42",
    "/api/v12/orders/7",
    "/api/v2/carts/1",
    "/static/app.js",
    "/health",
    "/",
];
const HEADER_SETS: &[&[(&str, &str)]] = &[
    &[],
    &[("x-debug", "1")],
    &[("x-env", "staging-3")],
    &[("user-agent", "crawler-bot")],
    &[("x-env", "prod-1"), ("x-debug", "")],
    &[
        ("accept", "*/*"),
        ("user-agent", "curl/8"),
        ("x-env", "dev-12"),
    ],
];

/// The naive evaluator: scan every intention, sorted by precedence (highest first), and stop
/// at the first whose source and destination match. `req` is `None` at L4.
fn brute_force(
    sorted: &[Intention],
    source: &str,
    destination: &str,
    req: Option<&HttpRequest<'_>>,
    default_allow: bool,
) -> Decision {
    let default = Decision {
        allowed: default_allow,
        reason: Reason::Default,
    };
    let Some(i) = sorted.iter().find(|i| {
        (&*i.source == "*" || &*i.source == source)
            && (&*i.destination == "*" || &*i.destination == destination)
    }) else {
        return default;
    };
    // The scan is over contiguous intentions, as a naive evaluator keeps them; the reason
    // takes a copy of the match once (one allocation, negligible next to the scan).
    let by = |permission| Reason::Intention {
        intention: Arc::new(i.clone()),
        permission,
    };
    match (i.action, req) {
        (Some(a), _) => Decision {
            allowed: a == Action::Allow,
            reason: by(None),
        },
        (None, None) => Decision {
            allowed: false,
            reason: Reason::L7AtL4 {
                intention: Arc::new(i.clone()),
            },
        },
        (None, Some(req)) => match i.permissions.iter().position(|p| p.matches(req)) {
            Some(k) => Decision {
                allowed: i.permissions[k].action == Action::Allow,
                reason: by(Some(k)),
            },
            None => default,
        },
    }
}

/// Sorted samples, for percentiles.
struct Samples(Vec<f64>);

impl Samples {
    fn new(mut v: Vec<f64>) -> Samples {
        v.sort_by(f64::total_cmp);
        Samples(v)
    }
    fn pct(&self, p: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * p).round() as usize]
    }
    fn p50(&self) -> f64 {
        self.pct(0.50)
    }
    fn p99(&self) -> f64 {
        self.pct(0.99)
    }
}

/// Nanoseconds, human-sized.
fn t(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Times `SAMPLES` batches of `BATCH` calls of `f(k)` (k counting on from `*cursor`): ns per
/// call, one value per batch.
fn batches(samples: &mut Vec<f64>, cursor: &mut usize, mut f: impl FnMut(usize)) {
    for _ in 0..SAMPLES {
        let k0 = *cursor;
        let start = Instant::now();
        for k in k0..k0 + BATCH {
            f(k);
        }
        samples.push(ns(start.elapsed()) / BATCH as f64);
        *cursor += BATCH;
    }
}

fn main() {
    let mut rng = Rng(0x007E_1115);

    // --- data -------------------------------------------------------------------------------
    let mut seen = HashSet::new();
    let pool: Vec<String> = std::iter::repeat_with(|| random_name(&mut rng))
        .filter(|n| seen.insert(n.clone()))
        .take(POOL)
        .collect();
    // (destination, Sources JSON), `*` first.
    let mut entries: Vec<(String, Value)> = Vec::new();
    let mut total = 0;
    // Distinct names drawn from the pool, none equal to `not`.
    let draw = |rng: &mut Rng, n: usize, not: &str| {
        let mut names = HashSet::new();
        while names.len() < n {
            let name = rng.pick(&pool);
            if name != not {
                names.insert(name.clone());
            }
        }
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names
    };
    let allow_or_deny = |allow: bool| if allow { "allow" } else { "deny" };
    let sources: Vec<Value> = draw(&mut rng, WILDCARD_DESTINATION, "*")
        .into_iter()
        .map(|n| json!({"Name": n, "Action": allow_or_deny(rng.chance(0.5))}))
        .collect();
    total += sources.len();
    entries.push(("*".into(), Value::Array(sources)));
    let mut order: Vec<usize> = (0..POOL).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut next_dest = order.into_iter();
    while total < INTENTIONS {
        let dest = pool[next_dest.next().expect("pool large enough")].clone();
        let exact = (4 + rng.below(11)).min(INTENTIONS - total - 1);
        let mut sources = Vec::new();
        for n in draw(&mut rng, exact, &dest) {
            sources.push(if rng.chance(L7_SHARE_OF_EXACT) {
                json!({"Name": n, "Permissions": l7_permissions(&mut rng)})
            } else {
                json!({"Name": n, "Action": allow_or_deny(rng.chance(0.7))})
            });
        }
        sources.push(json!({"Name": "*", "Action": allow_or_deny(rng.chance(0.3))}));
        total += sources.len();
        entries.push((dest, Value::Array(sources)));
    }
    let parsed: Vec<(String, Vec<Intention>)> = entries
        .iter()
        .map(|(d, s)| {
            (
                d.clone(),
                parse_entry(d, s).expect("generated entries are valid"),
            )
        })
        .collect();
    let mut engine = Engine::new();
    for (d, list) in &parsed {
        engine.set_destination(d, list.clone());
    }
    assert_eq!(engine.len(), INTENTIONS);
    let all: Vec<&Intention> = parsed.iter().flat_map(|(_, l)| l).collect();
    let wildcard_sources = all.iter().filter(|i| &*i.source == "*").count();
    let l7: Vec<&Intention> = all
        .iter()
        .copied()
        .filter(|i| !i.permissions.is_empty())
        .collect();
    let mut sorted: Vec<Intention> = all.iter().map(|i| (*i).clone()).collect();
    sorted.sort_by_key(|i| std::cmp::Reverse(i.precedence));
    // The baseline: the same (source, destination) pairs in one flat map, L4 answer per pair.
    let flat: HashMap<(String, String), bool> = all
        .iter()
        .map(|i| {
            (
                (i.source.to_string(), i.destination.to_string()),
                i.action == Some(Action::Allow),
            )
        })
        .collect();

    // --- queries ----------------------------------------------------------------------------
    let configured: Vec<&(String, Vec<Intention>)> = parsed.iter().skip(1).collect();
    let destinations: HashSet<&str> = configured.iter().map(|(d, _)| d.as_str()).collect();
    let unconfigured: Vec<&String> = pool
        .iter()
        .filter(|n| !destinations.contains(n.as_str()))
        .collect();
    // 50% an intention's exact pair, 40% a random source to a configured destination (mostly
    // its `*` source), 10% a destination without an entry (the `*` destination or the default).
    let l4_queries: Vec<(String, String)> = (0..1 << 16)
        .map(|_| {
            let roll = rng.below(10);
            if roll < 5 {
                let (d, list) = *rng.pick(&configured);
                let exact: Vec<_> = list.iter().filter(|i| &*i.source != "*").collect();
                (rng.pick(&exact).source.to_string(), d.clone())
            } else if roll < 9 {
                (rng.pick(&pool).clone(), rng.pick(&configured).0.clone())
            } else {
                let src = if rng.chance(0.5) {
                    rng.pick(&parsed[0].1).source.to_string()
                } else {
                    rng.pick(&pool).clone()
                };
                (src, (*rng.pick(&unconfigured)).clone())
            }
        })
        .collect();
    let requests: Vec<HttpRequest<'static>> = METHODS
        .iter()
        .flat_map(|m| PATHS.iter().map(move |p| (m, p)))
        .flat_map(|(m, p)| {
            HEADER_SETS.iter().map(move |h| HttpRequest {
                method: m,
                path: p,
                headers: h,
            })
        })
        .collect();
    let l7_queries: Vec<(String, String, usize)> = (0..1 << 14)
        .map(|_| {
            let i = rng.pick(&l7);
            (
                i.source.to_string(),
                i.destination.to_string(),
                rng.below(requests.len()),
            )
        })
        .collect();
    let mut outcomes = [0usize; 3]; // allowed by a permission, denied by one, default
    for (s, d, r) in &l7_queries {
        let dec = engine.decide_request(s, d, &requests[*r], false);
        outcomes[match (&dec.reason, dec.allowed) {
            (Reason::Intention { .. }, true) => 0,
            (Reason::Intention { .. }, false) => 1,
            _ => 2,
        }] += 1;
    }

    // --- latency: engine and baseline, alternating rounds -----------------------------------
    // Each series walks its query list from where its previous round stopped.
    let (mut l4, mut find, mut base, mut l7_ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cursors = [0usize; 4];
    let (n4, n7) = (l4_queries.len(), l7_queries.len());
    for _ in 0..ROUNDS {
        batches(&mut l4, &mut cursors[0], |k| {
            let (s, d) = &l4_queries[k % n4];
            black_box(engine.decide(black_box(s), black_box(d), false));
        });
        batches(&mut find, &mut cursors[1], |k| {
            let (s, d) = &l4_queries[k % n4];
            black_box(
                engine
                    .find(black_box(s), black_box(d))
                    .map(|i| i.precedence),
            );
        });
        batches(&mut base, &mut cursors[2], |k| {
            let key = black_box(&l4_queries[k % n4]);
            black_box(flat.get(key).copied().unwrap_or(false));
        });
        batches(&mut l7_ns, &mut cursors[3], |k| {
            let (s, d, r) = &l7_queries[k % n7];
            black_box(engine.decide_request(black_box(s), black_box(d), &requests[*r], false));
        });
    }
    let (l4, find, base, l7_ns) = (
        Samples::new(l4),
        Samples::new(find),
        Samples::new(base),
        Samples::new(l7_ns),
    );

    // --- brute force, one decision per sample, checked against the engine -------------------
    let mut brute4 = Vec::new();
    for (s, d) in l4_queries.iter().take(BRUTE_QUERIES) {
        let start = Instant::now();
        let want = black_box(brute_force(&sorted, s, d, None, false));
        brute4.push(ns(start.elapsed()));
        assert_eq!(engine.decide(s, d, false), want, "{s} -> {d}");
    }
    let mut brute7 = Vec::new();
    for (s, d, r) in l7_queries.iter().take(BRUTE_QUERIES) {
        let req = &requests[*r];
        let start = Instant::now();
        let want = black_box(brute_force(&sorted, s, d, Some(req), false));
        brute7.push(ns(start.elapsed()));
        assert_eq!(
            engine.decide_request(s, d, req, false),
            want,
            "{s} -> {d} {req:?}"
        );
    }
    let (brute4, brute7) = (Samples::new(brute4), Samples::new(brute7));

    // --- rebuild ----------------------------------------------------------------------------
    let mut one = Vec::new();
    for _ in 0..REBUILD_SAMPLES {
        let (d, list) = *rng.pick(&configured);
        let replacement = list.clone();
        let start = Instant::now();
        engine.set_destination(d, replacement);
        one.push(ns(start.elapsed()));
    }
    assert_eq!(engine.len(), INTENTIONS);
    let one = Samples::new(one);
    let mut full = Vec::new();
    for _ in 0..5 {
        let copies = parsed.clone();
        let start = Instant::now();
        let mut e = Engine::new();
        for (d, list) in copies {
            e.set_destination(&d, list);
        }
        full.push(ns(start.elapsed()));
        assert_eq!(e.len(), INTENTIONS);
        drop(black_box(e));
    }
    let full = Samples::new(full);
    let mut full_parse = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut e = Engine::new();
        for (d, s) in &entries {
            e.set_destination(d, parse_entry(d, s).unwrap());
        }
        full_parse.push(ns(start.elapsed()));
        drop(black_box(e));
    }
    let full_parse = Samples::new(full_parse);

    // --- one entry with many sources: the cost per source of `parse_entry` at 5,000 and at
    // 50,000 sources (a linear validation costs the same per source at both; the duplicate
    // check it once had was quadratic: 10x the cost per source at 10x the sources).
    let wide_entry = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({"Name": format!("src-{i:06}"), "Action": "allow"}))
                .collect(),
        )
    };
    let per_source = |n: usize| -> f64 {
        let entry = wide_entry(n);
        let mut samples = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let parsed = parse_entry("wide", &entry).unwrap();
            samples.push(ns(start.elapsed()) / n as f64);
            assert_eq!(parsed.len(), n);
        }
        Samples::new(samples).p50()
    };
    let (wide_small, wide_large) = (per_source(5_000), per_source(50_000));

    // --- report -----------------------------------------------------------------------------
    let pct = |n: usize| 100.0 * n as f64 / INTENTIONS as f64;
    println!(
        "intentions: {} ({} destinations + {} on `*`; {:.1}% `*` sources; {:.1}% L7, {} permissions)",
        engine.len(),
        configured.len(),
        parsed[0].1.len(),
        pct(wildcard_sources),
        pct(l7.len()),
        l7.iter().map(|i| i.permissions.len()).sum::<usize>(),
    );
    println!(
        "L7 requests: {:.0}% allowed by a permission, {:.0}% denied by one, {:.0}% to the default",
        100.0 * outcomes[0] as f64 / n7 as f64,
        100.0 * outcomes[1] as f64 / n7 as f64,
        100.0 * outcomes[2] as f64 / n7 as f64,
    );
    println!(
        "latency rows marked [batch]: each sample times {BATCH} consecutive random lookups and \
         divides by {BATCH};\n  p99 is the 99th percentile of those batch means, not of single \
         decisions. Other rows time each operation alone."
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "machine: {} CPUs, load average {} (other work on the machine inflates every row)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load.join(" ")
        );
    }
    println!();
    println!(
        "{:<54} {:>9} {:>11} {:>11}",
        "operation", "samples", "p50", "p99"
    );
    let row = |name: &str, s: &Samples| {
        println!(
            "{name:<54} {:>9} {:>11} {:>11}",
            s.0.len(),
            t(s.p50()),
            t(s.p99())
        );
    };
    row("L4 Engine::decide                          [batch]", &l4);
    row("L4 Engine::find (lookup only, no Decision) [batch]", &find);
    row("L7 Engine::decide_request                  [batch]", &l7_ns);
    row("baseline: one HashMap::get per decision    [batch]", &base);
    row("brute force L4: linear scan by precedence", &brute4);
    row("brute force L7: linear scan by precedence", &brute7);
    row("Engine::set_destination, one entry replaced", &one);
    row("full rebuild from parsed intentions", &full);
    row(
        "full rebuild incl. parse_entry (regex compile)",
        &full_parse,
    );
    println!();
    println!("ratios (p50):");
    println!(
        "  engine L4 / hash baseline          {:>9.2}x",
        l4.p50() / base.p50()
    );
    println!(
        "  engine L4 lookup only / baseline   {:>9.2}x",
        find.p50() / base.p50()
    );
    println!(
        "  brute force L4 / engine L4         {:>9.0}x  (goal >= 1000x)",
        brute4.p50() / l4.p50()
    );
    println!(
        "  brute force L7 / engine L7         {:>9.0}x",
        brute7.p50() / l7_ns.p50()
    );
    println!(
        "  full rebuild / set_destination     {:>9.0}x",
        full.p50() / one.p50()
    );
    println!();
    println!(
        "one entry, many sources: parse_entry per source {} at 5,000, {} at 50,000: {:.2}x (1x: linear)",
        t(wide_small),
        t(wide_large),
        wide_large / wide_small
    );
}
