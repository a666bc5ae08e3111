//! What the audit log keeps of a `/v2/` request: refusals, completed blob uploads, manifest
//! pushes, manifest pulls and deletes. Everything else (pings, HEADs, PATCH chunks) would
//! drown the record of who changed what.
//!
//! docker and podman pull by tag in two steps: `HEAD /manifests/<tag>` (the answer names the
//! digest), then `GET /manifests/<digest>`. The tag is what an operator looks for, so the
//! first step is remembered ([`PullTags`]) and the `pull` record of the second names it.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use http::{HeaderMap, Method, Request, StatusCode};

use super::access::{Need, Route};
use crate::auth::scope::{RepositoryName, Resource};
use crate::bounded::BoundedMap;
use crate::diagnose::grace::PushGrace;
use crate::diagnose::uploads::Session;
use crate::server::ClientAddr;
use crate::telemetry::audit::Audit;

/// One request on its way through the proxy, with what its audit record needs.
pub(super) struct Exchange {
    pub need: Need,
    /// `None` when the audit log is off: nothing is gathered then.
    facts: Option<Facts>,
}

struct Facts {
    method: Method,
    client: Option<IpAddr>,
    /// The last path segment: a manifest's tag or digest, a blob's digest.
    reference: String,
    /// The request body's declared length (a pushed manifest's size).
    content_length: Option<u64>,
}

impl Exchange {
    pub fn of<B>(request: &Request<B>, need: Need, audit: &Audit) -> Exchange {
        let facts = audit.enabled().then(|| Facts {
            method: request.method().clone(),
            client: ClientAddr::of(request.extensions()).map(|c| c.ip()),
            reference: need.reference.clone().unwrap_or_default(),
            content_length: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        });
        Exchange { need, facts }
    }

    fn repository(&self) -> Option<&RepositoryName> {
        match self.need.scopes.first().map(|s| &s.resource) {
            Some(Resource::Repository(name)) => Some(name),
            _ => None,
        }
    }

    /// The gateway refused the request before the registry saw it.
    pub fn refused(&self, audit: &Audit, reason: &str, user: Option<&str>) {
        let Some(facts) = &self.facts else { return };
        audit
            .record("refused")
            .field("route", self.need.route.label())
            .field("client", facts.client.map(|ip| ip.to_string()))
            .field("user", user)
            .field("method", facts.method.as_str())
            .field("repository", self.repository().map(|r| r.as_str()))
            .field("reason", reason)
            .write(audit);
    }

