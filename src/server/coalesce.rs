//! Write coalescing for HTTP/2 over TLS: one TLS record and one `writev` for the frames of
//! several streams instead of one each.
//!
//! h2 writes whatever frames are ready and flushes at once, and on a loaded worker the
//! answers of a connection's streams become ready one task poll at a time, so every 1 KiB
//! answer went out as its own TLS record and its own system call (`bench/profile-h2.sh
//! --strace`: one `writev` to the client per request at 64 streams). [`Coalesce`] sits between
//! the HTTP/2 connection and the TLS stream: small writes are gathered in a buffer of at most
//! one TLS record's plaintext ([`RECORD`]), and a flush, while requests of the connection are
//! still being answered ([`InFlight`]: an answer whose body has ended no longer counts), first
//! yields once to the scheduler so that their frames join the same write. A flush with no
//! request under way (a lone request's whole answer), a full buffer and a large write (a
//! blob's full-size DATA frames) go straight through: no added wait for a lone small request,
//! no extra copy for full frames. A streamed answer's flushes yield once each while it lasts,
//! which lets more of it join each write (the 256 MiB GET over HTTP/2 cost the same CPU per
//! GiB before and after: BENCHMARKS.md, "HTTP/2 after the profile").

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::limits::InFlight;

/// The most plaintext one TLS record carries: a fuller buffer is written out.
pub const RECORD: usize = 16 * 1024;

/// A stream whose small writes are gathered until a flush (see the module documentation).
pub struct Coalesce<S> {
    inner: S,
    /// Bytes accepted from the writer and not yet handed to `inner`.
    pending: Vec<u8>,
    /// `None`: pass every write straight through (HTTP/1, where one answer is one write).
    requests: Option<InFlight>,
    /// The yield of the flush under way, once started.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl<S> Coalesce<S> {
    /// The stream written to.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Coalesce when `requests` is given (the connection speaks HTTP/2), else pass through.
    pub fn new(inner: S, requests: Option<InFlight>) -> Coalesce<S> {
        Coalesce {
            inner,
            pending: Vec::new(),
            requests,
            yielding: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Hand everything pending to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        if self.pending.capacity() > RECORD {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Make room for `len` more bytes: `Ready(true)` when they are to be buffered,
    /// `Ready(false)` when they should go straight to `inner` (large, buffer empty).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.requests.is_none() {
            return Poll::Ready(Ok(false));
        }
        if self.pending.len() + len > RECORD {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len < RECORD))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.poll_room(cx, buf.len()))? {
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, len))? {
            for b in bufs {
                this.pending.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            let others_under_way = this
                .requests
                .as_ref()
                .is_some_and(|requests| requests.idle_for().is_none());
            if others_under_way || this.yielding.is_some() {
                // Once per flush: let the connection's other streams queue their frames.
                let yielding = this
                    .yielding
                    .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
                ready!(yielding.as_mut().poll(cx));
                this.yielding = None;
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A writer that records each write it is handed.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.len());
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_frames_share_one_write_and_large_ones_pass_straight_through() {
        let requests = InFlight::new();
        let _under_way = requests.start();
        let mut stream = Coalesce::new(Recorder::default(), Some(requests.clone()));
        for frame in [&b"headers"[..], b"data", b"more headers", b"more data"] {
            stream.write_all(frame).await.unwrap();
        }
        assert!(
            stream.inner.writes.is_empty(),
            "nothing written before the flush"
        );
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, [32]);
        let large = vec![7u8; RECORD + 1];
        stream.write_all(&large).await.unwrap();
        assert_eq!(
            stream.inner.writes,
            [32, RECORD + 1],
            "no copy of bulk data"
        );
        // A small write, then one that would overflow the record: the first goes out first.
        stream.write_all(&[1; 100]).await.unwrap();
        stream.write_all(&vec![2; RECORD - 50]).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes[2..], [100, RECORD - 50]);
        assert_eq!(
            stream.inner.bytes.len(),
            32 + RECORD + 1 + 100 + RECORD - 50
        );
    }

    #[tokio::test]
    async fn without_http2_every_write_goes_straight_through() {
        let mut stream = Coalesce::new(Recorder::default(), None);
        stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert_eq!(stream.inner.writes, [19]);
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_pending() {
        let mut stream = Coalesce::new(Recorder::default(), Some(InFlight::new()));
        stream.write_all(b"goaway").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(stream.inner.bytes, b"goaway");
    }
}
