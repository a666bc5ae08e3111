//! Idle HTTP/1 connections without hyper's buffers: "parking".
//!
//! hyper's HTTP/1 server keeps a read buffer (8 KiB, 16 KiB once a request has been parsed
//! from it) and a write buffer (8 KiB) for the whole life of a connection, and keeps them
//! while the connection waits for its next request. Measured with heaptrack on 1,000 idle
//! TLS connections, those buffers were 24 of the 43 KiB a connection held. So when an
//! HTTP/1 connection is quiet (hyper waits for bytes, everything is flushed, no request is
//! under way), `Connection::serve` takes hyper's connection apart (`into_parts`: the stream,
//! bytes read but not parsed, the service), drops it, waits for the socket to become
//! readable, and serves the stream with a new hyper connection. Bytes hyper had read ahead
//! go first to the new one ([`Rewind`]), so pipelined or half-sent requests are unchanged.
//!
//! HTTP/2 is never parked (its state lives in the h2 crate), nor an HTTP/1 connection that
//! ever carried a request body (hyper may still be reading or discarding it). Which protocol
//! a connection speaks is decided as hyper-util's auto builder does, by the first bytes
//! ([`sniff`]): the HTTP/2 preface or not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::activity::Activity;

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream that can tell when it has bytes to read without reading them.
pub trait Readiness {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Readiness for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl<S: Readiness> Readiness for super::cork::Cork<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

impl<S: Readiness> Readiness for TlsStream<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, session) = self.get_ref();
        // rustls holding something to hand out (it then wants no more): ready now.
        if !session.wants_read() {
            return Poll::Ready(Ok(()));
        }
        tcp.poll_read_ready(cx)
    }
}

impl<S: Readiness> Readiness for Activity<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

/// Only HTTP/1 connections are parked, and for them `Coalesce` passes every write through.
impl<S: Readiness> Readiness for super::coalesce::Coalesce<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

impl<S: Readiness + ?Sized> Readiness for Box<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
}

/// Only the stream counts: bytes put back are an incomplete head, which needs more to be
/// parsed (a parser made for them at once would find the same and wait again, in a loop).
impl<S: Readiness> Readiness for Rewind<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

/// Wait until `io` has bytes (or an error, or the end) to read.
pub async fn readable<S: Readiness>(io: &S) -> io::Result<()> {
    std::future::poll_fn(|cx| io.poll_read_ready(cx)).await
}

/// A stream that first gives back bytes already read from it.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S, prefix: Bytes) -> Rewind<S> {
        Rewind { prefix, inner }
    }

    /// Put `read` (bytes read from this stream before those still in the prefix) back in
    /// front. Copied: `read` is a view of hyper's whole read buffer, which would stay held.
    pub fn unread(&mut self, read: Bytes) {
        if read.is_empty() {
            return;
        }
        let mut joined = BytesMut::with_capacity(read.len() + self.prefix.len());
        joined.extend_from_slice(&read);
        joined.extend_from_slice(&self.prefix);
        self.prefix = joined.freeze();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Release the buffer the prefix came from.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    flush_through!();
}

/// What the first bytes of a connection said.
pub enum Sniffed<S> {
    /// The HTTP/2 preface: serve with the auto builder (it reads the bytes again).
    Http2(Rewind<S>),
    /// Anything else: HTTP/1.
    Http1(Rewind<S>),
    /// The client closed before sending anything.
    Closed,
}

/// A future that can be told to stop: it then ends with `None` (what closing a connection
/// still reading its first bytes does, as the auto builder's).
pub struct Cancellable<F> {
    inner: Pin<Box<F>>,
    cancelled: bool,
}

impl<F> Cancellable<F> {
    pub fn new(inner: Pin<Box<F>>) -> Cancellable<F> {
        Cancellable {
            inner,
            cancelled: false,
        }
    }

    pub fn cancel(&mut self) {
        self.cancelled = true;
    }
}

impl<F: Future> Future for Cancellable<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.cancelled {
            return Poll::Ready(None);
        }
        self.inner.as_mut().poll(cx).map(Some)
    }
}

/// Read until the bytes are, or cannot be, the HTTP/2 preface (as hyper-util's auto builder
/// does before choosing a protocol).
pub async fn sniff<S: AsyncRead + Unpin>(mut io: S) -> io::Result<Sniffed<S>> {
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < seen.len() {
        let n = io.read(&mut seen[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(Sniffed::Closed);
            }
            break;
        }
        filled += n;
        if seen[..filled] != H2_PREFACE[..filled] {
            break;
        }
    }
    let prefix = Bytes::copy_from_slice(&seen[..filled]);
    if filled == H2_PREFACE.len() && seen == *H2_PREFACE {
        Ok(Sniffed::Http2(Rewind::new(io, prefix)))
    } else {
        Ok(Sniffed::Http1(Rewind::new(io, prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(chunks: &[&[u8]]) -> (&'static str, Vec<u8>) {
        let mut builder = tokio_test_stream(chunks);
        let kind;
        let mut rest = Vec::new();
        match sniff(&mut builder).await.unwrap() {
            Sniffed::Http2(mut io) => {
                kind = "h2";
                io.read_to_end(&mut rest).await.unwrap();
            }
            Sniffed::Http1(mut io) => {
                kind = "h1";
                io.read_to_end(&mut rest).await.unwrap();
            }
            Sniffed::Closed => kind = "closed",
        }
        (kind, rest)
    }

    /// A reader giving these chunks, one a read.
    fn tokio_test_stream(chunks: &[&[u8]]) -> impl AsyncRead + Unpin {
        let mut builder = tokio::io::duplex(1 << 16);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in chunks {
                builder.1.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        builder.0
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_and_every_byte_is_read_again() {
        let (kind, rest) = sniffed(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\nframes"]).await;
        assert_eq!(kind, "h2");
        assert_eq!(rest, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes");
    }

    #[tokio::test]
    async fn a_request_line_is_http1_and_nothing_is_lost() {
        let (kind, rest) = sniffed(&[b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert_eq!(kind, "h1");
        assert_eq!(rest, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let (kind, rest) = sniffed(&[b"P", b"OST / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(kind, "h1");
        assert_eq!(rest, b"POST / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_client_closing_at_once_or_mid_preface() {
        assert_eq!(sniffed(&[]).await.0, "closed");
        let (kind, rest) = sniffed(&[b"PRI * "]).await;
        assert_eq!(kind, "h1");
        assert_eq!(rest, b"PRI * ");
    }

    #[tokio::test]
    async fn bytes_put_back_come_before_the_prefix_still_unread() {
        let mut io = Rewind::new(
            tokio_test_stream(&[b"tail"]),
            Bytes::from_static(b"middle "),
        );
        io.unread(Bytes::from_static(b"head "));
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"head middle tail");
    }
}
