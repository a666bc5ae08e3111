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
//! of payload) on its own, so a 1 GiB GET was 66,841 `writev`s. A write of at least [`LARGE`]
//! bytes goes straight to the TLS stream (what is gathered goes first), which encrypts it at
//! once; while a request of the connection is under way, its records are held below rustls
//! ([`super::cork`]) rather than copied here, and a flush that has new bytes behind it is
//! answered at once without writing them: h2 goes on to write the next frame, whose records
//! join the held ones, and once they reach [`super::cork::HOLD_MAX`] bytes they go to the
//! socket in one write.
//! The bytes are never left behind: the held flush wakes the connection's task, whose next
//! poll ends with another flush, and a flush with nothing new since the one before it (no more
//! frames ready: the upstream paused, or the body ended) releases the hold and writes
//! everything.
//!
//! A frame of 16,384 bytes of payload is 9 bytes more than a TLS record holds, so rustls
//! would make two records of it (16,384 + 9): twice the records, AES-GCM setups and tags. The
//! answers of an HTTP/2 connection over TLS are therefore cut into pieces of [`FRAME_DATA`]
//! bytes ([`RecordSized`], no copy: `Bytes` are shared), so that a frame and its header are
//! one record.
//!
//! HTTP/1 answers over TLS are cut the same way, for another reason: rustls copies each
//! record's plaintext into a buffer of its own, 5 bytes (the record header) past where that
//! buffer starts, and glibc's `memcpy` (`rep movsb`) copies 16 KiB at 3 GB/s instead of 60-100
//! when the destination is 1 to 15 bytes past the source modulo 4 KiB (measured on an AMD
//! EPYC host; BENCHMARKS.md, the sixth run). hyper hands a large body on in 64 KiB steps, so
//! every record came from the same offset modulo 4 KiB, and if that offset was a slow one,
//! every copy was slow: the copy was 36% of the gateway's CPU on a blob GET over HTTP/1.1 and
//! TLS. Pieces of 16,375 bytes move the offset 9 bytes a record, so about 2 records in 455
//! land in the slow window (`bench/memcpy_offsets.c` measures a machine's).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::cork::Hold;
use super::limits::InFlight;

/// The most plaintext one TLS record carries: small writes are gathered up to this.
pub const RECORD: usize = 16 * 1024;

/// Writes of this size or more (a DATA frame of a large answer) are not gathered.
pub const LARGE: usize = RECORD / 2;

/// The data of one HTTP/2 DATA frame that fills a TLS record with its 9-byte header.
pub const FRAME_DATA: usize = RECORD - 9;

/// A stream whose small writes are gathered until a flush (see the module documentation).
pub struct Coalesce<S> {
    inner: S,
    /// Bytes accepted from the writer and not yet handed to `inner`.
    pending: Vec<u8>,
    /// `None`: pass every write straight through (HTTP/1, where one answer is one write).
    requests: Option<InFlight>,
    /// The yield of the flush under way, once started.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    /// Bytes were accepted since the last flush: one that has none writes everything.
    fresh: bool,
    /// A large write went to `inner` with its hold on since the last real flush.
    held: bool,
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
            held: false,
        }
    }

    /// A request of the connection is being answered: more frames are coming.
    fn under_way(&self) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.idle_for().is_none())
    }
}

impl<S: AsyncWrite + Hold + Unpin> Coalesce<S> {
    /// Hand everything pending to `inner`, its records held below it when `hold`.
    fn poll_drain(&mut self, cx: &mut Context<'_>, hold: bool) -> Poll<io::Result<()>> {
        self.inner.set_hold(hold);
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

    /// Gather a small write, or hand a large one (after what is gathered) to `inner`.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.requests.is_none() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len < LARGE {
            if self.pending.len() + len > RECORD {
                ready!(self.poll_drain(cx, self.under_way()))?;
            }
            for b in bufs {
                self.pending.extend_from_slice(b);
            }
            self.fresh = true;
            return Poll::Ready(Ok(len));
        }
        let hold = self.under_way();
        ready!(self.poll_drain(cx, hold))?;
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.held |= hold;
        self.fresh = true;
        Poll::Ready(Ok(n))
    }
}

read_through!(Coalesce);

impl<S: AsyncWrite + Hold + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.requests.is_none() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        let fresh = std::mem::take(&mut this.fresh);
        let under_way = this.under_way();
        if this.held {
            if under_way && fresh {
                // A large answer's frame: hold it for the next, and make sure the
                // connection's task is polled again, which ends with another flush.
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
        } else if !this.pending.is_empty() && (under_way || this.yielding.is_some()) {
            // Once per flush: let the connection's other streams queue their frames.
            let yielding = this
                .yielding
                .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(yielding.as_mut().poll(cx));
            this.yielding = None;
        }
        ready!(this.poll_drain(cx, false))?;
        this.held = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.requests.is_some() {
            ready!(self.poll_drain(cx, false))?;
        }
        self.held = false;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An answer's data cut into pieces of at most [`FRAME_DATA`] bytes, for the answers of a TLS
/// connection, HTTP/2 or HTTP/1 (module documentation). Plaintext answers do not pass through
/// it at all.
pub struct RecordSized<B> {
    inner: B,
    /// The rest of the last data frame, not yet handed on.
    rest: Bytes,
}

impl<B> RecordSized<B> {
    pub fn new(inner: B) -> RecordSized<B> {
        RecordSized {
            inner,
            rest: Bytes::new(),
        }
    }

    fn piece(&mut self) -> Bytes {
        let n = self.rest.len().min(FRAME_DATA);
        self.rest.split_to(n)
    }
}

impl<B> http_body::Body for RecordSized<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.piece()))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_data() {
                Ok(data) if data.len() > FRAME_DATA => {
                    this.rest = data;
                    Frame::data(this.piece())
                }
                Ok(data) => Frame::data(data),
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    /// A TLS stream that records each write it is handed and the hold it was under.
    #[derive(Default)]
    struct Recorder {
        hold: bool,
        /// (bytes, held below) of each write.
        writes: Vec<(usize, bool)>,
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl Recorder {
        fn sizes(&self) -> Vec<usize> {
            self.writes.iter().map(|w| w.0).collect()
        }
    }

