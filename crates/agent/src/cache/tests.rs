//! The cache's logic on paused time, against fake servers whose answers the tests script.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use parking_lot::Mutex;
use tokio::time::{sleep, sleep_until};

use super::*;

/// What the fake servers hold: one index for every request, and whether they answer.
struct Data {
    index: u64,
    up: bool,
}

/// One fetch the fake servers saw.
#[derive(Clone, Debug)]
struct Call {
    token: String,
    request: String,
    min_index: u64,
    at: Instant,
}

/// Fake servers: blocking queries over one index, a log of calls, and scripted answers
/// that take precedence over the data.
struct Servers {
    data: watch::Sender<Data>,
    calls: Mutex<Vec<Call>>,
    script: Mutex<VecDeque<Result<u64, FetchError>>>,
    /// Fetches in progress (dropped ones leave).
    active: AtomicUsize,
    /// How long every answer takes.
    latency: Duration,
}

/// Counts a fetch as active while it lives.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn new(n: &'a AtomicUsize) -> Active<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Active(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn down() -> FetchError {
    FetchError::from(ServerError::Transport {
        addr: "10.0.0.1:8300".into(),
        message: "connection refused".into(),
    })
}

impl Servers {
    fn new(index: u64, latency: Duration) -> Arc<Servers> {
        Arc::new(Servers {
            data: watch::channel(Data { index, up: true }).0,
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            active: AtomicUsize::new(0),
            latency,
        })
    }

    fn set_index(&self, index: u64) {
        self.data.send_modify(|d| d.index = index);
    }

    fn set_up(&self, up: bool) {
        self.data.send_modify(|d| d.up = up);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// A Consul-like blocking query: answers at once when `min_index` is 0 or differs from
    /// the index (also when the index went backwards), else when it changes or at `wait`.
    async fn answer(
        &self,
        key: Key<String>,
        min_index: u64,
        wait: Duration,
    ) -> Result<(Arc<String>, u64), FetchError> {
        self.calls.lock().push(Call {
            token: key.token.clone(),
            request: key.request.clone(),
            min_index,
            at: Instant::now(),
        });
        let _active = Active::new(&self.active);
        let scripted = self.script.lock().pop_front();
        if !self.latency.is_zero() {
            sleep(self.latency).await;
        }
        let value = |index: u64| {
            Arc::new(format!(
                "{}/{}/{}@{index}",
                key.datacenter, key.token, key.request
            ))
        };
        if let Some(answer) = scripted {
            return answer.map(|i| (value(i), i));
        }
        let mut rx = self.data.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            {
                let d = rx.borrow_and_update();
                if !d.up {
                    return Err(down());
                }
                if min_index == 0 || d.index != min_index || Instant::now() >= deadline {
                    return Ok((value(d.index), d.index));
                }
            }
            if !matches!(
                tokio::time::timeout_at(deadline, rx.changed()).await,
                Ok(Ok(()))
            ) {
                let index = rx.borrow().index;
                return Ok((value(index), index));
            }
        }
    }
}

/// The fake cache type: a handle on the fake servers.
struct Fake(Arc<Servers>);

impl CacheType for Fake {
    type Request = String;
    type Value = Arc<String>;
    const NAME: &'static str = "fake";

