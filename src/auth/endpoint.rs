//! `/jwt/auth`: the docker token protocol, answered with GitLab's semantics.
//!
//! Two forms (see the protocol reference):
//! - `GET ?service=&scope=...&account=` with optional Basic credentials; `offline_token=true`
//!   also returns a refresh token (docker keeps it as its identity token);
//! - `POST` (OAuth2, form encoded): `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), `scope` as one space-separated field;
//!   `access_type=offline` returns a refresh token with the password grant.
//!
//! Glue only: parsing is in [`super::scope`] and [`super::credentials`], the rules in
//! [`super::policy`], signing in [`super::token`]. Every credential check goes through
//! [`TokenEndpoint::login`], which applies the brute-force bans.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use time::OffsetDateTime;

use super::brute_force::{Refusal, Subject};
use super::credentials::{self, AuthFailure, BasicCredentials, HeaderError, Principal};
use super::directory::{Directory, SharedDirectory};
use super::password_cache::PasswordCache;
use super::policy;
use super::scope::{Scope, ScopeError};
use super::slow_hash::DummyHash;
use super::token::{Purpose, Tokens};
use crate::body::{full, Body};
use crate::error::{ApiError, ErrorCode};
use crate::shared::stripped::Detector as StrippedDetector;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::{metrics, Diagnosis};
use crate::telemetry::RequestUser;

/// The realm of the Basic challenge sent with a refused login.
const BASIC_REALM: &str = "Basic realm=\"portcullis\"";
/// Largest OAuth2 form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Longest username looked at (GitLab's limit is 255 characters): a longer one is refused
/// before anything is stored or hashed.
const MAX_USERNAME_BYTES: usize = 255;

/// What the token endpoint needs; built once at start-up.
pub struct TokenEndpoint {
    /// Swapped whole on reload; each request works on the snapshot it started with.
    directory: SharedDirectory,
    pub tokens: Arc<Tokens>,
    pub password_cache: PasswordCache,
    /// What a failed login that ran no slow hash verifies against (see [`super::slow_hash`]).
    dummy_hash: DummyHash,
    pub brute_force: crate::shared::brute_force::Limiter,
    /// Told about every token issued, to notice Authorization headers stripped on `/v2/`.
    stripped: Arc<StrippedDetector>,
    audit: Audit,
    /// Identity sources beside gateway.yaml (federation: `-u oidc` with an ID token).
    identities: super::identity::Identities,
    /// Refresh tokens revoked on any replica (see `crate::shared::revocations`).
    revocations: crate::shared::revocations::Revocations,
    /// Told of every principal a token is issued to (the token store keeps last-use times).
    usage: Option<UsageHook>,
    /// Asked for a token secret neither gateway.yaml nor `identities` knows (the token
    /// store: tokens another replica made that this one has not mirrored yet).
    token_sources: super::identity::Identities,
}

/// What [`TokenEndpoint::with_usage`] calls for each principal that got a token.
pub type UsageHook = Arc<dyn Fn(&Principal) + Send + Sync>;

/// Where the caller's identity comes from.
enum Login {
    /// GET: the Authorization header, if any.
    Basic(Option<HeaderValue>),
    /// POST grant_type=password.
    Password(BasicCredentials),
    /// POST grant_type=refresh_token.
    Refresh(String),
}

/// One token request, whichever form it came in.
struct TokenRequest {
    service: Option<String>,
    /// The `account` the client named (clients name it only when they hold credentials).
    account: Option<String>,
    scopes: Vec<String>,
    /// A refresh token was asked for (`offline_token=true` / `access_type=offline`).
    offline: bool,
    login: Login,
}

impl TokenEndpoint {
    pub fn new(
        directory: SharedDirectory,
        tokens: Arc<Tokens>,
        brute_force: crate::shared::brute_force::Limiter,
        stripped: Arc<StrippedDetector>,
        audit: Audit,
    ) -> TokenEndpoint {
        TokenEndpoint {
            dummy_hash: DummyHash::new(&directory.get()),
            directory,
            tokens,
            password_cache: PasswordCache::default(),
            brute_force,
            stripped,
            audit,
            identities: super::identity::Identities::default(),
            revocations: crate::shared::revocations::Revocations::new(None),
            usage: None,
            token_sources: super::identity::Identities::default(),
        }
    }

