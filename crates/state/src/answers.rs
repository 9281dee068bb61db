//! The answer cache: serialised answers by query, each valid at exactly one index, bounded by
//! the bytes it holds.

use std::collections::HashMap;

use crate::{Query, QueryOutput};

/// The most bytes the answer cache holds: answers' bodies, their queries and a slot's size
/// each. Past it, entries are dropped (arbitrary ones, down to half the budget); a working set
/// larger than this simply means more serialisation.
pub const ANSWER_CACHE_BYTES: usize = 64 << 20;

/// The largest entry cached, a share of the budget (an eighth: 8 MiB of
/// [`ANSWER_CACHE_BYTES`]): a bigger answer is served and forgotten, so one huge answer cannot
/// push everything else out.
pub const MAX_CACHED_ANSWER_BYTES: usize = ANSWER_CACHE_BYTES / ENTRY_SHARE;

/// An entry may take at most this fraction (1/n) of the budget.
const ENTRY_SHARE: usize = 8;

/// Serialised answers by query with the index each was computed at.
pub(crate) struct AnswerCache {
    entries: HashMap<Query, (u64, QueryOutput)>,
    /// Sum of [`cost`] over `entries`.
    bytes: usize,
    budget: usize,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache::with_budget(ANSWER_CACHE_BYTES)
    }
}

/// What an entry costs against the budget: its slot, the query's strings, and the answer: its
/// JSON (made here if it was not yet: every cached answer is served by someone) counted twice,
/// for the typed value held beside it.
fn cost(q: &Query, out: &QueryOutput) -> usize {
    let body = match out {
        QueryOutput::Found(a) => 2 * a.json().len(),
        QueryOutput::NotFound(m) => m.len(),
    };
    std::mem::size_of::<(Query, (u64, QueryOutput))>() + q.heap_bytes() + body
}

impl AnswerCache {
    /// An empty cache holding at most `budget` bytes.
    pub(crate) fn with_budget(budget: usize) -> AnswerCache {
        AnswerCache {
            entries: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// The answer to `q` if one is held for exactly index `idx`.
    pub(crate) fn get(&self, q: &Query, idx: u64) -> Option<QueryOutput> {
        match self.entries.get(q) {
            Some((at, out)) if *at == idx => Some(out.clone()),
            _ => None,
        }
    }

    /// Keeps `out` as the answer to `q` at `idx`, unless it is too big to cache; makes room
    /// first when the budget would be passed.
    pub(crate) fn insert(&mut self, q: &Query, idx: u64, out: &QueryOutput) {
        if let Some((old_q, (_, old))) = self.entries.remove_entry(q) {
            self.bytes -= cost(&old_q, &old);
        }
        let c = cost(q, out);
        if c > self.budget / ENTRY_SHARE {
            return;
        }
        if self.bytes + c > self.budget {
            self.evict(self.budget / 2);
        }
        self.bytes += c;
        self.entries.insert(q.clone(), (idx, out.clone()));
    }

    /// Drops entries until at most `target` bytes remain, and gives back the table's memory.
    fn evict(&mut self, target: usize) {
        let mut kept = 0;
        self.entries.retain(|q, (_, out)| {
            let c = cost(q, out);
            let keep = kept + c <= target;
            if keep {
                kept += c;
            }
            keep
        });
        self.bytes = kept;
        self.entries.shrink_to_fit();
    }

    /// Forgets everything (a restore replaced the tables).
    pub(crate) fn clear(&mut self) {
        self.entries = HashMap::new();
        self.bytes = 0;
    }

    /// Bytes held, as counted against the budget.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn q(i: usize) -> Query {
        Query::HealthService {
            name: format!("svc-{i}"),
            tags: vec![],
            passing: false,
            connect: false,
        }
    }

    fn body(n: usize) -> QueryOutput {
        QueryOutput::Found(crate::Answer::from_json(
            &Query::CatalogNodes,
            Bytes::from(vec![b'x'; n / 2]),
        ))
    }

    /// However many answers go in, the bytes held stay within the budget, counted honestly
    /// (body, query strings and slot), and the latest answer is held.
    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        const BUDGET: usize = 256 << 10;
        let mut cache = AnswerCache::with_budget(BUDGET);
        for i in 0..10_000 {
            cache.insert(&q(i), 7, &body(1000 + i % 3000));
            assert!(cache.bytes() <= BUDGET, "{} bytes held", cache.bytes());
            assert_eq!(cache.get(&q(i), 7), Some(body(1000 + i % 3000)));
            let counted: usize = cache.entries.iter().map(|(q, (_, o))| cost(q, o)).sum();
            if i % 997 == 0 {
                assert_eq!(counted, cache.bytes());
            }
        }
        assert!(cache.len() < 10_000);
        // Eviction keeps at least half the budget's worth, not nothing.
        assert!(cache.bytes() >= BUDGET / 4, "{} bytes held", cache.bytes());
    }

    /// An answer is reused only at its index, replacing one is counted once, and an answer
    /// larger than its share of the budget is served but not kept.
    #[test]
    fn big_answers_are_not_kept_and_replacements_are_counted_once() {
        const BUDGET: usize = 64 << 10;
        let mut cache = AnswerCache::with_budget(BUDGET);
        cache.insert(&q(1), 3, &body(100));
        let one = cache.bytes();
        assert_eq!(cache.get(&q(1), 4), None);
        cache.insert(&q(1), 4, &body(100));
        assert_eq!(cache.bytes(), one);
        assert_eq!(cache.get(&q(1), 3), None);
        assert_eq!(cache.get(&q(1), 4), Some(body(100)));

        cache.insert(&q(2), 4, &body(BUDGET / ENTRY_SHARE + 1));
        assert_eq!(cache.get(&q(2), 4), None);
        assert_eq!(cache.bytes(), one);
        // A too-big new answer to a cached query drops the stale one too.
        cache.insert(&q(1), 5, &body(BUDGET));
        assert_eq!(cache.get(&q(1), 4), None);
        assert_eq!((cache.bytes(), cache.len()), (0, 0));
        assert_eq!(MAX_CACHED_ANSWER_BYTES, 8 << 20);
    }

    /// A query's names count against the budget, so answers to queries with long names
    /// (random `?name=` lists, say) cannot pile up under a small body.
    #[test]
    fn query_strings_count() {
        let long = Query::IntentionMatch {
            by_source: false,
            names: vec!["n".repeat(4000); 4],
        };
        let short = Query::IntentionMatch {
            by_source: false,
            names: vec!["n".into()],
        };
        let out = body(2);
        assert!(cost(&long, &out) >= cost(&short, &out) + 16_000);
    }
}
