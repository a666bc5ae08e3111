//! The `/v2/` path: check the client's token when the headers arrive, then stream the request
//! to the registry and the answer back.
//!
//! The proxy never reads a credential store: it trusts only tokens the gateway signed. The
//! client's `Authorization` header reaches the registry byte for byte, so a registry with
//! token auth of its own verifies the same token again; a registry with no auth at all is
//! protected by the check here.
//!
//! - [`access`]: what a request needs (method + path -> scopes).
//! - [`forward`]: the pooled, streaming client and hop-by-hop headers.
//! - `clients`: the registry connections, a pool of our own per thread.
//! - [`rewrite`]: challenge realms and upload `Location`s.
//! - [`record`]: what the audit log keeps of a request.
//! - [`protect`]: protected and immutable tags on manifest PUT and DELETE.

pub mod access;
mod clients;
pub mod forward;
pub mod protect;
mod record;
pub mod rewrite;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use serde_json::json;
use std::time::Instant;

use self::access::{Need, Route};
use self::forward::{strip_hop_by_hop, Upstream, UpstreamError};
use crate::auth::scope::{Action, Resource};
use crate::auth::token::{Claims, Tokens, VerifyError};
use crate::body::{self, Body};
use crate::config::PublicUrl;
use crate::diagnose::grace::{PushGrace, Verdict};
use crate::diagnose::trust::{self, RuntimeCheck, Trust};
use crate::error::{ApiError, ErrorCode};
use crate::server::limits::Holding;
use crate::server::ClientAddr;
use crate::shared::stripped::Detector as StrippedDetector;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::{metrics, Diagnosis};
use crate::telemetry::AnswerNote;

/// The message of a delete refused because the token was issued without `delete`: GitLab's
/// rule, in the words docker and skopeo print after `unauthorized: `.
const DELETE_NEEDS: &str = "authentication required: delete needs maintainer (or owner) on the project, signed in with a password or a token with the api scope; read_registry and write_registry tokens never delete";

/// The `/v2/` handler.
pub struct Proxy {
    tokens: Arc<Tokens>,
    upstream: Upstream,
    realm: String,
    public_origin: String,
    forwarded_proto: HeaderValue,
    forwarded_host: HeaderValue,
    /// Upload sessions, expired-mid-push diagnosis and push grace.
    grace: PushGrace,
    /// Clients recently given a token, to notice their Authorization being stripped.
    stripped: Arc<StrippedDetector>,
    /// The internal-Location warning is given once.
    location_reported: AtomicBool,
    /// The registry's trust in the gateway's tokens, re-checked when it refuses one.
    trust_check: RuntimeCheck,
    issuer: String,
    audit: Audit,
    /// Protected and immutable tags (see [`protect`]); `None`: no rules anywhere.
    tag_guard: Option<protect::TagGuard>,
    /// Tags clients resolved to digests, for the audit log's `pull` records.
    pull_tags: record::PullTags,
}

/// A request refused before it reached the registry, and why (for metrics and the audit log).
struct Refusal {
    /// Boxed: the refusal path is rare, the `Ok` path hot.
    error: Box<ApiError>,
    /// `missing_token`, `invalid_token`, `expired_token` or `insufficient_scope`.
    reason: &'static str,
    /// The token's subject, when the token could be read.
    user: Option<String>,
}

impl Proxy {
    pub fn new(
        tokens: Arc<Tokens>,
        upstream: Upstream,
        grace: PushGrace,
        stripped: Arc<StrippedDetector>,
        public_url: &PublicUrl,
        tokens_issuer: String,
        audit: Audit,
    ) -> Result<Proxy, http::header::InvalidHeaderValue> {
        Ok(Proxy {
            tokens,
            upstream,
            realm: public_url.realm(),
            public_origin: public_url.origin(),
            forwarded_proto: HeaderValue::from_str(&public_url.scheme)?,
            forwarded_host: HeaderValue::from_str(&public_url.authority)?,
            grace,
            stripped,
            location_reported: AtomicBool::new(false),
            trust_check: RuntimeCheck::default(),
            issuer: tokens_issuer,
            audit,
            tag_guard: None,
            pull_tags: record::PullTags::default(),
        })
    }

    /// Enforce protected and immutable tags with `guard` (see [`protect`]).
    pub fn with_tag_guard(mut self, guard: protect::TagGuard) -> Proxy {
        self.tag_guard = Some(guard);
        self
    }

