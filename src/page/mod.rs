//! The token page, `/-/profile/personal_access_tokens` (GitLab's own path): sign in, list,
//! create and revoke personal access tokens, and, for maintainers, their projects' and
//! groups' deploy and access tokens. Plain HTML forms, POST-redirect-GET, no JavaScript
//! needed (one inline script adds copy buttons).
//!
//! Glue only, like [`crate::auth::endpoint`]: sign-in goes through the token endpoint's
//! credential check ([`TokenEndpoint::sign_in`]: the same identity sources and brute-force
//! bans as `/jwt/auth`), tokens through [`backend::TokenBackend`] (the store), sessions
//! through [`session::Sessions`], rendering through [`html`]. Every POST must carry the
//! session's CSRF token and, when the browser sends an Origin, come from `public_url`'s
//! origin; a refused POST changes nothing. Nothing here logs a password, token or session id.

pub mod backend;
pub mod form;
pub mod html;
pub mod service;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use time::Date;

use self::backend::{
    maintained, BackendError, Namespace, NamespaceTokenKind, NewToken, TokenBackend,
};
use self::form::{Form, FormError};
use self::html::{NamespaceView, SignedIn, TokensView};
use self::session::{Flash, Revealed, Session, SessionLimits, Sessions, COOKIE, PRE_COOKIE};
use crate::auth::credentials::{BasicCredentials, Credential, Principal};
use crate::auth::directory::{NamespaceKind, Role, SharedDirectory};
use crate::auth::endpoint::TokenEndpoint;
use crate::auth::scope::RepositoryName;
use crate::body::{full, Body};
use crate::config::PublicUrl;
use crate::telemetry::audit::Audit;

/// The page (GitLab's path).
pub const PAGE_PATH: &str = "/-/profile/personal_access_tokens";
/// POST: revoke one of your personal access tokens (`id`).
pub const REVOKE_PATH: &str = "/-/profile/personal_access_tokens/revoke";
/// POST: create a deploy or access token of a project or group you maintain.
pub const NAMESPACE_PATH: &str = "/-/profile/personal_access_tokens/namespace_tokens";
/// POST: revoke one.
pub const NAMESPACE_REVOKE_PATH: &str = "/-/profile/personal_access_tokens/namespace_tokens/revoke";
pub const SIGN_IN_PATH: &str = "/-/sign_in";
pub const SIGN_OUT_PATH: &str = "/-/sign_out";
/// The cookies' path: the page and its actions, nothing else of the gateway.
const COOKIE_PATH: &str = "/-/";
/// Longest token name accepted (GitLab's limit).
const MAX_NAME_CHARS: usize = 255;

/// Does the page answer this path?
pub fn owns(path: &str) -> bool {
    [
        PAGE_PATH,
        REVOKE_PATH,
        NAMESPACE_PATH,
        NAMESPACE_REVOKE_PATH,
        SIGN_IN_PATH,
        SIGN_OUT_PATH,
    ]
    .contains(&path)
}

/// The page's state; built once with the gateway.
pub struct TokenPage {
    sessions: Sessions,
    backend: Arc<dyn TokenBackend>,
    directory: SharedDirectory,
    public_url: PublicUrl,
    audit: Audit,
}

/// One POST's outcome before it is turned into a response.
type Outcome = Result<Response<Body>, Response<Body>>;

impl TokenPage {
    pub fn new(
        limits: SessionLimits,
        backend: Arc<dyn TokenBackend>,
        directory: SharedDirectory,
        public_url: PublicUrl,
        audit: Audit,
    ) -> TokenPage {
        TokenPage {
            sessions: Sessions::new(limits),
            backend,
            directory,
            public_url,
            audit,
        }
    }

    fn secure(&self) -> bool {
        self.public_url.scheme == "https"
    }

