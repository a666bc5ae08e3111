//! Protected and immutable tags, enforced by the gateway itself on
//! `PUT /v2/<name>/manifests/<tag>` and `DELETE /v2/<name>/manifests/<reference>`, so they
//! hold in front of a registry that checks nothing.
//!
//! The proxy never reads the credential store: the router hands it a [`TagGuard`], a closure
//! that answers "which tag rules apply to this token's holder on this repository, at which
//! access level?" (`None` when the project has no tag rules, the common case: then nothing
//! here costs more than that call). Whether a tag already exists, and which tags point at a
//! digest, the registry tells: a `HEAD` of the manifest and the tags list, asked with a pull
//! token the gateway mints for itself.
//!
//! Decisions, stated in README and docs/gitlab-compatibility.md:
//! - an immutable tag that exists is never PUT again, even with the identical manifest: the
//!   gateway streams manifests and does not hash them, and "once pushed" stays simple;
//! - `DELETE` by digest is refused when any tag of the repository that the caller could not
//!   delete (immutable, or protected above their level) points at that digest;
//! - when the registry cannot tell (an error, a tags list too long to read), the request is
//!   refused: a protection that fails open protects nothing.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::access::{Need, Route};
use super::forward::Upstream;
use crate::auth::protection::{AccessLevel, TagProtection, TagRefusal};
use crate::auth::scope::{Action, Actions, RepositoryName, Resource, ResourceAccess};
use crate::auth::token::{Claims, Tokens};
use crate::error::{ApiError, ErrorCode};

/// The tag rules of a repository's project and the caller's level there.
pub struct GuardedTags {
    pub rules: Arc<TagProtection>,
    pub level: AccessLevel,
}

/// The router's answer to "which tag rules apply to this token on this repository?".
pub type TagGuard = Arc<dyn Fn(&Claims, &RepositoryName) -> Option<GuardedTags> + Send + Sync>;

/// The manifest types a HEAD asks for, so the registry answers with the stored digest
/// whatever the manifest's kind.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws";
/// The largest tags list read for a delete by digest; a longer one is refused (fail closed).
const MAX_TAGS_LIST_BYTES: usize = 4 << 20;
/// Tags asked for in one tags list page; a repository with more is refused a digest delete.
const MAX_TAGS: usize = 10_000;
/// Guarded tags whose digest may be asked for in one delete.
const MAX_TAG_LOOKUPS: usize = 256;

/// Why the registry could not answer a question the decision needs.
#[derive(Debug, thiserror::Error)]
enum Lookup {
    #[error("the registry answered {0}")]
    Status(StatusCode),
    #[error("the registry could not be asked: {0}")]
    Upstream(String),
    #[error("{0}")]
    TooMany(String),
}

/// Can [`check`] refuse this request? Only a manifest `PUT` or `DELETE`: the proxy makes no
/// future for the others.
pub(super) fn applies(method: &Method, need: &Need) -> bool {
    need.route == Route::Manifest && matches!(*method, Method::PUT | Method::DELETE)
}

/// Refuse the request (`Err`) if it would push or delete a protected or immutable tag.
pub(super) async fn check(
    guard: &TagGuard,
    upstream: &Upstream,
    tokens: &Tokens,
    method: &Method,
    need: &Need,
    claims: &Claims,
) -> Result<(), (ApiError, &'static str)> {
    if !applies(method, need) {
        return Ok(());
    }
    let (Some(Resource::Repository(name)), Some(reference)) = (
        need.scopes.first().map(|s| &s.resource),
        need.reference.as_deref(),
    ) else {
        return Ok(());
    };
    let Some(guarded) = guard(claims, name) else {
        return Ok(());
    };
    let rules = &guarded.rules;
    let is_digest = reference.contains(':');
    let decided = if *method == Method::PUT && !is_digest {
        let exists = match rules.is_immutable(reference) {
            Some(_) => tag_digest(upstream, tokens, name, reference)
                .await
                .map(|d| d.is_some()),
            None => Ok(false),
        };
        exists.map(|exists| rules.push(reference, guarded.level, exists))
    } else if *method == Method::DELETE && !is_digest {
        Ok(rules.delete(reference, guarded.level))
    } else if *method == Method::DELETE {
        digest_delete(upstream, tokens, name, reference, &guarded).await
    } else {
        Ok(Ok(()))
    };
    match decided {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => {
            tracing::info!(user = ?claims.sub, repository = ?name.as_str(), reference = ?reference, reason = refusal.reason(), "request refused by a tag protection rule");
            Err((
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, refusal.message()),
                refusal.reason(),
            ))
        }
        Err(error) => {
            tracing::warn!(repository = ?name.as_str(), reference = ?reference, "cannot check the tag protection rules, request refused: {error}");
            Err((
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("the tag protection rules of this repository could not be checked ({error}); try again"),
                ),
                "tag_rules_unchecked",
            ))
        }
    }
}