    /// Answer one `/v2/` request: check the token, then stream the request to the registry
    /// and its answer back.
    ///
    /// One future for the whole exchange, with what is rarely needed boxed: every nested
    /// future is made and then moved into its parent's state, a copy of its whole size per
    /// level, so the common path awaits only what must wait (the stripped-header detector,
    /// the registry) and decides the rest without a future of its own.
    ///
    /// `keep` is what the caller holds for the request (its registry slots): kept until the
    /// answer's body has been sent or dropped, inside the registry's answer's own body (one
    /// box, not a second around it). The proxy is owned (`Arc`), so this future can be the
    /// one the router boxes, with nothing wrapping it.
    pub async fn handle<K: Send + Sync + Unpin + 'static>(
        self: Arc<Self>,
        request: Request<Incoming>,
        keep: K,
    ) -> Response<Body> {
        let mut keep = Some(keep);
        // For the access line, attached once at the end.
        let mut note = AnswerNote::default();
        let response = 'answer: {
            let need = match access::classify(request.method(), request.uri(), request.headers()) {
                Ok(need) => need,
                Err(error) => break 'answer error.into_response(),
            };
            note.route = Some(need.route.label());
            let method = request.method().clone();
            if let Some(client) = ClientAddr::of(request.extensions()) {
                let headers = request.headers();
                let user_agent = headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes);
                let stripped = self
                    .stripped
                    .request(client.ip(), user_agent, authorization)
                    .await;
                if let Some(since) = stripped {
                    report_stripped(&request, client, user_agent, since);
                }
            }
            let exchange = record::Exchange::of(&request, need, &self.audit);
            let verified = match self.verify(request.headers(), &exchange.need) {
                Verified::Valid(claims) => Ok((claims, None)),
                Verified::Refused(refusal) => Err(refusal),
                // Rare: boxed, so the common path's future has no room for it.
                Verified::Expired(claims) => {
                    Box::pin(self.expired(claims, &method, &exchange.need)).await
                }
            };
            let (claims, replacement) = match verified {
                Ok(authorized) => authorized,
                Err(refusal) => {
                    if refusal.reason == "missing_token" && exchange.need.route == Route::Base {
                        // Every docker/podman command starts so: the protocol, not a refusal.
                        metrics().challenge();
                    } else {
                        metrics().auth_failure(refusal.reason);
                        exchange.refused(&self.audit, refusal.reason, refusal.user.as_deref());
                    }
                    note.user = refusal.user;
                    note.reason = Some(refusal.reason);
                    break 'answer refusal.error.into_response();
                }
            };
            let need = &exchange.need;
            if let Some(guard) = &self.tag_guard {
                if protect::applies(&method, need) {
                    let checked = Box::pin(protect::check(
                        guard,
                        &self.upstream,
                        &self.tokens,
                        &method,
                        need,
                        &claims,
                    ))
                    .await;
                    if let Err((error, reason)) = checked {
                        exchange.refused(&self.audit, reason, Some(&claims.sub));
                        note.user = Some(claims.sub.clone());
                        note.reason = Some(reason);
                        break 'answer error.into_response();
                    }
                }
            }
            let mut upstream_request = self.upstream_request(request, need.target.clone());
            if let Some(token) = replacement {
                upstream_request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, token);
            }
            note.user = Some(claims.sub.clone());
            match self.upstream.send(upstream_request).await {
                Ok(response) => {
                    if response.status() == StatusCode::UNAUTHORIZED {
                        self.registry_refused_a_verified_token();
                    }
                    // Push grace learns from upload answers only: no future for the rest.
                    let finished = if need.route == Route::Upload {
                        self.grace
                            .observe(
                                &method,
                                need,
                                &claims,
                                response.status().as_u16(),
                                response.headers(),
                            )
                            .await
                    } else {
                        None
                    };
                    exchange.answered(
                        &self.audit,
                        &claims.sub,
                        response.status(),
                        response.headers(),
                        finished,
                        &self.grace,
                        &self.pull_tags,
                    );
                    self.downstream_response(response, keep.take())
                }
                Err(error) => self.upstream_failure(error),
            }
        };
        let mut response = match keep {
            Some(keep) => response.map(|body| Body::new(Holding::new(body, keep))),
            None => response,
        };
        if note.route.is_some() {
            response.extensions_mut().insert(note);
        }
        response
    }

    /// Does the registry trust the gateway's tokens? Probe and report.
    pub async fn trust(&self) -> Trust {
        trust::probe(&self.upstream, &self.tokens, &self.issuer).await
    }

    /// The registry refused a token the gateway had just verified: find out why, in the
    /// background, at most once per `trust::RUNTIME_INTERVAL`.
    fn registry_refused_a_verified_token(&self) {
        if !self.trust_check.due() {
            return;
        }
        let (upstream, tokens, issuer) = (
            self.upstream.clone(),
            self.tokens.clone(),
            self.issuer.clone(),
        );
        tokio::spawn(async move {
            let found = trust::probe(&upstream, &tokens, &issuer).await;
            trust::report(
                &found,
                "the registry refused a token the gateway had verified",
            );
        });
    }

    /// The challenge and error of a refused request: `error` is the challenge's `error=`.
    fn refusal(&self, need: &Need, error: Option<&str>, message: &str) -> ApiError {
        let mut challenge = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm,
            self.tokens.service()
        );
        if let Some(scope) = need.scope_param() {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        let detail: Vec<_> = need
            .scopes
            .iter()
            .flat_map(|scope| {
                scope.actions.iter().map(move |action| {
                    json!({
                        "Type": scope.resource.kind(),
                        "Class": "",
                        "Name": scope.resource.name(),
                        "Action": action.as_str(),
                    })
                })
            })
            .collect();
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
        if !detail.is_empty() {
            error = error.with_detail(json!(detail));
        }
        match HeaderValue::from_str(&challenge) {
            Ok(value) => error.with_challenge(value),
            Err(_) => error,
        }
    }

    /// A refusal with the usual message.
    fn refuse(
        &self,
        need: &Need,
        error: Option<&str>,
        reason: &'static str,
        user: Option<&str>,
    ) -> Refusal {
        Refusal {
            error: Box::new(self.refusal(need, error, "authentication required")),
            reason,
            user: user.map(str::to_owned),
        }
    }

    /// Verify the Bearer token and that its `access` covers what the request needs. Nothing
    /// here waits: a genuine token that expired is handed back for push grace
    /// ([`Proxy::expired`]).
    fn verify(&self, headers: &http::HeaderMap, need: &Need) -> Verified {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
        else {
            return Verified::Refused(self.refuse(need, None, "missing_token", None));
        };
        let claims = match self.tokens.verify(token) {
            Ok(claims) => claims,
            Err(VerifyError::Expired) => {
                // Ours, but expired: the signature and the claims can be trusted.
                // (UTF-8: the expiry was read from its claims.)
                let token = std::str::from_utf8(token).unwrap_or_default();
                return match self.tokens.verify_ignoring_expiry(token) {
                    Ok(claims) => Verified::Expired(Box::new(claims)),
                    Err(_) => Verified::Refused(self.refuse(
                        need,
                        Some("invalid_token"),
                        "invalid_token",
                        None,
                    )),
                };
            }
            Err(e) => {
                tracing::debug!(reason = e.reason(), "token refused: {e}");
                return Verified::Refused(self.refuse(
                    need,
                    Some("invalid_token"),
                    "invalid_token",
                    None,
                ));
            }
        };
        let covered = need
            .scopes
            .iter()
            .all(|scope| claims.actions_on(&scope.resource).covers(scope.actions));
        if !covered {
            tracing::debug!(user = ?claims.sub, needed = ?need.scope_param(), "token lacks the scope the request needs");
            // The token endpoint left delete out (GitLab's rule): say which rule, since docker
            // and skopeo show this message and nothing else.
            let delete_refused = need.scopes.iter().any(|scope| {
                scope.actions.contains(Action::Delete)
                    && !claims.actions_on(&scope.resource).contains(Action::Delete)
            });
            let mut refused = self.refuse(
                need,
                Some("insufficient_scope"),
                "insufficient_scope",
                Some(&claims.sub),
            );
            if delete_refused {
                refused.error =
                    Box::new(self.refusal(need, Some("insufficient_scope"), DELETE_NEEDS));
            }
            return Verified::Refused(refused);
        }
        // Catalog needs the registry resource; make sure an odd `Other` resource never passes.
        debug_assert!(need
            .scopes
            .iter()
            .all(|s| !matches!(s.resource, Resource::Other { .. })));
        Verified::Valid(claims)
    }

    /// A genuine token that expired: push grace may give a replacement Authorization for the
    /// upstream request.
    async fn expired(
        &self,
        claims: Box<Claims>,
        method: &Method,
        need: &Need,
    ) -> Result<(Arc<Claims>, Option<HeaderValue>), Refusal> {
        match self
            .grace
            .expired(&claims, method, need, Instant::now())
            .await
        {
            Verdict::Extend(fresh) => {
                let value = HeaderValue::from_str(&format!("Bearer {fresh}"))
                    .map_err(|_| self.refuse(need, Some("invalid_token"), "invalid_token", None))?;
                Ok((Arc::new(*claims), Some(value)))
            }
            Verdict::Refuse => {
                tracing::debug!(user = ?claims.sub, "token refused: it has expired");
                Err(self.refuse(
                    need,
                    Some("invalid_token"),
                    "expired_token",
                    Some(&claims.sub),
                ))
            }
        }
    }

    /// The request as the registry gets it: the checked target (see [`access`]), same
    /// method, Authorization and body; hop-by-hop headers dropped; forwarded headers naming
    /// the public URL.
    fn upstream_request(
        &self,
        request: Request<Incoming>,
        target: http::uri::PathAndQuery,
    ) -> Request<Body> {
        let client = ClientAddr::of(request.extensions()).map(|c| c.ip());
        let (mut parts, incoming) = request.into_parts();
        // Cannot fail (scheme, authority and path are each valid); were it to, the relative
        // URI left in place makes the send fail with a 502, not a request to the wrong host.
        if let Ok(uri) = self.upstream.uri_for(target) {
            parts.uri = uri;
        }
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        headers.remove(header::HOST);
        // The registry prefers `Forwarded` over X-Forwarded-*: never let a client's copy
        // decide which host the registry names in its Locations.
        headers.remove(header::FORWARDED);
        if let Some(ip) = client {
            // A chain that is not visible ASCII is dropped, not extended.
            let earlier = headers
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let value = forwarded_for(earlier.as_bytes(), ip);
            if let Ok(value) = value {
                headers.insert(&X_FORWARDED_FOR, value);
            }
        }
        headers.insert(&X_FORWARDED_PROTO, self.forwarded_proto.clone());
        headers.insert(&X_FORWARDED_HOST, self.forwarded_host.clone());
        // A request without a body (almost every GET) sends none: no counted wrapper to box.
        let body = if http_body::Body::is_end_stream(&incoming) {
            body::empty()
        } else {
            body::counted(incoming, metrics().upstream_sent())
        };
        Request::from_parts(parts, body)
    }

    /// The registry's answer as the client gets it: realm and internal Locations rewritten;
    /// `keep` held by its body.
    fn downstream_response<K: Send + Sync + Unpin + 'static>(
        &self,
        response: Response<Incoming>,
        keep: Option<K>,
    ) -> Response<Body> {
        let (mut parts, incoming) = response.into_parts();
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if headers.contains_key(header::WWW_AUTHENTICATE) {
            let challenges: Vec<HeaderValue> = headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| rewrite::rewrite_challenge(v, &self.realm).unwrap_or_else(|| v.clone()))
                .collect();
            headers.remove(header::WWW_AUTHENTICATE);
            for challenge in challenges {
                headers.append(header::WWW_AUTHENTICATE, challenge);
            }
        }
        if let Some(location) = headers.get(header::LOCATION) {
            if let Some(public) = rewrite::rewrite_location(location, &self.public_origin) {
                if !self.location_reported.swap(true, Ordering::Relaxed) {
                    metrics().diagnosis(Diagnosis::InternalLocation);
                    tracing::warn!(
                        registry_location = location.to_str().unwrap_or(""),
                        rewritten_to = public.to_str().unwrap_or(""),
                        "the registry names an address other than public_url in its Locations; portcullis rewrites them, but the registry should build them itself: set its http.host to {}, or leave http.host unset so it honours the X-Forwarded-Host/-Proto the gateway sends (reported once)",
                        self.public_origin
                    );
                }
                headers.insert(header::LOCATION, public);
            }
        }
        Response::from_parts(
            parts,
            body::counted(Holding::new(incoming, keep), metrics().upstream_received()),
        )
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Does the registry answer? For the readiness probe.
    pub async fn ready(&self) -> Result<(), String> {
        self.upstream.ready().await
    }

    /// The answer when the registry request failed. The registry's address is logged for the
    /// operator, never sent to the caller. A client whose own body failed (malformed chunked
    /// encoding, too slow, cut off) gets a 4xx: that is not the registry's failure, so it is
    /// neither logged as a warning nor counted as an upstream error.
    fn upstream_failure(&self, error: UpstreamError) -> Response<Body> {
        use crate::body::ClientBodyError;
        let origin = self.upstream.origin();
        let (status, code, message) = match &error {
            UpstreamError::ClientBody(client @ ClientBodyError::TooSlow { .. }) => {
                tracing::info!("request body too slow, request ended: {client}");
                (
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::Unsupported,
                    client.to_string(),
                )
            }
            UpstreamError::ClientBody(client) => {
                tracing::info!("client error: {client}");
                (
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Unsupported,
                    client.to_string(),
                )
            }
            UpstreamError::Timeout(_) => {
                tracing::warn!(upstream = origin, "registry request failed: {error}");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::Unavailable,
                    "the registry did not answer in time".to_owned(),
                )
            }
            _ => {
                tracing::warn!(upstream = origin, "registry request failed: {error}");
                (
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::Unavailable,
                    "the registry could not be reached".to_owned(),
                )
            }
        };
        ApiError::new(status, code, message).into_response()
    }
}

