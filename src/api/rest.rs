//! `/api/v4/...`: the token subset of GitLab's REST API, as GitLab answers it.
//!
//! Authentication is GitLab's (`lib/gitlab/auth/auth_finders.rb`): `PRIVATE-TOKEN: <token>`
//! or `Authorization: Bearer <token>`, a personal, project or group access token with the
//! `api` scope (`read_api` is enough for GET). A password, a deploy token or no credential is
//! `401 Unauthorized`; a token without the scope is `403 insufficient_scope`. Bodies are
//! bounded ([`MAX_BODY_BYTES`]) and must arrive within the token request timeout.
//!
//! Glue only: the rules are in [`super::service`], the shapes in [`super::json`].

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::json::{self, Params};
use super::service::{Actor, ApiTokenFailure, Namespace, ServiceError, TokenService, UserKey};
use crate::auth::directory::NamespaceKind;
use crate::body::{full, Body};

/// The prefix every route lives under.
pub const PREFIX: &str = "/api/v4/";
/// The largest request body (a token request is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// GitLab's default and largest page sizes.
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;
/// The longest path looked at.
const MAX_PATH_BYTES: usize = 2048;

/// The API handlers; cheap to clone.
#[derive(Clone)]
pub struct Api {
    service: TokenService,
    /// The public URL (`https://registry.example.com`), for `Link` headers and `web_url`.
    public_url: Arc<str>,
    timeout: Duration,
}

/// An answer before rendering.
enum Answer {
    Json(StatusCode, Value),
    Page(Vec<Value>, Pagination),
    NoContent,
}

struct Pagination {
    page: usize,
    per_page: usize,
    total: usize,
}

type Result<T> = std::result::Result<T, Refusal>;

/// A refused request: GitLab's status and body.
struct Refusal(StatusCode, Value);

impl From<ServiceError> for Refusal {
    fn from(error: ServiceError) -> Refusal {
        Refusal(error.status(), error.body())
    }
}

fn message(status: StatusCode, text: &str) -> Refusal {
    Refusal(status, json!({ "message": text }))
}

impl Api {
    pub fn new(service: TokenService, public_url: &str, timeout: Duration) -> Api {
        Api {
            service,
            public_url: public_url.trim_end_matches('/').into(),
            timeout,
        }
    }

    pub fn service(&self) -> &TokenService {
        &self.service
    }

