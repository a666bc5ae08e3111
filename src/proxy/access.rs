//! What a `/v2/` request needs, from its method and path alone (distribution's mapping).
//!
//! GET/HEAD need pull; POST/PUT/PATCH need pull and push; DELETE needs delete; a cross-repository
//! mount (`POST .../blobs/uploads/?mount=D&from=R`) also needs pull on R; `GET /v2/_catalog`
//! needs `registry:catalog:*`; `GET /v2/` needs any valid token.

use http::{Method, StatusCode};

use crate::auth::scope::{Action, Actions, RepositoryName, Resource, Scope};
use crate::error::{ApiError, ErrorCode};

/// The part of the API a request addresses (used for logs and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the version check clients use as a login probe.
    Base,
    Catalog,
    Manifest,
    Blob,
    Upload,
    Tags,
    Referrers,
    /// Anything else under `/v2/`: needs a valid token, the registry decides the rest.
    Other,
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
            Route::Referrers | Route::Other => "other",
        }
    }
}

/// The scopes a request needs, and which route it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub route: Route,
    /// Empty for routes that need only a valid token.
    pub scopes: Vec<Scope>,
    /// `/blobs/uploads/<uuid>`: the upload session the request belongs to.
    pub upload: Option<String>,
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

/// Classify a `/v2/` request. Refuses methods the API does not use and invalid names.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Result<Need, ApiError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(Need {
            route: Route::Other,
            scopes: vec![],
            upload: None,
        });
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Need {
            route: Route::Base,
            scopes: vec![],
            upload: None,
        });
    }
    if rest == "_catalog" {
        return Ok(Need {
            route: Route::Catalog,
            scopes: vec![Scope {
                resource: Resource::Catalog,
                actions: Actions::of(&[Action::All]),
            }],
            upload: None,
        });
    }
    let Some((name, route)) = split_route(rest) else {
        return Ok(Need {
            route: Route::Other,
            scopes: vec![],
            upload: None,
        });
    };
    let name = RepositoryName::parse(name).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::NameInvalid,
            format!("invalid repository name: {e}"),
        )
    })?;
    let actions = match *method {
        Method::GET | Method::HEAD => Actions::of(&[Action::Pull]),
        Method::POST | Method::PUT | Method::PATCH => Actions::of(&[Action::Pull, Action::Push]),
        Method::DELETE => Actions::of(&[Action::Delete]),
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!("method {method} is not part of the registry API"),
            ))
        }
    };
    let mut scopes = vec![Scope {
        resource: Resource::Repository(name),
        actions,
    }];
    if route == Route::Upload && *method == Method::POST {
        if let Some(from) = mount_source(query)? {
            if Resource::Repository(from.clone()) != scopes[0].resource {
                scopes.push(Scope {
                    resource: Resource::Repository(from),
                    actions: Actions::of(&[Action::Pull]),
                });
            }
        }
    }
    let upload = (route == Route::Upload)
        .then(|| rest.rsplit_once("/blobs/uploads/").map(|(_, uuid)| uuid))
        .flatten()
        .filter(|uuid| !uuid.is_empty())
        .map(str::to_owned);
    Ok(Need {
        route,
        scopes,
        upload,
    })
}

/// Split `<name>/<route...>` at the LAST route marker, so names may contain words like
/// `blobs` or `manifests` as components.
fn split_route(rest: &str) -> Option<(&str, Route)> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some((name, Route::Tags));
    }
    let markers = [
        ("/blobs/uploads", Route::Upload),
        ("/manifests/", Route::Manifest),
        ("/blobs/", Route::Blob),
        ("/referrers/", Route::Referrers),
    ];
    markers
        .iter()
        .filter_map(|(marker, route)| {
            let at = rest.rfind(marker)?;
            let tail = &rest[at + marker.len()..];
            let valid_tail = match route {
                // `/blobs/uploads`, `/blobs/uploads/` or `/blobs/uploads/<uuid>`.
                Route::Upload => {
                    tail.is_empty() || (tail.starts_with('/') && !tail[1..].contains('/'))
                }
                _ => !tail.is_empty() && !tail.contains('/'),
            };
            valid_tail.then_some((at, &rest[..at], *route))
        })
        // The marker that ends latest wins; on a tie the more specific (uploads) is first.
        .max_by_key(|(at, _, route)| (*at, *route == Route::Upload))
        .map(|(_, name, route)| (name, route))
}

