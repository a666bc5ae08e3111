//! Which requests go where: `/jwt/auth` to the token service, `/v2/` to the proxy, anything
//! else gets a registry-style 404. [`Gateway`] is the whole gateway as one tower service, built
//! once from a validated [`Config`] and cheap to clone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::credentials;
use crate::auth::directory::SharedDirectory;
use crate::auth::endpoint::TokenEndpoint;
use crate::auth::keys::{KeyError, SigningKey, VerifyingKey};
use crate::auth::policy;
use crate::auth::protection::{self, AccessLevel};
use crate::auth::scope::{Action, Actions, RepositoryName, Resource};
use crate::auth::token::Claims;
use crate::auth::token::Tokens;
use crate::body::{Body, BodyPace};
use crate::config::{Config, Problem};
use crate::diagnose::grace::{MayPush, PushGrace};
use crate::diagnose::trust::Trust;
use crate::error::{ApiError, ErrorCode};
use crate::proxy::forward::{Upstream, UpstreamSetupError};
use crate::proxy::protect::{GuardedTags, TagGuard};
use crate::proxy::Proxy;
use crate::server::limits::UpstreamSlots;
use crate::server::{Arrival, ClientAddr};
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::metrics;
use crate::telemetry::RouteLabel;

/// The path of the token endpoint (the realm is `public_url` + this).
pub const TOKEN_PATH: &str = "/jwt/auth";
/// The gateway's public keys as a JWKS (RFC 7638 thumbprint `kid`s), for distribution 3.x's
/// `auth.token.jwks`.
pub const JWKS_PATH: &str = "/jwt/jwks.json";
/// The largest `/jwt/auth` body (an OAuth2 form of a few hundred bytes in practice).
pub const MAX_TOKEN_BODY_BYTES: u64 = 64 * 1024;

/// Why a gateway could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    #[error("public_url does not fit in an HTTP header")]
    PublicUrl,
    #[error("token.previous_certificates: {0}")]
    PreviousKey(KeyError),
    #[error("audit.path: cannot open the audit log: {0}")]
    Audit(std::io::Error),
    #[error("ci.signing_key: {0}")]
    CiKey(KeyError),
    #[error("federation: {0}")]
    FederationCa(crate::auth::federation::fetch::CaError),
    #[error(transparent)]
    Ldap(#[from] crate::auth::ldap::SetupError),
}

impl BuildError {
    /// The config key to blame, for `portcullis check`, and the message without it (the
    /// key is printed in front). `token` tells which of its two files could not be read.
    pub fn to_problem(&self, token: &crate::config::TokenSettings) -> Problem {
        let key = match self {
            BuildError::Key(KeyError::Read { path, .. }) if *path == token.certificate => {
                "token.certificate"
            }
            BuildError::Key(
                KeyError::Read { .. } | KeyError::NoKey { .. } | KeyError::UnsupportedKey { .. },
            ) => "token.signing_key",
            BuildError::Key(KeyError::Mismatch { .. }) => "token",
            BuildError::Key(_) => "token.certificate",
            BuildError::Upstream(UpstreamSetupError::Ca { .. }) => "upstream.ca",
            BuildError::Upstream(UpstreamSetupError::NotAbsolute(_)) => "upstream.url",
            BuildError::PublicUrl => "public_url",
            BuildError::PreviousKey(_) => "token.previous_certificates",
            BuildError::Audit(_) => "audit.path",
            BuildError::CiKey(_) => "ci.signing_key",
            BuildError::FederationCa(_) => "federation.ca",
            BuildError::Ldap(_) => "ldap.ca",
        };
        let message = match self {
            BuildError::PreviousKey(error) | BuildError::CiKey(error) => error.to_string(),
            BuildError::FederationCa(error) => error.to_string(),
            BuildError::Audit(error) => format!("cannot open the audit log: {error}"),
            BuildError::Ldap(crate::auth::ldap::SetupError::Ca { path, message }) => {
                format!("cannot read {path}: {message}")
            }
            BuildError::PublicUrl => "does not fit in an HTTP header".to_owned(),
            BuildError::Upstream(UpstreamSetupError::Ca { path, message }) => {
                format!("cannot read {path}: {message}")
            }
            BuildError::Upstream(UpstreamSetupError::NotAbsolute(url)) => {
                format!("{url} needs a scheme and a host")
            }
            other => other.to_string(),
        };
        Problem::new(key, message)
    }
}

