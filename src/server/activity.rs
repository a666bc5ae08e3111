//! When a connection last moved a byte, for closing idle keep-alive connections, and what its
//! HTTP/1 server last did with it, for parking it while idle (see `park`).
//!
//! The stream is wrapped so every read and write that makes progress stamps the time. A
//! connection counts as idle only when nothing moved either way: a slow upload or download
//! is busy, a keep-alive connection between requests is not.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The last read returned `Pending`: the HTTP server is waiting for bytes.
const READ_PENDING: u8 = 1;
/// Bytes were written and no flush has completed since.
const UNFLUSHED: u8 = 2;
/// The HTTP server began closing the stream.
const SHUTTING_DOWN: u8 = 4;
/// A request arrived whose body may not be over (see [`LastActivity::body_seen`]).
const BODY_SEEN: u8 = 8;

/// The time of a connection's last progress, shared between the stream and its watcher.
#[derive(Clone)]
pub struct LastActivity {
    /// Reference point of the stamps.
    origin: Instant,
    /// One allocation a connection for all of it: an idle connection holds only this.
    shared: Arc<Shared>,
}

struct Shared {
    /// Milliseconds since `origin`.
    at: AtomicU64,
    /// Milliseconds since `origin` of the last read that brought bytes (0: none yet).
    read_at: AtomicU64,
    /// `READ_PENDING`, `UNFLUSHED`, `SHUTTING_DOWN`, `BODY_SEEN`.
    flags: AtomicU8,
}

impl LastActivity {
    pub fn new() -> LastActivity {
        LastActivity {
            origin: Instant::now(),
            shared: Arc::new(Shared {
                at: AtomicU64::new(0),
                read_at: AtomicU64::new(0),
                flags: AtomicU8::new(0),
            }),
        }
    }

    fn set(&self, flag: u8, on: bool) {
        if on {
            self.shared.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.shared.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    /// Mark that a request with a body (or one whose end is not known yet) arrived. The HTTP/1
    /// server may still be reading or discarding that body after its response ends, so from
    /// then on the connection is never parked: a new parser would take the body for a request.
    pub fn body_seen(&self) {
        self.set(BODY_SEEN, true);
    }

    /// Whether the server's last read found nothing and everything it wrote is flushed: it is
    /// waiting for the client, not the client for it (a slow reader of an answer is not idle).
    pub fn waiting_for_client(&self) -> bool {
        self.shared.flags.load(Ordering::Relaxed) & (READ_PENDING | UNFLUSHED) == READ_PENDING
    }

    /// Whether bytes were written and no flush has completed since: the server is waiting for
    /// the client to take them (a full socket, a closed window), not for the registry.
    pub fn unflushed(&self) -> bool {
        self.shared.flags.load(Ordering::Relaxed) & UNFLUSHED != 0
    }

    /// Whether the HTTP/1 server, which has just returned `Pending`, can be taken apart
    /// without losing anything: its last read found nothing to read, everything it wrote is
    /// flushed, it is not closing, and no request with a body ever came. The caller checks
    /// that no request is under way.
    pub fn quiet(&self) -> bool {
        self.shared.flags.load(Ordering::Relaxed) == READ_PENDING
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.shared.at.store(self.now(), Ordering::Relaxed);
    }

    fn touch_read(&self) {
        let now = self.now();
        self.shared.at.store(now, Ordering::Relaxed);
        // +1: a read in the very first millisecond still counts as "after opening".
        self.shared.read_at.store(now + 1, Ordering::Relaxed);
    }

    /// Did the client send anything after `instant`?
    pub fn read_after(&self, instant: Instant) -> bool {
        let read_at = self.shared.read_at.load(Ordering::Relaxed);
        read_at > 0 && self.origin + Duration::from_millis(read_at) > instant
    }

    /// How long nothing has moved.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.shared.at.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// A stream that stamps [`LastActivity`] on every read or write that moves bytes.
pub struct Activity<S> {
    inner: S,
    last: LastActivity,
}

impl<S> Activity<S> {
    pub fn new(inner: S, last: LastActivity) -> Activity<S> {
        Activity { inner, last }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.touch_read();
        }
        self.last.set(READ_PENDING, polled.is_pending());
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.last.set(UNFLUSHED, true);
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.last.set(UNFLUSHED, true);
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.last.set(UNFLUSHED, false);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.last.set(SHUTTING_DOWN, true);
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
