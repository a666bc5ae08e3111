//! Listening: accept TCP connections, terminate TLS when configured, and serve HTTP/1.1 and
//! HTTP/2 on the same port (hyper-util's auto builder decides per connection).
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! run the real server. It accepts on the caller's runtime and serves each connection on one of
//! `server.workers` threads (`workers`). What it protects against and how it ends:
//! - at most `server.max_connections` connections: beyond that, new ones wait in the kernel's
//!   accept queue instead of being taken and starved;
//! - a connection with nothing moving for `server.idle_timeout` is closed politely (an HTTP/1
//!   request under way finishes first; HTTP/2 gets a GOAWAY), and cut a second later when
//!   nothing waits for the registry (answers a client never takes cannot be flushed);
//! - on shutdown it stops accepting, asks every connection to close after its requests
//!   (keep-alive off, GOAWAY), and waits up to `server.shutdown_grace` for them.

#[macro_use]
mod forward;

mod activity;
pub mod client_addr;
mod coalesce;
mod cork;
pub mod limits;
pub mod ops;
mod park;
pub mod proxy_protocol;
mod sensitive;
pub mod tls;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

use self::activity::{Activity, LastActivity};
use self::coalesce::{Coalesce, RecordSized};
use self::limits::{ConnectionSlots, Holding, InFlight, UpstreamSlots};
use self::park::{Readiness, Sniffed};
use self::sensitive::MarkSensitiveLayer;
use self::workers::Workers;
use crate::body::{Body, BoxError};
use crate::config::ServerSettings;
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::metrics::metrics;

/// What [`serve`] can run: a cloneable service (one clone per connection) that answers every
/// request, errors included, with a response, and whose futures may move between threads.
pub trait HttpService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The response body: anything streaming bytes.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    type Body = B;
}

/// The layers every request passes before the gateway sees it: credentials marked sensitive,
/// and a panic turned into a registry-style 500 (the connection and the process keep
/// serving; hyper would otherwise drop the connection with no answer).
pub fn stack<S>(service: S) -> impl HttpService
where
    S: Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    tower::ServiceBuilder::new()
        .layer(MarkSensitiveLayer)
        .layer(CatchPanicLayer::custom(panic_answer))
        .service(service)
}

/// The answer to a request whose handler panicked. The panic's message is logged, never sent.
fn panic_answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = ?message, "a request handler panicked; answered 500, still serving");
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unknown,
        "the gateway failed to answer this request (an internal error, logged)",
    )
    .into_response()
}

/// The client's address: the TCP peer, or whom the PROXY protocol header or a trusted
/// proxy's `X-Forwarded-For` named (see [`client_addr`]). [`serve`] attaches it to every
/// request inside [`Arrival`]; an embedder serving the gateway itself attaches this instead.
/// Everything that keys on the client reads [`ClientAddr::of`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The client's address of a request: [`Arrival`]'s, or an embedder's [`ClientAddr`].
    pub fn of(extensions: &http::Extensions) -> Option<SocketAddr> {
        match extensions.get::<Arrival>() {
            Some(arrival) => Some(arrival.client),
            None => extensions.get::<ClientAddr>().map(|c| c.0),
        }
    }
}

/// What [`serve`] attaches to every request, as one extension: one allocation, where an
/// extension each for the client, the peer and the registry share cost three and a bigger
/// map (about 1% of a small request's instructions, `bench/callgrind.sh`).
#[derive(Clone)]
pub struct Arrival {
    /// The client's address (see [`ClientAddr`]).
    pub client: SocketAddr,
    /// The TCP peer of the connection (the balancer, behind one), for the access log.
    pub peer: SocketAddr,
    /// The connection's share of the registry slots (`server.max_upstream_requests_per_connection`).
    pub share: ConnectionSlots,
}

/// How a [`serve`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection closed within the grace period.
    All,
    /// These many connections were still open when the grace period ran out.
    Abandoned(usize),
}

/// HTTP/2 streams one client connection may have open at once (the registry slots it may
/// hold are fewer: `server.max_upstream_requests_per_connection`).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