    /// Answer one `/api/v4/` request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let answer = tokio::time::timeout(self.timeout, self.answer(request)).await;
        let (answer, pagination_url) = match answer {
            Ok((Ok(answer), url)) => (answer, url),
            Ok((Err(Refusal(status, body)), _)) => (Answer::Json(status, body), String::new()),
            Err(_) => (
                Answer::Json(
                    StatusCode::REQUEST_TIMEOUT,
                    json!({ "message": "408 Request Timeout" }),
                ),
                String::new(),
            ),
        };
        render(answer, &pagination_url)
    }

    async fn answer(&self, request: Request<Incoming>) -> (Result<Answer>, String) {
        let path = request.uri().path().to_owned();
        let url = format!("{}{}", self.public_url, path);
        (self.route(request, &path).await, url)
    }

    async fn route(&self, request: Request<Incoming>, path: &str) -> Result<Answer> {
        if path.len() > MAX_PATH_BYTES {
            return Err(message(StatusCode::NOT_FOUND, "404 Not Found"));
        }
        let segments = segments(path.strip_prefix(PREFIX).unwrap_or_default())
            .ok_or_else(|| message(StatusCode::NOT_FOUND, "404 Not Found"))?;
        let method = request.method().clone();
        let known = route_exists(&method, &segments);
        if known.is_none() {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                json!({ "error": "404 Not Found" }),
            ));
        }
        let actor = self.authenticate(request.headers(), method == Method::GET)?;
        let query = request.uri().query().map(str::to_owned);
        let params = self.read_params(request, query.as_deref()).await?;
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let service = &self.service;
        match (&method, s.as_slice()) {
            (&Method::GET, ["user"]) => Ok(ok(json::user(
                &service.current_user(&actor),
                &self.public_url,
                true,
            ))),
            (&Method::GET, ["users"]) => {
                let found = match params.string("username")? {
                    Some(name) => service
                        .find_user(&actor, &UserKey::Username(name))
                        .ok()
                        .map(|u| json::user(&u, &self.public_url, false))
                        .into_iter()
                        .collect(),
                    None => Vec::new(),
                };
                self.page(found, &params)
            }
            (&Method::GET, ["users", id]) => {
                let id = id
                    .parse()
                    .map_err(|_| ServiceError::NotFound(Some("User")))?;
                let user = service.find_user(&actor, &UserKey::Id(id))?;
                Ok(ok(json::user(&user, &self.public_url, false)))
            }
            (&Method::POST, ["users", id, "personal_access_tokens"]) => {
                if !actor.admin {
                    return Err(ServiceError::Forbidden.into());
                }
                let id = id
                    .parse()
                    .map_err(|_| ServiceError::NotFound(Some("User")))?;
                let user = service.find_user(&actor, &UserKey::Id(id))?;
                let created = service
                    .create_personal(&actor, &user.username, params.new_token(false)?)
                    .await?;
                Ok(created_answer(&created))
            }
            (&Method::POST, ["user", "personal_access_tokens"]) => {
                let created = service
                    .create_personal(&actor, &actor.username.clone(), params.new_token(false)?)
                    .await?;
                Ok(created_answer(&created))
            }
            (&Method::GET, ["personal_access_tokens"]) => {
                let user_id = params
                    .integer("user_id")?
                    .map(|id| u64::try_from(id).unwrap_or(u64::MAX));
                let tokens = service.list_personal(&actor, user_id)?;
                self.page(tokens.iter().map(json::token).collect(), &params)
            }
            (&Method::GET, ["personal_access_tokens", "self"]) => {
                Ok(ok(json::token(&service.personal_self(&actor)?)))
            }
            (&Method::DELETE, ["personal_access_tokens", "self"]) => {
                service.revoke_personal_self(&actor).await?;
                Ok(Answer::NoContent)
            }
            (&Method::GET, ["personal_access_tokens", id]) => {
                let id = token_id(id)?;
                let token = service
                    .list_personal(&actor, None)?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or(ServiceError::NotFound(None))?;
                Ok(ok(json::token(&token)))
            }
            (&Method::DELETE, ["personal_access_tokens", id]) => {
                service.revoke_personal(&actor, token_id(id)?).await?;
                Ok(Answer::NoContent)
            }
            (&Method::POST, ["personal_access_tokens", id, "rotate"]) => {
                let created = service
                    .rotate_personal(&actor, token_id(id)?, params.date("expires_at")?)
                    .await?;
                Ok(Answer::Json(
                    StatusCode::OK,
                    json::token_with_secret(&created.token, &created.secret),
                ))
            }
            (&Method::GET, [kind @ ("projects" | "groups"), id]) => {
                let view = service.find_namespace(&actor, namespace_kind(kind), id)?;
                Ok(ok(json::namespace(&view, &self.public_url)))
            }
            (_, [kind @ ("projects" | "groups"), id, rest @ ..]) => {
                let namespace = service
                    .find_namespace(&actor, namespace_kind(kind), id)?
                    .namespace;
                self.namespace_route(&actor, &method, &namespace, rest, &params)
                    .await
            }
            _ => Err(Refusal(
                StatusCode::NOT_FOUND,
                json!({ "error": "404 Not Found" }),
            )),
        }
    }

    async fn namespace_route(
        &self,
        actor: &Actor,
        method: &Method,
        namespace: &Namespace,
        rest: &[&str],
        params: &Params,
    ) -> Result<Answer> {
        let service = &self.service;
        match (method, rest) {
            (&Method::GET, ["deploy_tokens"]) => {
                let tokens = service.list_deploy(actor, namespace)?;
                let active = params.string("active")?;
                let tokens = tokens
                    .iter()
                    .filter(|t| active.as_deref() != Some("true") || t.active)
                    .map(json::token)
                    .collect();
                self.page(tokens, params)
            }
            (&Method::POST, ["deploy_tokens"]) => {
                let created = service
                    .create_deploy(actor, namespace, params.new_token(true)?)
                    .await?;
                Ok(created_answer(&created))
            }
            (&Method::GET, ["deploy_tokens", id]) => {
                let id = token_id(id)?;
                let token = service
                    .list_deploy(actor, namespace)?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or(ServiceError::NotFound(None))?;
                Ok(ok(json::token(&token)))
            }
            (&Method::DELETE, ["deploy_tokens", id]) => {
                service
                    .revoke_deploy(actor, namespace, token_id(id)?)
                    .await?;
                Ok(Answer::NoContent)
            }
            (&Method::GET, ["access_tokens"]) => {
                let tokens = service.list_access(actor, namespace)?;
                self.page(tokens.iter().map(json::token).collect(), params)
            }
            (&Method::POST, ["access_tokens"]) => {
                let created = service
                    .create_access(actor, namespace, params.new_token(false)?)
                    .await?;
                Ok(created_answer(&created))
            }
            (&Method::GET, ["access_tokens", id]) => {
                let id = token_id(id)?;
                let what = match namespace {
                    Namespace::Project(_) => "project Access Token",
                    Namespace::Group(_) => "group Access Token",
                };
                let token = service
                    .list_access(actor, namespace)?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or(ServiceError::NotFound(Some(what)))?;
                Ok(ok(json::token(&token)))
            }
            (&Method::DELETE, ["access_tokens", id]) => {
                service
                    .revoke_access(actor, namespace, token_id(id)?)
                    .await?;
                Ok(Answer::NoContent)
            }
            (&Method::POST, ["access_tokens", id, "rotate"]) => {
                let created = service
                    .rotate_access(actor, namespace, token_id(id)?, params.date("expires_at")?)
                    .await?;
                Ok(Answer::Json(
                    StatusCode::OK,
                    json::token_with_secret(&created.token, &created.secret),
                ))
            }
            _ => Err(Refusal(
                StatusCode::NOT_FOUND,
                json!({ "error": "404 Not Found" }),
            )),
        }
    }

    /// GitLab's API authentication. `read`: a GET, for which `read_api` is enough.
    fn authenticate(&self, headers: &HeaderMap, read: bool) -> Result<Actor> {
        let secret = headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, rest) = v.trim().split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
                    })
            })
            .filter(|s| !s.is_empty() && s.len() <= 1024)
            .ok_or_else(|| message(StatusCode::UNAUTHORIZED, "401 Unauthorized"))?;
        self.service
            .actor_for_api_token(secret, read)
            .map_err(|failure| match failure {
                ApiTokenFailure::Expired => Refusal(
                    StatusCode::UNAUTHORIZED,
                    json!({ "error": "invalid_token", "error_description": "Token has expired." }),
                ),
                ApiTokenFailure::Revoked => Refusal(
                    StatusCode::UNAUTHORIZED,
                    json!({ "error": "invalid_token", "error_description": "Token was revoked. You have to re-authorize from the user." }),
                ),
                ApiTokenFailure::InsufficientScope => Refusal(
                    StatusCode::FORBIDDEN,
                    json!({
                        "error": "insufficient_scope",
                        "error_description": "The request requires higher privileges than provided by the access token.",
                        "scope": if read { "api read_api" } else { "api" },
                    }),
                ),
                ApiTokenFailure::Unknown => message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
            })
    }

    /// The body, bounded, as parameters (the query's fields added).
    async fn read_params(&self, request: Request<Incoming>, query: Option<&str>) -> Result<Params> {
        let too_large = || {
            message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large",
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let json_body = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
        let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        Ok(Params::parse(&body, json_body, query)?)
    }

    /// One page of `items`, as GitLab's offset pagination cuts it.
    fn page(&self, items: Vec<Value>, params: &Params) -> Result<Answer> {
        let page = params.integer("page")?.unwrap_or(1).max(1) as usize;
        let per_page = params
            .integer("per_page")?
            .unwrap_or(DEFAULT_PER_PAGE as i64)
            .clamp(1, MAX_PER_PAGE as i64) as usize;
        let total = items.len();
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let items = items.into_iter().skip(start).take(per_page).collect();
        Ok(Answer::Page(
            items,
            Pagination {
                page,
                per_page,
                total,
            },
        ))
    }
}