    /// Answer one request to a path [`owns`] says is the page's.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        endpoint: &TokenEndpoint,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, PAGE_PATH) => self.show(request.headers()).await,
            (Method::GET | Method::HEAD, SIGN_IN_PATH | SIGN_OUT_PATH) => redirect(PAGE_PATH),
            (Method::POST, _) => match self.post(request, endpoint, client, &path).await {
                Ok(response) | Err(response) => response,
            },
            (_, PAGE_PATH) => method_not_allowed("GET, HEAD"),
            _ => method_not_allowed("POST"),
        }
    }

    /// The session the request's cookie names, if it is live and its credential still good.
    async fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let session = self.sessions.take(&id, Instant::now())?;
        if !self.backend.still_valid(&session.principal).await {
            tracing::info!(user = ?session.principal.subject(), "token page session ended: its credential is no longer valid");
            self.sessions.end(&id);
            return None;
        }
        Some((id, session))
    }

    async fn show(&self, headers: &HeaderMap) -> Response<Body> {
        match self.session(headers).await {
            Some((_, session)) => self.tokens_page(&session, StatusCode::OK).await,
            None => {
                let ended = cookie(headers, COOKIE).is_some();
                let flash =
                    ended.then(|| Flash::Alert("Your session has ended: sign in again.".into()));
                self.sign_in_page(StatusCode::OK, flash.as_ref(), "", ended)
            }
        }
    }

    /// The sign-in form with a fresh double-submit cookie.
    fn sign_in_page(
        &self,
        status: StatusCode,
        flash: Option<&Flash>,
        username: &str,
        clear_session: bool,
    ) -> Response<Body> {
        let pre = session::pre_session_token();
        let mut response = html_response(status, html::sign_in(&pre, flash, username));
        self.set_cookie(&mut response, PRE_COOKIE, &pre, 3600);
        if clear_session {
            self.set_cookie(&mut response, COOKIE, "", 0);
        }
        response
    }

    async fn tokens_page(&self, session: &Session, status: StatusCode) -> Response<Body> {
        self.tokens_page_with(session, status, session.flash.as_ref())
            .await
    }

    async fn tokens_page_with(
        &self,
        session: &Session,
        status: StatusCode,
        flash: Option<&Flash>,
    ) -> Response<Body> {
        let principal = &session.principal;
        let (personal, personal_error) = match self.backend.personal_tokens(principal).await {
            Ok(rows) => (rows, None),
            Err(error) => (Vec::new(), Some(error.to_string())),
        };
        let directory = self.directory.get();
        let mut namespaces = Vec::new();
        for namespace in maintained(&directory, principal) {
            let deploy = self
                .backend
                .namespace_tokens(principal, &namespace, NamespaceTokenKind::Deploy)
                .await
                .map_err(|e| e.to_string());
            let access = self
                .backend
                .namespace_tokens(principal, &namespace, NamespaceTokenKind::Access)
                .await
                .map_err(|e| e.to_string());
            namespaces.push(NamespaceView {
                namespace,
                deploy,
                access,
            });
        }
        let view = TokensView {
            who: SignedIn {
                username: principal.subject(),
                csrf: &session.csrf,
            },
            registry_host: &self.public_url.authority,
            flash,
            revealed: session.revealed.as_ref(),
            personal: &personal,
            personal_error,
            namespaces: &namespaces,
            max_lifetime_days: self.backend.max_lifetime_days(),
        };
        html_response(status, html::tokens(&view))
    }

    /// A page that says what was refused (nothing was changed).
    fn refusal(
        &self,
        status: StatusCode,
        title: &str,
        text: &str,
        session: Option<&Session>,
    ) -> Response<Body> {
        let who = session.map(|s| SignedIn {
            username: s.principal.subject(),
            csrf: &s.csrf,
        });
        html_response(status, html::message(title, text, who.as_ref()))
    }

    /// Same-origin check: a browser's Origin (or Sec-Fetch-Site) must say the form came
    /// from this gateway's own pages.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let expected = self.public_url.origin();
            return origin
                .to_str()
                .is_ok_and(|o| o.eq_ignore_ascii_case(&expected));
        }
        headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| site == "same-origin" || site == "none")
    }

    async fn post(
        &self,
        request: Request<Incoming>,
        endpoint: &TokenEndpoint,
        client: Option<SocketAddr>,
        path: &str,
    ) -> Outcome {
        if !self.same_origin(request.headers()) {
            tracing::info!(client = ?client, origin = ?request.headers().get(header::ORIGIN), path, "token page POST refused: not from the gateway's own origin");
            self.audit_refused(client, None, "cross_origin", path);
            return Err(self.refusal(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form was sent from another site, so it was refused (cross-site request forgery protection). Nothing was changed.",
                None,
            ));
        }
        if path == SIGN_IN_PATH {
            return self.sign_in(request, endpoint, client).await;
        }
        let headers = request.headers().clone();
        let Some((id, session)) = self.session(&headers).await else {
            if path == SIGN_OUT_PATH {
                let mut response = redirect(PAGE_PATH);
                self.set_cookie(&mut response, COOKIE, "", 0);
                return Ok(response);
            }
            self.audit_refused(client, None, "no_session", path);
            let mut response = self.refusal(
                StatusCode::FORBIDDEN,
                "Session ended",
                "You are not signed in, or your session has ended: sign in again. Nothing was changed.",
                None,
            );
            self.set_cookie(&mut response, COOKIE, "", 0);
            return Err(response);
        };
        let form = self.read_form(request, Some(&session)).await?;
        let sent = form.one("authenticity_token").unwrap_or("");
        if !session.csrf_matches(sent) {
            let user = session.principal.subject();
            tracing::info!(client = ?client, user = ?user, path, "token page POST refused: missing or wrong CSRF token");
            self.audit_refused(client, Some(user), "csrf", path);
            return Err(self.refusal(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form had no valid authenticity token (cross-site request forgery protection), so it was refused. Reload the page and try again. Nothing was changed.",
                Some(&session),
            ));
        }
        match path {
            SIGN_OUT_PATH => {
                self.sessions.end(&id);
                self.audit
                    .record("page_sign_out")
                    .field("client", client.map(|c| c.ip().to_string()))
                    .field("user", session.principal.subject())
                    .write(&self.audit);
                let mut response = redirect(PAGE_PATH);
                self.set_cookie(&mut response, COOKIE, "", 0);
                Ok(response)
            }
            PAGE_PATH => self.create_personal(&id, &session, &form).await,
            REVOKE_PATH => self.revoke_personal(&id, &session, &form).await,
            NAMESPACE_PATH => self.create_namespace(&id, &session, &form).await,
            NAMESPACE_REVOKE_PATH => self.revoke_namespace(&id, &session, &form).await,
            _ => Err(self.refusal(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page.",
                Some(&session),
            )),
        }
    }

    async fn read_form(
        &self,
        request: Request<Incoming>,
        session: Option<&Session>,
    ) -> Result<Form, Response<Body>> {
        form::read(request).await.map_err(|error| {
            let status = match error {
                FormError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                FormError::NotForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                FormError::Broken => StatusCode::BAD_REQUEST,
            };
            tracing::info!(error = %error, "token page form refused");
            self.refusal(
                status,
                "Form refused",
                &format!("{error}. Nothing was changed."),
                session,
            )
        })
    }

    async fn sign_in(
        &self,
        request: Request<Incoming>,
        endpoint: &TokenEndpoint,
        client: Option<SocketAddr>,
    ) -> Outcome {
        let pre = cookie(request.headers(), PRE_COOKIE);
        let form = self.read_form(request, None).await?;
        if !session::pre_session_matches(pre.as_deref(), form.one("authenticity_token")) {
            tracing::info!(client = ?client, "token page sign-in refused: missing or wrong CSRF token");
            self.audit_refused(client, None, "csrf", SIGN_IN_PATH);
            return Err(self.sign_in_page(
                StatusCode::FORBIDDEN,
                Some(&Flash::Alert(
                    "The sign-in form had no valid authenticity token (cross-site request forgery protection): try again.".into(),
                )),
                "",
                false,
            ));
        }
        let (Some(username), Some(secret)) = (form.one("username"), form.one("password")) else {
            return Err(self.sign_in_page(
                StatusCode::BAD_REQUEST,
                Some(&Flash::Alert(
                    "Enter a username and a password or token.".into(),
                )),
                "",
                false,
            ));
        };
        let credentials = BasicCredentials {
            username: username.to_owned(),
            secret: secret.to_owned(),
        };
        let principal = match endpoint.sign_in(credentials, client).await {
            Ok(principal) => principal,
            Err(error) => {
                let reason = error
                    .detail
                    .as_ref()
                    .and_then(|d| d["reason"].as_str())
                    .unwrap_or("refused")
                    .to_owned();
                let text = match reason.as_str() {
                    "invalid_credentials" => "Wrong username, password or token.".to_owned(),
                    _ => error
                        .message
                        .trim_start_matches("HTTP Basic: Access denied. ")
                        .to_owned(),
                };
                let shown = if reason == "invalid_credentials" {
                    ""
                } else {
                    username
                };
                return Err(self.sign_in_page(
                    error.status,
                    Some(&Flash::Alert(text)),
                    shown,
                    false,
                ));
            }
        };
        let api_token = match principal {
            Principal::User {
                credential: Credential::PersonalAccessToken { .. },
                ..
            } => self.backend.is_api_token(secret),
            _ => true,
        };
        let allowed = may_sign_in(&principal).and_then(|()| {
            api_token
                .then_some(())
                .ok_or("This token cannot sign in here: it needs the api scope.")
        });
        if let Err(text) = allowed {
            tracing::info!(client = ?client, user = ?principal.subject(), credential = principal.credential_kind(), reason = "page_needs_api_scope", "token page sign-in refused: {text}");
            self.audit_refused(
                client,
                Some(principal.subject()),
                "page_needs_api_scope",
                SIGN_IN_PATH,
            );
            return Err(self.sign_in_page(
                StatusCode::FORBIDDEN,
                Some(&Flash::Alert(text.into())),
                "",
                false,
            ));
        }
        let user = principal.subject().to_owned();
        let kind = principal.credential_kind();
        let id = self.sessions.start(principal, Instant::now());
        tracing::info!(client = ?client, user = ?user, credential = kind, "token page: signed in");
        self.audit
            .record("page_sign_in")
            .field("client", client.map(|c| c.ip().to_string()))
            .field("user", user.as_str())
            .field("credential", kind)
            .write(&self.audit);
        let mut response = redirect(PAGE_PATH);
        let lifetime = self.sessions.limits().lifetime.as_secs();
        self.set_cookie(&mut response, COOKIE, &id, lifetime);
        self.set_cookie(&mut response, PRE_COOKIE, "", 0);
        Ok(response)
    }

    async fn create_personal(&self, id: &str, session: &Session, form: &Form) -> Outcome {
        let new = self.new_token(form, session).await?;
        let name = new.name.clone();
        match self.backend.create_personal(&session.principal, new).await {
            Ok(created) => {
                self.log_change(
                    session,
                    "page_token_created",
                    "personal_access_token",
                    None,
                    created.row.id,
                    &name,
                );
                let revealed = Revealed {
                    username: created.username.clone(),
                    label: format!("personal access token {name}"),
                    secret: created.secret,
                };
                self.sessions.stash(
                    id,
                    Some(revealed),
                    Some(Flash::Notice(format!(
                        "Created personal access token {name}."
                    ))),
                );
                Ok(redirect(PAGE_PATH))
            }
            Err(error) => Err(self.backend_refusal(session, error).await),
        }
    }

    async fn revoke_personal(&self, id: &str, session: &Session, form: &Form) -> Outcome {
        let token_id = self.token_id(form, session).await?;
        match self
            .backend
            .revoke_personal(&session.principal, token_id)
            .await
        {
            Ok(row) => {
                self.log_change(
                    session,
                    "page_token_revoked",
                    "personal_access_token",
                    None,
                    row.id,
                    &row.name,
                );
                self.sessions.stash(
                    id,
                    None,
                    Some(Flash::Notice(format!(
                        "Revoked personal access token {}.",
                        row.name
                    ))),
                );
                Ok(redirect(PAGE_PATH))
            }
            Err(error) => Err(self.backend_refusal(session, error).await),
        }
    }

    async fn create_namespace(&self, id: &str, session: &Session, form: &Form) -> Outcome {
        let (namespace, kind) = self.namespace(form, session).await?;
        let mut new = self.new_token(form, session).await?;
        if kind == NamespaceTokenKind::Access {
            let role = form.one("role").unwrap_or("developer");
            new.role = Some(role.parse::<Role>().map_err(|text| {
                self.refusal(
                    StatusCode::BAD_REQUEST,
                    "Form refused",
                    &text,
                    Some(session),
                )
            })?);
        } else {
            new.username = form
                .one("username")
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned);
        }
        let name = new.name.clone();
        match self
            .backend
            .create_namespace_token(&session.principal, &namespace, kind, new)
            .await
        {
            Ok(created) => {
                let what = kind_label(kind, namespace.kind);
                self.log_change(
                    session,
                    "page_token_created",
                    what,
                    Some(&namespace),
                    created.row.id,
                    &name,
                );
                let revealed = Revealed {
                    username: created.username.clone(),
                    label: format!(
                        "{} {name} of {}",
                        what.replace('_', " "),
                        namespace.path.as_str()
                    ),
                    secret: created.secret,
                };
                self.sessions.stash(
                    id,
                    Some(revealed),
                    Some(Flash::Notice(format!(
                        "Created {} {name} of {}.",
                        what.replace('_', " "),
                        namespace.path.as_str()
                    ))),
                );
                Ok(redirect(PAGE_PATH))
            }
            Err(error) => Err(self.backend_refusal(session, error).await),
        }
    }

    async fn revoke_namespace(&self, id: &str, session: &Session, form: &Form) -> Outcome {
        let (namespace, kind) = self.namespace(form, session).await?;
        let token_id = self.token_id(form, session).await?;
        match self
            .backend
            .revoke_namespace_token(&session.principal, &namespace, kind, token_id)
            .await
        {
            Ok(row) => {
                let what = kind_label(kind, namespace.kind);
                self.log_change(
                    session,
                    "page_token_revoked",
                    what,
                    Some(&namespace),
                    row.id,
                    &row.name,
                );
                self.sessions.stash(
                    id,
                    None,
                    Some(Flash::Notice(format!(
                        "Revoked {} {} of {}.",
                        what.replace('_', " "),
                        row.name,
                        namespace.path.as_str()
                    ))),
                );
                Ok(redirect(PAGE_PATH))
            }
            Err(error) => Err(self.backend_refusal(session, error).await),
        }
    }

    /// Name, scopes and expiry from a create form, checked for shape (the store checks the
    /// rules).
    async fn new_token(&self, form: &Form, session: &Session) -> Result<NewToken, Response<Body>> {
        let name = form.one("name").map(str::trim).unwrap_or("");
        let invalid = |text: &str| Flash::Alert(text.to_owned());
        let problem = if name.is_empty() {
            Some(invalid("Give the token a name."))
        } else if name.chars().count() > MAX_NAME_CHARS {
            Some(invalid("A token name may be at most 255 characters."))
        } else if name.chars().any(char::is_control) {
            Some(invalid("A token name may not contain control characters."))
        } else if form.all("scopes").is_empty() {
            Some(invalid("Choose at least one scope."))
        } else {
            None
        };
        let expires_at = match form
            .one("expires_at")
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => None,
            Some(text) => {
                match Date::parse(text, &time::format_description::well_known::Iso8601::DATE) {
                    Ok(date) => Some(date),
                    Err(_) => {
                        return Err(self
                            .tokens_page_with(
                                session,
                                StatusCode::BAD_REQUEST,
                                Some(&invalid(
                                    "The expiration date must be a date such as 2030-12-31.",
                                )),
                            )
                            .await)
                    }
                }
            }
        };
        if let Some(problem) = problem {
            return Err(self
                .tokens_page_with(session, StatusCode::BAD_REQUEST, Some(&problem))
                .await);
        }
        Ok(NewToken {
            name: name.to_owned(),
            scopes: form.all("scopes").to_vec(),
            expires_at,
            role: None,
            username: None,
        })
    }

    async fn token_id(&self, form: &Form, session: &Session) -> Result<u64, Response<Body>> {
        match form.one("id").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => Ok(id),
            None => Err(self
                .tokens_page_with(
                    session,
                    StatusCode::BAD_REQUEST,
                    Some(&Flash::Alert("No token was named.".into())),
                )
                .await),
        }
    }

    /// The project or group a form names, if the caller maintains it; otherwise a 404 that
    /// does not say whether it exists.
    async fn namespace(
        &self,
        form: &Form,
        session: &Session,
    ) -> Result<(Namespace, NamespaceTokenKind), Response<Body>> {
        let kind = match form.one("namespace_kind") {
            Some("project") => Some(NamespaceKind::Project),
            Some("group") => Some(NamespaceKind::Group),
            _ => None,
        };
        let token_kind = match form.one("token_kind") {
            Some("deploy") => Some(NamespaceTokenKind::Deploy),
            Some("access") => Some(NamespaceTokenKind::Access),
            _ => None,
        };
        let path = form
            .one("namespace")
            .and_then(|p| RepositoryName::parse(p).ok());
        let found = match (path, kind, token_kind) {
            (Some(path), Some(kind), Some(token_kind)) => {
                let namespace = Namespace { path, kind };
                maintained(&self.directory.get(), &session.principal)
                    .contains(&namespace)
                    .then_some((namespace, token_kind))
            }
            _ => None,
        };
        found.ok_or_else(|| {
            tracing::info!(user = ?session.principal.subject(), namespace = ?form.one("namespace"), "token page: a project or group the user does not maintain");
            self.refusal(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no project or group of that path that you maintain. Nothing was changed.",
                Some(session),
            )
        })
    }

    async fn backend_refusal(&self, session: &Session, error: BackendError) -> Response<Body> {
        let status = match error {
            BackendError::Invalid(_) => StatusCode::BAD_REQUEST,
            BackendError::NotFound => StatusCode::NOT_FOUND,
            BackendError::Forbidden => StatusCode::FORBIDDEN,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let text = match &error {
            BackendError::NotFound => {
                "There is no such token among yours. Nothing was changed.".to_owned()
            }
            other => format!("{other}. Nothing was changed."),
        };
        self.tokens_page_with(session, status, Some(&Flash::Alert(text)))
            .await
    }

    fn audit_refused(
        &self,
        client: Option<SocketAddr>,
        user: Option<&str>,
        reason: &str,
        path: &str,
    ) {
        self.audit
            .record("refused")
            .field("route", "page")
            .field("path", path)
            .field("client", client.map(|c| c.ip().to_string()))
            .field("user", user)
            .field("reason", reason)
            .write(&self.audit);
    }

    #[allow(clippy::too_many_arguments)]
    fn log_change(
        &self,
        session: &Session,
        event: &str,
        kind: &str,
        namespace: Option<&Namespace>,
        id: u64,
        name: &str,
    ) {
        // The token service writes the audit record (who, what, id and name); this line
        // says it came through the page.
        tracing::info!(user = ?session.principal.subject(), token_kind = kind, token_id = id, token_name = ?name, namespace = ?namespace.map(|n| n.path.as_str()), "token page: {event}");
    }

    /// `Set-Cookie` for `name`: `HttpOnly`, `SameSite=Strict`, `Path=/-/`, and `Secure`
    /// whenever `public_url` is https. `max_age` 0 deletes it.
    fn set_cookie(&self, response: &mut Response<Body>, name: &str, value: &str, max_age: u64) {
        let secure = if self.secure() { "; Secure" } else { "" };
        let text = format!(
            "{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// Only a person signs in here: a password, or a personal access token with `api` (the
/// scope GitLab's token API needs). Deploy tokens, bots and CI jobs cannot.
fn may_sign_in(principal: &Principal) -> Result<(), &'static str> {
    match principal {
        Principal::User {
            credential: Credential::Password,
            ..
        } => Ok(()),
        // Only `api` carries the delete ability among a token's scopes (`RegistryScopes`).
        Principal::User {
            credential: Credential::PersonalAccessToken { .. },
            scopes,
            ..
        } if scopes.admin_container_image => Ok(()),
        Principal::User { .. } => Err("This token cannot sign in here: it needs the api scope."),
        _ => Err("Only users sign in here: deploy, access and CI job tokens cannot."),
    }
}

fn kind_label(kind: NamespaceTokenKind, namespace: NamespaceKind) -> &'static str {
    match (kind, namespace) {
        (NamespaceTokenKind::Deploy, _) => "deploy_token",
        (NamespaceTokenKind::Access, NamespaceKind::Project) => "project_access_token",
        (NamespaceTokenKind::Access, NamespaceKind::Group) => "group_access_token",
    }
}

/// The value of cookie `name` (the first one sent).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 64)
}

/// The headers of every page: HTML, never cached, never framed, no referrer to other sites
/// (`same-origin`: with `no-referrer` browsers send `Origin: null` on the page's own forms,
/// which the Origin check must refuse), and the policy that allows only its own style and
/// script.
fn page_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(html::content_security_policy()),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    page_headers(headers);
    response
}

/// 303 See Other: after a POST, the browser GETs the page (POST-redirect-GET).
fn redirect(location: &'static str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    page_headers(response.headers_mut());
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = html_response(
        StatusCode::METHOD_NOT_ALLOWED,
        html::message(
            "Not allowed",
            &format!("This address answers {allow}."),
            None,
        ),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
