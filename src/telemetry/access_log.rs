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
use super::{RefusalReason, RequestUser, RouteLabel};
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for AccessLog<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResB>, S::Error>> + Send>>;

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
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            if let Ok(response) = &result {
                let elapsed = started.elapsed();
                let route = response
                    .extensions()
                    .get::<RouteLabel>()
                    .map_or("other", |r| r.0);
                metrics().request(
                    route,
                    &method,
                    response.status().as_u16(),
                    elapsed.as_secs_f64(),
                );
                let user = response
                    .extensions()
                    .get::<RequestUser>()
                    .map(|u| u.0.as_str())
                    .unwrap_or("");
                let reason = response.extensions().get::<RefusalReason>().map(|r| r.0);
                line::log(&AccessLine {
                    client,
                    method: method.as_str(),
                    path: uri.path(),
                    version,
                    status: response.status().as_u16(),
                    elapsed,
                    user,
                    reason,
                    peer,
                });
            }
            result
        })
    }
}
