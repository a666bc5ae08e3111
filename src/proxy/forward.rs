//! Streaming requests to the registry and answers back, never holding a body whole.
//!
//! Our own pool of registry connections (HTTP/1.1, or HTTP/2 when an https registry offers
//! it), one per thread (see `clients`), serves every request. Bodies are handed on frame by frame in both
//! directions, so a 10 GiB layer costs the same memory as a 1 KiB manifest.
//!
//! Timeouts: connecting is bounded by `upstream.connect_timeout`. The wait for the registry's
//! answer is bounded by `upstream.response_timeout`, counted from the moment the request body
//! has been sent completely: an upload may stream for an hour, but once it is sent, a
//! registry that does not answer is a failure to report, not a reason to hang.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::clients::{Pools, SendError};
use crate::body::{Body, BodyPace, BoxError, ClientBodyError, Paced};
use crate::config::UpstreamSettings;

/// Why the registry could not be asked or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?} after the request was sent")]
    Timeout(Duration),
    #[error("the connection failed: {0}")]
    Failed(String),
    /// The client's request body failed while it streamed to the registry: the client's
    /// fault, not the registry's (not counted as an upstream error).
    #[error("{0}")]
    ClientBody(ClientBodyError),
}

impl UpstreamError {
    /// The metrics label: `connect`, `timeout` or `reset`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Failed(_) => "reset",
            UpstreamError::ClientBody(_) => "client_body",
        }
    }
}

/// How long a readiness probe waits for the registry's `/v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot read upstream.ca {path}: {message}")]
    Ca { path: String, message: String },
    #[error("upstream.url {0} needs a scheme and a host")]
    NotAbsolute(String),
}

