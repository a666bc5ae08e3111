//! The registry's connections, pooled per thread: how a request finds a connection, and how
//! a connection is opened, kept and closed.
//!
//! The gateway talks to one registry, so the pool holds connections to one origin and looks
//! nothing up by host (hyper-util's pool hashed the upstream's `host:port` three times a
//! request, took a lock, and for HTTP/1 spawned a task per request to hand the connection
//! back when its answer had been read). Each thread keeps its own connections: with the
//! server's single-threaded workers (see `server::workers`) a connection opened on a worker
//! is driven by a task on that worker, so no request ever waits on another thread, and the
//! pool needs no lock, only a `RefCell` no borrow of which outlives a call.
//!
//! - HTTP/1.1: a list of parked connections. A connection is parked again as soon as its
//!   answer's head arrived; while the answer's body streams it is not ready, and a request
//!   takes only a ready one (newest first), else it opens a new one.
//! - HTTP/2 (an https registry that offers it by ALPN): one connection per thread, shared by
//!   every request on it.
//! - A request to another origin (`doctor` following the realm) gets a connection of its own,
//!   not pooled.
//!
//! Bounds: at most [`MAX_PARKED`] HTTP/1 connections are parked per thread (beyond, the
//! oldest idle one is closed); a connection neither used nor busy for an interval of
//! [`IDLE_TIMEOUT`] is closed (so it idles 90 to 180 s, as it did in hyper-util's pool, whose
//! sweep ran every `pool_idle_timeout`). Dropping a parked `SendRequest` closes its
//! connection; how many are in use at once is bounded by the server's
//! `max_upstream_requests`.
//!
//! A request on a parked connection that the registry had closed meanwhile is sent again,
//! once, on a new connection: always when hyper hands it back unsent; and when it may have
//! gone out but the connection ended with no answer, only if it is a GET or HEAD without a
//! body (safe to repeat, RFC 9110 9.2.1), as Go's `http.Transport` and nginx's cached
//! upstream connections do. A close the gateway has not yet seen (the registry's FIN in the
//! kernel, not yet reported by epoll) cannot be told from one that comes after the request;
//! an upload, whose body is streamed once, is never sent again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;

use crate::body::{Body, BoxError};

/// The most HTTP/1 connections a thread keeps parked, busy streaming an answer or idle (as
/// nginx's `keepalive` bounds each worker's idle upstream connections). More may be in use
/// at once (the server's `max_upstream_requests` bounds those); one handed back beyond the
/// bound closes an idle one, or, when all are busy, closes itself after its answer.
pub const MAX_PARKED: usize = 64;

/// A connection not used for this long (one sweep interval, at most two) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (DNS, TCP, TLS).
    Connect(BoxError),
    /// The connection failed, before or after the request was sent.
    Failed(BoxError),
}