    /// Ask `identities` too (see [`super::identity`]).
    pub fn with_identities(mut self, identities: super::identity::Identities) -> TokenEndpoint {
        self.identities = identities;
        self
    }

    /// Refresh tokens are checked against `revocations` (shared by the replicas).
    pub fn with_revocations(
        mut self,
        revocations: crate::shared::revocations::Revocations,
    ) -> TokenEndpoint {
        self.revocations = revocations;
        self
    }

    /// Revoke refresh token ids (`jti`) on every replica.
    pub fn revocations(&self) -> &crate::shared::revocations::Revocations {
        &self.revocations
    }

    /// Ask `sources` for token secrets nothing else knows.
    pub fn with_token_sources(mut self, sources: super::identity::Identities) -> TokenEndpoint {
        self.token_sources = sources;
        self
    }

    /// Call `hook` with each principal a token is issued to.
    pub fn with_usage(mut self, hook: UsageHook) -> TokenEndpoint {
        self.usage = Some(hook);
        self
    }

    /// Count and audit a refused login (the caller logs it with its detail).
    fn refused(&self, client: Option<SocketAddr>, user: &LoggedUser<'_>, reason: &'static str) {
        metrics().auth_failure(reason);
        self.audit
            .record("refused")
            .field("route", "token")
            .field("client", client.map(|c| c.ip().to_string()))
            .field("user", user.known)
            .field("user_hash", user.hash.as_deref())
            .field("user_len", user.len)
            .field("reason", reason)
            .write(&self.audit);
    }

    /// The users, groups, projects and tokens in force now.
    fn directory(&self) -> Arc<Directory> {
        self.directory.get()
    }

