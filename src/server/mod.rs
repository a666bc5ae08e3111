//! Listening: accept TCP connections, terminate TLS when configured, and serve HTTP/1.1 and
//! HTTP/2 on the same port (hyper-util's auto builder decides per connection).
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! run the real server. It accepts on the caller's runtime and serves each connection on one of
//! `server.workers` threads (`workers`). What it protects against and how it ends:
//! - at most `server.max_connections` connections: beyond that, new ones wait in the kernel's
//!   accept queue instead of being taken and starved;
//! - a connection with nothing moving for `server.idle_timeout` is closed politely (an HTTP/1
//!   request under way finishes first; HTTP/2 gets a GOAWAY);
//! - on shutdown it stops accepting, asks every connection to close after its requests
//!   (keep-alive off, GOAWAY), and waits up to `server.shutdown_grace` for them.

mod activity;
pub mod ops;
pub mod tls;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use self::activity::{Activity, LastActivity};
use self::workers::Workers;
use crate::body::Body;
use crate::config::ServerSettings;
use crate::telemetry::metrics::metrics;

/// What [`serve`] can run: a cloneable service (one clone per connection) that answers every
/// request, errors included, with a response, and whose futures may move between threads.
pub trait HttpService:
    Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The client's address, attached to every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// How a [`serve`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection closed within the grace period.
    All,
    /// These many connections were still open when the grace period ran out.
    Abandoned(usize),
}

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
    S: HttpService,
{
    let workers = Workers::start(settings.workers)?;
    tracing::debug!(workers = workers.len(), "worker threads started");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // The router answers heads over the limit with a registry-style 431; hyper's own
        // (body-less) 431 only bounds memory, at twice the limit.
        .max_buf_size(settings.max_header_bytes.saturating_mul(2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(settings.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );

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
            builder: builder.clone(),
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

/// One accepted connection and what serving it needs.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    settings: ServerSettings,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run<S>(self, stream: tokio::net::TcpStream, service: S)
    where
        S: HttpService,
    {
        let peer = self.peer;
        let hyper_service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            service.clone().oneshot(request)
        });
        let last = LastActivity::new();
        match &self.tls {
            None => {
                self.serve(Activity::new(stream, last.clone()), hyper_service, last)
                    .await
            }
            Some(acceptor) => {
                match tls::accept(acceptor, stream, self.settings.header_read_timeout).await {
                    Ok(stream) => {
                        self.serve(Activity::new(stream, last.clone()), hyper_service, last)
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
    async fn serve<IO, Svc>(mut self, io: IO, service: Svc, last: LastActivity)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        Svc: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        Svc::Future: Send + 'static,
    {
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle_timeout = self.settings.idle_timeout;
        let mut tick = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(250)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing_asked = *self.closing.borrow();
        if closing_asked {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(client = %self.peer, "connection ended with an error: {error}");
                    }
                    return;
                }
                changed = self.closing.changed(), if !closing_asked => {
                    if changed.is_err() || *self.closing.borrow() {
                        closing_asked = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                _ = tick.tick(), if !closing_asked => {
                    if last.idle_for() >= idle_timeout {
                        tracing::debug!(client = %self.peer, "closing a connection idle for {idle_timeout:?} (server.idle_timeout)");
                        closing_asked = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}