struct Inner {
    token_endpoint: TokenEndpoint,
    proxy: Arc<Proxy>,
    /// Users, groups, projects and tokens in force; swapped on reload.
    directory: SharedDirectory,
    /// The JWKS document, made once (keys change only with a restart).
    jwks: bytes::Bytes,
    max_header_bytes: usize,
    /// Registry connections requests may hold, in all and per client connection.
    upstream_slots: UpstreamSlots,
    /// `server.token_request_timeout`.
    token_request_timeout: std::time::Duration,
    audit: Audit,
    /// The identity sources beside gateway.yaml, for `/readyz` and the token endpoint.
    identities: crate::auth::identity::Identities,
    /// `shared_state`'s Redis, when configured.
    shared: Option<Arc<crate::shared::Redis>>,
    /// `/api/v4/`: GitLab's token API (issue 18).
    api: crate::api::rest::Api,
    /// The token store's tokens, merged into `directory`.
    store: Arc<crate::store::mirror::StoreMirror>,
    /// The token page (`/-/profile/personal_access_tokens`).
    page: crate::page::TokenPage,
}

/// The gateway as a tower service over hyper requests.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Load the signing key, open the audit log, build the upstream client, and wire the
    /// routes.
    pub fn new(config: &Config) -> Result<Gateway, BuildError> {
        let audit = match &config.audit {
            Some(target) => Audit::open(target).map_err(BuildError::Audit)?,
            None => Audit::default(),
        };
        let gateway = Self::with_audit(config, audit)?;
        gateway.start_store(config).map_err(BuildError::Audit)?;
        Ok(gateway)
    }

    /// Open the token store (`store.url`) on a thread of its own and keep the directory in
    /// step with it. Not done by [`Gateway::with_audit`]: `portcullis check` creates no files.
    pub fn start_store(&self, config: &Config) -> std::io::Result<()> {
        self.inner.store.start(config.store_url.clone())
    }

    /// The directory in force: gateway.yaml's and the token store's tokens.
    pub fn directory(&self) -> Arc<crate::auth::directory::Directory> {
        self.inner.directory.get()
    }

    /// The token service (the token page builds on it).
    pub fn token_service(&self) -> &crate::api::service::TokenService {
        self.inner.api.service()
    }

    /// [`Gateway::new`] with the audit log given (`Audit::default()` records nothing): for
    /// `portcullis check`, which must not create files, and for embedders with their own.
    pub fn with_audit(config: &Config, audit: Audit) -> Result<Gateway, BuildError> {
        let key = SigningKey::load(&config.token.signing_key, &config.token.certificate)?;
        metrics().certificate_expiry("token", key.public.not_after);
        let previous = config
            .token
            .previous_certificates
            .iter()
            .map(|path| VerifyingKey::load(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BuildError::PreviousKey)?;
        let mut tokens = Tokens::new(&config.token, key, previous);
        if let Some(path) = &config.ci_signing_key {
            tokens = tokens
                .with_ci_key(crate::auth::ci_key::CiKey::load(path).map_err(BuildError::CiKey)?);
        }
        let tokens = Arc::new(tokens);
        let directory = SharedDirectory::new(config.directory.clone());
        let store = crate::store::mirror::StoreMirror::new(directory.clone());
        let revoked = tokens.clone();
        store.on_revoke(Box::new(move |binding| revoked.revoke_binding(binding)));
        let api = crate::api::rest::Api::new(
            crate::api::service::TokenService::new(
                store.clone(),
                audit.clone(),
                config.token_max_lifetime_days,
            ),
            &config.public_url.origin(),
            config.server.token_request_timeout,
        );
        let upstream = Upstream::new(&config.upstream)?.with_body_pace(BodyPace {
            min: config.server.min_body_rate,
            window: config.server.body_rate_window,
        });
        let keys: Vec<_> = tokens.verifying_keys().map(VerifyingKey::jwk).collect();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into();
        let shared = shared_state(config);
        let grace = PushGrace::new(
            config.push_grace,
            tokens.clone(),
            may_push(directory.clone()),
            shared.clone(),
        );
        let identities = identity_sources(config)?;
        let stripped = Arc::new(crate::shared::stripped::Detector::new(shared.clone()));
        let proxy = Proxy::new(
            tokens.clone(),
            upstream,
            grace,
            stripped.clone(),
            &config.public_url,
            config.token.issuer.clone(),
            audit.clone(),
        )
        .map_err(|_| BuildError::PublicUrl)?
        .with_tag_guard(tag_guard(directory.clone()));
        let proxy = Arc::new(proxy);
        let page = crate::page::TokenPage::new(
            config.page,
            crate::page::service::ServiceTokens::new(api.service().clone()),
            directory.clone(),
            config.public_url.clone(),
            audit.clone(),
        );
        Ok(Gateway {
            inner: Arc::new(Inner {
                token_endpoint: TokenEndpoint::new(
                    directory.clone(),
                    tokens,
                    crate::shared::brute_force::Limiter::new(config.brute_force, shared.clone()),
                    stripped,
                    audit.clone(),
                )
                .with_identities(identities.clone())
                .with_revocations(crate::shared::revocations::Revocations::new(shared.clone()))
                .with_usage(store.usage_hook())
                .with_token_sources(crate::auth::identity::Identities::new(vec![
                    store.clone() as Arc<dyn crate::auth::identity::IdentitySource>
                ])),
                proxy,
                directory,
                jwks,
                max_header_bytes: config.server.max_header_bytes,
                upstream_slots: UpstreamSlots::new(
                    config.server.max_upstream_requests,
                    config.server.max_upstream_requests_per_connection,
                    config.server.max_upstream_requests_per_client,
                    config.server.upstream_queue_timeout,
                ),
                token_request_timeout: config.server.token_request_timeout,
                page,
                audit,
                identities,
                shared,
                api,
                store,
            }),
        })
    }

    /// Put a reloaded config's users, groups, projects and tokens in force. Connections and
    /// requests under way are not touched.
    pub fn reload_directory(&self, config: &Config) {
        self.replace_directory(config.directory.clone());
    }

    /// Put `directory` in force (a reload that owns the new one: no copy), with the token
    /// store's tokens merged in again.
    pub fn replace_directory(&self, directory: crate::auth::directory::Directory) {
        self.inner.store.set_base(directory);
    }

    /// The audit log, to reopen it after log rotation (SIGUSR1).
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Can requests be served? `Err` says why not (the registry does not answer).
    pub async fn ready(&self) -> Result<(), String> {
        self.inner.proxy.ready().await
    }

    /// Each identity source beside gateway.yaml and whether it answers, for `/readyz`.
    pub fn identity_health(&self) -> Vec<(String, crate::auth::identity::Health)> {
        self.inner
            .identities
            .sources()
            .iter()
            .map(|source| (source.name().to_owned(), source.health()))
            .collect()
    }

    /// `Some(why)` while `shared_state` is set and Redis does not answer: `/readyz` still says
    /// ready (every replica goes on alone), and says this too.
    pub fn shared_state_degraded(&self) -> Option<String> {
        self.inner
            .shared
            .as_ref()
            .and_then(|redis| redis.degraded())
    }

    /// Revocations every replica learns of within `shared::revocations::POLL_INTERVAL`.
    pub fn revocations(&self) -> &crate::shared::revocations::Revocations {
        self.inner.token_endpoint.revocations()
    }

    /// The token service: signing and verifying keys.
    pub fn tokens(&self) -> &Tokens {
        self.inner.proxy.tokens()
    }

    /// Does the registry trust the gateway's tokens?
    pub async fn trust(&self) -> Trust {
        self.inner.proxy.trust().await
    }

    /// Route and answer one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        self.answer(request).0.await
    }

    /// Route one request. What needs no waiting (CONNECT, a head too big, the JWKS, a 404) is
    /// answered here; otherwise only the chosen route's future is made and boxed. One future
    /// for every route would be as big as the biggest (the token endpoint's, about 7 KiB),
    /// and each request would copy all of it into its box and again into its first state
    /// (`bench/callgrind.sh`: memcpy was 10% of a small request's instructions).
    fn answer(&self, request: Request<Incoming>) -> Answer {
        // Never a tunnel, whatever the token: refused before anything else looks at it.
        if request.method() == http::Method::CONNECT {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "CONNECT is not supported: this is a registry, not a proxy",
            )
            .into_response();
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
            );
            return answered(response);
        }
        let head_size = head_size(&request);
        if head_size > self.inner.max_header_bytes {
            return answered(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ErrorCode::TooManyRequests,
                format!(
                    "the request head is {head_size} bytes; this gateway accepts at most {} (server.max_header_bytes)",
                    self.inner.max_header_bytes
                ),
            )
            .into_response());
        }
        let path = request.uri().path();
        if path == "/v2" || path.starts_with("/v2/") {
            // An embedder's request has no `Arrival`: no connection share, its `ClientAddr`.
            let share = request.extensions().get::<Arrival>().map(|a| &a.share);
            let client = ClientAddr::of(request.extensions()).map(|c| c.ip());
            match self.inner.upstream_slots.try_acquire(share, client) {
                // The usual case: the proxy's future is the one boxed.
                Some(held) => Box::pin(self.inner.proxy.clone().handle(request, held)).into(),
                None => Box::pin(self.clone().v2_waiting(request)).into(),
            }
        } else if path == TOKEN_PATH {
            let gateway = self.clone();
            labelled("token", async move { gateway.token(request).await })
        } else if path == JWKS_PATH {
            let mut response = Response::new(crate::body::full(self.inner.jwks.clone()));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=300"),
            );
            answered(response)
        } else if path.starts_with(crate::api::rest::PREFIX) {
            let gateway = self.clone();
            labelled(
                "api",
                async move { gateway.inner.api.handle(request).await },
            )
        } else if crate::page::owns(path) {
            let gateway = self.clone();
            labelled("page", async move { gateway.page(request).await })
        } else {
            answered(ApiError::not_found(format!("no such endpoint {path:?}: the registry API is under /v2/, tokens under {TOKEN_PATH}"))
                .into_response())
        }
    }

    /// A `/v2/` request whose registry slots are not all free: wait for them (at most
    /// `server.upstream_queue_timeout`), then the proxy.
    async fn v2_waiting(self, request: Request<Incoming>) -> Response<Body> {
        let share = request.extensions().get::<Arrival>().map(|a| &a.share);
        let client = ClientAddr::of(request.extensions()).map(|c| c.ip());
        let acquired = self.inner.upstream_slots.acquire(share, client).await;
        match acquired {
            Ok(held) => self.inner.proxy.clone().handle(request, held).await,
            Err(refusal) => {
                let mut response = refusal.into_response();
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                response
            }
        }
    }
}

