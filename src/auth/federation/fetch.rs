//! Fetching an issuer's discovery document and JWKS: HTTPS only, under a timeout, with a
//! bound on the body, no redirects followed (hyper follows none), the system's roots plus the
//! federation's `ca:`.
//!
//! A client is built per fetch: fetches are rare (at most one a minute per issuer after the
//! first), and a fresh client ties no pooled connection to whichever worker runtime fetched.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A whole fetch (connect, TLS, headers, body) must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or JWKS read (GitHub's JWKS is about 2 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why a document could not be fetched. Never contains a secret (no credential is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{url} is not an https URL")]
    NotHttps { url: String },
    #[error("{url} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} sent more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} did not send JSON: {message}")]
    NotJson { url: String, message: String },
}

/// Why the fetcher could not be set up (`ca:` unreadable).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {message}")]
pub struct CaError {
    pub path: String,
    pub message: String,
}

#[derive(Clone)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
}

impl Fetcher {
    /// The system's roots, plus the certificates in `ca`.
    pub fn new(ca: Option<&Path>) -> Result<Fetcher, CaError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca {
            let error = |message: String| CaError {
                path: path.display().to_string(),
                message,
            };
            for cert in crate::pem::certificates(path).map_err(error)? {
                roots.add(cert).map_err(|e| error(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher { tls: Arc::new(tls) })
    }

    /// GET `url` and parse its JSON body.
    pub async fn json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: url.into() }),
        }
    }

    async fn fetch(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| FetchError::NotHttps { url: url.into() })?;
        if uri.scheme_str() != Some("https") {
            return Err(FetchError::NotHttps { url: url.into() });
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "portcullis")
            .body(Empty::new())
            .map_err(|e| FetchError::Transport {
                url: url.into(),
                message: e.to_string(),
            })?;
        let response = client.request(request).await.map_err(|e| {
            // The source chain says what failed (refused, certificate, ...).
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            FetchError::Transport {
                url: url.into(),
                message,
            }
        })?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.into(),
                status: response.status(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge { url: url.into() }
                } else {
                    FetchError::Transport {
                        url: url.into(),
                        message: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| FetchError::NotJson {
            url: url.into(),
            message: e.to_string(),
        })
    }
}