    fn fetch(
        &self,
        key: &Key<String>,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<(Arc<String>, u64), FetchError>> + Send {
        let servers = self.0.clone();
        let key = key.clone();
        async move { servers.answer(key, min_index, wait).await }
    }
}

fn setup(index: u64, opts: Options) -> (Arc<Servers>, Arc<Cache<Fake>>) {
    let servers = Servers::new(index, Duration::ZERO);
    let cache = Cache::new(Fake(servers.clone()), opts);
    (servers, cache)
}

fn key(token: &str, request: &str) -> Key<String> {
    Key::new("dc1", token, request.to_string())
}

/// Lets spawned tasks run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

const NOW: Duration = Duration::ZERO;
const MIN: Duration = Duration::from_secs(60);

#[test]
fn backoff_is_consuls() {
    for failures in 0..=3 {
        assert_eq!(backoff(failures, 0.0), Duration::ZERO);
        assert_eq!(backoff(failures, 0.99), Duration::ZERO);
    }
    let secs = Duration::from_secs;
    assert_eq!(backoff(4, 0.0), secs(2));
    assert_eq!(backoff(5, 0.0), secs(4));
    assert_eq!(backoff(6, 0.0), secs(8));
    assert_eq!(backoff(7, 0.0), secs(16));
    assert_eq!(backoff(8, 0.0), secs(32));
    assert_eq!(backoff(9, 0.0), secs(60));
    assert_eq!(backoff(10, 0.0), secs(60));
    assert_eq!(backoff(u32::MAX, 0.0), secs(60));
    // The stagger: up to as much again.
    assert_eq!(backoff(4, 0.5), secs(3));
    assert_eq!(backoff(6, 0.25), secs(10));
    assert_eq!(backoff(40, 0.5), secs(90));
    // Out-of-range samples are clamped instead of panicking.
    assert_eq!(backoff(4, 7.0), secs(4));
    assert_eq!(backoff(4, -1.0), secs(2));
    assert_eq!(backoff(4, f64::NAN), secs(2));
    assert_eq!(backoff(4, f64::INFINITY), secs(2));
}

#[test]
fn a_keys_debug_hides_its_token() {
    let shown = format!("{:?}", key("s3cr3t-token", "db"));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("db") && shown.contains("dc1"));
    assert!(!format!("{:?}", key("", "db")).contains("redacted"));
}

#[test]
fn gets_are_send_and_the_cache_shareable() {
    fn send<F: Send>(_: F) {}
    fn shared<C: Send + Sync>(_: &C) {}
    let (_, cache) = setup(1, Options::default());
    shared(&cache);
    send(cache.get(key("t", "db"), 0, NOW));
}

#[tokio::test(start_paused = true)]
async fn first_get_misses_then_hits() {
    let (servers, cache) = setup(7, Options::default());
    assert!(cache.is_empty());
    let miss = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!(*miss.value, "dc1/t/db@7");
    assert_eq!((miss.index, miss.cache_hit, miss.age), (7, false, NOW));
    let hit = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((hit.index, hit.cache_hit, hit.age), (7, true, NOW));
    assert!(Arc::ptr_eq(&miss.value, &hit.value));
    // A min index below the held one is answered from memory too.
    assert!(cache.get(key("t", "db"), 6, MIN).await.unwrap().cache_hit);
    assert_eq!(cache.len(), 1);
    settle().await;
    // One fetch to load, then the refresher blocking on the index it got.
    let calls: Vec<u64> = servers.calls().iter().map(|c| c.min_index).collect();
    assert_eq!(calls, [0, 7]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_gets_share_one_fetch() {
    let servers = Servers::new(3, Duration::from_millis(50));
    let cache = Cache::new(Fake(servers.clone()), Options::default());
    let gets: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key("t", "db"), 0, NOW).await })
        })
        .collect();
    for g in gets {
        let got = g.await.unwrap().unwrap();
        assert_eq!((got.index, got.cache_hit), (3, false));
    }
    let loads = servers.calls().iter().filter(|c| c.min_index == 0).count();
    assert_eq!(loads, 1);
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_and_datacenters_are_separate_entries() {
    let (servers, cache) = setup(5, Options::default());
    let keys = [
        key("alice", "db"),
        key("bob", "db"),
        Key::new("dc2", "alice", "db".to_string()),
    ];
    for k in &keys {
        let got = cache.get(k.clone(), 0, NOW).await.unwrap();
        assert!(!got.cache_hit, "{k:?} is its own entry");
    }
    assert_eq!(cache.len(), 3);
    for (k, want) in keys
        .iter()
        .zip(["dc1/alice/db@5", "dc1/bob/db@5", "dc2/alice/db@5"])
    {
        let got = cache.get(k.clone(), 0, NOW).await.unwrap();
        assert!(got.cache_hit);
        assert_eq!(*got.value, want);
    }
    let loads: Vec<String> = servers
        .calls()
        .iter()
        .filter(|c| c.min_index == 0)
        .map(|c| format!("{}:{}", c.token, c.request))
        .collect();
    assert_eq!(loads, ["alice:db", "bob:db", "alice:db"]);
}