/// The gateway's answer to one request, as its tower service gives it: the route's future,
/// boxed.
pub struct Answer(Pin<Box<dyn Future<Output = Response<Body>> + Send>>);

impl<F: Future<Output = Response<Body>> + Send + 'static> From<Pin<Box<F>>> for Answer {
    fn from(future: Pin<Box<F>>) -> Answer {
        Answer(future)
    }
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// An answer made without waiting.
fn answered(response: Response<Body>) -> Answer {
    Answer(Box::pin(std::future::ready(response)))
}

/// An endpoint's answer, its metrics label attached when it is ready.
fn labelled<F>(label: &'static str, answer: F) -> Answer
where
    F: Future<Output = Response<Body>> + Send + 'static,
{
    Box::pin(async move {
        let mut response = answer.await;
        response.extensions_mut().insert(RouteLabel(label));
        response
    })
    .into()
}

impl Gateway {
    /// The token endpoint, bounded: a declared body over [`MAX_TOKEN_BODY_BYTES`] is refused
    /// unread (413; an undeclared one is cut at the same size by the endpoint), and the whole
    /// request must be answered within `server.token_request_timeout`, so a form dribbled a
    /// byte a second ends with a 408 instead of holding a connection.
    async fn token(&self, request: Request<Incoming>) -> Response<Body> {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_TOKEN_BODY_BYTES) {
            tracing::info!(
                content_length = declared,
                "token request refused: body too large"
            );
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                format!("a {TOKEN_PATH} request body may be at most {MAX_TOKEN_BODY_BYTES} bytes"),
            )
            .into_response();
        }
        let client = ClientAddr::of(request.extensions());
        let timeout = self.inner.token_request_timeout;
        let answer = self.inner.token_endpoint.handle(request, client);
        match tokio::time::timeout(timeout, answer).await {
            Ok(response) => response,
            Err(_) => {
                tracing::info!(client = ?client, "token request ended: not received and answered within {timeout:?} (server.token_request_timeout)");
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::Unsupported,
                    format!(
                        "the request was not complete within {timeout:?}: send the form at once"
                    ),
                )
                .into_response()
            }
        }
    }
}

