//! One accepted connection's traffic: bytes counted each way as they pass, an idle watchdog
//! that also feeds the byte counters while the connection lasts, and the L4 splice.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::DirectionMetrics;

/// How often a connection's bytes reach the metrics while it lasts (at most; the idle
/// watchdog ticks at a quarter of the idle timeout when that is shorter).
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Counters of one connection, shared between its stream and its watchdog.
#[derive(Debug, Default)]
pub struct Traffic {
    rx: AtomicU64,
    tx: AtomicU64,
    /// Requests being handled now (HTTP): a connection waiting on the application is not idle.
    active: AtomicU64,
    /// Requests seen (HTTP).
    requests: AtomicU64,
}

impl Traffic {
    /// Bytes read from the peer.
    pub fn rx(&self) -> u64 {
        self.rx.load(Ordering::Relaxed)
    }

    /// Bytes written to the peer.
    pub fn tx(&self) -> u64 {
        self.tx.load(Ordering::Relaxed)
    }

    /// Requests seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn request(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Traffic);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream whose reads and writes are counted into a [`Traffic`].
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> Metered<S> {
    /// Wraps `inner`, counting into `traffic`.
    pub fn new(inner: S, traffic: Arc<Traffic>) -> Metered<S> {
        Metered { inner, traffic }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.traffic.rx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.traffic.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.traffic.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hands a connection's bytes to the metrics, each time only what is new.
#[derive(Debug)]
pub struct Report<'a> {
    counters: &'a DirectionMetrics,
    rx: u64,
    tx: u64,
}

impl<'a> Report<'a> {
    /// Nothing reported yet.
    pub fn new(counters: &'a DirectionMetrics) -> Report<'a> {
        Report {
            counters,
            rx: 0,
            tx: 0,
        }
    }

    /// Adds the bytes counted since the last call.
    pub fn flush(&mut self, traffic: &Traffic) {
        let (rx, tx) = (traffic.rx(), traffic.tx());
        self.counters.bytes(rx - self.rx, tx - self.tx);
        (self.rx, self.tx) = (rx, tx);
    }
}

/// Resolves once the connection has been idle for `timeout` (no byte either way and no
/// request in flight); never when `timeout` is `None`. It ticks at a quarter of the timeout
/// (at most [`FLUSH_EVERY`]), so a connection closes between `timeout` and 1.25 × `timeout`
/// after its last activity, and reports the bytes so far at each tick.
pub async fn idle(traffic: &Traffic, timeout: Option<Duration>, report: &mut Report<'_>) {
    let tick = timeout
        .map_or(FLUSH_EVERY, |t| (t / 4).min(FLUSH_EVERY))
        .max(Duration::from_millis(1));
    let mut seen = traffic.rx() + traffic.tx();
    let mut last_active = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        report.flush(traffic);
        let now = Instant::now();
        let total = traffic.rx() + traffic.tx();
        if total != seen || traffic.busy() {
            seen = total;
            last_active = now;
        } else if timeout.is_some_and(|t| now.duration_since(last_active) >= t) {
            return;
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// Closed by either side (each direction finished).
    Closed,
    /// Closed by the proxy after the idle timeout.
    Idle,
    /// An I/O error on either side.
    Error(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed"),
            End::Idle => f.write_str("idle timeout"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What a splice moved, and how it ended.
#[derive(Debug)]
pub struct Spliced {
    /// Bytes read from `peer` (and written to `app`).
    pub rx: u64,
    /// Bytes written to `peer`.
    pub tx: u64,
    /// How it ended.
    pub end: End,
}

/// Copies bytes between `peer` (the accepted connection) and `app` both ways, passing a
/// half-close on, until both directions finish, either side fails, or nothing has moved for
/// `idle_timeout`. The bytes go to `counters` as they pass (see [`idle`]) and in full at the end.
pub async fn splice<P, A>(
    peer: P,
    mut app: A,
    idle_timeout: Option<Duration>,
    counters: &DirectionMetrics,
) -> Spliced
where
    P: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let traffic = Arc::new(Traffic::default());
    let mut peer = Metered::new(peer, traffic.clone());
    let mut report = Report::new(counters);
    let end = tokio::select! {
        r = crate::pipe::copy_bidirectional(&mut peer, &mut app) => match r {
            Ok(_) => End::Closed,
            Err(e) => End::Error(e),
        },
        () = idle(&traffic, idle_timeout, &mut report) => End::Idle,
    };
    report.flush(&traffic);
    Spliced {
        rx: traffic.rx(),
        tx: traffic.tx(),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Direction, Metrics};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn bytes_of(m: &Metrics, direction: &str, way: &str) -> u64 {
        let line = format!(
            "trellis_proxy_connection_bytes_total{{direction=\"{direction}\",way=\"{way}\"}} "
        );
        let text = m.render();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        value.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_splice_counts_both_ways_and_passes_half_close() {
        let m = Metrics::new();
        let (peer, mut client) = tokio::io::duplex(1024);
        let (app, mut server) = tokio::io::duplex(1024);
        let splice = splice(
            peer,
            app,
            Some(Duration::from_secs(3600)),
            m.direction(Direction::Inbound),
        );
        let traffic = async {
            client.write_all(b"hello").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello", "the half-close reaches the application");
            server.write_all(b"hello back!").await.unwrap();
            server.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"hello back!");
        };
        let (spliced, ()) = tokio::join!(splice, traffic);
        assert!(matches!(spliced.end, End::Closed), "{:?}", spliced.end);
        assert_eq!((spliced.rx, spliced.tx), (5, 11));
        assert_eq!(bytes_of(&m, "inbound", "rx"), 5);
        assert_eq!(bytes_of(&m, "inbound", "tx"), 11);
        assert_eq!(bytes_of(&m, "outbound", "rx"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_splice_closes_after_the_timeout_and_activity_keeps_it_open() {
        let m = Metrics::new();
        let (peer, mut client) = tokio::io::duplex(1024);
        let (app, mut server) = tokio::io::duplex(1024);
        let start = Instant::now();
        let splice = splice(
            peer,
            app,
            Some(Duration::from_secs(60)),
            m.direction(Direction::Outbound),
        );
        // A byte every 50 s for 200 s: never idle for a minute.
        let traffic = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                client.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                server.read_exact(&mut b).await.unwrap();
            }
            let mut rest = Vec::new();
            // The splice closes both sides once it gives up.
            client.read_to_end(&mut rest).await.unwrap();
            server.read_to_end(&mut rest).await.unwrap();
            rest
        };
        let (spliced, rest) = tokio::time::timeout(Duration::from_secs(600), async {
            tokio::join!(splice, traffic)
        })
        .await
        .expect("the idle splice closes");
        let took = start.elapsed();
        assert!(matches!(spliced.end, End::Idle), "{:?}", spliced.end);
        assert!(rest.is_empty());
        assert_eq!(spliced.rx, 4);
        assert!(
            took >= Duration::from_secs(260) && took <= Duration::from_secs(276),
            "closed after {took:?}"
        );
        assert_eq!(bytes_of(&m, "outbound", "rx"), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_reach_the_metrics_while_a_connection_lasts() {
        let m = Arc::new(Metrics::new());
        let (peer, mut client) = tokio::io::duplex(1024);
        let (app, mut server) = tokio::io::duplex(1024);
        let splice = tokio::spawn({
            let m = m.clone();
            async move { splice(peer, app, None, m.direction(Direction::Inbound)).await }
        });
        client.write_all(b"0123456789").await.unwrap();
        let mut b = [0u8; 10];
        server.read_exact(&mut b).await.unwrap();
        assert_eq!(
            bytes_of(&m, "inbound", "rx"),
            0,
            "not reported before a tick"
        );
        tokio::time::sleep(FLUSH_EVERY + Duration::from_secs(1)).await;
        assert_eq!(bytes_of(&m, "inbound", "rx"), 10, "reported while open");
        // No idle timeout: still open after hours of silence.
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert!(!splice.is_finished());
        server.write_all(b"abc").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        drop(client);
        let s = tokio::time::timeout(Duration::from_secs(60), splice)
            .await
            .expect("the splice ends when both sides close")
            .unwrap();
        assert!(matches!(s.end, End::Closed), "{:?}", s.end);
        assert_eq!((s.rx, s.tx), (10, 3));
        assert_eq!(bytes_of(&m, "inbound", "rx"), 10, "counted once");
        assert_eq!(bytes_of(&m, "inbound", "tx"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_not_idle() {
        let m = Metrics::new();
        let traffic = Traffic::default();
        let mut report = Report::new(m.direction(Direction::Inbound));
        let start = Instant::now();
        let busy = traffic.request();
        let timeout = Some(Duration::from_secs(10));
        tokio::select! {
            () = idle(&traffic, timeout, &mut report) => panic!("idle while a request is in flight"),
            () = tokio::time::sleep(Duration::from_secs(100)) => {}
        }
        drop(busy);
        tokio::time::timeout(
            Duration::from_secs(60),
            idle(&traffic, timeout, &mut report),
        )
        .await
        .expect("idle once the request is done");
        let took = start.elapsed() - Duration::from_secs(100);
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_secs(13),
            "{took:?}"
        );
        assert_eq!(traffic.requests(), 1);
    }
}
