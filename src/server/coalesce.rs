//! Write coalescing for HTTP/2 over TLS: one TLS record and one `writev` for the frames of
//! several streams instead of one each, and full TLS records for a large answer's DATA frames.
//!
//! h2 writes whatever frames are ready and flushes at once, and on a loaded worker the
//! answers of a connection's streams become ready one task poll at a time, so every 1 KiB
//! answer went out as its own TLS record and its own system call (`bench/profile-h2.sh
//! --strace`: one `writev` to the client per request at 64 streams). [`Coalesce`] sits between
//! the HTTP/2 connection and the TLS stream: small writes are gathered in a buffer of at most
//! one TLS record's plaintext ([`RECORD`]), and a flush, while requests of the connection are
//! still being answered ([`InFlight`]: an answer whose body has ended no longer counts), first
//! yields once to the scheduler so that their frames join the same write. A flush with no
//! request under way (a lone request's whole answer) goes straight through: no added wait for
//! a lone small request.
//!
//! A large answer: h2 writes and flushes each full DATA frame (9 bytes of header and 16 KiB
//! of payload) on its own, so a 1 GiB GET was 66,841 `writev`s and, since a frame is 9 bytes
//! more than a record holds, two TLS records a frame (16,384 + 9): twice the records, AES-GCM
//! setups and tags. Writes of up to [`GATHER`] (four such frames) are gathered too, and while
//! a request is under way a flush that has new bytes behind it and at least a record
//! pending is answered at once without writing them: h2 goes on to queue the next frame into
//! the same buffer. The bytes are never left behind: the held flush wakes the connection's
//! task, whose next poll ends with another flush, and a flush with nothing new since the one
//! before it (no more frames ready: the upstream paused, or the body ended) writes everything.
//! A full buffer is written before it would overflow, so the rustls records are full.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::limits::InFlight;

/// The most plaintext one TLS record carries: a fuller buffer is written out.
pub const RECORD: usize = 16 * 1024;

/// The most a large answer's frames gather before they are written: four full DATA frames
/// (a 9-byte header and a record's payload each, the client's usual maximum frame size),
/// rustls's default limit of buffered records (64 KiB) and no more.
pub const GATHER: usize = 4 * (RECORD + 9);

/// A stream whose small writes are gathered until a flush (see the module documentation).
pub struct Coalesce<S> {
    inner: S,
    /// Bytes accepted from the writer and not yet handed to `inner`.
    pending: Vec<u8>,
    /// `None`: pass every write straight through (HTTP/1, where one answer is one write).
    requests: Option<InFlight>,
    /// The yield of the flush under way, once started.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    /// Bytes were buffered since the last flush: one that has none writes what is pending.
    fresh: bool,
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
            fresh: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Hand everything pending to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain_but(cx, 0)
    }

    /// Hand all but the last `keep` pending bytes to `inner`.
    fn poll_drain_but(&mut self, cx: &mut Context<'_>, keep: usize) -> Poll<io::Result<()>> {
        while self.pending.len() > keep {
            let end = self.pending.len() - keep;
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[..end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        if self.pending.capacity() > GATHER {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Make room for `len` more bytes: `Ready(true)` when they are to be buffered,
    /// `Ready(false)` when they should go straight to `inner` (larger than [`GATHER`], buffer
    /// empty).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.requests.is_none() {
            return Poll::Ready(Ok(false));
        }
        // Small frames share one record; a large one may fill the gathering buffer.
        let limit = if len < RECORD && self.pending.len() < RECORD {
            RECORD
        } else {
            GATHER
        };
        if self.pending.len() + len > limit {
            // A large write keeps the last partial record to lead the next one, so that
            // rustls fills every record it makes; the rest is whole records.
            let tail = self.pending.len() % RECORD;
            let keep = if len >= RECORD && tail + len <= GATHER {
                tail
            } else {
                0
            };
            ready!(self.poll_drain_but(cx, keep))?;
        }
        if len > GATHER {
            return Poll::Ready(Ok(false));
        }
        if len >= RECORD && self.pending.capacity() < GATHER {
            // One allocation of the whole buffer, not a doubling past it.
            self.pending.reserve_exact(GATHER - self.pending.len());
        }
        self.fresh = true;
        Poll::Ready(Ok(true))
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
        let fresh = std::mem::take(&mut this.fresh);
        if !this.pending.is_empty() {
            let others_under_way = this
                .requests
                .as_ref()
                .is_some_and(|requests| requests.idle_for().is_none());
            if this.pending.len() >= RECORD {
                if others_under_way && fresh {
                    // A large answer's frame: hold it for the next, and make sure the
                    // connection's task is polled again, which ends with another flush.
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
            } else if others_under_way || this.yielding.is_some() {
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
        let large = vec![7u8; GATHER + 1];
        stream.write_all(&large).await.unwrap();
        assert_eq!(
            stream.inner.writes,
            [32, GATHER + 1],
            "no copy of a write larger than the gathering buffer"
        );
        // A small write, then one that would overflow the record: the first goes out first.
        stream.write_all(&[1; 100]).await.unwrap();
        stream.write_all(&vec![2; RECORD - 50]).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes[2..], [100, RECORD - 50]);
        assert_eq!(
            stream.inner.bytes.len(),
            32 + GATHER + 1 + 100 + RECORD - 50
        );
    }

    /// What h2 does for a large answer: write one full DATA frame, flush, write the next.
    #[tokio::test]
    async fn full_data_frames_are_gathered_into_whole_records_while_the_answer_lasts() {
        let requests = InFlight::new();
        let under_way = requests.start();
        let mut stream = Coalesce::new(Recorder::default(), Some(requests.clone()));
        let frame = |i: usize| vec![i as u8; RECORD + 9];
        let mut sent = Vec::new();
        for i in 0..10 {
            stream.write_all(&frame(i)).await.unwrap();
            stream.flush().await.unwrap();
            sent.extend_from_slice(&frame(i));
        }
        let writes = stream.inner.writes.clone();
        assert!(
            writes.len() < 4,
            "10 frames gathered into few writes: {writes:?}"
        );
        assert!(
            writes.iter().all(|w| w % RECORD == 0 && *w <= GATHER),
            "whole records only while frames keep coming: {writes:?}"
        );
        // A flush with nothing new behind it (no frame ready: the upstream paused) writes all.
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.bytes, sent, "every byte, in order");
        assert!(stream.pending.is_empty());
        // The answer ends: its last frame goes out with the first flush.
        drop(under_way);
        stream.write_all(&frame(10)).await.unwrap();
        stream.flush().await.unwrap();
        sent.extend_from_slice(&frame(10));
        assert_eq!(stream.inner.bytes, sent);
    }

    #[tokio::test]
    async fn a_large_write_with_no_request_under_way_is_written_at_the_flush() {
        let mut stream = Coalesce::new(Recorder::default(), Some(InFlight::new()));
        stream.write_all(&vec![3; RECORD + 9]).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, [RECORD + 9]);
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