/// How to reach the registry, and this process's connections to it (one pool per thread).
pub struct Pools {
    connector: Connector,
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority/`: what the TCP connector is asked for.
    origin: Uri,
    /// The `Host` header for HTTP/1 requests to the registry, made once.
    host: HeaderValue,
    max_parked: usize,
    idle_timeout: Duration,
}

/// Opens connections: TCP (DNS, happy eyeballs, `connect_timeout`, `TCP_NODELAY`), TLS for
/// https (SNI and certificate checked against the host, ALPN h2 then http/1.1), then the
/// HTTP/1 or HTTP/2 handshake; the connection is driven by a task of its own.
struct Connector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

/// One connection's request handle.
enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// A thread's connections to one registry.
#[derive(Default)]
struct Idle {
    /// Oldest first.
    parked: VecDeque<Parked>,
    http2: Option<http2::SendRequest<Body>>,
    /// The sweep the shared HTTP/2 connection was last used in.
    http2_sweep: u64,
    /// Sweeps so far; a connection handed back records the current one.
    sweep: u64,
    /// Is a sweep task waiting for this pool?
    sweeping: bool,
}

struct Parked {
    sender: http1::SendRequest<Body>,
    sweep: u64,
}

/// What sending a request again takes, when it went out on a parked connection.
struct Reused {
    /// Did [`add_host`] add the `Host` header?
    added_host: bool,
    /// A copy, when the request is safe to send twice.
    replay: Option<Replay>,
}

/// A copy of a request that may be sent again even if it reached the registry: a GET or
/// HEAD with no body. Its header values share the client's bytes (a reference count each).
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<Body>) -> Option<Replay> {
        let safe = matches!(*request.method(), Method::GET | Method::HEAD);
        if !safe || !request.body().is_end_stream() {
            return None;
        }
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn into_request(self) -> Request<Body> {
        let mut request = Request::new(crate::body::empty());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Did the connection end (closed or reset by the registry) before any answer came, rather
/// than the registry answering something hyper could not read or the request failing?
fn ended_before_an_answer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(error).and_then(|e| e.downcast_ref::<std::io::Error>());
    io.is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        )
    })
}

#[cfg(test)]
thread_local! {
    /// Requests sent again on this thread (tests check that the path is taken).
    static SENT_AGAIN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// This thread's pools, by the `Pools` they belong to (usually one).
    static IDLE: RefCell<Vec<(Weak<Pools>, Idle)>> = const { RefCell::new(Vec::new()) };
}

impl Pools {
    pub fn new(
        origin: &Uri,
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
    ) -> Option<Arc<Pools>> {
        Pools::with_bounds(origin, tls, connect_timeout, MAX_PARKED, IDLE_TIMEOUT)
    }

    fn with_bounds(
        origin: &Uri,
        mut tls: rustls::ClientConfig,
        connect_timeout: Duration,
        max_parked: usize,
        idle_timeout: Duration,
    ) -> Option<Arc<Pools>> {
        let (scheme, authority) = (origin.scheme()?.clone(), origin.authority()?.clone());
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let origin = base_uri(scheme.clone(), authority.clone())?;
        let host = host_header(&origin)?;
        Some(Arc::new(Pools {
            connector: Connector {
                tcp,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                connect_timeout,
            },
            scheme,
            authority,
            origin,
            host,
            max_parked,
            idle_timeout,
        }))
    }

    /// Send `request` (absolute URI) and wait for the answer's head; the body streams as the
    /// caller reads it, on a connection that goes back to the pool meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        // `request` is handed on at once, never borrowed here, so this future does not keep
        // a copy of it beside hyper's.
        let (sender, reused, sending) = match self.start(request) {
            Ok(started) => started,
            Err(elsewhere) => return elsewhere.await,
        };
        match sending.await {
            Ok(response) => {
                self.hand_back(Sender::Http1(sender));
                Ok(response)
            }
            Err(error) => {
                drop(sender);
                Box::pin(self.send_again(error, reused)).await
            }
        }
    }

    /// Start `request` on a parked HTTP/1 connection (the common case: its sender, what
    /// sending it again would take, and hyper's future), or else a boxed future for the
    /// rest: another origin, a new connection, the shared HTTP/2 one. Boxed, their state (a
    /// connection being opened, say) does not enlarge, and is not moved with, every
    /// request's future.
    #[allow(clippy::type_complexity)]
    fn start(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<
        (
            http1::SendRequest<Body>,
            Reused,
            impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>>,
        ),
        Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send + '_>>,
    > {
        let uri = request.uri();
        if uri.scheme() != Some(&self.scheme) || uri.authority() != Some(&self.authority) {
            return Err(Box::pin(self.send_elsewhere(request)));
        }
        match self.checkout() {
            Some(Sender::Http1(mut sender)) => {
                let added_host = add_host(&mut request, &self.host);
                origin_form(&mut request);
                let replay = Replay::of(&request);
                let sending = sender.try_send_request(request);
                Ok((sender, Reused { added_host, replay }, sending))
            }
            Some(Sender::Http2(sender)) => Err(Box::pin(self.send_on_http2(sender, request))),
            None => Err(Box::pin(self.send_on_new(request))),
        }
    }

    /// Send `request` on the shared HTTP/2 connection.
    async fn send_on_http2(
        self: &Arc<Self>,
        mut sender: http2::SendRequest<Body>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                drop(sender);
                let reused = Reused {
                    added_host: false,
                    replay: None,
                };
                self.send_again(error, reused).await
            }
        }
    }

    /// Send `request` on a new connection, parked afterwards.
    async fn send_on_new(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.connector.connect(&self.origin).await?;
        prepare(&mut request, &sender, &self.host);
        let sent = match &mut sender {
            Sender::Http1(http1) => http1.try_send_request(request).await,
            Sender::Http2(http2) => http2.try_send_request(request).await,
        };
        match sent {
            Ok(response) => {
                self.hand_back(sender);
                Ok(response)
            }
            Err(error) => Err(SendError::Failed(error.into_error().into())),
        }
    }

    /// A request on a parked connection failed: send it once more on a new connection when
    /// hyper hands it back unsent (the registry had closed the connection meanwhile, as
    /// hyper-util did), or when the connection ended before an answer and the request is
    /// safe to repeat; any other is never sent again.
    async fn send_again(
        self: &Arc<Self>,
        mut error: TrySendError<Request<Body>>,
        reused: Reused,
    ) -> Result<Response<Incoming>, SendError> {
        let mut request = match (error.take_message(), reused.replay) {
            (Some(unsent), _) => {
                tracing::debug!(
                    "a kept-alive registry connection was closed before the request was sent ({}); sending it on a new one",
                    error.into_error()
                );
                unsent
            }
            (None, Some(replay)) if ended_before_an_answer(error.error()) => {
                tracing::debug!(
                    "a kept-alive registry connection ended before answering a {} ({}); sending it again on a new one",
                    replay.method,
                    error.into_error()
                );
                replay.into_request()
            }
            (None, _) => return Err(SendError::Failed(error.into_error().into())),
        };
        #[cfg(test)]
        SENT_AGAIN.with(|n| n.set(n.get() + 1));
        self.restore(&mut request, reused.added_host);
        self.send_on_new(request).await
    }

    /// A request to another origin than the registry's, on a connection of its own.
    async fn send_elsewhere(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let uri = request.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::Failed(
                format!("{uri} is not an absolute URI").into(),
            ));
        };
        let origin = base_uri(scheme.clone(), authority.clone())
            .ok_or_else(|| SendError::Failed(format!("{uri} names no origin").into()))?;
        let host = host_header(&origin)
            .ok_or_else(|| SendError::Failed(format!("{uri} names no host").into()))?;
        let mut sender = self.connector.connect(&origin).await?;
        prepare(&mut request, &sender, &host);
        let sent = match &mut sender {
            Sender::Http1(http1) => http1.try_send_request(request).await,
            Sender::Http2(http2) => http2.try_send_request(request).await,
        };
        sent.map_err(|error| SendError::Failed(error.into_error().into()))
    }

    /// A ready connection of this thread's, if there is one.
    fn checkout(self: &Arc<Self>) -> Option<Sender> {
        self.with_idle(|idle| {
            if let Some(shared) = &idle.http2 {
                if !shared.is_closed() {
                    idle.http2_sweep = idle.sweep;
                    return Some(Sender::Http2(shared.clone()));
                }
                idle.http2 = None;
            }
            // Newest first: the most recently used connections stay warm, the others expire.
            let mut index = idle.parked.len();
            while index > 0 {
                index -= 1;
                let parked = &idle.parked[index];
                if parked.sender.is_ready() {
                    return idle.parked.remove(index).map(|p| Sender::Http1(p.sender));
                }
                if parked.sender.is_closed() {
                    idle.parked.remove(index);
                }
            }
            None
        })
    }

    /// Park a connection whose answer's head has arrived (its body may still be streaming).
    fn hand_back(self: &Arc<Self>, sender: Sender) {
        let start_sweep = self.with_idle(|idle| {
            match sender {
                Sender::Http1(sender) => {
                    if sender.is_closed() {
                        return false;
                    }
                    if idle.parked.len() >= self.max_parked {
                        idle.parked.retain(|p| !p.sender.is_closed());
                    }
                    if idle.parked.len() >= self.max_parked {
                        match idle.parked.iter().position(|p| p.sender.is_ready()) {
                            // Dropped: the oldest idle connection closes.
                            Some(oldest) => drop(idle.parked.remove(oldest)),
                            // Every parked one is busy: this one closes after its answer.
                            None => return false,
                        }
                    }
                    let sweep = idle.sweep;
                    idle.parked.push_back(Parked { sender, sweep });
                }
                Sender::Http2(sender) => {
                    // The first one kept is shared; another (opened by a request that found
                    // none) closes when its streams end.
                    if idle.http2.as_ref().is_none_or(|kept| kept.is_closed()) {
                        idle.http2 = Some(sender);
                        idle.http2_sweep = idle.sweep;
                    }
                }
            }
            !std::mem::replace(&mut idle.sweeping, true)
        });
        if start_sweep {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Undo [`prepare`]'s changes for a connection of the other kind.
    fn restore(&self, request: &mut Request<Body>, added_host: bool) {
        if added_host {
            request.headers_mut().remove(HOST);
        }
        if request.uri().scheme().is_none() {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
            parts.path_and_query = Some(
                request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }

    /// Run `f` on this thread's pool of `self`, making it on first use.
    fn with_idle<R>(self: &Arc<Self>, f: impl FnOnce(&mut Idle) -> R) -> R {
        IDLE.with_borrow_mut(|pools| {
            // A `Weak` keeps its allocation, so no new `Pools` can share a dead one's address.
            let index = match pools
                .iter()
                .position(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(self)))
            {
                Some(index) => index,
                None => {
                    // First use on this thread: drop the pools of dropped `Pools`.
                    pools.retain(|(owner, _)| owner.strong_count() > 0);
                    pools.push((Arc::downgrade(self), Idle::default()));
                    pools.len() - 1
                }
            };
            f(&mut pools[index].1)
        })
    }
}

/// Close, every `interval`, the connections of this thread's pool of `pools` that were not
/// used since the last time; end when the pool is empty (the next hand-back starts another).
async fn sweep(pools: Weak<Pools>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let owner = pools.as_ptr();
        let done = IDLE.with_borrow_mut(|all| {
            all.retain(|(owner, _)| owner.strong_count() > 0);
            let Some((_, idle)) = all
                .iter_mut()
                .find(|(o, _)| std::ptr::eq(o.as_ptr(), owner))
            else {
                return true;
            };
            let current = idle.sweep;
            idle.parked.retain_mut(|parked| {
                if parked.sender.is_closed() {
                    return false;
                }
                if !parked.sender.is_ready() {
                    // Still streaming an answer: busy, not idle.
                    parked.sweep = current;
                    return true;
                }
                parked.sweep == current
            });
            if idle.http2_sweep != current || idle.http2.as_ref().is_some_and(|h| h.is_closed()) {
                idle.http2 = None;
            }
            idle.sweep += 1;
            let empty = idle.parked.is_empty() && idle.http2.is_none();
            if empty {
                idle.sweeping = false;
            }
            empty
        });
        if done {
            return;
        }
    }
}

/// Ready `request` for `sender`'s protocol: HTTP/1 takes the path alone and a `Host` header;
/// HTTP/2 takes the absolute URI (`:scheme`, `:authority`). Was a `Host` added?
fn prepare(request: &mut Request<Body>, sender: &Sender, host: &HeaderValue) -> bool {
    match sender {
        Sender::Http1(_) => {
            let added = add_host(request, host);
            origin_form(request);
            added
        }
        Sender::Http2(_) => false,
    }
}

/// Add `Host` when missing (the proxy removes the client's). Was it added?
fn add_host(request: &mut Request<Body>, host: &HeaderValue) -> bool {
    if request.headers().contains_key(HOST) {
        return false;
    }
    request.headers_mut().insert(HOST, host.clone());
    true
}

/// The path and query alone, as HTTP/1 sends them to an origin server.
fn origin_form(request: &mut Request<Body>) {
    let path = match request.uri().path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).ok()
        }
        _ => Some(Uri::default()),
    };
    if let Some(path) = path {
        *request.uri_mut() = path;
    }
}

/// `scheme://authority/`.
fn base_uri(scheme: Scheme, authority: Authority) -> Option<Uri> {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

/// `host[:port]`, the port left out when it is the scheme's default (as hyper-util wrote it).
fn host_header(origin: &Uri) -> Option<HeaderValue> {
    let host = origin.host()?;
    let default = if origin.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    let value = match origin.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

impl Connector {
    /// A new connection to `origin`. Boxed: the TCP and TLS steps' state is kilobytes, which
    /// every request's future would otherwise carry (and move) though few requests connect.
    fn connect<'a>(
        &'a self,
        origin: &'a Uri,
    ) -> Pin<Box<dyn Future<Output = Result<Sender, SendError>> + Send + 'a>> {
        Box::pin(self.open(origin))
    }

    async fn open(&self, origin: &Uri) -> Result<Sender, SendError> {
        let https = match origin.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => {
                return Err(SendError::Connect(
                    format!("unsupported scheme {}", other.unwrap_or("(none)")).into(),
                ))
            }
        };
        let tcp = self
            .tcp
            .clone()
            .oneshot(origin.clone())
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        if !https {
            return handshake_http1(tcp).await;
        }
        let host = origin.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| SendError::Connect(e.into()))?;
        let tls = match tokio::time::timeout(
            self.connect_timeout,
            self.tls.connect(name, tcp.into_inner()),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(SendError::Connect(e.into())),
            Err(_) => {
                return Err(SendError::Connect(
                    format!(
                        "TLS handshake not done within {:?} (upstream.connect_timeout)",
                        self.connect_timeout
                    )
                    .into(),
                ))
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| SendError::Failed(e.into()))?;
            drive(connection, "HTTP/2");
            Ok(Sender::Http2(sender))
        } else {
            handshake_http1(TokioIo::new(tls)).await
        }
    }
}