    /// Answer one request to `/jwt/auth`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        let caller = Caller::of(request.headers());
        let parsed = match *request.method() {
            Method::GET => Ok(get_request(
                request.uri().query(),
                request.headers().get(header::AUTHORIZATION).cloned(),
            )),
            Method::POST => post_request(request).await,
            _ => {
                let mut response = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorCode::Unsupported,
                    "the token endpoint answers GET and POST",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
                return response;
            }
        };
        match parsed {
            Ok(request) => self
                .issue(request, client, &caller)
                .await
                .unwrap_or_else(ApiError::into_response),
            Err(error) => error.into_response(),
        }
    }

    async fn issue(
        &self,
        request: TokenRequest,
        client: Option<SocketAddr>,
        caller: &Caller,
    ) -> Result<Response<Body>, ApiError> {
        let directory = self.directory();
        // The OAuth2 POST form is not GitLab's (it answers GET only): a form without a
        // service keeps meaning this one.
        let service = match (&request.service, &request.login) {
            (None, Login::Password(_) | Login::Refresh(_)) => Some(self.tokens.service()),
            (service, _) => service.as_deref(),
        };
        if service != Some(self.tokens.service()) {
            // GitLab's `JwtController#auth`: `return head :not_found unless service`, an
            // empty 404 for an unknown or missing service. Checked before the credentials
            // (GitLab checks them first): no token can come out of it, so no check is spent.
            tracing::info!(client = %client_text(client), service = ?request.service, expected = self.tokens.service(), "token request for an unknown or missing service (the registry's auth.token.service must match token.service): 404");
            return Ok(empty(StatusCode::NOT_FOUND));
        }
        let scopes = Scope::parse_all(request.scopes.iter().map(String::as_str)).map_err(|e| {
            let code = match e {
                ScopeError::Name { .. } => ErrorCode::NameInvalid,
                ScopeError::Malformed(_) => ErrorCode::Unsupported,
            };
            ApiError::bad_request(code, e.to_string())
        })?;

        let principal = match request.login {
            Login::Basic(None)
                if request.account.is_some() || (scopes.is_empty() && !caller.hops.is_empty()) =>
            {
                // Clients name an account only when they send credentials; a login through a
                // proxy without any: the header was removed on the way in.
                let account = LoggedUser::new(&directory, request.account.as_deref());
                tracing::warn!(
                    client = %client.map(|c| c.to_string()).unwrap_or_default(),
                    account = account.name(),
                    account_hash = account.hash(),
                    account_len = account.len,
                    proxy_hops = ?if caller.hops.is_empty() { "none seen".to_owned() } else { caller.hops.join("; ") },
                    "a login reached /jwt/auth WITHOUT an Authorization header (the client sees 'denied: access forbidden'); a proxy between the client and portcullis is removing it: pass the Authorization header through (nginx: do not set proxy_set_header Authorization \"\"; do not redirect to /jwt/auth)"
                );
                metrics().diagnosis(Diagnosis::StrippedTokenEndpoint);
                self.refused(client, &account, "missing_authorization");
                return Err(ApiError::access_forbidden());
            }
            Login::Basic(None) if scopes.is_empty() => {
                self.refused(client, &LoggedUser::NONE, "missing_authorization");
                return Err(ApiError::access_forbidden());
            }
            Login::Basic(None) => Principal::Anonymous,
            Login::Basic(Some(value)) => {
                let credentials = BasicCredentials::parse(value.as_bytes()).map_err(|e| {
                    self.refused(client, &LoggedUser::NONE, "malformed_authorization");
                    malformed_basic(e, client)
                })?;
                self.login_with_secret(&directory, credentials, client)
                    .await?
            }
            Login::Password(credentials) => {
                self.login_with_secret(&directory, credentials, client)
                    .await?
            }
            Login::Refresh(token) => {
                let now = OffsetDateTime::now_utc();
                let revoked = self
                    .tokens
                    .verify_internal(Purpose::Refresh, &token)
                    .is_ok_and(|claims| self.revocations.is_revoked(&claims.jti));
                self.login(client, None, &LoggedUser::NONE, async {
                    if revoked {
                        return Err(AuthFailure::TokenRevoked {
                            name: "refresh token".into(),
                        });
                    }
                    credentials::authenticate_refresh(&directory, &self.tokens, &token, now)
                })
                .await?
            }
        };

        if !principal.has_registry_ability() {
            // GitLab's CRAS#execute: `error('DENIED', status: 403, message: 'access
            // forbidden') unless has_registry_ability?`: the credential is good (the login
            // counts as a success) but carries no registry ability (only admin_mode,
            // read_user, read_repository, ...).
            let user = LoggedUser::new(&directory, Some(principal.subject()));
            tracing::info!(client = %client_text(client), user = user.name(), credential = principal.credential_kind(), reason = "insufficient_scope", "token refused: the credential has no registry scope (read_registry, write_registry, read_api or api)");
            self.refused(client, &user, "insufficient_scope");
            return Err(ApiError::access_forbidden());
        }
        if let Some(name) = super::protection::push_protected(&principal, &scopes, &directory) {
            // GitLab refuses the whole request here (not a down-scope), so `docker push` says why.
            tracing::info!(user = ?principal.subject(), repository = ?name.as_str(), reason = "protected_repository", "token refused: push to a protected repository path");
            self.refused(
                client,
                &LoggedUser::new(&directory, Some(principal.subject())),
                "protected_repository",
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "Pushing to protected repository path forbidden",
            ));
        }
        if let Some(usage) = &self.usage {
            usage(&principal);
        }
        let access = policy::grant(&principal, &scopes, &directory);
        for scope in &scopes {
            if let super::scope::Resource::Repository(name) = &scope.resource {
                if policy::owning_project(&directory, name).is_none() {
                    tracing::info!(user = ?principal.subject(), repository = ?name.as_str(), nearest = ?policy::nearest_path(&directory, name), "no project owns this repository, so nothing is granted on it: add the project to gateway.yaml's projects, or use a path under the nearest existing one");
                }
            }
        }
        if access.is_empty() && matches!(principal, Principal::Anonymous) {
            // CRAS#execute: `unless scopes.any? || current_user || deploy_token || project`
            // -> 403: an anonymous caller granted nothing (a private project, a push, the
            // catalog) is refused; a signed-in caller gets a token granting the subset.
            tracing::info!(client = %client_text(client), requested = ?scopes.iter().map(ToString::to_string).collect::<Vec<_>>(), reason = "anonymous_denied", "anonymous token request granted nothing: 403");
            self.refused(client, &LoggedUser::NONE, "anonymous_denied");
            return Err(ApiError::access_forbidden());
        }
        let now = SystemTime::now();
        let bound = credentials::binding(&principal, &directory);
        let binding = bound.as_ref().map(|(binding, _)| binding.clone());
        let issued = self
            .tokens
            .issue_for(
                principal.subject(),
                access.clone(),
                binding.clone(),
                principal.gitlab_info(),
                now,
            )
            .map_err(signing_failed)?;
        let refresh_token = if request.offline {
            self.refresh_token(&principal, bound, now)?
        } else {
            None
        };
        metrics().token_issued(principal.credential_kind(), self.tokens.algorithm());
        self.audit
            .record("token")
            .field("client", client.map(|c| c.ip().to_string()))
            .field("user", principal.subject())
            .field("credential", principal.credential_kind())
            .field("credential_name", principal.credential_name())
            .field(
                "requested",
                scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field(
                "granted",
                access
                    .iter()
                    .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
                    .collect::<Vec<_>>(),
            )
            .field("refresh_token", refresh_token.is_some())
            .field("issuer", federated(&principal).map(|f| f.issuer.clone()))
            .field("subject", federated(&principal).map(|f| f.subject.clone()))
            .field(
                "matched_claims",
                federated(&principal).map(|f| f.matched.clone()),
            )
            .write(&self.audit);
        tracing::debug!(
            user = principal.subject(),
            credential = principal.credential_kind(),
            requested = ?scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            granted = ?access.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect::<Vec<_>>(),
            refresh_token = refresh_token.is_some(),
            "token issued"
        );

        let issued_at = issued
            .issued_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut body = json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        if let Some(addr) = client {
            self.stripped
                .token_issued(addr.ip(), &caller.user_agent)
                .await;
        }
        let mut response = Response::new(full(body.to_string()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if !matches!(principal, Principal::Anonymous) {
            response
                .extensions_mut()
                .insert(RequestUser(principal.subject().to_owned()));
        }
        Ok(response)
    }

    /// A refresh token bound to the principal's credential, when it can have one.
    fn refresh_token(
        &self,
        principal: &Principal,
        bound: Option<(String, Option<OffsetDateTime>)>,
        now: SystemTime,
    ) -> Result<Option<String>, ApiError> {
        // CI jobs and anonymous callers get no refresh tokens.
        let (Some((binding, credential_expires)), false) =
            (bound, matches!(principal, Principal::CiJob { .. }))
        else {
            return Ok(None);
        };
        let default_exp = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
            + self.tokens.refresh_lifetime().as_secs();
        let exp = credential_expires
            .map(|at| {
                u64::try_from(at.unix_timestamp())
                    .unwrap_or(0)
                    .min(default_exp)
            })
            .unwrap_or(default_exp);
        self.tokens
            .issue_internal(
                Purpose::Refresh,
                principal.subject(),
                None,
                Some(binding),
                exp,
                now,
            )
            .map(Some)
            .map_err(signing_failed)
    }

    /// Username + password or token (Basic header or the OAuth2 password grant).
    async fn login_with_secret(
        &self,
        directory: &Arc<Directory>,
        credentials: BasicCredentials,
        client: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let user = LoggedUser::new(directory, Some(&credentials.username));
        if credentials.username.len() > MAX_USERNAME_BYTES {
            // Nobody has such a name: refused without counting, storing or hashing anything.
            let failure = AuthFailure::UnknownUser;
            tracing::info!(client = %client_text(client), user_hash = user.hash(), user_len = user.len, reason = "username_too_long", "login refused: the username is longer than {MAX_USERNAME_BYTES} bytes");
            self.refused(client, &user, "username_too_long");
            return Err(unauthorized(failure.client_message())
                .with_detail(json!({ "reason": client_reason(&failure) })));
        }
        if credentials.username == crate::config::federation::OIDC_USERNAME
            && self
                .identities
                .sources()
                .iter()
                .any(|source| source.name() == "federation")
        {
            // An OIDC ID token: a signature nobody can guess, counted per address only (as
            // job tokens), so junk tokens cannot lock every CI job out by username.
            return self
                .login(client, None, &user, async {
                    use super::identity::Lookup;
                    match self
                        .identities
                        .authenticate(&credentials, OffsetDateTime::now_utc())
                        .await
                    {
                        Lookup::Found(principal) => Ok(principal),
                        Lookup::Refused(failure) => Err(failure),
                        Lookup::NotMine => Err(AuthFailure::UnknownUser),
                        Lookup::Unavailable(why) => Err(AuthFailure::SourceUnavailable {
                            source_name: "the OIDC issuer".into(),
                            why,
                        }),
                    }
                })
                .await;
        }
        if credentials.username == credentials::CI_USERNAME {
            // A job token is a signature checked without a slow hash: it cannot be guessed,
            // and banning the one username every CI job uses would let anyone stop them all.
            // The client address is still counted.
            return self
                .login(client, None, &user, async {
                    credentials::authenticate_job(directory, &self.tokens, &credentials.secret)
                })
                .await;
        }
        let username = credentials.username.clone();
        // An empty username can only go with a personal or access token (found by its
        // secret alone): not counted by username, or anyone could ban `-u ""` for all.
        let counted = Some(username.as_str()).filter(|u| !u.is_empty());
        self.login(client, counted, &user, async {
            credentials::authenticate_with_sources(
                directory,
                &self.identities,
                &self.password_cache,
                &self.dummy_hash,
                &self.token_sources,
                &credentials,
                OffsetDateTime::now_utc(),
            )
            .await
        })
        .await
    }

    /// The token page's sign-in (`crate::page`): a username and a password or token, checked
    /// exactly as a Basic login here (every identity source, the same brute-force counters,
    /// bans and refusal records), so the page is no way around the limits of `/jwt/auth`.
    pub async fn sign_in(
        &self,
        credentials: BasicCredentials,
        client: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let directory = self.directory();
        self.login_with_secret(&directory, credentials, client)
            .await
    }

    /// Run one credential check under the brute-force limits: refuse banned clients and
    /// usernames before checking, reserve the attempt (so simultaneous guesses count before
    /// their checks finish), settle it, log every refusal with its reason. `username` is what
    /// is counted (none for CI job and refresh tokens), `user` how it is logged.
    async fn login(
        &self,
        client: Option<SocketAddr>,
        username: Option<&str>,
        user: &LoggedUser<'_>,
        check: impl Future<Output = Result<Principal, AuthFailure>>,
    ) -> Result<Principal, ApiError> {
        let subjects: Vec<Subject<'_>> = client
            .map(|c| Subject::Client(c.ip()))
            .into_iter()
            .chain(username.map(Subject::Username))
            .collect();
        let attempt = match self.brute_force.begin(&subjects).await {
            Ok(attempt) => attempt,
            Err(Refusal::Banned { subject, remaining }) => {
                let who = subject.noun();
                tracing::info!(client = %client_text(client), user = user.name(), user_hash = user.hash(), user_len = user.len, reason = "banned", "login refused: this {who} is banned for {}s more", remaining.as_secs());
                self.refused(client, user, "banned");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Denied,
                    format!(
                        "too many failed logins from this {who}: try again in {} minutes",
                        remaining.as_secs().div_ceil(60)
                    ),
                ));
            }
            Err(Refusal::Busy { subject }) => {
                let who = subject.noun();
                tracing::info!(client = %client_text(client), user = user.name(), user_hash = user.hash(), user_len = user.len, reason = "too_many_attempts", "login refused: this {who}'s failed and unfinished logins reach brute_force.max_failures, or {} are being checked at once", super::brute_force::MAX_IN_FLIGHT);
                self.refused(client, user, "too_many_attempts");
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!("too many logins from this {who} are failing or still being checked: try again later"),
                ));
            }
        };
        match check.await {
            Ok(principal) => {
                attempt.succeeded().await;
                Ok(principal)
            }
            // An issuer down: not the client's fault, and an ID token is a signature no one
            // can guess, so it is not counted. A directory (LDAP) outage IS counted: its
            // password was still compared with the password cache, and uncounted 503s would
            // let anyone guess against that cache at no cost.
            Err(failure @ AuthFailure::SourceUnavailable { .. }) if !matches!(&failure, AuthFailure::SourceUnavailable { source_name, .. } if source_name == "ldap") =>
            {
                attempt.abandoned().await;
                tracing::info!(client = %client_text(client), user = user.name(), reason = failure.reason(), "login refused: {failure}");
                self.refused(client, user, failure.reason());
                Err(refusal(&failure))
            }
            Err(failure) => {
                for ban in attempt.failed().await {
                    tracing::warn!(
                        client = %client_text(client),
                        user = user.name(),
                        user_hash = user.hash(),
                        banned = ban.subject.noun(),
                        ban_seconds = ban.remaining.as_secs(),
                        "banned after too many failed logins (brute_force.max_failures within brute_force.window)"
                    );
                }
                tracing::info!(client = %client_text(client), user = user.name(), user_hash = user.hash(), user_len = user.len, reason = failure.reason(), "login refused: {failure}");
                self.refused(client, user, failure.reason());
                Err(refusal(&failure))
            }
        }
    }
}

