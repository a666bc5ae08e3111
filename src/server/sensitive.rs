//! Credentials marked sensitive on every request, so their `Debug` form (in any trace of a
//! request, ours or a library's) is `Sensitive`.
//!
//! What tower-http's `SetSensitiveRequestHeaders` does, in one walk over the headers instead
//! of an `entry` per name: `HeaderMap::entry` reserves room for an insert first, which on a
//! full map of a small request grows and rehashes it, and hashes each name; 2.3% of a small
//! request's instructions (callgrind) for three names that are mostly absent.

use std::task::{Context, Poll};

use http::header::{HeaderName, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::Request;
use tower::{Layer, Service};

/// The headers no layer may print.
fn is_sensitive(name: &HeaderName) -> bool {
    // Standard names compare as their enum tag: no byte comparison.
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE
}

/// Adds [`MarkSensitive`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkSensitiveLayer;

impl<S> Layer<S> for MarkSensitiveLayer {
    type Service = MarkSensitive<S>;
    fn layer(&self, inner: S) -> MarkSensitive<S> {
        MarkSensitive { inner }
    }
}

/// Marks `Authorization`, `Proxy-Authorization` and `Cookie` (every value of each) sensitive.
#[derive(Debug, Clone)]
pub struct MarkSensitive<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for MarkSensitive<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        for (name, value) in request.headers_mut().iter_mut() {
            if is_sensitive(name) {
                value.set_sensitive(true);
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_value_of_each_credential_header_is_marked_and_nothing_else() {
        use tower::ServiceExt;
        let request = Request::get("http://x/v2/")
            .header("authorization", "Bearer one")
            .header("Authorization", "Bearer two")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-authorization", "not a credential header")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let echo = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(request)
        });
        let request = MarkSensitiveLayer
            .layer(echo)
            .oneshot(request)
            .await
            .unwrap();
        let marked: Vec<(String, bool)> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.is_sensitive()))
            .collect();
        for (name, sensitive) in &marked {
            let expected = matches!(
                name.as_str(),
                "authorization" | "proxy-authorization" | "cookie"
            );
            assert_eq!(*sensitive, expected, "{name}: {marked:?}");
        }
        assert_eq!(marked.iter().filter(|(_, s)| *s).count(), 5);
        assert!(format!("{:?}", request.headers()).contains("Sensitive"));
        assert!(!format!("{:?}", request.headers()).contains("Bearer"));
    }
}