#[tokio::test(start_paused = true)]
async fn the_refresher_wakes_blocked_getters_with_new_values() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    let blocked: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key("t", "db"), 1, 5 * MIN).await })
        })
        .collect();
    sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    servers.set_index(2);
    for b in blocked {
        let got = b.await.unwrap().unwrap();
        assert_eq!(*got.value, "dc1/t/db@2");
        assert_eq!((got.index, got.cache_hit), (2, false));
    }
    assert_eq!(Instant::now(), start, "woken at once");
    let hit = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((hit.index, hit.cache_hit), (2, true));
    settle().await;
    // One server watch for all of them: load, block at 1, block at 2.
    let calls: Vec<u64> = servers.calls().iter().map(|c| c.min_index).collect();
    assert_eq!(calls, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_blocked_get_times_out_with_the_current_value() {
    let (servers, cache) = setup(4, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    let start = Instant::now();
    let got = cache
        .get(key("t", "db"), 4, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
    assert_eq!((got.index, got.cache_hit), (4, false));
    // Zero wait: no blocking at all.
    let got = cache.get(key("t", "db"), 4, NOW).await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
    assert_eq!((got.index, got.cache_hit), (4, false));
    // The refresher's fetch waits the query timeout, then blocks again with the same index.
    sleep(Duration::from_secs(600)).await;
    settle().await;
    let calls: Vec<(u64, Duration)> = servers
        .calls()
        .iter()
        .map(|c| (c.min_index, c.at - start))
        .collect();
    assert_eq!(calls, [(0, NOW), (4, NOW), (4, Duration::from_secs(600)),]);
}

#[tokio::test(start_paused = true)]
async fn an_index_going_backwards_refetches_from_zero() {
    let (servers, cache) = setup(10, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    settle().await;
    servers.set_index(3);
    settle().await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, &*got.value), (3, &"dc1/t/db@3".to_string()));
    let calls: Vec<u64> = servers.calls().iter().map(|c| c.min_index).collect();
    assert_eq!(calls, [0, 10, 0, 3]);
}

#[tokio::test(start_paused = true)]
async fn index_zero_counts_as_a_failure() {
    let (servers, cache) = setup(5, Options::default());
    servers.script.lock().extend((0..8).map(|_| Ok(0)));
    let start = Instant::now();
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, &*got.value), (1, &"dc1/t/db@0".to_string()));
    assert_eq!(got.age, NOW, "not an error: contact is not lost");
    sleep(Duration::from_secs(1000)).await;
    let calls = servers.calls();
    // Eight zero answers, then the real index 5, then a blocking fetch at 5 (the query
    // timeout is 600 s, so one more by now at most).
    assert!(calls.len() == 10 || calls.len() == 11, "{calls:?}");
    // After index 0 the next fetch asks from 1, as Consul does.
    assert!(calls[1..=8].iter().all(|c| c.min_index == 1));
    assert_eq!(calls[9].min_index, 5);
    // The first three zero answers are retried at once, then the backoff applies.
    for (i, pair) in calls[..9].windows(2).enumerate() {
        let failures = u32::try_from(i + 1).unwrap();
        let gap = pair[1].at - pair[0].at;
        let base = backoff(failures, 0.0);
        assert!(gap >= base && gap <= base * 2, "after {failures}: {gap:?}");
    }
    assert_eq!(calls[3].at, start, "three immediate retries");
    assert!(calls[4].at > start);
    assert_eq!(cache.get(key("t", "db"), 0, NOW).await.unwrap().index, 5);
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_and_the_last_value_is_served_with_its_age() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    sleep(Duration::from_secs(10)).await;
    let lost = Instant::now();
    servers.set_up(false);
    sleep(Duration::from_secs(5)).await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.cache_hit), (1, true));
    assert_eq!(got.age, Duration::from_secs(5));

    sleep(Duration::from_secs(900)).await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.cache_hit), (1, true));
    assert_eq!(got.age, Duration::from_secs(905));

    // calls[1] is the refresher's blocking fetch, which failed when the servers went.
    let calls = servers.calls();
    let failing = &calls[1..];
    assert!(failing[1..4].iter().all(|c| c.at == lost), "{failing:?}");
    // 2..4 + 4..8 + ... stays under 900 s; 8 backoffs at least 2+4+8+16+32+60+60+60.
    assert!(
        failing.len() >= 10 && failing.len() <= 20,
        "{}",
        failing.len()
    );
    for (i, pair) in failing.windows(2).enumerate() {
        let failures = u32::try_from(i + 1).unwrap();
        let gap = pair[1].at.max(lost) - pair[0].at.max(lost);
        let base = backoff(failures, 0.0);
        assert!(gap >= base && gap <= base * 2, "after {failures}: {gap:?}");
    }

    // The servers come back. The next retry blocks (nothing changed), so only after it has
    // been blocked for 31 s does the age drop back to zero.
    servers.set_up(true);
    let before = servers.calls().len();
    while servers.calls().len() == before {
        sleep(Duration::from_secs(1)).await;
    }
    let retry = servers.calls()[before].at;
    sleep_until(retry + Duration::from_secs(30)).await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!(got.age, retry + Duration::from_secs(30) - lost);
    sleep_until(retry + Duration::from_secs(32)).await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.age), (1, NOW));
    servers.set_index(2);
    settle().await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.age, got.cache_hit), (2, NOW, true));
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_lost_contact_at_once() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    servers.set_up(false);
    sleep(Duration::from_secs(20)).await;
    assert_eq!(
        cache.get(key("t", "db"), 0, NOW).await.unwrap().age,
        Duration::from_secs(20)
    );
    // Back with a change: the next retry returns at once with it.
    servers.set_index(2);
    servers.set_up(true);
    sleep(Duration::from_secs(121)).await;
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.age), (2, NOW));
}

