//! The one body type every response of the gateway carries.
//!
//! Proxied bodies are hyper's streaming `Incoming`, handed on frame by frame; the gateway's own
//! answers (tokens, errors) are small and complete. Both are boxed into [`Body`] so a single
//! service type serves every route.

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