// Header lines an HTTP/1 request may carry: hyper's default of 100 (its total size is bounded
// by `server.max_header_bytes`); beyond them hyper answers a body-less 431. Deliberately not
// set with `max_headers`: any explicit cap, even 100, makes hyper build its two arrays of
// header slots at run time for every request (on the heap above 100: a malloc, a free and a
// loop over every slot, twice), while its default is a stack array it never touches before
// parsing. 128 cost 2,000 instructions a small request more than the default (3%:
// `bench/callgrind.sh`, BENCHMARKS.md). No container client sends more than about 20 lines.

/// After a connection has been asked to close for not sending a request head in time, how
/// long it may take to go before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long an HTTP/1 connection waits for its next request with hyper's buffers before it
/// is parked without them (see `park`). Not at once: making hyper's connection again costs
/// about 8% more instructions on a small request (callgrind), which a client sending its
/// requests back to back would pay on each; a connection quiet this long is idle.
const PARK_AFTER: Duration = Duration::from_millis(500);

/// At most one "max_connections reached" warning per this interval.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Accept connections until `shutdown` resolves, serving each on one of `server.workers`
/// threads (see `workers`), then drain them (see the module documentation). Fails only when
/// the worker threads cannot be started.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ServerSettings,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Drained>
where
    S: Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    let service = stack(service);
    let workers = Workers::start(settings.workers)?;
    tracing::debug!(workers = workers.len(), "worker threads started");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None::<Duration>) // see `http1_builder`
        // Header lines: hyper's default (100, see above); the router's own check of the
        // head's size (registry JSON) is the bound that matters.
        // The router answers heads over the limit with a registry-style 431; hyper's own
        // (body-less) 431 only bounds memory, at twice the limit.
        .max_buf_size(settings.max_header_bytes.saturating_mul(2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // Deliberate, not the h2 crate's default: each stream may hold a registry slot.
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(
            u32::try_from(settings.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    let builders = Arc::new(Builders {
        http1: http1_builder(&settings),
        auto: builder,
    });
    let settings = Arc::new(settings);

    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut last_limit_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        // Take a slot first: at the limit, connections wait in the kernel's accept queue.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_limit_warning.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL) {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        "server.max_connections connections are open: new ones wait until one closes"
                    );
                    last_limit_warning = Some(Instant::now());
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Taken off this thread's reactor; the worker registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(client = %peer, "cannot hand the connection to a worker: {error}");
                continue;
            }
        };
        let connection = Connection {
            builders: builders.clone(),
            tls: tls.clone(),
            peer,
            settings: settings.clone(),
            closing: closing_rx.clone(),
        };
        let service = service.clone();
        workers.dispatch(move || async move {
            let _permit = permit;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(client = %peer, "cannot serve the connection: {error}");
                    return;
                }
            };
            metrics().connection_opened();
            connection.run(stream, service).await;
            metrics().connection_closed();
        });
    }
    drop(listener);
    let drained = drain(&slots, &closing, &settings).await;
    workers.join();
    Ok(drained)
}

/// Ask every connection to close, and wait for them up to the grace period.
async fn drain(
    slots: &Arc<Semaphore>,
    closing: &watch::Sender<bool>,
    settings: &ServerSettings,
) -> Drained {
    let total = settings.max_connections;
    let open = total - slots.available_permits();
    tracing::info!(
        open_connections = open,
        grace_s = settings.shutdown_grace.as_secs(),
        "shutting down: no new connections; waiting for requests under way to finish"
    );
    let _ = closing.send(true);
    let all_closed = slots.acquire_many(u32::try_from(total).unwrap_or(u32::MAX));
    match tokio::time::timeout(settings.shutdown_grace, all_closed).await {
        Ok(_) => Drained::All,
        Err(_) => Drained::Abandoned(total - slots.available_permits()),
    }
}

/// The HTTP/1 server for connections that do not start with the HTTP/2 preface, configured
/// as `serve` configures the auto builder's HTTP/1 side (which then serves none: see `park`).
fn http1_builder(settings: &ServerSettings) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // The header deadline is `drive`'s and `park`'s, not hyper's: hyper arms a timer (a
        // boxed sleep, registered and removed) for every request head, 3.3% of a small
        // request's instructions (callgrind), where `drive` checks the deadline on its tick.
        .header_read_timeout(None::<Duration>)
        .max_buf_size(settings.max_header_bytes.saturating_mul(2).max(8192));
    http1
}

