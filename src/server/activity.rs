//! When a connection last moved a byte, for closing idle keep-alive connections.
//!
//! The stream is wrapped so every read and write that makes progress stamps the time. A
//! connection counts as idle only when nothing moved either way: a slow upload or download
//! is busy, a keep-alive connection between requests is not.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The time of a connection's last progress, shared between the stream and its watcher.
#[derive(Clone)]
pub struct LastActivity {
    /// Reference point of `at`.
    origin: Instant,
    /// Milliseconds since `origin`.
    at: Arc<AtomicU64>,
    /// Milliseconds since `origin` of the last read that brought bytes (0: none yet).
    read_at: Arc<AtomicU64>,
}

impl LastActivity {
    pub fn new() -> LastActivity {
        LastActivity {
            origin: Instant::now(),
            at: Arc::new(AtomicU64::new(0)),
            read_at: Arc::new(AtomicU64::new(0)),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.at.store(self.now(), Ordering::Relaxed);
    }

    fn touch_read(&self) {
        let now = self.now();
        self.at.store(now, Ordering::Relaxed);
        // +1: a read in the very first millisecond still counts as "after opening".
        self.read_at.store(now + 1, Ordering::Relaxed);
    }

    /// Did the client send anything after `instant`?
    pub fn read_after(&self, instant: Instant) -> bool {
        let read_at = self.read_at.load(Ordering::Relaxed);
        read_at > 0 && self.origin + Duration::from_millis(read_at) > instant
    }

    /// How long nothing has moved.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.at.load(Ordering::Relaxed));
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
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
