//! The cost of path normalization on the L7 path: `path::normalize` against a no-op over the
//! same realistic paths, in one run on one thread, alternating rounds, so the two differ only
//! by the work normalization adds per request. Compare the difference with the proxy's cost
//! per L7 request (`MODE=http benches/proxy.sh`: CPU-µs per request of the pair).
//!
//! A micro-benchmark rather than a proxy flag that turns normalization off: no build of the
//! proxy can run without it, so no configuration can weaken it.
//!
//! No criterion: `harness = false`, `Instant` and `black_box`.
//!
//! `cargo bench -p trellis-intentions --bench path_normalize`

use std::hint::black_box;
use std::time::Instant;

use trellis_intentions::path::normalize;

/// Paths as services see them: almost all already normal (the borrowed fast path), a few
/// with something to rewrite.
const NORMAL: &[&str] = &[
    "/",
    "/healthz",
    "/api/v1/users/12345",
    "/api/v1/orders/8f14e45f-ceea-467f-a1b2-3c4d5e6f7a8b/items",
    "/static/js/app.3f9a1c2b.chunk.js",
    "/grpc.health.v1.Health/Check",
    "/v2/library/nginx/manifests/latest",
    "/api/v1/search/caf%C3%A9%20cr%C3%A8me",
    "/api/v2/accounts/42/transactions/2024-06-01T00:00:00Z",
    "/graphql",
];
const REWRITTEN: &[&str] = &[
    "/api/v1/../v2/users",
    "//api/v1/users",
    "/api/v1/search/caf%c3%a9",
    "/api/%76%31/users/./12345/",
];

const ROUNDS: usize = 7;
const ITERATIONS: usize = 2_000_000;

/// Nanoseconds per path for `f` over `paths`, `ITERATIONS` calls.
fn time(paths: &[&str], f: impl Fn(&str) -> usize) -> f64 {
    let start = Instant::now();
    let mut sink = 0usize;
    for i in 0..ITERATIONS {
        sink = sink.wrapping_add(f(black_box(paths[i % paths.len()])));
    }
    black_box(sink);
    start.elapsed().as_nanos() as f64 / ITERATIONS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let noop = |p: &str| black_box(p).len();
    let norm = |p: &str| normalize(p).map_or(0, |n| n.len());
    // Realistic mix: one request in 100 needs a rewrite.
    let mut mix: Vec<&str> = Vec::new();
    for i in 0..100 {
        mix.push(if i == 0 {
            REWRITTEN[0]
        } else {
            NORMAL[i % NORMAL.len()]
        });
    }
    println!("path normalization, ns per request path (median of {ROUNDS} rounds of {ITERATIONS}; no-op and normalize alternate)");
    println!(
        "{:<34} {:>8} {:>10} {:>8}",
        "paths", "no-op", "normalize", "added"
    );
    for (name, paths) in [
        ("already normal (borrowed)", NORMAL),
        ("needing a rewrite (allocates)", REWRITTEN),
        ("mix: 1% rewritten", mix.as_slice()),
    ] {
        let (mut base, mut with) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(time(paths, noop));
            with.push(time(paths, norm));
        }
        let (b, w) = (median(base), median(with));
        println!("{name:<34} {b:>8.1} {w:>10.1} {:>8.1}", w - b);
    }
}