/// The forwarded headers' names, made once: a `&str` name is parsed again on every use (2% of
/// a small request's instructions with `Display` of the address, callgrind).
static X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: header::HeaderName = header::HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-For` with `ip` appended to the `earlier` chain (empty: none), as
/// `"{earlier}, {ip}"` would write it; an IPv4 address (the usual case) without `fmt`.
fn forwarded_for(
    earlier: &[u8],
    ip: std::net::IpAddr,
) -> Result<HeaderValue, header::InvalidHeaderValue> {
    let mut value = Vec::with_capacity(earlier.len() + 41);
    if !earlier.is_empty() {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    value.push(b'.');
                }
                if octet >= 100 {
                    value.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    value.push(b'0' + octet / 10 % 10);
                }
                value.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(value, "{v6}");
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
}

/// A client just given a token called without any Authorization: say so (the detector asks
/// once per client).
fn report_stripped(
    request: &Request<Incoming>,
    client: std::net::SocketAddr,
    user_agent: &str,
    since: std::time::Duration,
) {
    metrics().diagnosis(Diagnosis::StrippedV2);
    tracing::warn!(
        client = %client,
        user_agent,
        path = request.uri().path(),
        token_issued_s_ago = since.as_secs(),
        "this client was given a token but calls /v2/ WITHOUT an Authorization header: it is being removed between the client and portcullis (a proxy clearing it, or a redirect dropping it); pass the Authorization header through on /v2/ too"
    );
}

/// What [`Proxy::verify`] found.
enum Verified {
    /// The token is good and covers the request.
    Valid(Arc<Claims>),
    /// Refused before the registry sees it.
    Refused(Refusal),
    /// Genuine, but expired: push grace decides (boxed: the rare case).
    Expired(Box<Claims>),
}

/// The token of `Bearer <token>`, if that is what the header holds.
/// The token of a `Bearer` Authorization value as distribution reads it (`strings.Cut` at
/// the first space of the value Go's HTTP server trimmed): everything after `Bearer `, so
/// that the gateway passes no token the registry would read otherwise (`Bearer  x`, two
/// spaces, is a malformed token to both). Bytes, so that a token the verdict cache knows is
/// never scanned for UTF-8 ([`crate::auth::token::Tokens::verify`] checks the others).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_the_bytes_after_the_scheme_between_http_whitespace() {
        let token = |v: &[u8]| bearer_token(v).map(<[u8]>::to_vec);
        assert_eq!(token(b"Bearer a.b.c"), Some(b"a.b.c".to_vec()));
        assert_eq!(token(b" bEaReR a.b.c \t"), Some(b"a.b.c".to_vec()));
        // Spaces after the first are the token's, as distribution reads it: malformed.
        assert_eq!(token(b"Bearer  a.b.c"), Some(b" a.b.c".to_vec()));
        // Bytes that are not UTF-8 stay: Tokens::verify refuses them as malformed.
        assert_eq!(token(b"Bearer a\xffb"), Some(b"a\xffb".to_vec()));
        // A no-break space is not HTTP whitespace: part of the token, which then fails.
        assert_eq!(
            token("Bearer a.b.c\u{a0}".as_bytes()),
            Some("a.b.c\u{a0}".as_bytes().to_vec())
        );
        for none in [
            &b""[..],
            b"Bearer",
            b"Bearer   ",
            b"Bearer\ta.b.c",
            b"Basic YTpi",
            b"Bearerx a.b.c",
            b"\xffBearer a",
        ] {
            assert_eq!(token(none), None, "{:?}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn forwarded_for_is_the_formatted_chain() {
        for ip in [
            "0.0.0.0",
            "10.0.0.9",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(forwarded_for(b"", parsed).unwrap(), ip);
            assert_eq!(
                forwarded_for(b"203.0.113.5, 10.1.1.1", parsed).unwrap(),
                format!("203.0.113.5, 10.1.1.1, {ip}").as_str()
            );
        }
        assert!(forwarded_for(b"a\nb", "10.0.0.1".parse().unwrap()).is_err());
    }
}
