//! What the audit log keeps of a `/v2/` request: refusals, completed blob uploads, manifest
//! pushes, manifest pulls and deletes. Everything else (pings, HEADs, PATCH chunks) would
//! drown the record of who changed what.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderMap, Method, Request, StatusCode};

use super::access::{Need, Route};
use crate::auth::scope::{RepositoryName, Resource};
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
            client: request.extensions().get::<ClientAddr>().map(|c| c.0.ip()),
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
    pub fn answered(
        &self,
        audit: &Audit,
        user: &str,
        status: StatusCode,
        headers: &HeaderMap,
        finished_upload: Option<Session>,
        grace: &PushGrace,
    ) {
        let (Some(facts), Some(repository)) = (&self.facts, self.repository()) else {
            return;
        };
        let digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
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