/// The federated principal's details, for the audit record.
fn federated(principal: &Principal) -> Option<&super::federation::Federated> {
    match principal {
        Principal::Federated(f) => Some(f),
        _ => None,
    }
}

fn client_text(client: Option<SocketAddr>) -> String {
    client.map(|c| c.to_string()).unwrap_or_default()
}

/// A username as it may appear in a log line. A name the directory knows is logged (escaped:
/// recorded with `Debug`); any other only as its length and the first 12 hex digits of its
/// SHA-256 (`user_hash`), enough to tell repeated attempts apart: people paste tokens and
/// passwords into the username field, and a log must not keep them.
pub(crate) struct LoggedUser<'a> {
    known: Option<&'a str>,
    hash: Option<String>,
    len: Option<usize>,
}

impl<'a> LoggedUser<'a> {
    const NONE: LoggedUser<'static> = LoggedUser {
        known: None,
        hash: None,
        len: None,
    };

    fn new(directory: &Directory, name: Option<&'a str>) -> LoggedUser<'a> {
        let Some(name) = name else {
            return LoggedUser::NONE;
        };
        let known = name.len() <= MAX_USERNAME_BYTES
            && (name == credentials::CI_USERNAME
                || name == crate::config::federation::OIDC_USERNAME
                || directory.user(name).is_some()
                || !directory.namespace_tokens(name).is_empty());
        if known {
            return LoggedUser {
                known: Some(name),
                hash: None,
                len: None,
            };
        }
        let digest = credentials::token_digest(name);
        LoggedUser {
            known: None,
            hash: Some(digest[..6].iter().map(|b| format!("{b:02x}")).collect()),
            len: Some(name.len()),
        }
    }

    /// The known name, for a tracing field (absent otherwise).
    fn name(&self) -> Option<tracing::field::DebugValue<&'a str>> {
        self.known.map(tracing::field::debug)
    }

    fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }
}

