//! A tower layer that logs one line per request when its response head is ready:
//! client, method, path (never the query), status, duration, user, and the reason of a
//! refusal; and counts it in the
//! request metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};

use super::line::{self, AccessLine};
use super::metrics::metrics;
use super::{AnswerNote, RequestUser, RouteLabel};
use crate::server::{Arrival, ClientAddr};

/// Adds [`AccessLog`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

/// The access-log service.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

/// The wrapped service's futures must be `Unpin` (the gateway's are boxed): the line is made
/// by [`Logged`], which is polled in place of the inner future, without a box of its own.
impl<S, ReqB, ResB> Service<Request<ReqB>> for AccessLog<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        // A reference-counted clone: the path is logged without copying it per request.
        let uri = request.uri().clone();
        let (client, peer): (Option<SocketAddr>, Option<SocketAddr>) =
            match request.extensions().get::<Arrival>() {
                Some(arrival) => (
                    Some(arrival.client),
                    Some(arrival.peer).filter(|p| *p != arrival.client),
                ),
                None => (request.extensions().get::<ClientAddr>().map(|c| c.0), None),
            };
        let version = request.version();
        Logged {
            inner: self.inner.call(request),
            request: Some(Logging {
                started,
                method,
                uri,
                client,
                peer,
                version,
            }),
        }
    }
}

/// [`AccessLog`]'s future: the inner one, and the line's facts about the request until its
/// answer's head is ready.
pub struct Logged<F> {
    inner: F,
    /// Taken when the line is made.
    request: Option<Logging>,
}

/// What the access line says about the request itself.
struct Logging {
    started: Instant,
    method: http::Method,
    uri: http::Uri,
    client: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    version: http::Version,
}

impl<F, ResB, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<ResB>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let result = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        if let (Ok(response), Some(request)) = (&result, this.request.take()) {
            request.log(response);
        }
        Poll::Ready(result)
    }
}

impl Logging {
    /// Count the request in the metrics and write its access line.
    fn log<B>(self, response: &Response<B>) {
        let elapsed = self.started.elapsed();
        let extensions = response.extensions();
        let note = extensions.get::<AnswerNote>();
        let route = match note {
            Some(note) => note.route,
            None => extensions.get::<RouteLabel>().map(|r| r.0),
        }
        .unwrap_or("other");
        metrics().request(
            route,
            &self.method,
            response.status().as_u16(),
            elapsed.as_secs_f64(),
        );
        let user = match note {
            Some(note) => note.user.as_deref(),
            None => extensions.get::<RequestUser>().map(|u| u.0.as_str()),
        }
        .unwrap_or("");
        let reason = note.and_then(|note| note.reason);
        line::log(&AccessLine {
            client: self.client,
            method: self.method.as_str(),
            path: self.uri.path(),
            version: self.version,
            status: response.status().as_u16(),
            elapsed,
            user,
            reason,
            peer: self.peer,
        });
    }
}
