//! The operations listener (`metrics.listen`), apart from the public port so that neither
//! metrics nor probes are reachable by registry clients:
//!
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /healthz`: 200 while the process serves (liveness);
//! - `GET /readyz`: 200 when the configuration is loaded and the registry answers `/v2/`,
//!   503 with a one-line reason otherwise, and 503 once shutdown has begun, so a load
//!   balancer stops sending new clients while requests under way finish (readiness). An
//!   identity source that cannot be reached (the directory service) leaves it at 200: the
//!   replica still serves gateway.yaml's users and every token. The body names it as
//!   degraded, one line per source (`ldap: degraded: ...`).
//!   balancer stops sending new clients while requests under way finish (readiness); while
//!   Redis (`shared_state`) does not answer it stays 200 and says the shared state is degraded.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{full, Body};
use crate::telemetry::metrics::metrics;

/// Asks whether the gateway can serve: `Err` says why not.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Each identity source's name and health (see `Gateway::identity_health`).
pub type SourceHealthCheck =
    Arc<dyn Fn() -> Vec<(String, crate::auth::identity::Health)> + Send + Sync>;

/// What the probes report; `draining` is set when shutdown begins.
#[derive(Clone)]
pub struct Ops {
    ready: ReadyCheck,
    draining: Arc<AtomicBool>,
    sources: Option<SourceHealthCheck>,
    /// Said after "ready" when the gateway serves, but not as well as it could (shared state
    /// degraded): a reason to look, not to stop sending traffic.
    note: Option<Note>,
}

/// What `/readyz` adds to "ready" (`None`: nothing to add).
pub type Note = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Ops {
    pub fn new(ready: ReadyCheck) -> Ops {
        Ops {
            ready,
            draining: Arc::new(AtomicBool::new(false)),
            sources: None,

            note: None,
        }
    }

    /// Name the identity sources that cannot answer in `/readyz`'s body (still a 200).
    pub fn with_sources(mut self, sources: SourceHealthCheck) -> Ops {
        self.sources = Some(sources);
        self
    }

    /// `ready`, then one line per degraded identity source.
    fn ready_text(&self) -> String {
        let mut body = match self.note.as_ref().and_then(|note| note()) {
            Some(note) => format!("ready; {note}\n"),
            None => String::from("ready\n"),
        };
        for (name, health) in self.sources.as_ref().map(|f| f()).unwrap_or_default() {
            if let crate::auth::identity::Health::Degraded(why) = health {
                body.push_str(&format!("{name}: degraded: {why}\n"));
            }
        }
        body
    }

    /// `/readyz` answers 200 "ready; <note>" while `note` has something to say.
    pub fn with_note(mut self, note: Note) -> Ops {
        self.note = Some(note);
        self
    }

    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = text(StatusCode::OK, metrics().render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.draining.load(Ordering::Relaxed) {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
                }
                match (self.ready)().await {
                    Ok(()) => text(StatusCode::OK, self.ready_text()),
                    Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "the operations listener serves /metrics, /healthz and /readyz\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serve the operations endpoints until `shutdown` resolves (HTTP/1.1, plain: it is meant for
/// loopback or a cluster network, like every Prometheus exporter).
pub async fn serve(listener: TcpListener, ops: Ops, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("operations listener: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(ops.answer(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