/// What the request says about the client and the proxies it came through.
struct Caller {
    user_agent: String,
    /// `X-Forwarded-For`, `Forwarded` and `Via`, as seen.
    hops: Vec<String>,
}

impl Caller {
    fn of(headers: &http::HeaderMap) -> Caller {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Caller {
            user_agent: text("user-agent").unwrap_or_default(),
            hops: ["x-forwarded-for", "forwarded", "via"]
                .iter()
                .filter_map(|name| text(name).map(|value| format!("{name}: {value}")))
                .collect(),
        }
    }
}

fn get_request(query: Option<&str>, authorization: Option<HeaderValue>) -> TokenRequest {
    let mut request = TokenRequest {
        service: None,
        account: None,
        scopes: Vec::new(),
        offline: false,
        login: Login::Basic(authorization),
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "service" => request.service = Some(value.into_owned()),
            "account" => request.account = Some(value.into_owned()).filter(|a| !a.is_empty()),
            "scope" => request.scopes.push(value.into_owned()),
            "offline_token" => request.offline = value == "true",
            _ => {}
        }
    }
    request
}

/// Read and parse the OAuth2 form of a POST.
async fn post_request(request: Request<Incoming>) -> Result<TokenRequest, ApiError> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::bad_request(
                ErrorCode::Unsupported,
                format!("the form could not be read (at most {MAX_FORM_BYTES} bytes)"),
            )
        })?
        .to_bytes();
    let mut fields = std::collections::HashMap::new();
    for (key, value) in form_urlencoded::parse(&body) {
        fields.insert(key.into_owned(), value.into_owned());
    }
    let mut take = |name: &str| fields.remove(name);
    let missing = |name: &str| {
        ApiError::bad_request(ErrorCode::Unsupported, format!("missing form field {name}"))
    };
    let login = match take("grant_type").as_deref() {
        Some("password") => Login::Password(BasicCredentials {
            username: take("username")
                .filter(|u| !u.is_empty())
                .ok_or_else(|| missing("username"))?,
            secret: take("password").ok_or_else(|| missing("password"))?,
        }),
        Some("refresh_token") => {
            Login::Refresh(take("refresh_token").ok_or_else(|| missing("refresh_token"))?)
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                ErrorCode::Unsupported,
                format!("unsupported grant_type {other:?}: use password or refresh_token"),
            ))
        }
        None => return Err(missing("grant_type")),
    };
    Ok(TokenRequest {
        service: take("service"),
        account: None,
        scopes: take("scope").into_iter().collect(),
        offline: take("access_type").as_deref() == Some("offline"),
        login,
    })
}

