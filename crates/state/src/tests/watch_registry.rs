//! The watch registry holds a sender only while a key has waiters: blocking reads and
//! many-keys waits on keys nobody writes (random names) leave nothing behind, whether they
//! time out, are woken or are abandoned, and no wake-up is lost to a key's sender coming and
//! going.

use std::sync::Arc;
use std::time::Duration;

use super::{health, reg};
use crate::{StateError, Store, WatchKey, MAX_WATCH_KEYS};

fn random_keys(n: usize, salt: &str) -> Vec<(WatchKey, u64)> {
    (0..n)
        .map(|i| (WatchKey::Service(format!("{salt}-{i}")), 1))
        .collect()
}

/// Thousands of waiters on keys nobody writes: while they wait each key has a sender; once
/// their waits pass, the registry is empty again and its table has been given back.
#[tokio::test(start_paused = true)]
async fn waiters_that_time_out_leave_no_key_behind() {
    let s = Store::new("dc1");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.blocking_query(
                &health(&format!("nobody-{i}"), false),
                1,
                Duration::from_secs(10),
            )
            .await;
        }));
    }
    for batch in 0..4 {
        let s = s.clone();
        let keys = random_keys(MAX_WATCH_KEYS, &format!("batch{batch}"));
        tasks.push(tokio::spawn(async move {
            let changed = s.wait_for_keys(&keys, Duration::from_secs(10)).await;
            assert!(changed.unwrap().is_empty());
        }));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(s.watched_keys(), 1000 + 4 * MAX_WATCH_KEYS);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.watched_keys(), 0);
    assert!(
        s.watch_capacity() <= 2048,
        "the registry kept a table of {} slots",
        s.watch_capacity()
    );
}

/// A request abandoned mid-wait (its future dropped: the client went away) removes its keys.
#[tokio::test(start_paused = true)]
async fn abandoned_waiters_leave_no_key_behind() {
    let s = Store::new("dc1");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.blocking_query(
                &health(&format!("gone-{i}"), false),
                1,
                Duration::from_secs(600),
            )
            .await;
        }));
    }
    {
        let s = s.clone();
        let keys = random_keys(500, "gone-watch");
        tasks.push(tokio::spawn(async move {
            let _ = s.wait_for_keys(&keys, Duration::from_secs(600)).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(s.watched_keys(), 600);
    for t in tasks {
        t.abort();
        assert!(t.await.unwrap_err().is_cancelled());
    }
    assert_eq!(s.watched_keys(), 0);
}

/// Woken waiters leave too: after the write that wakes them is answered, nothing is held.
#[tokio::test(start_paused = true)]
async fn woken_waiters_leave_no_key_behind() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            s.blocking_query(&health("web", false), 2, Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(s.watched_keys(), 1);
    s.apply(3, reg("n1", Some(("web2", "web"))));
    assert_eq!(waiter.await.unwrap().1, 3);
    assert_eq!(s.watched_keys(), 0);
}

/// A key shared by two waiters keeps its sender until the second leaves, and a write still
/// wakes the one that stayed after the other timed out.
#[tokio::test(start_paused = true)]
async fn a_shared_key_lasts_until_its_last_waiter_and_still_wakes() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let wait = |secs| {
        let s = s.clone();
        tokio::spawn(async move {
            s.blocking_query(&health("web", false), 2, Duration::from_secs(secs))
                .await
                .1
        })
    };
    let short = wait(5);
    let long = wait(60);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(short.await.unwrap(), 2, "the short wait timed out");
    assert_eq!(
        s.watched_keys(),
        1,
        "the long waiter's key went with the short one"
    );
    s.apply(3, reg("n1", Some(("web2", "web"))));
    let woken = tokio::time::timeout(Duration::from_secs(1), long).await;
    assert_eq!(woken.expect("the long waiter was not woken").unwrap(), 3);
    assert_eq!(s.watched_keys(), 0);
}

/// No lost wake-up while a key's sender is made and dropped over and over: on real threads,
/// waiters follow a key through many writes while others subscribe to it and leave at once
/// (each leave may drop the sender); every waiter must see the last write long before its
/// own wait would have ended.
#[test]
fn no_wakeup_is_lost_while_senders_come_and_go() {
    const WRITES: u64 = 300;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Store::new("dc1");
        s.apply(2, reg("n0", Some(("web0", "web"))));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut churn = Vec::new();
        for _ in 0..4 {
            let (s, stop) = (s.clone(), stop.clone());
            churn.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Subscribes under the read lock, then leaves after a moment.
                    let (_, idx) = s.query(&health("web", false));
                    s.blocking_query(&health("web", false), idx, Duration::from_micros(50))
                        .await;
                    let keys = [(WatchKey::Service("web".into()), idx)];
                    let _ = s.wait_for_keys(&keys, Duration::from_micros(50)).await;
                }
            }));
        }
        let mut followers = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            followers.push(tokio::spawn(async move {
                let mut seen = 2;
                while seen < WRITES + 2 {
                    // A lost wake-up leaves this waiting the whole minute.
                    let (_, idx) = s
                        .blocking_query(&health("web", false), seen, Duration::from_secs(60))
                        .await;
                    assert!(idx > seen, "woken without a change");
                    seen = idx;
                }
            }));
        }
        let writer = {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 3..=WRITES + 2 {
                    s.apply(i, reg(&format!("n{i}"), Some(("web", "web"))));
                    if i % 8 == 0 {
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        writer.await.unwrap();
        for f in followers {
            tokio::time::timeout(Duration::from_secs(20), f)
                .await
                .expect("a waiter missed a wake-up")
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in churn {
            c.await.unwrap();
        }
        assert_eq!(s.watched_keys(), 0);
    });
}

/// One many-keys wait carries at most [`MAX_WATCH_KEYS`] keys; more is a typed error, and
/// nothing is subscribed.
#[tokio::test(start_paused = true)]
async fn a_wait_on_too_many_keys_is_refused() {
    let s = Store::new("dc1");
    let keys = random_keys(MAX_WATCH_KEYS + 1, "many");
    let err = s
        .wait_for_keys(&keys, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::TooManyWatchKeys { keys, max } if keys == MAX_WATCH_KEYS + 1 && max == MAX_WATCH_KEYS),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "a watch may carry at most {MAX_WATCH_KEYS} keys, not {}",
            MAX_WATCH_KEYS + 1
        )
    );
    assert_eq!(s.watched_keys(), 0);
    let keys = random_keys(MAX_WATCH_KEYS, "many");
    assert!(s
        .wait_for_keys(&keys, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}