/// The HTTP servers, built once and shared by every connection.
struct Builders {
    /// For connections that start with the HTTP/2 preface.
    auto: auto::Builder<TokioExecutor>,
    /// For the others (see `park`: an HTTP/1 connection is taken apart while idle).
    http1: http1::Builder,
}

/// One accepted connection and what serving it needs. Settings and builders are shared, not
/// copied: each of 10,000 idle connections holds this for its whole life.
struct Connection {
    builders: Arc<Builders>,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    settings: Arc<ServerSettings>,
    closing: watch::Receiver<bool>,
}

/// What every request of one connection is admitted with: the connection's facts, put in
/// each request's extensions ([`Arrival`]), and its counters.
struct Admission<S> {
    service: S,
    settings: Arc<ServerSettings>,
    /// The client, as the PROXY protocol header named it (else the peer).
    source: SocketAddr,
    peer: SocketAddr,
    share: ConnectionSlots,
    requests: InFlight,
    activity: LastActivity,
}

impl<S: HttpService> Admission<S> {
    /// The hyper service of the connection: each answer's body passes through `shape` (cut
    /// into record-sized pieces over TLS, unchanged in plaintext: no layer it does not need).
    fn service<B>(
        self,
        shape: impl Fn(S::Body) -> B + Copy + Send + 'static,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Holding<B, limits::Request>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
           + 'static
    where
        B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
    {
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            if !http_body::Body::is_end_stream(request.body()) {
                self.activity.body_seen();
            }
            let client = client_addr::resolve(
                self.source,
                request.headers(),
                &self.settings.trusted_proxies,
            );
            request.extensions_mut().insert(Arrival {
                client,
                peer: self.peer,
                share: self.share.clone(),
            });
            let under_way = self.requests.start();
            let answer = self.service.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| Holding::new(shape(body), under_way)))
            }
        })
    }
}

/// How [`Connection::drive`] stopped.
enum Driven<T> {
    /// The connection's future ended.
    Done(T),
    /// An HTTP/1 connection is quiet and may be parked (see `park`).
    Park,
    /// It was cut: asked to close (its header deadline, or idle with nothing it could still
    /// finish), it did not within [`CLOSE_GRACE`].
    Cut,
}

impl Connection {
    async fn run<S>(self, mut stream: tokio::net::TcpStream, service: S)
    where
        S: HttpService,
    {
        let peer = self.peer;
        // Before TLS and HTTP: the balancer's header naming the client, when it sends one.
        let source = if self.settings.proxy_protocol {
            let timeout = self
                .settings
                .header_read_timeout
                .min(proxy_protocol::HEADER_TIMEOUT);
            match proxy_protocol::accept(&mut stream, peer, &self.settings.trusted_proxies, timeout)
                .await
            {
                Ok(source) => source,
                // Counted and logged by `accept`; dropping the stream closes it.
                Err(_) => return,
            }
        } else {
            peer
        };
        let in_flight = InFlight::new();
        let last = LastActivity::new();
        let admission = Admission {
            service,
            settings: self.settings.clone(),
            source,
            peer,
            share: UpstreamSlots::connection_share(
                self.settings.max_upstream_requests_per_connection,
            ),
            requests: in_flight.clone(),
            activity: last.clone(),
        };
        match &self.tls {
            None => {
                self.serve(
                    Activity::new(stream, last.clone()),
                    admission.service(|body| body),
                    last,
                    in_flight,
                )
                .await
            }
            Some(acceptor) => {
                match tls::accept(acceptor, stream, self.settings.header_read_timeout).await {
                    Ok(mut stream) => {
                        // HTTP/2 (by ALPN): several streams' frames to one TLS record, a
                        // large answer's records held below rustls and written together.
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        if h2 {
                            stream
                                .get_mut()
                                .1
                                .set_buffer_limit(Some(cork::BUFFER_LIMIT));
                        }
                        let stream = Coalesce::new(stream, h2.then(|| in_flight.clone()));
                        // Boxed: the stream (rustls's state inline, about 2 KiB) moves
                        // between the states of `serve`'s future, each with room for it.
                        // Answers in pieces of FRAME_DATA over HTTP/1 too: see `coalesce`.
                        self.serve(
                            Box::new(Activity::new(stream, last.clone())),
                            admission.service(RecordSized::new),
                            last,
                            in_flight,
                        )
                        .await
                    }
                    Err(error) => {
                        tracing::debug!(client = %peer, "TLS connection refused: {error}");
                    }
                }
            }
        }
    }

