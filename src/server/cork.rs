//! Holding a large HTTP/2 answer's TLS records below rustls, so that several go to the socket
//! in one write without being copied to be held.
//!
//! rustls encrypts what it is given at once, and tokio-rustls hands the records to the socket
//! in the same call: one `writev` for every write above it. h2 writes a large answer one DATA
//! frame at a time, so gathering frames into fewer system calls used to mean copying them
//! into a buffer above TLS first (`Coalesce`), which rustls then copied again into its records.
//! [`Cork`] sits between rustls and the TCP stream instead. While its hold is on (`Coalesce`
//! turns it on for a large answer's frames while requests are under way, and off before every
//! real flush and shutdown), a write of less than [`HOLD_MAX`] bytes of records is answered
//! "would block": rustls keeps the records it has just made (the ciphertext it buffers in any
//! case) and tokio-rustls reports the plaintext as written; the next write offers them again
//! with the new ones, and one of [`HOLD_MAX`] or more goes out whole.
//!
//! Bounds: rustls holds at most [`BUFFER_LIMIT`] bytes of records on a corked connection (the
//! limit the server gives an HTTP/2 connection's rustls), so a refusal never leaves rustls with
//! no room for the next write; every refusal also wakes the task, and at most [`MAX_REFUSALS`]
//! follow one another, so even a writer that made only tiny records could neither stall nor
//! spin.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Records of less than this many bytes are held while the hold is on: four full records
/// (16 KiB of plaintext and 22 bytes of TLS 1.3 each) are just more, so they go out together.
pub const HOLD_MAX: usize = 64 * 1024;

/// rustls's limit of buffered records (its default is 64 KiB) on a connection whose records
/// are held: what is held (less than [`HOLD_MAX`]) and the next whole write (a frame of at
/// most one record, or a few) fit, so rustls never cuts a record short for want of room.
pub const BUFFER_LIMIT: usize = 2 * HOLD_MAX;

/// Refusals in a row before a write goes through whatever its size.
pub const MAX_REFUSALS: u8 = 16;

/// A stream whose writes can be held below it: the TLS stream over a [`Cork`].
pub trait Hold {
    fn set_hold(&mut self, hold: bool);
}

impl<S> Hold for tokio_rustls::server::TlsStream<Cork<S>> {
    fn set_hold(&mut self, hold: bool) {
        self.get_mut().0.set_hold(hold);
    }
}

/// A stream under rustls that can hold back small writes of records (module documentation).
pub struct Cork<S> {
    inner: S,
    hold: bool,
    refusals: u8,
}

impl<S> Cork<S> {
    pub fn new(inner: S) -> Cork<S> {
        Cork {
            inner,
            hold: false,
            refusals: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Hold small writes (`true`) or write everything as it comes (`false`, the start).
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Whether a write of `len` bytes is held back: it then wakes the task, so that a writer
    /// that has to wait for it (rustls with no room) is polled again.
    fn refuse(&mut self, cx: &mut Context<'_>, len: usize) -> bool {
        if self.hold && len < HOLD_MAX && self.refusals < MAX_REFUSALS {
            self.refusals += 1;
            cx.waker().wake_by_ref();
            return true;
        }
        self.refusals = 0;
        false
    }
}

read_through!(Cork);

impl<S: AsyncWrite + Unpin> AsyncWrite for Cork<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refuse(cx, buf.len()) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.refuse(cx, len) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    flush_through!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes every write whole and records its size.
    #[derive(Default)]
    struct Socket(Vec<usize>);

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(cork: &mut Cork<Socket>, len: usize) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(cork).poll_write(&mut cx, &vec![0; len])
    }

    #[test]
    fn small_writes_are_held_while_the_hold_is_on_and_large_ones_go_through() {
        let mut cork = Cork::new(Socket::default());
        assert!(write(&mut cork, 100).is_ready(), "no hold at the start");
        cork.set_hold(true);
        assert!(write(&mut cork, HOLD_MAX - 1).is_pending());
        assert!(write(&mut cork, HOLD_MAX).is_ready());
        cork.set_hold(false);
        assert!(write(&mut cork, 10).is_ready());
        assert_eq!(cork.inner.0, [100, HOLD_MAX, 10]);
    }

    #[test]
    fn a_run_of_refusals_is_bounded() {
        let mut cork = Cork::new(Socket::default());
        cork.set_hold(true);
        for _ in 0..MAX_REFUSALS {
            assert!(write(&mut cork, 1).is_pending());
        }
        assert!(
            write(&mut cork, 1).is_ready(),
            "the write after {MAX_REFUSALS} refusals goes through"
        );
        assert!(
            write(&mut cork, 1).is_pending(),
            "and the count starts again"
        );
    }
}
