//! What a `/v2/` request addresses and what it needs, read once, the way the registry reads it.
//!
//! This is the gate's one reading of a request: nothing downstream looks at the raw path or
//! query again, and what is forwarded is the canonical target built here ([`Need::target`]),
//! so the registry acts on exactly what was checked. The steps:
//!
//! 1. [`path`]: decode the path once, as Go does; refuse encoded '/', malformed escapes,
//!    empty and dot segments.
//! 2. [`grammar`]: match distribution's routes and character classes; a path that is no
//!    route of the registry API is a 404 here and never forwarded (deny by default).
//! 3. Methods: only those the route serves pass (405 otherwise).
//! 4. [`query`]: decode the parameters once; refuse repeated keys, `;` and bad escapes.
//! 5. Bodies: a form body (`application/x-www-form-urlencoded`, `multipart/*`) on a POST,
//!    PUT or PATCH is refused, because Go's `FormValue` would read `mount`, `from`, `digest`
//!    or `_state` from it where the gateway does not look.
//!
//! Then the scopes, as distribution's `appendAccessRecords` asks for them: GET/HEAD need
//! pull; POST/PUT/PATCH pull and push; DELETE delete; a `from` parameter (a cross-repository
//! mount) also pull on that repository; `/v2/_catalog` needs `registry:catalog:*`; `/v2/`
//! needs any valid token.

pub mod grammar;
pub mod path;
pub mod query;

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};

use self::grammar::Matched;
use self::path::DecodedPath;
use self::query::Params;
use crate::auth::scope::{Action, Actions, RepositoryName, Resource, Scope};
use crate::error::{ApiError, ErrorCode};

/// The part of the API a request addresses (for logs, metrics, the audit log, push grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the version check clients use as a login probe.
    Base,
    Catalog,
    Manifest,
    Blob,
    /// `/blobs/uploads/` (start) and `/blobs/uploads/<uuid>` (chunks, completion, cancel).
    Upload,
    Tags,
    Referrers,
}

impl Route {
    /// The route's metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Base => "ping",
            Route::Catalog => "catalog",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Upload => "upload",
            Route::Tags => "tags",
            Route::Referrers => "other",
        }
    }
}

/// What a request addresses, what it needs, and what will be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub route: Route,
    /// Empty for routes that need only a valid token.
    pub scopes: Vec<Scope>,
    /// `/blobs/uploads/<uuid>`: the upload session the request belongs to.
    pub upload: Option<String>,
    /// A manifest's tag or digest, a blob's or referrers' digest.
    pub reference: Option<String>,
    /// The request target sent to the registry: the decoded path and the checked query.
    pub target: PathAndQuery,
}

impl Need {
    /// The challenge's `scope` value: the scopes, space separated.
    pub fn scope_param(&self) -> Option<String> {
        (!self.scopes.is_empty()).then(|| {
            self.scopes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

/// Classify a `/v2/` request: its route, the scopes it needs and the target to forward.
/// Everything the registry could read differently from the gateway is refused here with a
/// 4xx in the registry's JSON shape.
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Need, ApiError> {
    let decoded = DecodedPath::parse(uri.path()).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::Unsupported,
            format!("ambiguous request path: {e}"),
        )
    })?;
    let rest = match decoded.as_str() {
        "/v2" => "",
        path => path.strip_prefix("/v2/").ok_or_else(no_route)?,
    };
    let matched = grammar::match_route(rest).ok_or_else(no_route)?;
    check_method(method, &matched)?;
    let params = Params::parse(uri.query()).map_err(|e| {
        ApiError::bad_request(ErrorCode::Unsupported, format!("ambiguous query: {e}"))
    })?;
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        refuse_form_body(headers)?;
    }

