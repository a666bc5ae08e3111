//! The parts of a stream wrapper that only hand on to its `inner` stream, written once for the
//! wrappers of a connection's stream (`cork`, `coalesce`, `park`), each of which changes only
//! some of its reads or writes.

/// `AsyncRead` for `$wrapper<S>` (a struct with an `inner: S` field): reads go straight through.
macro_rules! read_through {
    ($wrapper:ident) => {
        impl<S: ::tokio::io::AsyncRead + Unpin> ::tokio::io::AsyncRead for $wrapper<S> {
            fn poll_read(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
            }
        }
    };
}

/// Inside an `AsyncWrite` impl for a wrapper with an `inner` stream: whether writes may be
/// vectored, flush and shutdown are the inner stream's.
macro_rules! flush_through {
    () => {
        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    };
}