async fn handshake_http1<T>(io: T) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| SendError::Failed(e.into()))?;
    drive(connection, "HTTP/1.1");
    Ok(Sender::Http1(sender))
}

/// Run a registry connection as a task of this thread's runtime until it ends (its senders
/// dropped, the registry gone); how it ended is worth a debug line, not an error.
fn drive<C>(connection: C, protocol: &'static str)
where
    C: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("registry connection ({protocol}) ended: {error}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A registry stand-in: answers every request 200 with a two-byte body, keeping the
    /// connection open (no `Connection: close`) unless `one_answer`. Records the paths it was
    /// asked for; counts connections closed by the other side.
    struct Stub {
        origin: Uri,
        paths: Arc<Mutex<Vec<String>>>,
        accepted: Arc<AtomicUsize>,
        closed_by_gateway: Arc<AtomicUsize>,
    }

    /// The next request head on `stream` (read on from what `buffer` holds, the bytes after
    /// the head left there), or `None` once the gateway's side closed the connection.
    async fn read_head(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end);
        Some(head)
    }

    /// Runs on a thread and runtime of its own, so that a test can hold up the pool's
    /// thread (and with it every connection task) while the stub goes on.
    ///
    /// With `one_answer`, each connection is closed 30 ms after its first answer, a byte
    /// written to the socket just before, a message sent on the channel just after.
    async fn stub(
        one_answer: Option<(std::os::unix::net::UnixStream, std::sync::mpsc::Sender<()>)>,
        answer_after: Duration,
    ) -> Stub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_gateway = Arc::new(AtomicUsize::new(0));
        let (seen, count, closed) = (paths.clone(), accepted.clone(), closed_by_gateway.clone());
        let one_answer = one_answer.map(|s| Arc::new(Mutex::new(s)));
        let serve = async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, closed, one_answer) = (seen.clone(), closed.clone(), one_answer.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some(head) = read_head(&mut stream, &mut buffer).await else {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        seen.lock().unwrap().push(path);
                        tokio::time::sleep(answer_after).await;
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if let Some(signal) = &one_answer {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            use std::io::Write as _;
                            let (socket, closed) = &mut *signal.lock().unwrap();
                            socket.write_all(b"x").unwrap();
                            drop(stream);
                            closed.send(()).unwrap();
                            return;
                        }
                    }
                });
            }
        };
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve)
        });
        Stub {
            origin,
            paths,
            accepted,
            closed_by_gateway,
        }
    }

    fn pools(origin: &Uri, max_parked: usize, idle_timeout: Duration) -> Arc<Pools> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Pools::with_bounds(
            origin,
            tls,
            Duration::from_secs(2),
            max_parked,
            idle_timeout,
        )
        .unwrap()
    }

    async fn get(pools: &Arc<Pools>, path: &str) -> Result<u16, SendError> {
        let request = Request::get(format!("{}{}", pools.origin, &path[1..]))
            .body(crate::body::empty())
            .unwrap();
        let response = pools.send(request).await?;
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| SendError::Failed(e.into()))?;
        Ok(status)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_parked_connection_closed_by_the_registry_before_the_request_went_out_is_not_a_failure_and_nothing_is_sent_twice(
    ) {
        let (signal, closing) = std::os::unix::net::UnixStream::pair().unwrap();
        closing.set_nonblocking(true).unwrap();
        let mut closing = tokio::net::UnixStream::from_std(closing).unwrap();
        let (closed, close_seen) = std::sync::mpsc::channel();
        let stub = stub(Some((signal, closed)), Duration::ZERO).await;
        let pools = pools(&stub.origin, MAX_PARKED, IDLE_TIMEOUT);
        let retried = SENT_AGAIN.with(|n| n.get());
        for i in 0..20 {
            assert_eq!(
                get(&pools, &format!("/v2/r/manifests/{i}")).await.unwrap(),
                200
            );
            // Hold this thread while the stub signals and then closes the parked connection:
            // both events reach this runtime in one batch, the signal first, so the next
            // request takes the connection before its task has seen the close, and hyper
            // hands the request back unsent.
            close_seen.recv().unwrap();
            closing.read_exact(&mut [0u8]).await.unwrap();
            // Read to `WouldBlock`, so that the next signal is learnt from the runtime's
            // poll for events, together with the close.
            assert!(closing.try_read(&mut [0u8; 8]).is_err());
        }
        assert_eq!(
            SENT_AGAIN.with(|n| n.get()) - retried,
            19,
            "sent again after the first"
        );
        let paths = stub.paths.lock().unwrap().clone();
        let expected: Vec<String> = (0..20).map(|i| format!("/v2/r/manifests/{i}")).collect();
        assert_eq!(
            paths, expected,
            "each request reached the registry exactly once"
        );
        assert_eq!(stub.accepted.load(Ordering::SeqCst), 20);
    }

    /// A registry stand-in that answers the first request on each connection (kept alive)
    /// and, on the second, reads its head and closes without an answer: the request reached
    /// it, then the connection ended. Records `METHOD path` of every request it read.
    async fn hang_up_on_the_second() -> (Uri, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    for answered in [true, false] {
                        let Some(head) = read_head(&mut stream, &mut buffer).await else {
                            return;
                        };
                        let line = head.split(' ').take(2).collect::<Vec<_>>().join(" ");
                        record.lock().unwrap().push(line.clone());
                        if !answered {
                            return;
                        }
                        let body = if line.starts_with("HEAD") { "" } else { "{}" };
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{body}");
                        stream.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (origin, seen)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_get_that_a_parked_connection_ended_without_answering_is_sent_again_once_an_upload_never(
    ) {
        let (origin, seen) = hang_up_on_the_second().await;
        let pools = pools(&origin, MAX_PARKED, IDLE_TIMEOUT);
        let send = |method: &str, path: &str, body: Body| {
            let request = Request::builder()
                .method(method)
                .uri(format!("{origin}{}", &path[1..]))
                .body(body)
                .unwrap();
            let pools = pools.clone();
            async move {
                let response = pools.send(request).await?;
                let status = response.status().as_u16();
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .map_err(|e| SendError::Failed(e.into()))?;
                Ok::<u16, SendError>(status)
            }
        };
        let empty = crate::body::empty;
        // A new connection, answered and parked; the GET on it reaches the registry, which
        // hangs up: sent again on a new connection (which answers, and is parked).
        assert_eq!(send("GET", "/v2/first", empty()).await.unwrap(), 200);
        assert_eq!(send("GET", "/v2/twice", empty()).await.unwrap(), 200);
        assert_eq!(send("HEAD", "/v2/head", empty()).await.unwrap(), 200);
        // An upload on the parked connection: it may have been taken, never sent again.
        let upload = crate::body::full(&b"layer bytes"[..]);
        let failed = send("PATCH", "/v2/upload", upload).await;
        assert!(matches!(failed, Err(SendError::Failed(_))), "{failed:?}");
        // Neither is a request that fails on a connection of its own: the parked one was
        // spent on the upload, so this GET opens a new one, which answers.
        assert_eq!(send("GET", "/v2/after", empty()).await.unwrap(), 200);
        assert_eq!(
            seen.lock().unwrap().clone(),
            [
                "GET /v2/first",
                "GET /v2/twice",
                "GET /v2/twice",
                "HEAD /v2/head",
                "HEAD /v2/head",
                "PATCH /v2/upload",
                "GET /v2/after",
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn kept_alive_connections_are_reused_and_the_idle_ones_closed_after_the_idle_timeout() {
        let stub = stub(None, Duration::ZERO).await;
        let pools = pools(&stub.origin, MAX_PARKED, Duration::from_millis(200));
        for i in 0..10 {
            assert_eq!(get(&pools, &format!("/v2/{i}")).await.unwrap(), 200);
        }
        assert_eq!(
            stub.accepted.load(Ordering::SeqCst),
            1,
            "one connection, reused"
        );
        // Closed after one to two sweep intervals unused.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(stub.closed_by_gateway.load(Ordering::SeqCst), 1);
        pools.with_idle(|idle| assert!(idle.parked.is_empty() && !idle.sweeping));
        // And a later request opens a new one.
        assert_eq!(get(&pools, "/v2/again").await.unwrap(), 200);
        assert_eq!(stub.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_than_the_bound_of_connections_stay_parked_after_a_burst() {
        let stub = stub(None, Duration::from_millis(100)).await;
        let pools = pools(&stub.origin, 3, IDLE_TIMEOUT);
        let burst: Vec<_> = (0..8)
            .map(|i| {
                let pools = pools.clone();
                tokio::spawn(async move { get(&pools, &format!("/v2/{i}")).await.unwrap() })
            })
            .collect();
        for request in burst {
            assert_eq!(request.await.unwrap(), 200);
        }
        assert_eq!(stub.accepted.load(Ordering::SeqCst), 8, "eight at once");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stub.closed_by_gateway.load(Ordering::SeqCst), 5);
        pools.with_idle(|idle| assert_eq!(idle.parked.len(), 3));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_to_another_origin_gets_a_connection_of_its_own() {
        let registry = stub(None, Duration::ZERO).await;
        let other = stub(None, Duration::ZERO).await;
        let pools = pools(&registry.origin, MAX_PARKED, IDLE_TIMEOUT);
        let request = Request::get(format!("{}jwt/auth", other.origin))
            .body(crate::body::empty())
            .unwrap();
        let response = pools.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        assert_eq!(other.paths.lock().unwrap().clone(), vec!["/jwt/auth"]);
        pools.with_idle(|idle| assert!(idle.parked.is_empty()));
        assert_eq!(registry.accepted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_host_header_leaves_out_the_default_port() {
        let host = |uri: &str| host_header(&uri.parse().unwrap()).unwrap();
        assert_eq!(host("http://registry:5000/"), "registry:5000");
        assert_eq!(host("http://registry:80/"), "registry");
        assert_eq!(host("https://registry:443/"), "registry");
        assert_eq!(host("https://registry:80/"), "registry:80");
        assert_eq!(host("http://[::1]:5000/"), "[::1]:5000");
    }
}