/// The `from` repository of a cross-repository mount, if this is one.
fn mount_source(query: Option<&str>) -> Result<Option<RepositoryName>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let mut mount = false;
    let mut from = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "mount" => mount = true,
            "from" => from = Some(value.into_owned()),
            _ => {}
        }
    }
    match (mount, from) {
        (true, Some(from)) => RepositoryName::parse(&from).map(Some).map_err(|e| {
            ApiError::bad_request(ErrorCode::NameInvalid, format!("invalid mount source: {e}"))
        }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(method: Method, path: &str, query: Option<&str>) -> (Route, Option<String>) {
        let need = classify(&method, path, query).unwrap();
        (need.route, need.scope_param())
    }

    #[test]
    fn distribution_method_mapping() {
        let s = |text: &str| Some(text.to_owned());
        assert_eq!(need(Method::GET, "/v2/", None), (Route::Base, None));
        assert_eq!(need(Method::GET, "/v2", None), (Route::Base, None));
        assert_eq!(
            need(Method::GET, "/v2/_catalog", None),
            (Route::Catalog, s("registry:catalog:*"))
        );
        assert_eq!(
            need(Method::HEAD, "/v2/g/app/manifests/latest", None),
            (Route::Manifest, s("repository:g/app:pull"))
        );
        assert_eq!(
            need(Method::PUT, "/v2/g/app/manifests/v1", None),
            (Route::Manifest, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(Method::GET, "/v2/g/app/blobs/sha256:abc", None),
            (Route::Blob, s("repository:g/app:pull"))
        );
        assert_eq!(
            need(Method::DELETE, "/v2/g/app/manifests/sha256:abc", None),
            (Route::Manifest, s("repository:g/app:delete"))
        );
        assert_eq!(
            need(Method::POST, "/v2/g/app/blobs/uploads/", None),
            (Route::Upload, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(
                Method::PATCH,
                "/v2/g/app/blobs/uploads/0b7f-uuid",
                Some("_state=x")
            ),
            (Route::Upload, s("repository:g/app:pull,push"))
        );
        assert_eq!(
            need(Method::GET, "/v2/g/app/tags/list", None),
            (Route::Tags, s("repository:g/app:pull"))
        );
    }

    #[test]
    fn upload_requests_name_their_session() {
        let need = classify(
            &Method::PATCH,
            "/v2/g/app/blobs/uploads/0b7f-uuid",
            Some("_state=x"),
        )
        .unwrap();
        assert_eq!(need.upload.as_deref(), Some("0b7f-uuid"));
        assert_eq!(
            classify(&Method::POST, "/v2/g/app/blobs/uploads/", None)
                .unwrap()
                .upload,
            None
        );
        assert_eq!(
            classify(&Method::GET, "/v2/g/app/blobs/sha256:1", None)
                .unwrap()
                .upload,
            None
        );
    }

    #[test]
    fn a_mount_also_needs_pull_on_the_source() {
        assert_eq!(
            need(
                Method::POST,
                "/v2/g/app/blobs/uploads/",
                Some("mount=sha256%3Aabc&from=other%2Fbase")
            ),
            (
                Route::Upload,
                Some("repository:g/app:pull,push repository:other/base:pull".into())
            )
        );
        assert!(classify(
            &Method::POST,
            "/v2/g/app/blobs/uploads/",
            Some("mount=x&from=BAD")
        )
        .is_err());
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            need(Method::GET, "/v2/g/blobs/manifests/manifests/latest", None),
            (
                Route::Manifest,
                Some("repository:g/blobs/manifests:pull".into())
            )
        );
        assert_eq!(
            need(Method::GET, "/v2/g/manifests/app/blobs/sha256:1", None),
            (Route::Blob, Some("repository:g/manifests/app:pull".into()))
        );
    }

    #[test]
    fn invalid_names_and_methods_are_refused_with_4xx() {
        let err = classify(&Method::GET, "/v2/Bad/Name/manifests/latest", None).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.code),
            (400, ErrorCode::NameInvalid)
        );
        let err = classify(&Method::OPTIONS, "/v2/g/app/manifests/latest", None).unwrap_err();
        assert_eq!(err.status.as_u16(), 405);
    }

    #[test]
    fn unknown_paths_need_only_a_valid_token() {
        assert_eq!(
            need(Method::GET, "/v2/something", None),
            (Route::Other, None)
        );
        assert_eq!(
            need(Method::GET, "/v2/g/app/manifests/", None),
            (Route::Other, None)
        );
    }
}