    let (route, name, upload, reference) = match matched {
        Matched::Base => (Route::Base, None, None, None),
        Matched::Catalog => (Route::Catalog, None, None, None),
        Matched::Tags { name } => (Route::Tags, Some(name), None, None),
        Matched::Manifest { name, reference } => {
            (Route::Manifest, Some(name), None, Some(reference))
        }
        Matched::Blob { name, digest } => (Route::Blob, Some(name), None, Some(digest)),
        Matched::Referrers { name, digest } => (Route::Referrers, Some(name), None, Some(digest)),
        Matched::UploadStart { name } => (Route::Upload, Some(name), None, None),
        Matched::UploadChunk { name, uuid } => (Route::Upload, Some(name), Some(uuid), None),
    };
    let mut scopes = Vec::with_capacity(2);
    if route == Route::Catalog {
        scopes.push(Scope {
            resource: Resource::Catalog,
            actions: Actions::of(&[Action::All]),
        });
    }
    if let Some(name) = name {
        let name = RepositoryName::parse(name).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::NameInvalid,
                format!("invalid repository name: {e}"),
            )
        })?;
        let actions = match *method {
            Method::DELETE => Actions::of(&[Action::Delete]),
            Method::POST | Method::PUT | Method::PATCH => {
                Actions::of(&[Action::Pull, Action::Push])
            }
            _ => Actions::of(&[Action::Pull]),
        };
        let resource = Resource::Repository(name);
        // distribution asks for pull on `from` whenever it is there, mount or not.
        if let Some(from) = params.get("from").filter(|from| !from.is_empty()) {
            let from = RepositoryName::parse(from).map_err(|e| {
                ApiError::bad_request(ErrorCode::NameInvalid, format!("invalid mount source: {e}"))
            })?;
            if Resource::Repository(from.clone()) != resource {
                scopes.push(Scope {
                    resource: Resource::Repository(from),
                    actions: Actions::of(&[Action::Pull]),
                });
            }
        }
        scopes.insert(0, Scope { resource, actions });
    }
    Ok(Need {
        route,
        scopes,
        upload: upload.map(str::to_owned),
        reference: reference.map(str::to_owned),
        target: target(&decoded, route, uri)?,
    })
}

/// The registry's answer to a path it has no route for.
fn no_route() -> ApiError {
    ApiError::not_found(
        "no such registry API route (the gateway forwards only the routes of the registry API)",
    )
}

/// The methods each route serves (distribution's handlers); anything else is a 405.
fn check_method(method: &Method, matched: &Matched<'_>) -> Result<(), ApiError> {
    let read = [Method::GET, Method::HEAD];
    let allowed: &[Method] = match matched {
        Matched::Base | Matched::Catalog | Matched::Tags { .. } | Matched::Referrers { .. } => {
            &read
        }
        Matched::Manifest { .. } => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
        Matched::Blob { .. } => &[Method::GET, Method::HEAD, Method::DELETE],
        Matched::UploadStart { .. } => &[Method::POST],
        Matched::UploadChunk { .. } => &[
            Method::GET,
            Method::HEAD,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ],
    };
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!(
                "method {method} is not allowed on this registry API route",
                method = method.as_str().escape_debug()
            ),
        ))
    }
}

/// Refuse bodies the registry would parse as form parameters (see the module doc).
fn refuse_form_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(header::CONTENT_TYPE) {
            true => Err(ApiError::bad_request(
                ErrorCode::Unsupported,
                "more than one Content-Type header",
            )),
            false => Ok(()),
        };
    };
    let form = || {
        ApiError::bad_request(
            ErrorCode::Unsupported,
            "form bodies are not part of the registry API: send blob data as application/octet-stream and parameters in the query",
        )
    };
    let text = value.to_str().map_err(|_| form())?;
    let media_type = text.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || media_type
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
    {
        return Err(form());
    }
    Ok(())
}

