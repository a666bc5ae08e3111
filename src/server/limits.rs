//! Bounds on what one request or one client can make the gateway hold.
//!
//! - Registry slots: every `/v2/` request being answered holds one registry connection (one
//!   file descriptor) until its answer has been sent, and an HTTP/2 client can open 100
//!   streams per connection. [`UpstreamSlots`] caps them for all clients together
//!   (`server.max_upstream_requests`), per client connection
//!   (`server.max_upstream_requests_per_connection`) and per client address over all its
//!   connections (`server.max_upstream_requests_per_client`), so one connection, or one
//!   client opening many, gets its share and no more. A request over either cap waits `server.upstream_queue_timeout`, then gets a
//!   registry-style 429 (its own connection's share is used up) or 503 (the gateway's) instead
//!   of queueing without end.
//! - [`InFlight`]: which requests a connection is answering, for the header deadline the
//!   server enforces on HTTP/2 too (see `server::Connection::serve`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    clients: Arc<ClientShares>,
    wait: Duration,
}

/// Each client address's share. An entry is in use while a permit of it is held (permits
/// own their semaphore: the map's is then not the only reference), so entries in use are at
/// most `max_upstream_requests`; unused ones are swept when the map has doubled since the
/// last sweep, which keeps inserts O(1) amortised. Until then an unused entry is found again
/// by its client's next request: one lookup, no new semaphore (a client sending one request
/// at a time has none in use between them).
struct ClientShares {
    per_client: usize,
    map: Mutex<ClientMap>,
}

#[derive(Default)]
struct ClientMap {
    shares: HashMap<IpAddr, Arc<Semaphore>>,
    sweep_at: usize,
}

impl ClientShares {
    fn share(&self, client: IpAddr) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = map.shares.get(&client) {
            return share.clone();
        }
        if map.shares.len() >= map.sweep_at {
            map.shares.retain(|_, share| Arc::strong_count(share) > 1);
            map.sweep_at = (map.shares.len() * 2).max(1024);
        }
        let share = Arc::new(Semaphore::new(self.per_client));
        map.shares.insert(client, share.clone());
        share
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().shares.len()
    }
}

/// The slots one request holds until its answer has been sent (or dropped).
pub struct Held {
    _global: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
    _client: Option<OwnedSemaphorePermit>,
}

impl UpstreamSlots {
    pub fn new(
        total: usize,
        per_connection: usize,
        per_client: usize,
        wait: Duration,
    ) -> UpstreamSlots {
        UpstreamSlots {
            global: Arc::new(Semaphore::new(total)),
            total,
            per_connection,
            clients: Arc::new(ClientShares {
                per_client,
                map: Mutex::default(),
            }),
            wait,
        }
    }

    /// A new connection's share.
    pub fn connection_share(per_connection: usize) -> ConnectionSlots {
        ConnectionSlots(Arc::new(Semaphore::new(per_connection)))
    }

    /// The slots [`UpstreamSlots::acquire`] takes, when each is free now (the usual case):
    /// no timer, no future. `None` when one is not (what was taken is given back).
    pub fn try_acquire(
        &self,
        connection: Option<&ConnectionSlots>,
        client: Option<IpAddr>,
    ) -> Option<Held> {
        let connection = match connection {
            None => None,
            Some(share) => Some(share.0.clone().try_acquire_owned().ok()?),
        };
        let client = match client {
            None => None,
            Some(ip) => Some(self.clients.share(ip).try_acquire_owned().ok()?),
        };
        Some(Held {
            _global: self.global.clone().try_acquire_owned().ok()?,
            _connection: connection,
            _client: client,
        })
    }

    /// Take a slot of the connection's share, then of its client address's, then one of the
    /// gateway's, waiting at most `server.upstream_queue_timeout` for all together.
    pub async fn acquire(
        &self,
        connection: Option<&ConnectionSlots>,
        client: Option<IpAddr>,
    ) -> Result<Held, ApiError> {
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
        let client = match client {
            None => None,
            Some(ip) => {
                let share = self.clients.share(ip);
                match tokio::time::timeout_at(deadline, share.acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        tracing::info!(
                            client = %ip,
                            limit = self.clients.per_client,
                            "request refused: this client address already has server.max_upstream_requests_per_client requests under way"
                        );
                        return Err(self.refusal(StatusCode::TOO_MANY_REQUESTS, format!(
                            "this client address already has {} requests under way over its connections (server.max_upstream_requests_per_client); retry when one has finished",
                            self.clients.per_client
                        )));
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, self.global.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Held {
                _global: permit,
                _connection: connection,
                _client: client,
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
        response.map(|body| Body::new(Holding::new(body, held)))
    }
}

/// A body that keeps `held` alive as long as it is being sent (or until it is dropped):
/// registry slots here, the connection's request count in `server::Connection`.
pub struct Holding<B, T> {
    inner: B,
    _held: T,
}

impl<B, T> Holding<B, T> {
    pub fn new(inner: B, held: T) -> Holding<B, T> {
        Holding { inner, _held: held }
    }
}

impl<B, T> http_body::Body for Holding<B, T>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    T: Unpin,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_address_gets_its_share_over_all_its_connections_and_others_still_get_theirs(
    ) {
        let slots = UpstreamSlots::new(8, 2, 4, Duration::from_millis(50));
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut held = Vec::new();
        // Four connections of one address: two slots each would be eight; the address gets four.
        for _ in 0..4 {
            let connection = UpstreamSlots::connection_share(2);
            for _ in 0..2 {
                match slots.acquire(Some(&connection), Some(attacker)).await {
                    Ok(h) => held.push(h),
                    Err(refusal) => assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS),
                }
            }
        }
        assert_eq!(held.len(), 4, "the address holds its share and no more");
        let connection = UpstreamSlots::connection_share(2);
        let legitimate = slots.acquire(Some(&connection), Some(other)).await;
        assert!(legitimate.is_ok(), "another client still gets a slot");
        drop(held);
        assert!(slots
            .acquire(Some(&UpstreamSlots::connection_share(2)), Some(attacker))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn try_acquire_takes_free_slots_and_gives_back_what_it_took_when_one_is_not() {
        let slots = UpstreamSlots::new(2, 1, 2, Duration::from_millis(50));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let connection = UpstreamSlots::connection_share(1);
        let held = slots.try_acquire(Some(&connection), Some(client)).unwrap();
        // The connection's one slot is taken: nothing else is kept.
        assert!(slots.try_acquire(Some(&connection), Some(client)).is_none());
        let other = UpstreamSlots::connection_share(1);
        let second = slots.try_acquire(Some(&other), Some(client)).unwrap();
        // The gateway's two are taken: the client's and the third connection's come back.
        let third = UpstreamSlots::connection_share(1);
        assert!(slots.try_acquire(Some(&third), None).is_none());
        assert_eq!(third.0.available_permits(), 1);
        drop((held, second));
        assert!(slots.try_acquire(Some(&third), Some(client)).is_some());
    }

    #[tokio::test]
    async fn the_map_of_client_shares_stays_bounded() {
        let slots = UpstreamSlots::new(8, 2, 4, Duration::from_millis(50));
        for i in 0..100_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            drop(slots.acquire(None, Some(ip)).await.unwrap());
        }
        assert!(slots.clients.len() <= 2048, "{}", slots.clients.len());
    }
}