    impl Hold for Recorder {
        fn set_hold(&mut self, hold: bool) {
            self.hold = hold;
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let hold = self.hold;
            self.writes.push((buf.len(), hold));
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            assert!(!self.hold, "a flush under the hold would never write");
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            assert!(!self.hold);
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
        assert_eq!(stream.inner.writes, [(32, false)]);
        // A small write, then a large one: the first goes out first, the large one uncopied,
        // both held below TLS while the request is under way.
        stream.write_all(&[1; 100]).await.unwrap();
        stream.write_all(&vec![2; RECORD]).await.unwrap();
        assert_eq!(stream.inner.writes[1..], [(100, true), (RECORD, true)]);
        // Small writes that would overflow a record: what is gathered goes first.
        stream.write_all(&vec![3; LARGE - 1]).await.unwrap();
        stream.write_all(&vec![4; LARGE - 1]).await.unwrap();
        stream.write_all(&vec![5; LARGE - 1]).await.unwrap();
        assert_eq!(stream.inner.sizes()[3..], [2 * (LARGE - 1)]);
        stream.flush().await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.sizes()[3..], [2 * (LARGE - 1), LARGE - 1]);
        assert_eq!(
            stream.inner.bytes.len(),
            32 + 100 + RECORD + 3 * (LARGE - 1)
        );
    }

    /// What h2 does for a large answer: write one full DATA frame, flush, write the next.
    #[tokio::test]
    async fn a_large_answers_frames_are_held_below_tls_until_a_flush_with_nothing_new() {
        let requests = InFlight::new();
        let under_way = requests.start();
        let mut stream = Coalesce::new(Recorder::default(), Some(requests.clone()));
        let frame = |i: usize| vec![i as u8; RECORD];
        let mut sent = Vec::new();
        for i in 0..10 {
            stream.write_all(&frame(i)).await.unwrap();
            stream.flush().await.unwrap();
            sent.extend_from_slice(&frame(i));
        }
        assert_eq!(stream.inner.writes, [(RECORD, true); 10], "no copy, held");
        assert_eq!(stream.inner.flushes, 0, "no flush while the frames come");
        // A flush with nothing new behind it (no frame ready: the upstream paused) writes all.
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.flushes, 1);
        assert!(!stream.inner.hold, "the hold is off for the flush");
        assert_eq!(stream.inner.bytes, sent, "every byte, in order");
        // The answer ends: its last frame is written and flushed at the first flush.
        drop(under_way);
        stream.write_all(&frame(10)).await.unwrap();
        stream.flush().await.unwrap();
        sent.extend_from_slice(&frame(10));
        assert_eq!(stream.inner.writes[10], (RECORD, false));
        assert_eq!(stream.inner.flushes, 2);
        assert_eq!(stream.inner.bytes, sent);
    }

    #[tokio::test]
    async fn a_large_write_with_no_request_under_way_is_not_held() {
        let mut stream = Coalesce::new(Recorder::default(), Some(InFlight::new()));
        stream.write_all(&vec![3; RECORD + 9]).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, [(RECORD + 9, false)]);
        assert_eq!(stream.inner.flushes, 1);
    }

    #[tokio::test]
    async fn without_http2_every_write_goes_straight_through() {
        let mut stream = Coalesce::new(Recorder::default(), None);
        stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert_eq!(stream.inner.writes, [(19, false)]);
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_pending_without_the_hold() {
        let requests = InFlight::new();
        let _under_way = requests.start();
        let mut stream = Coalesce::new(Recorder::default(), Some(requests.clone()));
        stream.write_all(&vec![1; RECORD]).await.unwrap();
        stream.write_all(b"goaway").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(stream.inner.writes, [(RECORD, true), (6, false)]);
    }

    /// A body of the given data frames.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|d| Ok(Frame::data(d))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// The sizes of the frames `data` is handed on in, checking that every byte is.
    async fn pieces(data: Vec<Bytes>) -> Vec<usize> {
        let all: Vec<u8> = data.iter().flat_map(|d| d.to_vec()).collect();
        let mut body = RecordSized::new(Chunks(data.into()));
        let (mut sizes, mut got) = (Vec::new(), Vec::new());
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            sizes.push(data.len());
            got.extend_from_slice(&data);
        }
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(got, all);
        sizes
    }

    #[tokio::test]
    async fn an_answer_is_cut_into_frames_that_fill_a_record_each() {
        let big = Bytes::from(
            (0..3 * FRAME_DATA + 100)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            pieces(vec![big.clone(), Bytes::from_static(b"tail")]).await,
            [FRAME_DATA, FRAME_DATA, FRAME_DATA, 100, 4]
        );
        assert_eq!(
            pieces(vec![Bytes::from_static(b"small"), Bytes::new()]).await,
            [5, 0],
            "smaller frames pass unchanged"
        );
        assert_eq!(
            FRAME_DATA + 9,
            RECORD,
            "a frame and its header fill a record"
        );
    }
}