impl Gateway {
    /// The token page, under the same time bound as the token endpoint: a form dribbled a
    /// byte a second ends with a 408 instead of holding a connection.
    async fn page(&self, request: Request<Incoming>) -> Response<Body> {
        let client = ClientAddr::of(request.extensions());
        let timeout = self.inner.token_request_timeout;
        let answer = self
            .inner
            .page
            .handle(request, &self.inner.token_endpoint, client);
        match tokio::time::timeout(timeout, answer).await {
            Ok(response) => response,
            Err(_) => {
                tracing::info!(client = ?client, "token page request ended: not received and answered within {timeout:?} (server.token_request_timeout)");
                let mut response = Response::new(crate::body::full(
                    "the request was not complete in time: send the form at once",
                ));
                *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
                response
            }
        }
    }
}

/// Push grace's question to the credential store: is the credential behind an expired token
/// still valid, and may its owner still push to the repository?
fn may_push(directory: SharedDirectory) -> MayPush {
    Arc::new(
        move |subject: &str, credential: &str, repository: &RepositoryName| {
            let directory = directory.get();
            match credentials::resolve_binding(
                &directory,
                subject,
                credential,
                time::OffsetDateTime::now_utc(),
            ) {
                Ok(principal) => {
                    let allowed = policy::allowed_actions(
                        &principal,
                        &Resource::Repository(repository.clone()),
                        &directory,
                    );
                    // The project's settings and protected paths hold for a grace too.
                    protection::restrict(&principal, repository, &directory, allowed)
                        .covers(Actions::of(&[Action::Pull, Action::Push]))
                        && !protection::repository_protected(&principal, repository, &directory)
                }
                Err(_) => false,
            }
        },
    )
}