/// A delete by digest: refused if a tag the caller may not delete points at the digest.
async fn digest_delete(
    upstream: &Upstream,
    tokens: &Tokens,
    name: &RepositoryName,
    digest: &str,
    guarded: &GuardedTags,
) -> Result<Result<(), TagRefusal>, Lookup> {
    let tags = tag_list(upstream, tokens, name).await?;
    let guarded_tags: Vec<(String, TagRefusal)> = tags
        .into_iter()
        .filter_map(|tag| {
            let refusal = guarded.rules.delete(&tag, guarded.level).err()?;
            Some((tag, refusal))
        })
        .collect();
    if guarded_tags.len() > MAX_TAG_LOOKUPS {
        return Err(Lookup::TooMany(format!(
            "more than {MAX_TAG_LOOKUPS} protected or immutable tags to compare"
        )));
    }
    for (tag, refusal) in guarded_tags {
        if tag_digest(upstream, tokens, name, &tag).await?.as_deref() == Some(digest) {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(()))
}

/// A pull token for `name`, minted by the gateway for its own questions.
fn pull_token(tokens: &Tokens, name: &RepositoryName) -> Result<HeaderValue, Lookup> {
    let access = vec![ResourceAccess::new(
        &Resource::Repository(name.clone()),
        Actions::of(&[Action::Pull]),
    )];
    let issued = tokens
        .issue("portcullis-tag-protection", access, None, SystemTime::now())
        .map_err(|e| Lookup::Upstream(format!("cannot sign a token: {e}")))?;
    HeaderValue::from_str(&format!("Bearer {}", issued.token))
        .map_err(|e| Lookup::Upstream(e.to_string()))
}

fn registry_request(
    upstream: &Upstream,
    tokens: &Tokens,
    method: Method,
    name: &RepositoryName,
    path: String,
) -> Result<Request<crate::body::Body>, Lookup> {
    let target =
        http::uri::PathAndQuery::try_from(path).map_err(|e| Lookup::Upstream(e.to_string()))?;
    let uri = upstream
        .uri_for(target)
        .map_err(|e| Lookup::Upstream(e.to_string()))?;
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, pull_token(tokens, name)?)
        .header(header::ACCEPT, MANIFEST_TYPES)
        .body(crate::body::empty())
        .map_err(|e| Lookup::Upstream(e.to_string()))
}

/// The digest `tag` points at, `None` when the tag does not exist.
async fn tag_digest(
    upstream: &Upstream,
    tokens: &Tokens,
    name: &RepositoryName,
    tag: &str,
) -> Result<Option<String>, Lookup> {
    let path = format!("/v2/{}/manifests/{tag}", name.as_str());
    let request = registry_request(upstream, tokens, Method::HEAD, name, path)?;
    let response = upstream
        .send(request)
        .await
        .map_err(|e| Lookup::Upstream(e.to_string()))?;
    match response.status() {
        StatusCode::OK => Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| Some(String::new()))),
        StatusCode::NOT_FOUND => Ok(None),
        other => Err(Lookup::Status(other)),
    }
}

/// Every tag of `name` (none when the repository does not exist).
async fn tag_list(
    upstream: &Upstream,
    tokens: &Tokens,
    name: &RepositoryName,
) -> Result<Vec<String>, Lookup> {
    let path = format!("/v2/{}/tags/list?n={MAX_TAGS}", name.as_str());
    let request = registry_request(upstream, tokens, Method::GET, name, path)?;
    let response = upstream
        .send(request)
        .await
        .map_err(|e| Lookup::Upstream(e.to_string()))?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Ok(Vec::new()),
        other => return Err(Lookup::Status(other)),
    }
    if response.headers().contains_key(header::LINK) {
        return Err(Lookup::TooMany(format!(
            "the repository has more than {MAX_TAGS} tags"
        )));
    }
    let body = Limited::new(response.into_body(), MAX_TAGS_LIST_BYTES)
        .collect()
        .await
        .map_err(|e| Lookup::Upstream(format!("reading the tags list: {e}")))?
        .to_bytes();
    #[derive(serde::Deserialize)]
    struct TagList {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let list: TagList = serde_json::from_slice(&body)
        .map_err(|e| Lookup::Upstream(format!("the tags list is not JSON: {e}")))?;
    Ok(list.tags.unwrap_or_default())
}