/// Does a route with this method and shape exist (before authenticating, so an unknown
/// path is GitLab's `404` whoever asks)?
fn route_exists(method: &Method, s: &[String]) -> Option<()> {
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    let ok = match (method, s.as_slice()) {
        (&Method::GET, ["user"] | ["users"] | ["users", _]) => true,
        (&Method::POST, ["users", _, "personal_access_tokens"])
        | (&Method::POST, ["user", "personal_access_tokens"]) => true,
        (&Method::GET, ["personal_access_tokens"] | ["personal_access_tokens", _]) => true,
        (&Method::DELETE, ["personal_access_tokens", _]) => true,
        (&Method::POST, ["personal_access_tokens", _, "rotate"]) => true,
        (&Method::GET, ["projects" | "groups", _]) => true,
        (m, ["projects" | "groups", _, "deploy_tokens" | "access_tokens", rest @ ..]) => {
            matches!(
                (m, rest),
                (&Method::GET | &Method::POST, []) | (&Method::GET | &Method::DELETE, [_])
            ) || (m == Method::POST && s[2] == "access_tokens" && matches!(rest, [_, "rotate"]))
        }
        _ => false,
    };
    ok.then_some(())
}

/// The path's segments, each percent-decoded (`group%2Fapp` is one segment `group/app`).
fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_end_matches('/')
        .split('/')
        .map(|segment| {
            let decoded = percent_decode(segment)?;
            (!decoded.is_empty()).then_some(decoded)
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    (!decoded.chars().any(char::is_control)).then_some(decoded)
}

fn token_id(text: &str) -> std::result::Result<u64, ServiceError> {
    text.parse().map_err(|_| ServiceError::NotFound(None))
}

fn namespace_kind(word: &str) -> NamespaceKind {
    if word == "groups" {
        NamespaceKind::Group
    } else {
        NamespaceKind::Project
    }
}

fn ok(body: Value) -> Answer {
    Answer::Json(StatusCode::OK, body)
}

fn created_answer(created: &super::service::CreatedToken) -> Answer {
    Answer::Json(
        StatusCode::CREATED,
        json::token_with_secret(&created.token, &created.secret),
    )
}

fn render(answer: Answer, url: &str) -> Response<Body> {
    let (status, body, pagination) = match answer {
        Answer::Json(status, body) => (status, Some(body), None),
        Answer::Page(items, pagination) => {
            (StatusCode::OK, Some(Value::Array(items)), Some(pagination))
        }
        Answer::NoContent => (StatusCode::NO_CONTENT, None, None),
    };
    let mut response = match body {
        Some(body) => Response::new(full(body.to_string())),
        None => Response::new(crate::body::empty()),
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status != StatusCode::NO_CONTENT {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(p) = pagination {
        let pages = p.total.div_ceil(p.per_page).max(1);
        let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set(headers, "x-page", p.page.to_string());
        set(headers, "x-per-page", p.per_page.to_string());
        set(headers, "x-total", p.total.to_string());
        set(headers, "x-total-pages", pages.to_string());
        let next = (p.page < pages).then(|| p.page + 1);
        let prev = (p.page > 1).then(|| (p.page - 1).min(pages));
        set(
            headers,
            "x-next-page",
            next.map(|n| n.to_string()).unwrap_or_default(),
        );
        set(
            headers,
            "x-prev-page",
            prev.map(|n| n.to_string()).unwrap_or_default(),
        );
        let link = |page: usize, rel: &str| {
            format!("<{url}?page={page}&per_page={}>; rel=\"{rel}\"", p.per_page)
        };
        let mut links = Vec::new();
        if let Some(prev) = prev {
            links.push(link(prev, "prev"));
        }
        if let Some(next) = next {
            links.push(link(next, "next"));
        }
        links.push(link(1, "first"));
        links.push(link(pages, "last"));
        set(headers, "link", links.join(", "));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_decoded_one_by_one() {
        assert_eq!(
            segments("projects/mygroup%2Fmyproject/deploy_tokens").unwrap(),
            ["projects", "mygroup/myproject", "deploy_tokens"]
        );
        assert_eq!(segments("user/").unwrap(), ["user"]);
        for bad in [
            "projects//x",
            "projects/%zz",
            "projects/%0a",
            "projects/%ff%fe",
            "a/%2",
        ] {
            assert!(segments(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_the_listed_routes_exist() {
        let s = |p: &str| segments(p).unwrap();
        assert!(route_exists(&Method::GET, &s("user")).is_some());
        assert!(route_exists(&Method::POST, &s("projects/1/access_tokens/2/rotate")).is_some());
        assert!(route_exists(&Method::POST, &s("projects/1/deploy_tokens/2/rotate")).is_none());
        assert!(route_exists(&Method::PUT, &s("personal_access_tokens/1")).is_none());
        assert!(route_exists(&Method::GET, &s("projects/1/variables")).is_none());
    }
}
