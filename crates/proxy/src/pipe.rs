//! Byte plumbing whose buffers are held only while they hold data.
//!
//! A proxy keeps many connections open that carry nothing most of the time. tokio's
//! `copy_bidirectional` keeps two 8 KiB buffers per connection for its whole life, and rustls
//! reads at most 4 KiB from the socket per call. Here a connection borrows a [`BUF_SIZE`]
//! buffer from a per-thread pool when a read returns data and gives it back once the data is
//! passed on, so an idle connection holds none, and a busy one moves a full TLS record per
//! system call.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A mutual-TLS connection accepted on the public listener.
pub type InboundTls = tokio_rustls::server::TlsStream<BufferedRead<TcpStream>>;

/// A mutual-TLS connection dialled to an upstream's proxy.
pub type OutboundTls = tokio_rustls::client::TlsStream<BufferedRead<TcpStream>>;

/// Size of every pooled buffer: a full TLS record (16 KiB of plaintext) and then some of the
/// next, so one read usually brings a whole record.
pub const BUF_SIZE: usize = 32 * 1024;

/// Buffers each thread keeps for reuse; beyond this, returned buffers are freed.
const POOL_MAX: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// A stream whose reads go through a pooled buffer held only while it has unread bytes;
/// writes pass straight through. Put under TLS so that rustls' small reads are served from
/// memory instead of one system call each.
#[derive(Debug)]
pub struct BufferedRead<T> {
    inner: T,
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
}

impl<T> BufferedRead<T> {
    /// Wraps `inner`; no buffer is taken until a read brings data.
    pub fn new(inner: T) -> BufferedRead<T> {
        BufferedRead {
            inner,
            buf: None,
            pos: 0,
            end: 0,
        }
    }

    /// Whether a buffer is held now (only while read bytes wait to be consumed).
    pub fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }

    /// Copies buffered bytes into `out`, giving the buffer back once drained.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let Some(buf) = self.buf.as_ref() else { return };
        let n = (self.end - self.pos).min(out.remaining());
        out.put_slice(&buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.end {
            if let Some(buf) = self.buf.take() {
                give(buf);
            }
            self.pos = 0;
            self.end = 0;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BufferedRead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_some() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= BUF_SIZE {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let mut buf = take();
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    give(buf);
                } else {
                    this.buf = Some(buf);
                    this.pos = 0;
                    this.end = n;
                    this.drain_into(out);
                }
                Poll::Ready(Ok(()))
            }
            other => {
                give(buf);
                other
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BufferedRead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One direction of a splice: read, write all of it, repeat; at end of input, shut the
/// writer down (passing the half-close on).
#[derive(Debug, Default)]
struct OneWay {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    read_done: bool,
    need_flush: bool,
    moved: u64,
}

impl OneWay {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.buf.is_none() && !self.read_done {
                let mut buf = take();
                let mut read = ReadBuf::new(&mut buf);
                match reader.as_mut().poll_read(cx, &mut read) {
                    Poll::Pending => {
                        give(buf);
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give(buf);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            give(buf);
                            self.read_done = true;
                        } else {
                            self.moved += n as u64;
                            self.pos = 0;
                            self.end = n;
                            self.buf = Some(buf);
                        }
                    }
                }
            }
            if let Some(buf) = self.buf.as_ref() {
                while self.pos < self.end {
                    let n = ready!(writer.as_mut().poll_write(cx, &buf[self.pos..self.end]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pos += n;
                    self.need_flush = true;
                }
                if let Some(buf) = self.buf.take() {
                    give(buf);
                }
            }
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.moved));
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both reach end of input, shutting each writer down
/// when its input ends; returns the bytes moved each way. Like tokio's `copy_bidirectional`,
/// but a direction holds a buffer only while it has bytes to write.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = OneWay::default();
    let mut b_to_a = OneWay::default();
    let mut done_ab = None;
    let mut done_ba = None;
    poll_fn(|cx| {
        if done_ab.is_none() {
            if let Poll::Ready(r) = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                done_ab = Some(r?);
            }
        }
        if done_ba.is_none() {
            if let Poll::Ready(r) = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                done_ba = Some(r?);
            }
        }
        match (done_ab, done_ba) {
            (Some(ab), Some(ba)) => Poll::Ready(Ok((ab, ba))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close_through_small_pipes() {
        // Pipes smaller than a buffer make writes return Pending half-way.
        let (client, mut a) = tokio::io::duplex(1000);
        let (mut b, server) = tokio::io::duplex(700);
        let up = pattern(300_000);
        let down = pattern(123_457);
        let splice = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client);
            let send = async {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            got
        });
        let mut got_up = Vec::new();
        let (mut sr, mut sw) = tokio::io::split(server);
        let send = async {
            sw.write_all(&down2).await.unwrap();
            sw.shutdown().await.unwrap();
        };
        let ((), n) = tokio::join!(send, sr.read_to_end(&mut got_up));
        n.unwrap();
        assert_eq!(got_up, up);
        assert_eq!(client_side.await.unwrap(), down);
        assert_eq!(
            splice.await.unwrap().unwrap(),
            (up.len() as u64, down.len() as u64)
        );
    }

    #[tokio::test]
    async fn one_side_closing_leaves_the_other_open() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let splice = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            server.read(&mut buf).await.unwrap(),
            0,
            "half-close passed on"
        );
        server.write_all(b"still here").await.unwrap();
        let mut got = [0u8; 10];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still here");
        server.shutdown().await.unwrap();
        assert_eq!(splice.await.unwrap().unwrap(), (0, 10));
    }

    #[tokio::test]
    async fn buffered_read_serves_small_reads_and_lets_go_when_drained() {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let mut r = BufferedRead::new(r);
        let data = pattern(20_000);
        w.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        while got.len() < data.len() {
            let n = r.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
            assert_eq!(
                r.holds_buffer(),
                got.len() < data.len(),
                "a buffer is held only while bytes wait"
            );
        }
        assert_eq!(got, data);
        // Writes pass through; end of input reads as 0 with nothing held.
        r.write_all(b"pong").await.unwrap();
        let mut pong = [0u8; 4];
        w.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        drop(w);
        assert_eq!(r.read(&mut small).await.unwrap(), 0);
        assert!(!r.holds_buffer());
    }
}