/// The system's roots plus those of `upstream.ca`.
pub fn trust_roots(
    settings: &UpstreamSettings,
) -> Result<rustls::RootCertStore, UpstreamSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca {
        let error = |message: String| UpstreamSetupError::Ca {
            path: path.display().to_string(),
            message,
        };
        for cert in crate::pem::certificates(path).map_err(error)? {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// The registry behind the gateway.
#[derive(Clone)]
pub struct Upstream {
    pools: Arc<Pools>,
    origin: Arc<str>,
    /// The parts of `origin`, cloned (reference counts, no parsing) into every request's URI.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    response_timeout: Duration,
    /// The slowest a client's request body may stream (`None`: no bound, for tools).
    pace: Option<BodyPace>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamSetupError> {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(trust_roots(settings)?)
            .with_no_client_auth();
        Upstream::with_tls(settings, tls)
    }

    /// As [`Upstream::new`], with a TLS configuration of the caller's (`doctor` verifies
    /// certificates as docker's Go clients do).
    pub fn with_tls(
        settings: &UpstreamSettings,
        tls: rustls::ClientConfig,
    ) -> Result<Upstream, UpstreamSetupError> {
        let (Some(scheme), Some(authority), Some(pools)) = (
            settings.url.scheme(),
            settings.url.authority(),
            Pools::new(&settings.url, tls, settings.connect_timeout),
        ) else {
            return Err(UpstreamSetupError::NotAbsolute(settings.url.to_string()));
        };
        Ok(Upstream {
            pools,
            origin: settings.url.to_string().trim_end_matches('/').into(),
            scheme: scheme.clone(),
            authority: authority.clone(),
            response_timeout: settings.response_timeout,
            pace: None,
        })
    }

    /// Fail request bodies slower than `pace` (`server.min_body_rate`).
    pub fn with_body_pace(mut self, pace: BodyPace) -> Upstream {
        self.pace = Some(pace);
        self
    }

    /// `scheme://authority` of the registry.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The registry's URI for a client's path and query.
    pub fn uri_for(
        &self,
        path_and_query: http::uri::PathAndQuery,
    ) -> Result<http::Uri, http::uri::InvalidUriParts> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        http::Uri::from_parts(parts)
    }

    /// Does the registry answer `GET /v2/` (with any status below 500)? `Err` says why not.
    pub async fn ready(&self) -> Result<(), String> {
        let request = Request::get(format!("{}/v2/", self.origin))
            .body(crate::body::empty())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(READY_TIMEOUT, self.pools.send(request)).await {
            Err(_) => Err(format!(
                "the registry at {} did not answer /v2/ within {READY_TIMEOUT:?}",
                self.origin
            )),
            Ok(Err(error)) => Err(format!(
                "the registry at {} cannot be reached: {}",
                self.origin,
                error.chain()
            )),
            Ok(Ok(response)) if response.status().is_server_error() => Err(format!(
                "the registry at {} answers /v2/ with {}",
                self.origin,
                response.status()
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Send a request whose URI is already absolute; the body streams as it arrives.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        if http_body::Body::is_end_stream(request.body()) {
            return self.send_bodiless(request).await;
        }
        let (parts, body) = request.into_parts();
        let (sent, body_sent) = oneshot::channel();
        let fault = Arc::new(std::sync::Mutex::new(None));
        let body = match self.pace {
            Some(pace) => Body::new(Paced::new(body, pace)),
            _ => body,
        };
        let body = Body::new(EndSignal {
            inner: body,
            sent: Some(sent),
            fault: fault.clone(),
        });
        let request = Request::from_parts(parts, body);
        // Boxed, as hyper-util's response future was: the pool's future (hyper's, and the
        // request) is not moved with the ones around it (callgrind: 75,309 against 74,872
        // instructions a request).
        let response = Box::pin(self.pools.send(request));
        let deadline = async {
            // Resolves when the body ended, or was dropped (the request is over either way).
            let _ = body_sent.await;
            tokio::time::sleep(self.response_timeout).await;
        };
        let result = tokio::select! {
            result = response => result.map_err(UpstreamError::from),
            () = deadline => Err(UpstreamError::Timeout(self.response_timeout)),
        };
        // The request failed because the client's body did: say so, whatever hyper says.
        let result = match result {
            Err(_) => match fault.lock().ok().and_then(|f| *f) {
                Some(client) => return Err(UpstreamError::ClientBody(client)),
                None => result,
            },
            ok => ok,
        };
        if let Err(error) = &result {
            crate::telemetry::metrics::metrics().upstream_error(error.kind());
        }
        result
    }
}

impl Upstream {
    /// [`Upstream::send`] for a request with no body (almost every GET and HEAD): the head is
    /// the whole request, so the answer's deadline starts now, and there is no body whose end
    /// to signal or whose failure to record (the channel, the shared fault and the wrapper
    /// `send` sets up for a body were three allocations per small request).
    async fn send_bodiless(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let response = Box::pin(self.pools.send(request)); // boxed: see `send`
        let result = match tokio::time::timeout(self.response_timeout, response).await {
            Ok(result) => result.map_err(UpstreamError::from),
            Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
        };
        if let Err(error) = &result {
            crate::telemetry::metrics::metrics().upstream_error(error.kind());
        }
        result
    }
}

impl From<SendError> for UpstreamError {
    fn from(error: SendError) -> UpstreamError {
        match error {
            SendError::Connect(e) => UpstreamError::Connect(error_chain(&*e)),
            SendError::Failed(e) => UpstreamError::Failed(error_chain(&*e)),
        }
    }
}

impl SendError {
    /// The error and its sources on one line.
    fn chain(&self) -> String {
        match self {
            SendError::Connect(e) | SendError::Failed(e) => error_chain(&**e),
        }
    }
}

/// The error and its sources on one line ("connection refused" lives in a source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A body that says when it has been read to the end, and why it failed if it did.
struct EndSignal {
    inner: Body,
    sent: Option<oneshot::Sender<()>>,
    fault: Arc<std::sync::Mutex<Option<ClientBodyError>>>,
}

impl http_body::Body for EndSignal {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(sent) = self.sent.take() {
                    let _ = sent.send(());
                }
            }
            Poll::Ready(Some(Err(error))) => {
                let client = error
                    .downcast_ref::<ClientBodyError>()
                    .copied()
                    .unwrap_or(ClientBodyError::Broken);
                if let Ok(mut fault) = self.fault.lock() {
                    *fault = Some(client);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `Keep-Alive` and `Proxy-Connection`, which `http` has no constants for: made once, so no
/// request parses their names again.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Is `name` hop-by-hop whatever `Connection` says?
fn always_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus any
/// the `Connection` header names.
///
/// Usually there are none: one walk over the (few) names finds that, where a `remove` per
/// hop-by-hop name hashed and looked up nine names on every request and answer (3% of a small
/// request's instructions, callgrind).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(always_hop_by_hop) {
        return;
    }
    // Rare on a request or an answer: only then is there a list of names to collect.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["authorization", "content-length"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_dropped_and_an_ordinary_head_kept_whole() {
        for name in [
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "proxy-connection",
            "Connection",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            strip_hop_by_hop(&mut headers);
            let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, vec!["accept"], "{name}");
        }
        let mut ordinary = HeaderMap::new();
        ordinary.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        ordinary.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        ordinary.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("a"));
        ordinary.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("b"));
        let before = ordinary.clone();
        strip_hop_by_hop(&mut ordinary);
        assert_eq!(ordinary, before);
    }
}
