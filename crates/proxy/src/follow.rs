//! Following the agent: each piece of the proxy's configuration is read by a background loop of
//! blocking queries and published on a `watch` channel, so connection paths read the current
//! `Arc` without a lock and without waiting on the agent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::ProxyError;
use trellis_client::Answer;

/// The longest pause between failed reads.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// The pause after `failures` failed reads in a row: 250 ms doubling, capped.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(MAX_RETRY)
}

/// Publishes what `fetch(index)` answers, blocking on the last index each time; `None` until
/// the first answer. The loop ends when every receiver is gone. Failures keep the last value
/// published (the agent serves from its cache, so a failure means the agent itself is away)
/// and are retried with [`retry_delay`].
pub fn follow_index<T, F, Fut>(what: &'static str, fetch: F) -> watch::Receiver<Option<Arc<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Answer<T>, ProxyError>> + Send,
{
    follow(what, fetch, |index: &mut u64, answer| {
        let fresh = answer.index != *index;
        // An index that went backwards (a restored server) starts over.
        *index = if answer.index < *index {
            0
        } else {
            answer.index
        };
        fresh
    })
}

/// Like [`follow_index`] for agent-local endpoints that block on a content hash.
pub fn follow_hash<T, F, Fut>(what: &'static str, fetch: F) -> watch::Receiver<Option<Arc<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Answer<T>, ProxyError>> + Send,
{
    follow(what, fetch, |hash: &mut String, answer| {
        let fresh = answer.hash != *hash || answer.hash.is_empty();
        hash.clone_from(&answer.hash);
        fresh
    })
}

/// The loop both follow: `fetch(cursor)`, then `advance` moves the cursor past the answer and
/// says whether its value is new (the first answer always is).
fn follow<K, T, F, Fut, A>(
    what: &'static str,
    fetch: F,
    advance: A,
) -> watch::Receiver<Option<Arc<T>>>
where
    K: Default + Clone + Send + 'static,
    T: Send + Sync + 'static,
    F: Fn(K) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Answer<T>, ProxyError>> + Send,
    A: Fn(&mut K, &Answer<T>) -> bool + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut cursor = K::default();
        let mut failures = 0u32;
        loop {
            let out = tokio::select! {
                out = fetch(cursor.clone()) => out,
                () = tx.closed() => return,
            };
            match out {
                Ok(answer) => {
                    failures = 0;
                    let fresh = advance(&mut cursor, &answer);
                    if fresh || tx.borrow().is_none() {
                        tx.send_replace(Some(Arc::new(answer.value)));
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(what, error = %e, failures, "reading from the agent failed; keeping what the proxy has");
                    tokio::select! {
                        () = tokio::time::sleep(retry_delay(failures)) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn retries_back_off_and_cap() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(4), Duration::from_secs(2));
        assert_eq!(retry_delay(40), MAX_RETRY);
    }

    /// Each new index is published once; a failure keeps the value; the loop blocks on the
    /// index it last saw.
    #[tokio::test(start_paused = true)]
    async fn follows_indexes_and_rides_out_failures() {
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let mut rx = follow_index("test", move |index| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => {
                        assert_eq!(index, 0);
                        Ok(Answer {
                            value: "a",
                            index: 5,
                            hash: String::new(),
                            acl_default_allow: true,
                        })
                    }
                    1 => Err(ProxyError::Agent("away".into())),
                    2 => {
                        assert_eq!(index, 5, "blocks on the last index after a failure");
                        Ok(Answer {
                            value: "b",
                            index: 7,
                            hash: String::new(),
                            acl_default_allow: true,
                        })
                    }
                    _ => std::future::pending().await,
                }
            }
        });
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().as_deref(), Some(&"a"));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().as_deref(), Some(&"b"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