    /// The registry answered: record completed uploads, pushes, pulls and deletes.
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &self,
        audit: &Audit,
        user: &str,
        status: StatusCode,
        headers: &HeaderMap,
        finished_upload: Option<Session>,
        grace: &PushGrace,
        tags: &PullTags,
    ) {
        let (Some(facts), Some(repository)) = (&self.facts, self.repository()) else {
            return;
        };
        let digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        let asked_by_tag = is_tag(&facts.reference);
        if let (Route::Manifest, &Method::HEAD, 200, true, Some(digest)) = (
            self.need.route,
            &facts.method,
            status.as_u16(),
            asked_by_tag,
            digest,
        ) {
            tags.resolved(user, repository, digest, &facts.reference, Instant::now());
        }
        let event = match (self.need.route, &facts.method, status.as_u16()) {
            (Route::Upload, &Method::PUT, 201) => "blob_push",
            (Route::Manifest, &Method::PUT, 201) => "push",
            (Route::Manifest, &Method::GET, 200) => "pull",
            (Route::Manifest | Route::Blob, &Method::DELETE, 202) => "delete",
            _ => return,
        };
        let mut record = audit
            .record(event)
            .field("client", facts.client.map(|ip| ip.to_string()))
            .field("user", user)
            .field("repository", repository.as_str());
        match event {
            "blob_push" => {
                let session = finished_upload.as_ref();
                record = record
                    .field("digest", digest)
                    .field("bytes", session.map(|s| s.bytes))
                    .field(
                        "duration_s",
                        session.map(|s| round_ms(s.started.elapsed().as_secs_f64())),
                    );
            }
            "push" => {
                let started = grace
                    .uploads()
                    .push_started(user, repository, Instant::now());
                record = record
                    .field("reference", facts.reference.as_str())
                    .field("digest", digest)
                    .field("bytes", facts.content_length)
                    .field(
                        "duration_s",
                        started.map(|at| round_ms(at.elapsed().as_secs_f64())),
                    );
            }
            "pull" => {
                let tag = if asked_by_tag {
                    Some(facts.reference.clone())
                } else {
                    tags.tag_of(user, repository, &facts.reference, Instant::now())
                };
                record = record
                    .field("reference", facts.reference.as_str())
                    .field("tag", tag)
                    .field("digest", digest);
            }
            _ => {
                record = record
                    .field("reference", facts.reference.as_str())
                    .field("digest", digest);
            }
        }
        record.write(audit);
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// A manifest reference is a tag unless it is a digest (`algorithm:hex`; a tag has no `:`).
fn is_tag(reference: &str) -> bool {
    !reference.is_empty() && !reference.contains(':')
}

/// How long the tag of a `HEAD /manifests/<tag>` is remembered for the `GET` by digest that
/// follows it (docker sends the two back to back).
const TAG_MEMORY: Duration = Duration::from_secs(60);
/// Tag resolutions remembered at most (each a digest key and a tag of at most 128 bytes).
const TAG_ENTRIES: usize = 4096;

/// Which tag a user's client last resolved to a digest in a repository, for the `pull` record
/// of the `GET` by digest. Keyed by a digest of (user, repository, manifest digest), bounded.
pub struct PullTags {
    seen: Mutex<BoundedMap<[u8; 32], (String, Instant)>>,
}

impl Default for PullTags {
    fn default() -> PullTags {
        PullTags {
            seen: Mutex::new(BoundedMap::new(TAG_ENTRIES)),
        }
    }
}

impl PullTags {
    fn key(user: &str, repository: &RepositoryName, digest: &str) -> [u8; 32] {
        let mut context = digest::Context::new(&digest::SHA256);
        for part in [user, repository.as_str(), digest] {
            context.update(part.as_bytes());
            context.update(b"\0");
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }

    /// `HEAD /manifests/<tag>` answered `digest`.
    fn resolved(
        &self,
        user: &str,
        repository: &RepositoryName,
        digest: &str,
        tag: &str,
        now: Instant,
    ) {
        let key = PullTags::key(user, repository, digest);
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(key, (tag.to_owned(), now));
        }
    }

    /// The tag `digest` was resolved from, if that was recent.
    fn tag_of(
        &self,
        user: &str,
        repository: &RepositoryName,
        digest: &str,
        now: Instant,
    ) -> Option<String> {
        let key = PullTags::key(user, repository, digest);
        let mut seen = self.seen.lock().ok()?;
        let (tag, at) = seen.get(&key)?;
        (now.saturating_duration_since(*at) <= TAG_MEMORY).then(|| tag.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_resolved_from_a_tag_is_named_by_it_for_a_minute_and_per_user() {
        let tags = PullTags::default();
        let repo = RepositoryName::parse("group/app").unwrap();
        let at = Instant::now();
        tags.resolved("alice", &repo, "sha256:abc", "v1", at);
        assert_eq!(
            tags.tag_of("alice", &repo, "sha256:abc", at + Duration::from_secs(1)),
            Some("v1".into())
        );
        assert_eq!(tags.tag_of("bob", &repo, "sha256:abc", at), None);
        assert_eq!(tags.tag_of("alice", &repo, "sha256:def", at), None);
        assert_eq!(
            tags.tag_of("alice", &repo, "sha256:abc", at + TAG_MEMORY * 2),
            None
        );
    }

    #[test]
    fn tags_and_digests_are_told_apart() {
        assert!(is_tag("v1.2-rc"));
        assert!(!is_tag("sha256:0123"));
        assert!(!is_tag(""));
    }
}
