//! Tokens that expire in the middle of a push: name it, and (push grace) prevent it.
//!
//! The registry checks a token once, when a request's headers arrive; a long push is many
//! requests (POST, PATCH..., PUT, then the manifest PUT), and the token a client fetched at the
//! start may expire between two of them: "unauthorized: authentication required". The gateway
//! signed that token and follows the upload session, so it knows better:
//!
//! - a request of a live push (same repository, same TOKEN: the one that started or last moved
//!   on the upload session, or for the manifest PUT one that uploaded there within
//!   `max_session`) whose token expired is either
//!   extended — forwarded with a freshly minted token limited to `repository:<repo>:push,pull`,
//!   when push grace is on, the session is younger than `max_session`, the expired token did
//!   allow pushing there, and the credential behind it is still valid and still allowed to
//!   push there — or refused with the registry's 401 and one WARN line that says what happened
//!   and how to fix it;
//! - an expired token can never start a new upload or touch another repository, and never
//!   borrows a push of another token, even one of the same user;
//! - requests already streaming are never cut: tokens are only checked when headers arrive.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Method;

use super::uploads::{bytes_from_range, Session, TokenKey, Uploads};
use crate::auth::scope::{Action, Actions, RepositoryName, Resource, ResourceAccess};
use crate::auth::token::{Claims, Tokens};
use crate::config::PushGrace as Settings;
use crate::proxy::access::{Need, Route};
use crate::shared::uploads::SharedUploads;
use crate::telemetry::metrics::{metrics, Diagnosis};

/// "May `subject`, with the credential fingerprinted `credential`, still push to `repository`?"
/// Provided by the router (it reads the directory; the proxy never does).
pub type MayPush = Arc<dyn Fn(&str, &str, &RepositoryName) -> bool + Send + Sync>;

/// What to do with a request whose token expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it with this token instead.
    Extend(String),
    /// Refuse it like the registry would.
    Refuse,
}

pub struct PushGrace {
    settings: Settings,
    /// Upload sessions: shared by the replicas when `shared_state` is set.
    uploads: SharedUploads,
    may_push: MayPush,
    tokens: Arc<Tokens>,
}

fn push_pull() -> Actions {
    Actions::of(&[Action::Pull, Action::Push])
}

impl PushGrace {
    pub fn new(
        settings: Settings,
        tokens: Arc<Tokens>,
        may_push: MayPush,
        shared: Option<Arc<crate::shared::Redis>>,
    ) -> PushGrace {
        PushGrace {
            uploads: SharedUploads::new(settings.max_session, shared),
            settings,
            may_push,
            tokens,
        }
    }

    /// The sessions this replica saw (the audit's durations).
    pub fn uploads(&self) -> &Uploads {
        self.uploads.local()
    }

    /// Decide about a request that came with a genuine but expired token.
    pub async fn expired(
        &self,
        claims: &Claims,
        method: &Method,
        need: &Need,
        now: Instant,
    ) -> Verdict {
        let Some(Resource::Repository(repository)) = need.scopes.first().map(|s| &s.resource)
        else {
            return Verdict::Refuse;
        };
        // Which push does the request belong to? Only requests that continue or finish one that
        // this very token took part in.
        let token = TokenKey::of(claims);
        let (started, upload, bytes) = match (need.route, &need.upload, method) {
            (Route::Upload, Some(uuid), _) => match self.uploads.session(uuid).await {
                Some(s) if &s.repository == repository && s.token == token => {
                    (s.started, Some(uuid.as_str()), Some(s.bytes))
                }
                _ => return Verdict::Refuse,
            },
            (Route::Manifest, None, &Method::PUT) => {
                match self.uploads.push_started_by(token, repository).await {
                    Some(started) => (started, None, None),
                    None => return Verdict::Refuse,
                }
            }
            _ => return Verdict::Refuse,
        };
        let age = now.saturating_duration_since(started);
        let lifetime = claims.lifetime();
        let expired_ago = unix_now().saturating_sub(claims.exp);

        let refused_because = if !self.settings.enabled {
            Some("push_grace is disabled")
        } else if age >= self.settings.max_session {
            Some("the session is older than push_grace.max_session")
        } else if !claims
            .actions_on(&Resource::Repository(repository.clone()))
            .covers(push_pull())
        {
            Some("the expired token did not allow pushing there")
        } else if !claims
            .cred
            .as_deref()
            .is_some_and(|cred| (self.may_push)(&claims.sub, cred, repository))
        {
            Some("the credential behind the token is no longer valid or no longer allowed to push there")
        } else {
            None
        };

        if let Some(why) = refused_because {
            tracing::warn!(
                upload = upload.unwrap_or("-"),
                repository = ?repository.as_str(),
                user = ?claims.sub,
                bytes_so_far = %bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                session_age_s = age.as_secs(),
                token_lifetime_s = lifetime.as_secs(),
                expired_s_ago = expired_ago,
                "token expired in the middle of a push (the client sees 'unauthorized: authentication required'); not extended: {why}; fix: raise token.expiry above the longest push, or enable push_grace"
            );
            metrics().diagnosis(Diagnosis::ExpiredMidPush);
            return Verdict::Refuse;
        }
        let access = vec![ResourceAccess::new(
            &Resource::Repository(repository.clone()),
            push_pull(),
        )];
        match self
            .tokens
            .issue(&claims.sub, access, claims.cred.clone(), SystemTime::now())
        {
            Ok(fresh) => {
                tracing::info!(
                    upload = upload.unwrap_or("-"),
                    repository = ?repository.as_str(),
                    user = ?claims.sub,
                    bytes_so_far = %bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    session_age_s = age.as_secs(),
                    expired_s_ago = expired_ago,
                    "push grace: the token expired during the push; forwarded with a fresh token limited to repository:{repository}:push,pull"
                );
                metrics().push_grace_extension();
                Verdict::Extend(fresh.token)
            }
            Err(error) => {
                tracing::error!(%error, "push grace: signing a token failed");
                Verdict::Refuse
            }
        }
    }

    /// Learn about upload sessions from the registry's answer to a request made with the token
    /// `claims`: each session and push record is the token's, not merely its subject's.
    ///
    /// Gives back the session a successful `PUT` completed, for the audit log.
    pub async fn observe(
        &self,
        method: &Method,
        need: &Need,
        claims: &Claims,
        status: u16,
        headers: &http::HeaderMap,
    ) -> Option<Session> {
        if need.route != Route::Upload {
            return None;
        }
        let Some(Resource::Repository(repository)) = need.scopes.first().map(|s| &s.resource)
        else {
            return None;
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match (method, &need.upload, status) {
            (&Method::POST, None, 202) => {
                if let Some(uuid) = header("docker-upload-uuid") {
                    let lifetime = claims.lifetime();
                    self.uploads
                        .started(
                            uuid,
                            repository.clone(),
                            TokenKey::of(claims),
                            &claims.sub,
                            lifetime,
                        )
                        .await;
                    metrics().upload_sessions(self.uploads.open_sessions());
                }
                None
            }
            (&Method::PATCH, Some(uuid), 202) => {
                if let Some(bytes) = header("range").and_then(bytes_from_range) {
                    self.uploads
                        .progress(uuid, TokenKey::of(claims), bytes)
                        .await;
                }
                None
            }
            (&Method::PUT, Some(uuid), 201) | (&Method::DELETE, Some(uuid), 204) => {
                let session = self.uploads.finished(uuid, TokenKey::of(claims)).await;
                metrics().upload_sessions(self.uploads.open_sessions());
                session.filter(|_| method == Method::PUT)
            }
            _ => None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