/// A response with no body, as GitLab's `head` sends.
fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(String::new()));
    *response.status_mut() = status;
    response
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_challenge(HeaderValue::from_static(BASIC_REALM))
}

fn malformed_basic(error: HeaderError, client: Option<SocketAddr>) -> ApiError {
    tracing::info!(client = %client.map(|c| c.to_string()).unwrap_or_default(), reason = "malformed_authorization", "login refused: {error}");
    unauthorized(match error {
        HeaderError::NotBasic => {
            "HTTP Basic: Access denied. The token endpoint takes Basic credentials (username and password or access token)."
        }
        HeaderError::Malformed => "HTTP Basic: Access denied. The Authorization header is not valid Basic credentials.",
    })
}

fn signing_failed(error: jsonwebtoken::errors::Error) -> ApiError {
    tracing::error!(error = %error, "signing a token failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "the gateway could not sign a token",
    )
}

/// What a refused login answers: 401 with the reason, except a good ID token that no rule
/// grants anything (403, naming the federation, not the claim) and an identity source that
/// cannot answer (503).
fn refusal(failure: &AuthFailure) -> ApiError {
    match failure {
        AuthFailure::NoFederationRule { federation, .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!("access forbidden: no rule of federation {federation:?} grants this ID token anything"),
        ),
        // Not the client's fault: a registry-style 503, so clients say the service is
        // unavailable rather than that the password is wrong.
        AuthFailure::SourceUnavailable { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            failure.client_message(),
        )
        .with_detail(json!({ "reason": failure.reason() })),
        _ => unauthorized(failure.client_message())
            .with_detail(json!({ "reason": client_reason(failure) })),
    }
}

/// The reason given to clients: an unknown user and a wrong secret look the same.
fn client_reason(failure: &AuthFailure) -> &'static str {
    match failure {
        AuthFailure::UnknownUser | AuthFailure::WrongSecret => "invalid_credentials",
        other => other.reason(),
    }
}
