//! The one body type every response of the gateway carries.
//!
//! Proxied bodies are hyper's streaming `Incoming`, handed on frame by frame; the gateway's own
//! answers (tokens, errors) are small and complete. Both are boxed into [`Body`] so a single
//! service type serves every route.

use std::future::Future as _;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Error type of streamed bodies (hyper's, or the gateway's own).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or request body: streamed or complete, always `Send + Sync`.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete body from bytes the gateway produced itself.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Box a streaming body, adding the length of every data frame to `counter` as it passes
/// (the upstream byte metrics): no copy, no buffering.
pub fn counted<B>(body: B, counter: prometheus_client::metrics::counter::Counter) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.inc_by(data.len() as u64);
        }
        frame
    })
    .map_err(Into::into)
    .boxed()
}

/// Box a streaming body (for example hyper's `Incoming`) without reading it.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Why a client's request body was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientBodyError {
    /// It arrived slower than `server.min_body_rate`.
    #[error("the request body arrived at {rate} bytes/s over {window:?}, below server.min_body_rate ({min} bytes/s)")]
    TooSlow {
        rate: u64,
        min: u64,
        window: std::time::Duration,
    },
    /// It could not be read: malformed chunked encoding, a reset stream, a closed connection.
    #[error("the request body could not be read (malformed, or the client stopped sending)")]
    Broken,
}

/// The slowest a request body may arrive: `min` bytes/s, averaged over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    pub min: u64,
    pub window: std::time::Duration,
}

/// A request body that fails with [`ClientBodyError::TooSlow`] when, over a window of time
/// spent waiting for the client, fewer than `min * window` bytes came. Only waiting counts:
/// while the registry is slow to take what came (backpressure, nobody polls), the clock
/// stands still, so a slow registry never makes a fast client look slow.
pub struct Paced<B> {
    inner: B,
    pace: BodyPace,
    /// Bytes received in the current window.
    bytes: u64,
    /// Time spent waiting for the client in the current window, ended waits only.
    waited: std::time::Duration,
    /// When the wait under way started.
    waiting_since: Option<tokio::time::Instant>,
    /// Fires when the current window's waiting time is used up.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: BodyPace) -> Paced<B> {
        Paced {
            inner,
            pace,
            bytes: 0,
            waited: std::time::Duration::ZERO,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(pace.window)),
        }
    }

    /// The window is over: too few bytes is an error, else a new window starts.
    fn window_over(&mut self, now: tokio::time::Instant) -> Result<(), ClientBodyError> {
        let required = u64::try_from(
            u128::from(self.pace.min).saturating_mul(self.pace.window.as_millis()) / 1000,
        )
        .unwrap_or(u64::MAX);
        if self.bytes < required {
            let secs = self.waited.as_secs().max(1);
            return Err(ClientBodyError::TooSlow {
                rate: self.bytes / secs,
                min: self.pace.min,
                window: self.pace.window,
            });
        }
        self.bytes = 0;
        self.waited = std::time::Duration::ZERO;
        if self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
        Ok(())
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let now = tokio::time::Instant::now();
        match polled {
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert(now);
                let left = this.pace.window.saturating_sub(this.waited);
                let fires = since + left;
                if this.timer.deadline() != fires {
                    this.timer.as_mut().reset(fires);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.waited = this.pace.window;
                    if let Err(error) = this.window_over(now) {
                        return Poll::Ready(Some(Err(Box::new(error))));
                    }
                    // A new window: arm its timer (and register the waker with it).
                    this.timer.as_mut().reset(now + this.pace.window);
                    let _ = this.timer.as_mut().poll(cx);
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += now.saturating_duration_since(since);
                }
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.waited >= this.pace.window {
                    if let Err(error) = this.window_over(now) {
                        return Poll::Ready(Some(Err(Box::new(error))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
