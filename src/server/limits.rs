//! Bounds on what one request or one client can make the gateway hold.
//!
//! - Registry slots: every `/v2/` request being answered holds one registry connection (one
//!   file descriptor) until its answer has been sent, and an HTTP/2 client can open 100
//!   streams per connection. [`UpstreamSlots`] caps them for all clients together
//!   (`server.max_upstream_requests`) and per client connection
//!   (`server.max_upstream_requests_per_connection`), so one connection gets its share and
//!   no more. A request over either cap waits `server.upstream_queue_timeout`, then gets a
//!   registry-style 429 (its own connection's share is used up) or 503 (the gateway's) instead
//!   of queueing without end.
//! - [`InFlight`]: which requests a connection is answering, for the header deadline the
//!   server enforces on HTTP/2 too (see `server::Connection::serve`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, BoxError};
use crate::error::{ApiError, ErrorCode};

/// One client connection's share of the registry slots, attached to each of its requests.
#[derive(Clone)]
pub struct ConnectionSlots(pub Arc<Semaphore>);

/// The registry slots of all clients together.
#[derive(Clone)]
pub struct UpstreamSlots {
    global: Arc<Semaphore>,
    total: usize,
    per_connection: usize,
    wait: Duration,
}

/// The slots one request holds until its answer has been sent (or dropped).
pub struct Held {
    _global: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
}

impl UpstreamSlots {
    pub fn new(total: usize, per_connection: usize, wait: Duration) -> UpstreamSlots {
        UpstreamSlots {
            global: Arc::new(Semaphore::new(total)),
            total,
            per_connection,
            wait,
        }
    }

    /// A new connection's share.
    pub fn connection_share(per_connection: usize) -> ConnectionSlots {
        ConnectionSlots(Arc::new(Semaphore::new(per_connection)))
    }

    /// Take a slot of the connection's share, then one of the gateway's, waiting at most
    /// `server.upstream_queue_timeout` for both together.
    pub async fn acquire(&self, connection: Option<&ConnectionSlots>) -> Result<Held, ApiError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let connection = match connection {
            None => None,
            Some(share) => {
                match tokio::time::timeout_at(deadline, share.0.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        tracing::info!(
                            limit = self.per_connection,
                            "request refused: this client connection already has server.max_upstream_requests_per_connection requests under way"
                        );
                        return Err(self.refusal(StatusCode::TOO_MANY_REQUESTS, format!(
                            "this connection already has {} requests under way (server.max_upstream_requests_per_connection); retry when one has finished",
                            self.per_connection
                        )));
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, self.global.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Held {
                _global: permit,
                _connection: connection,
            }),
            _ => {
                tracing::warn!(
                    limit = self.total,
                    "request refused: server.max_upstream_requests requests to the registry are under way"
                );
                Err(self.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the gateway is busy: {} requests to the registry are under way (server.max_upstream_requests); retry shortly",
                        self.total
                    ),
                ))
            }
        }
    }

    fn refusal(&self, status: StatusCode, message: String) -> ApiError {
        ApiError::new(status, ErrorCode::TooManyRequests, message)
    }

    /// Keep `held` until the answer's body has been sent or dropped.
    pub fn hold(response: Response<Body>, held: Held) -> Response<Body> {
        response.map(|body| {
            Body::new(Holding {
                inner: body,
                _held: held,
            })
        })
    }
}

/// A body that keeps something alive as long as it is being sent.
struct Holding<T> {
    inner: Body,
    _held: T,
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The requests a connection is answering, and since when it has answered none.
#[derive(Clone)]
pub struct InFlight {
    origin: Instant,
    state: Arc<InFlightState>,
}

struct InFlightState {
    requests: AtomicUsize,
    /// Milliseconds since `origin` when the last request ended (0: the connection's opening).
    idle_since: AtomicU64,
}

/// One request under way; ends (and may start the idle clock) when dropped.
pub struct Request(InFlight);

impl InFlight {
    pub fn new() -> InFlight {
        InFlight {
            origin: Instant::now(),
            state: Arc::new(InFlightState {
                requests: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
            }),
        }
    }

    /// A request head has been received.
    pub fn start(&self) -> Request {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        Request(self.clone())
    }

    /// `None` while a request is under way; otherwise how long since the last one ended (or
    /// the connection opened).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.state.requests.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.state.idle_since.load(Ordering::Relaxed));
        Some(self.origin.elapsed().saturating_sub(since))
    }

    /// When the last request ended (or the connection opened).
    pub fn idle_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.state.idle_since.load(Ordering::Relaxed))
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let state = &self.0.state;
        let now = u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.idle_since.store(now, Ordering::Relaxed);
        state.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its [`Request`] when it has been sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _request: Request,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, request: Request) -> Tracked<B> {
        Tracked {
            inner,
            _request: request,
        }
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