/// The request target to forward: the decoded path (it holds only characters of the
/// grammar, none of which needs escaping) and the query as checked. When nothing was
/// decoded, the client's own target is reused (no allocation on the hot path).
fn target(decoded: &DecodedPath, route: Route, uri: &Uri) -> Result<PathAndQuery, ApiError> {
    let path = match route {
        Route::Base => "/v2/",
        _ => decoded.as_str(),
    };
    if path == uri.path() {
        if let Some(target) = uri.path_and_query() {
            return Ok(target.clone());
        }
    }
    let text = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    PathAndQuery::try_from(text).map_err(|_| {
        ApiError::bad_request(ErrorCode::Unsupported, "the request target is not valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn classify_str(method: Method, target: &str) -> Result<Need, ApiError> {
        classify(&method, &target.parse().unwrap(), &HeaderMap::new())
    }

    fn need(method: Method, target: &str) -> (Route, Option<String>) {
        let need = classify_str(method, target).unwrap();
        (need.route, need.scope_param())
    }

    fn status(method: Method, target: &str) -> u16 {
        classify_str(method, target).unwrap_err().status.as_u16()
    }

    #[test]
    fn distribution_method_mapping() {
        let s = |text: &str| Some(text.to_owned());
        assert_eq!(need(Method::GET, "/v2/"), (Route::Base, None));
        assert_eq!(need(Method::GET, "/v2"), (Route::Base, None));
        assert_eq!(
            need(Method::GET, "/v2/_catalog?n=10"),
            (Route::Catalog, s("registry:catalog:*"))
        );
        assert_eq!(
            need(Method::HEAD, "/v2/g/app/manifests/latest"),
            (Route::Manifest, s("repository:g/app:pull"))
        );
        assert_eq!(
            need(Method::PUT, "/v2/g/app/manifests/v1"),
            (Route::Manifest, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(Method::GET, &format!("/v2/g/app/blobs/{D}")),
            (Route::Blob, s("repository:g/app:pull"))
        );
        assert_eq!(
            need(Method::DELETE, &format!("/v2/g/app/manifests/{D}")),
            (Route::Manifest, s("repository:g/app:delete"))
        );
        assert_eq!(
            need(Method::POST, "/v2/g/app/blobs/uploads/"),
            (Route::Upload, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(Method::PATCH, "/v2/g/app/blobs/uploads/0b7f-uuid?_state=x"),
            (Route::Upload, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(Method::GET, "/v2/g/app/tags/list?n=1&last=a"),
            (Route::Tags, s("repository:g/app:pull"))
        );
    }

    #[test]
    fn upload_requests_name_their_session_and_manifests_their_reference() {
        let need =
            classify_str(Method::PATCH, "/v2/g/app/blobs/uploads/0b7f-uuid?_state=x").unwrap();
        assert_eq!(need.upload.as_deref(), Some("0b7f-uuid"));
        assert_eq!(
            need.target.as_str(),
            "/v2/g/app/blobs/uploads/0b7f-uuid?_state=x"
        );
        let start = classify_str(Method::POST, "/v2/g/app/blobs/uploads/").unwrap();
        assert_eq!(start.upload, None);
        let manifest = classify_str(Method::GET, "/v2/g/app/manifests/v1").unwrap();
        assert_eq!(manifest.reference.as_deref(), Some("v1"));
    }

    #[test]
    fn a_mount_also_needs_pull_on_the_source() {
        assert_eq!(
            need(
                Method::POST,
                "/v2/g/app/blobs/uploads/?mount=sha256%3Aabc&from=other%2Fbase"
            ),
            (
                Route::Upload,
                Some("repository:g/app:pull,push repository:other/base:pull".into())
            )
        );
        // distribution asks for pull on `from` even without `mount`.
        assert_eq!(
            need(Method::POST, "/v2/g/app/blobs/uploads/?from=other/base").1,
            Some("repository:g/app:pull,push repository:other/base:pull".into())
        );
        assert_eq!(
            status(Method::POST, "/v2/g/app/blobs/uploads/?mount=x&from=BAD"),
            400
        );
    }

    #[test]
    fn repeated_or_hidden_mount_sources_are_refused() {
        for target in [
            "/v2/mine/app/blobs/uploads/?mount=x&from=secret/app&from=mine/app",
            "/v2/mine/app/blobs/uploads/?mount=x&from=mine/app&fr%6Fm=secret/app",
            "/v2/mine/app/blobs/uploads/?mount=x&from=mine/app;from=secret/app",
        ] {
            assert_eq!(status(Method::POST, target), 400, "{target}");
        }
        for content_type in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            "multipart/form-data; boundary=x",
            " multipart/mixed",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
            for method in [Method::POST, Method::PATCH, Method::PUT] {
                let target = match method {
                    Method::POST => "/v2/mine/app/blobs/uploads/?mount=x",
                    _ => "/v2/mine/app/blobs/uploads/uuid",
                };
                let err = classify(&method, &target.parse().unwrap(), &headers).unwrap_err();
                assert_eq!(err.status.as_u16(), 400, "{method} {content_type}");
            }
        }
        let mut two = HeaderMap::new();
        two.append(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().unwrap(),
        );
        two.append(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        let err = classify(
            &Method::PATCH,
            &"/v2/a/blobs/uploads/u".parse().unwrap(),
            &two,
        );
        assert_eq!(err.unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            need(Method::GET, "/v2/g/blobs/manifests/manifests/latest"),
            (
                Route::Manifest,
                Some("repository:g/blobs/manifests:pull".into())
            )
        );
        assert_eq!(
            need(Method::GET, &format!("/v2/g/manifests/app/blobs/{D}")),
            (Route::Blob, Some("repository:g/manifests/app:pull".into()))
        );
    }

    #[test]
    fn encoded_paths_are_read_as_the_registry_reads_them_and_forwarded_decoded() {
        for (target, scope, forwarded) in [
            (
                "/v2/g/app/manifest%73/t",
                "repository:g/app:pull",
                "/v2/g/app/manifests/t",
            ),
            ("/v2/%5Fcatalog", "registry:catalog:*", "/v2/_catalog"),
            (
                "/v2/_catalo%67?n=1",
                "registry:catalog:*",
                "/v2/_catalog?n=1",
            ),
            (
                "/v2/g/app/tags/lis%74",
                "repository:g/app:pull",
                "/v2/g/app/tags/list",
            ),
            ("/v2/%67%2f%61pp/tags/list", "", ""),
            (
                "http://gateway.example/v2/g/app/manifest%73/t",
                "repository:g/app:pull",
                "/v2/g/app/manifests/t",
            ),
        ] {
            match classify_str(Method::GET, target) {
                Ok(need) => {
                    assert_eq!(need.scope_param().as_deref(), Some(scope), "{target}");
                    assert_eq!(need.target.as_str(), forwarded, "{target}");
                }
                Err(e) => assert!(scope.is_empty() && e.status == 400, "{target}: {e}"),
            }
        }
        assert_eq!(status(Method::GET, "/v2/g/app/manifests%2Ft"), 400);
        assert_eq!(status(Method::GET, "/v2/g/x/../app/manifests/t"), 400);
    }

    #[test]
    fn invalid_names_and_methods_are_refused_with_4xx() {
        let err = classify_str(Method::GET, "/v2/Bad/Name/manifests/latest").unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, ErrorCode::NameInvalid)
        );
        assert_eq!(status(Method::OPTIONS, "/v2/g/app/manifests/latest"), 405);
        assert_eq!(status(Method::CONNECT, "/v2/g/app/manifests/latest"), 405);
        assert_eq!(status(Method::POST, "/v2/g/app/manifests/latest"), 405);
        assert_eq!(status(Method::PUT, "/v2/_catalog"), 405);
        assert_eq!(status(Method::DELETE, "/v2/"), 405);
        assert_eq!(status(Method::PATCH, "/v2/g/app/blobs/uploads/"), 405);
    }

    #[test]
    fn unknown_paths_are_not_found_and_not_forwarded() {
        for target in [
            "/v2/something",
            "/v2/g/app/manifests/",
            "/v2/g/app/tags/list/",
            "/v2/g/app/blobs/uploads",
            "/v2/_zot/ext/search",
            "/v2/g/app/manifests;x=1/t",
        ] {
            assert_eq!(status(Method::GET, target), 404, "{target}");
        }
    }
}