/// The tag protection's question to the credential store: which tag rules apply to this
/// token's holder on this repository, and at which access level? `None` when the project has
/// no tag rules (the proxy then checks nothing). A holder whose credential is gone or no
/// longer good counts as having no access: every rule applies.
fn tag_guard(directory: SharedDirectory) -> TagGuard {
    Arc::new(move |claims: &Claims, repository: &RepositoryName| {
        let directory = directory.get();
        let project = directory.project_for(repository)?;
        let rules = directory.project_settings(&project.path).tags.clone();
        if rules.is_empty() {
            return None;
        }
        let principal = claims.cred.as_deref().and_then(|bound| {
            credentials::resolve_binding(
                &directory,
                &claims.sub,
                bound,
                time::OffsetDateTime::now_utc(),
            )
            .ok()
        });
        let level = principal
            .map(|p| protection::access_level(&p, project, &directory))
            .unwrap_or(AccessLevel::NoAccess);
        Some(GuardedTags { rules, level })
    })
}

/// The size of a request head as it was on the wire (near enough for HTTP/2 too).
fn head_size<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len() + uri_len(request.uri()) + 12;
    request.headers().iter().fold(line, |size, (name, value)| {
        size + name.as_str().len() + value.len() + 4
    })
}

/// The length of `uri` as `Display` writes it, without writing it (an allocation per request).
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |query| query.len() + 1)
}

impl tower::Service<Request<Incoming>> for Gateway {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        self.answer(request)
    }
}

/// The identity sources `config` turns on, in the order they are asked.
fn identity_sources(config: &Config) -> Result<crate::auth::identity::Identities, BuildError> {
    let mut sources: Vec<Arc<dyn crate::auth::identity::IdentitySource>> = Vec::new();
    // Federation first: it takes only the username `oidc`, which no directory user may have.
    if !config.federation.is_empty() {
        sources.push(Arc::new(
            crate::auth::federation::FederationSource::new(&config.federation)
                .map_err(BuildError::FederationCa)?,
        ));
    }
    if let Some(ldap) = &config.ldap {
        sources.push(Arc::new(crate::auth::ldap::LdapSource::new(ldap)?));
    }
    Ok(crate::auth::identity::Identities::new(sources))
}

/// `shared_state.redis`'s connection, keyed by the token signing key every replica holds (the
/// key hash of usernames and clients must agree across replicas, and Redis must not hold it).
fn shared_state(config: &Config) -> Option<Arc<crate::shared::Redis>> {
    let settings = config.shared_state.as_ref()?;
    let secret = match std::fs::read(&config.token.signing_key) {
        Ok(secret) => secret,
        Err(error) => {
            tracing::error!("shared state: cannot read token.signing_key again ({error}); running on in-process state");
            return None;
        }
    };
    crate::shared::Redis::connect(settings, &secret)
}

#[cfg(test)]
mod uri_len_tests {
    #[test]
    fn uri_len_is_the_length_display_writes() {
        for uri in [
            "/v2/",
            "/v2/a/b/manifests/latest?x=1&y=%20",
            "http://registry.example:5000/v2/a/blobs/sha256:ab?n=1",
            "*",
            "registry.example:443",
            "https://h",
        ] {
            let parsed: http::Uri = uri.parse().unwrap();
            assert_eq!(super::uri_len(&parsed), parsed.to_string().len(), "{uri}");
        }
    }
}