    /// Serve HTTP on the connection until it ends; close it politely when it has been idle
    /// too long or the server is shutting down.
    ///
    /// The first bytes choose the protocol (the HTTP/2 preface or not, as the auto builder
    /// chooses). An HTTP/1 connection is parked while it waits for its next request: hyper's
    /// connection, with its buffers, is dropped and made again when bytes come (see `park`).
    async fn serve<IO, Svc, B>(
        mut self,
        io: IO,
        service: Svc,
        last: LastActivity,
        in_flight: InFlight,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Readiness + Unpin + Send + 'static,
        Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Send
            + 'static,
        Svc::Future: Send + 'static,
        B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    {
        let idle_timeout = self.settings.idle_timeout;
        let header_timeout = self.settings.header_read_timeout;
        let mut tick = tokio::time::interval(
            (idle_timeout.min(header_timeout) / 4).max(Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // Reading the first bytes is the start of a request head: the same deadlines apply.
        let mut sniffing = park::Cancellable::new(Box::pin(park::sniff(io)));
        let sniffed = match self
            .drive(
                Pin::new(&mut sniffing),
                |sniff| sniff.get_mut().cancel(),
                &mut tick,
                &last,
                &in_flight,
                false,
            )
            .await
        {
            Driven::Done(Some(Ok(sniffed))) => sniffed,
            Driven::Done(Some(Err(error))) => {
                tracing::debug!(client = %self.peer, "connection ended with an error: {error}");
                return;
            }
            Driven::Done(None) | Driven::Park | Driven::Cut => return,
        };
        drop(sniffing);
        let mut io = match sniffed {
            Sniffed::Closed => return,
            Sniffed::Http2(io) => {
                let builders = self.builders.clone();
                let mut connection =
                    Box::pin(builders.auto.serve_connection(TokioIo::new(io), service));
                let driven = self
                    .drive(
                        connection.as_mut(),
                        |connection| connection.graceful_shutdown(),
                        &mut tick,
                        &last,
                        &in_flight,
                        false,
                    )
                    .await;
                if let Driven::Done(Err(error)) = driven {
                    tracing::debug!(client = %self.peer, "connection ended with an error: {error}");
                }
                return;
            }
            Sniffed::Http1(io) => io,
        };
        let mut service = service;
        loop {
            let mut connection = Box::new(
                self.builders
                    .http1
                    .serve_connection(TokioIo::new(io), service),
            );
            let driven = self
                .drive(
                    Pin::new(&mut *connection),
                    |connection| connection.graceful_shutdown(),
                    &mut tick,
                    &last,
                    &in_flight,
                    true,
                )
                .await;
            match driven {
                Driven::Done(result) => {
                    if let Err(error) = result {
                        tracing::debug!(client = %self.peer, "connection ended with an error: {error}");
                    }
                    return;
                }
                Driven::Cut => return,
                Driven::Park => {}
            }
            // In a block: the box itself is freed here, not at the end of the iteration.
            let parts = {
                let connection = connection;
                connection.into_parts()
            };
            service = parts.service;
            io = parts.io.into_inner();
            // What hyper read but could not parse yet (the start of the next head) goes first.
            io.unread(parts.read_buf);
            if !self.park(&mut io, &mut tick, &last, &in_flight).await {
                return;
            }
        }
    }

    /// Run `connection` until it ends, closing it with `shut` when it has been idle too long
    /// or the server is shutting down; with `is_http1` (hyper serves it as HTTP/1: not the
    /// sniffing of the first bytes, not HTTP/2), stop as soon as it is quiet, to park it.
    ///
    /// The header deadline: a connection that completes no request head within
    /// `server.header_read_timeout` of opening, or of its last request ending, is closed
    /// (GOAWAY or no keep-alive, then cut after [`CLOSE_GRACE`]), checked on every `tick`.
    /// Any byte counts as activity for the idle timeout, so without this a head dribbled a
    /// byte a second would hold the connection forever. HTTP/1 (`is_http1`) is held to it
    /// whether or not it sends anything, as hyper's own header timeout would (off: see
    /// `http1_builder`); an HTTP/2 connection sending nothing at all is left to
    /// `idle_timeout`, since HTTP/2 clients keep quiet connections open between pulls.
    async fn drive<F: Future>(
        &mut self,
        mut connection: Pin<&mut F>,
        mut shut: impl FnMut(Pin<&mut F>),
        tick: &mut tokio::time::Interval,
        last: &LastActivity,
        in_flight: &InFlight,
        is_http1: bool,
    ) -> Driven<F::Output> {
        let idle_timeout = self.settings.idle_timeout;
        let header_timeout = self.settings.header_read_timeout;
        let mut cut_at: Option<Instant> = None;
        let mut closing_asked = *self.closing.borrow();
        if closing_asked {
            shut(connection.as_mut());
        }
        // Wakes the connection PARK_AFTER after its last request ended, to park it then.
        let park_timer = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(park_timer);
        loop {
            let may_park = is_http1 && !closing_asked;
            tokio::select! {
                polled = std::future::poll_fn(|cx| {
                    if let std::task::Poll::Ready(result) = connection.as_mut().poll(cx) {
                        return std::task::Poll::Ready(Some(result));
                    }
                    if !(may_park && last.quiet()) {
                        return std::task::Poll::Pending;
                    }
                    let Some(idle) = in_flight.idle_for() else {
                        return std::task::Poll::Pending;
                    };
                    if idle >= PARK_AFTER {
                        return std::task::Poll::Ready(None);
                    }
                    // Moved only when it would wake too late, or has woken too early: not on
                    // every request of a busy connection (a timer reset each, about 1% of a
                    // small request's instructions), but once per PARK_AFTER at most.
                    let at = tokio::time::Instant::from_std(in_flight.idle_since() + PARK_AFTER);
                    let deadline = park_timer.deadline();
                    if deadline > at || (deadline < at && park_timer.is_elapsed()) {
                        park_timer.as_mut().reset(at);
                    }
                    // Ready only once the deadline passed: poll again to check then.
                    if park_timer.as_mut().poll(cx).is_ready() {
                        cx.waker().wake_by_ref();
                    }
                    std::task::Poll::Pending
                }) => {
                    return match polled {
                        Some(result) => Driven::Done(result),
                        None => Driven::Park,
                    };
                }
                changed = self.closing.changed(), if !closing_asked => {
                    if changed.is_err() || *self.closing.borrow() {
                        closing_asked = true;
                        shut(connection.as_mut());
                    }
                }
                _ = tick.tick(), if !closing_asked || cut_at.is_some() => {
                    if let Some(at) = cut_at {
                        if Instant::now() >= at {
                            tracing::debug!(client = %self.peer, "cutting a connection that did not close within {CLOSE_GRACE:?} of being asked to");
                            return Driven::Cut;
                        }
                        continue;
                    }
                    let overdue = in_flight.idle_for().is_some_and(|idle| idle >= header_timeout);
                    let started = overdue && last.read_after(in_flight.idle_since());
                    // HTTP/1 that sent nothing since its last answer: counted from the answer's
                    // last byte leaving (as hyper's timer was), so that a slow reader of the
                    // answer still has the whole deadline for its next request.
                    let silent = overdue
                        && is_http1
                        && last.waiting_for_client()
                        && last.idle_for() >= header_timeout;
                    if started || silent {
                        if started {
                            tracing::info!(client = %self.peer, "closing a connection that sent no complete request head within {header_timeout:?} (server.header_read_timeout)");
                        } else {
                            tracing::debug!(client = %self.peer, "closing a keep-alive connection that sent no request within {header_timeout:?} (server.header_read_timeout)");
                        }
                        closing_asked = true;
                        cut_at = Some(Instant::now() + CLOSE_GRACE);
                        shut(connection.as_mut());
                    } else if last.idle_for() >= idle_timeout {
                        tracing::debug!(client = %self.peer, "closing a connection idle for {idle_timeout:?} (server.idle_timeout)");
                        closing_asked = true;
                        // Cut after the grace unless a request waits for the registry (it may
                        // finish first): a polite close waits for the answers to be flushed,
                        // and a client that keeps its window shut would never let them be.
                        if in_flight.idle_for().is_some() || last.unflushed() {
                            cut_at = Some(Instant::now() + CLOSE_GRACE);
                        }
                        shut(connection.as_mut());
                    }
                }
            }
        }
    }

    /// Hold a parked HTTP/1 connection (nothing but the stream) until the client sends bytes;
    /// `false` when it was closed instead. The deadlines are `drive`'s: a keep-alive
    /// connection whose next head has not come `server.header_read_timeout` after its last
    /// request ended is cut (as hyper's own header timeout would, which is off: see
    /// `http1_builder`); `server.idle_timeout` and shutdown close it politely.
    async fn park<S>(
        &mut self,
        io: &mut S,
        tick: &mut tokio::time::Interval,
        last: &LastActivity,
        in_flight: &InFlight,
    ) -> bool
    where
        S: Readiness + tokio::io::AsyncWrite + Unpin,
    {
        let idle_timeout = self.settings.idle_timeout;
        let header_timeout = self.settings.header_read_timeout;
        let head_deadline =
            tokio::time::sleep_until((in_flight.idle_since() + header_timeout).into());
        tokio::pin!(head_deadline);
        let polite = loop {
            tokio::select! {
                // An error or the end counts too: the new hyper connection reads it.
                _ = park::readable(&*io) => return true,
                changed = self.closing.changed() => {
                    if changed.is_err() || *self.closing.borrow() {
                        break true;
                    }
                }
                () = &mut head_deadline => {
                    tracing::debug!(client = %self.peer, "connection ended with an error: read header from client timeout");
                    break false;
                }
                _ = tick.tick() => {
                    if last.idle_for() >= idle_timeout {
                        tracing::debug!(client = %self.peer, "closing a connection idle for {idle_timeout:?} (server.idle_timeout)");
                        break true;
                    }
                }
            }
        };
        if polite {
            // What hyper does closing an idle connection: TLS close_notify, then FIN.
            let _ = tokio::time::timeout(CLOSE_GRACE, tokio::io::AsyncWriteExt::shutdown(io)).await;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The stack `serve` puts in front of the gateway, around a stub standing for it.
    fn stub_stack(
        handler: fn(&Request<Incoming>) -> Response<Body>,
    ) -> impl Service<Request<Incoming>, Response = Response<impl http_body::Body<Data = Bytes>>>
    {
        stack(tower::service_fn(move |request: Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(handler(&request)))
        }))
    }

    /// A request with hyper's body type, which only hyper can make: sent through a real
    /// loopback connection to a one-shot server that hands the request back.
    async fn incoming(request: Request<String>) -> Request<Incoming> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (found, got) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let found = std::sync::Mutex::new(Some(found));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                if let Some(found) = found.lock().unwrap().take() {
                    let _ = found.send(request);
                }
                std::future::ready(Ok::<_, Infallible>(Response::new(crate::body::empty())))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let _answer = sender.send_request(request);
        got.await.unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_registry_style_500() {
        let service = stub_stack(|_| panic!("boom"));
        let request = incoming(Request::get("http://x/v2/").body(String::new()).unwrap()).await;
        let response = service.oneshot(request).await.ok().unwrap();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = response
            .into_body()
            .collect()
            .await
            .ok()
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "UNKNOWN");
        assert!(!String::from_utf8_lossy(&body).contains("boom"));
    }

    #[tokio::test]
    async fn credentials_are_marked_sensitive_before_the_gateway_sees_them() {
        let service = stub_stack(|request| {
            let all = ["authorization", "proxy-authorization", "cookie"]
                .iter()
                .all(|name| request.headers()[*name].is_sensitive());
            let mut response = Response::new(crate::body::empty());
            if !all {
                *response.status_mut() = http::StatusCode::IM_A_TEAPOT;
            }
            response
        });
        let request = Request::get("http://x/v2/")
            .header("authorization", "Bearer secret")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("cookie", "session=secret")
            .body(String::new())
            .unwrap();
        let response = service.oneshot(incoming(request).await).await.ok().unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
    }
}
