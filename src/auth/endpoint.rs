//! `/jwt/auth`: the docker token protocol, answered with GitLab's semantics.
//!
//! `GET ?service=&scope=...&account=` with optional Basic credentials. Glue only: parsing is in
//! [`super::scope`] and [`super::credentials`], the rules in [`super::policy`], signing in
//! [`super::token`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use super::brute_force::{BruteForce, Subject};
use super::credentials::{self, AuthFailure, BasicCredentials, HeaderError, Principal};
use super::directory::Directory;
use super::password_cache::PasswordCache;
use super::policy;
use super::scope::Scope;
use super::token::Tokens;
use crate::body::{full, Body};
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::RequestUser;

/// The realm of the Basic challenge sent with a refused login.
const BASIC_REALM: &str = "Basic realm=\"portcullis\"";

/// What the token endpoint needs; built once at start-up.
pub struct TokenEndpoint {
    pub directory: Arc<Directory>,
    pub tokens: Arc<Tokens>,
    pub password_cache: PasswordCache,
    pub brute_force: BruteForce,
}

/// The parts of the query the protocol defines.
#[derive(Debug, Default)]
struct TokenQuery {
    service: Option<String>,
    scopes: Vec<String>,
}

fn parse_query(query: Option<&str>) -> TokenQuery {
    let mut parsed = TokenQuery::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "service" => parsed.service = Some(value.into_owned()),
            "scope" => parsed.scopes.push(value.into_owned()),
            _ => {}
        }
    }
    parsed
}

impl TokenEndpoint {
    /// Answer one request to `/jwt/auth`.
    pub async fn handle(
        &self,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        if method != Method::GET {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "the token endpoint answers GET",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        match self.issue(query, headers, client).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn issue(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<Response<Body>, ApiError> {
        let query = parse_query(query);
        if let Some(service) = &query.service {
            if service != self.tokens.service() {
                return Err(ApiError::bad_request(
                    ErrorCode::Unsupported,
                    format!(
                        "unknown service {service:?}: this token endpoint issues tokens for {:?} (the registry's auth.token.service must match token.service)",
                        self.tokens.service()
                    ),
                ));
            }
        }
        let scopes = Scope::parse_all(query.scopes.iter().map(String::as_str)).map_err(|e| {
            let code = match e {
                super::scope::ScopeError::Name { .. } => ErrorCode::NameInvalid,
                super::scope::ScopeError::Malformed(_) => ErrorCode::Unsupported,
            };
            ApiError::bad_request(code, e.to_string())
        })?;

        let principal = match headers.get(header::AUTHORIZATION) {
            None if scopes.is_empty() => return Err(ApiError::access_forbidden()),
            None => Principal::Anonymous,
            Some(value) => self.authenticate(value, client).await?,
        };

        let access = policy::grant(&principal, &scopes, &self.directory);
        let issued = self
            .tokens
            .issue(principal.subject(), access.clone(), SystemTime::now())
            .map_err(|e| {
                tracing::error!(error = %e, "signing a token failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the gateway could not sign a token",
                )
            })?;
        let requested: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        let granted: Vec<String> = access
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect();
        let credential = principal.credential_kind();
        tracing::debug!(
            user = principal.subject(),
            credential,
            requested = ?requested,
            granted = ?granted,
            "token issued"
        );

        let issued_at = issued
            .issued_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let body = json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        });
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

    async fn authenticate(
        &self,
        value: &HeaderValue,
        client: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
                .with_challenge(HeaderValue::from_static(BASIC_REALM))
        };
        let credentials = BasicCredentials::parse(value.as_bytes()).map_err(|e| {
            tracing::info!(client = %client.map(|c| c.to_string()).unwrap_or_default(), reason = "malformed_authorization", "login refused: {e}");
            match e {
                HeaderError::NotBasic => unauthorized(
                    "HTTP Basic: Access denied. The token endpoint takes Basic credentials (username and password or access token).",
                ),
                HeaderError::Malformed => unauthorized(
                    "HTTP Basic: Access denied. The Authorization header is not valid Basic credentials.",
                ),
            }
        })?;
        let subjects: Vec<Subject> = client
            .map(|c| Subject::Client(c.ip()))
            .into_iter()
            .chain([Subject::Username(credentials.username.clone())])
            .collect();
        if let Some(ban) = self.brute_force.banned(&subjects, Instant::now()) {
            let (who, what) = match &ban.subject {
                Subject::Client(ip) => ("client", ip.to_string()),
                Subject::Username(name) => ("user", name.clone()),
            };
            tracing::info!(client = %client.map(|c| c.to_string()).unwrap_or_default(), user = %credentials.username, reason = "banned", "login refused: {who} {what} is banned for {}s more", ban.remaining.as_secs());
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!(
                    "too many failed logins from this {who}: try again in {} minutes",
                    ban.remaining.as_secs().div_ceil(60)
                ),
            ));
        }
        let result = if credentials.username == credentials::CI_USERNAME {
            credentials::authenticate_job(&self.directory, &self.tokens, &credentials.secret)
        } else {
            credentials::authenticate(
                &self.directory,
                &self.password_cache,
                &credentials,
                OffsetDateTime::now_utc(),
            )
            .await
        };
        match &result {
            Ok(_) => self.brute_force.success(&credentials.username),
            Err(_) => {
                for ban in self.brute_force.failure(&subjects, Instant::now()) {
                    tracing::warn!(
                        subject = ?ban.subject,
                        ban_seconds = ban.remaining.as_secs(),
                        "banned after too many failed logins (brute_force.max_failures within brute_force.window)"
                    );
                }
            }
        }
        result.map_err(|failure: AuthFailure| {
            tracing::info!(
                client = %client.map(|c| c.to_string()).unwrap_or_default(),
                user = %credentials.username,
                reason = failure.reason(),
                "login refused: {failure}"
            );
            unauthorized(failure.client_message())
                .with_detail(json!({ "reason": client_reason(&failure) }))
        })
    }
}

/// The reason given to clients: an unknown user and a wrong secret look the same.
fn client_reason(failure: &AuthFailure) -> &'static str {
    match failure {
        AuthFailure::UnknownUser | AuthFailure::WrongSecret => "invalid_credentials",
        other => other.reason(),
    }
}