#[tokio::test(start_paused = true)]
async fn a_blocked_get_rides_out_an_outage() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    let start = Instant::now();
    let blocked = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(key("t", "db"), 1, 2 * MIN).await })
    };
    sleep(Duration::from_secs(10)).await;
    servers.set_up(false);
    let got = blocked.await.unwrap().unwrap();
    assert_eq!(
        Instant::now() - start,
        2 * MIN,
        "failures do not end the wait"
    );
    assert_eq!((got.index, got.cache_hit), (1, false));
    assert_eq!(got.age, 2 * MIN - Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_fetch_is_returned_and_the_next_get_retries() {
    let servers = Servers::new(2, Duration::from_millis(50));
    let cache = Cache::new(Fake(servers.clone()), Options::default());
    servers.set_up(false);
    let gets: Vec<_> = (0..5)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key("t", "db"), 0, NOW).await })
        })
        .collect();
    for g in gets {
        let err = g.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, FetchError::Server(e) if matches!(**e, ServerError::Transport { .. })),
            "{err}"
        );
    }
    assert_eq!(servers.calls().len(), 1, "one shared fetch");
    assert!(cache.is_empty(), "the entry is dropped");
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(servers.calls().len(), 1, "and nothing keeps retrying");

    servers.set_up(true);
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.cache_hit), (2, false));
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn unread_entries_are_evicted_and_their_refresher_stops() {
    // 65 min: the deadlines fall inside a refresher's 10-minute blocking fetch, so the
    // driver's idle timer, armed when that fetch began, fires after the re-read below.
    let ttl = 65 * MIN;
    let opts = Options {
        last_get_ttl: ttl,
        ..Options::default()
    };
    let (servers, cache) = setup(1, opts);
    let start = Instant::now();
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    cache.get(key("t", "other"), 0, NOW).await.unwrap();
    sleep(64 * MIN).await;
    // Every get keeps its entry: "db" is read again, "other" is not.
    assert!(cache.get(key("t", "db"), 0, NOW).await.unwrap().cache_hit);
    sleep_until(start + ttl - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(cache.len(), 2);
    sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(cache.len(), 1, "other evicted at its TTL, db kept");
    let last_read = Instant::now();
    assert!(cache.get(key("t", "db"), 0, NOW).await.unwrap().cache_hit);
    sleep_until(last_read + ttl - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(cache.len(), 1);
    sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(cache.is_empty(), "db evicted a TTL after its last read");

    // Their blocking fetches were abandoned and no refresher fetches any more.
    assert_eq!(servers.active(), 0);
    let calls = servers.calls().len();
    sleep(10 * 60 * MIN).await;
    assert_eq!(servers.calls().len(), calls);

    // The next get starts over.
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert!(!got.cache_hit);
    settle().await;
    let after: Vec<u64> = servers.calls()[calls..]
        .iter()
        .map(|c| c.min_index)
        .collect();
    assert_eq!(after, [0, 1], "a load, then a new refresher");
}

#[tokio::test(start_paused = true)]
async fn the_default_ttl_is_72_hours() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    sleep(72 * 60 * MIN - Duration::from_secs(1)).await;
    assert_eq!(cache.len(), 1);
    sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(cache.is_empty());
    assert_eq!(servers.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_cache_stops_its_refreshers() {
    let (servers, cache) = setup(1, Options::default());
    cache.get(key("t", "db"), 0, NOW).await.unwrap();
    settle().await;
    assert_eq!(servers.active(), 1);
    drop(cache);
    settle().await;
    assert_eq!(servers.active(), 0);
    let calls = servers.calls().len();
    sleep(60 * MIN).await;
    assert_eq!(servers.calls().len(), calls);
}

#[tokio::test(start_paused = true)]
async fn without_refresh_fetches_happen_on_demand() {
    let opts = Options {
        refresh: false,
        ..Options::default()
    };
    let (servers, cache) = setup(1, opts);
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.cache_hit), (1, false));
    sleep(60 * MIN).await;
    assert_eq!(servers.calls().len(), 1, "no background refresh");
    let got = cache.get(key("t", "db"), 0, NOW).await.unwrap();
    assert_eq!((got.index, got.cache_hit, got.age), (1, true, 60 * MIN));

    // Blocked getters share one fetch, which blocks on the held index.
    let blocked: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key("t", "db"), 1, 5 * MIN).await })
        })
        .collect();
    settle().await;
    let calls: Vec<u64> = servers.calls().iter().map(|c| c.min_index).collect();
    assert_eq!(calls, [0, 1]);
    servers.set_index(2);
    for b in blocked {
        let got = b.await.unwrap().unwrap();
        assert_eq!((got.index, got.cache_hit, got.age), (2, false, NOW));
    }
    settle().await;
    assert_eq!(servers.calls().len(), 2, "nobody asked for more");

    // A getter waiting through a fetch that fails gets the value it had, not an error.
    let blocked = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(key("t", "db"), 2, 5 * MIN).await })
    };
    sleep(Duration::from_secs(10)).await;
    servers.set_up(false);
    let got = blocked.await.unwrap().unwrap();
    assert_eq!((got.index, got.cache_hit), (2, false));
    assert_eq!(got.age, Duration::from_secs(10));
    sleep(60 * MIN).await;
    assert_eq!(
        servers.calls().len(),
        3,
        "and no retrying in the background"
    );
}
