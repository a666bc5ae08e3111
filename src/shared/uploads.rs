//! Upload sessions and push records visible to every replica, for push grace and the
//! expired-mid-push diagnosis.
//!
//! The interface is [`Uploads`]'s, made async. The in-process [`Uploads`] always records what
//! this replica saw (it answers alone while Redis does not, and for the audit's durations);
//! with Redis, every change is also written there BEFORE the registry's answer goes back to
//! the client, so the replica the client's next request reaches already knows it:
//!
//! - `up:s:<hash of the UUID>`: a hash with the repository, subject, token key (128 bits of a
//!   digest of the token's claims, never the token), start (wall-clock ms), bytes and token
//!   lifetime; expiring like the in-process record (a day, or `push_grace.max_session`);
//! - `up:p:<hash of token key + repository>`: when the latest session that token took part in
//!   started, expiring after `push_grace.max_session`: the manifest PUT that ends the push.
//!
//! A record Redis does not have (written while it was unreachable) is looked up in process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::{hex, instant_of, ms_of, unix_ms, Redis};
use crate::auth::scope::RepositoryName;
use crate::diagnose::uploads::{Session, TokenKey, Uploads};

/// Abandoned sessions are forgotten after this, as in process.
const SESSION_RETENTION: Duration = Duration::from_secs(86_400);

pub struct SharedUploads {
    local: Uploads,
    redis: Option<Arc<Redis>>,
    max_session: Duration,
}

impl SharedUploads {
    pub fn new(max_session: Duration, redis: Option<Arc<Redis>>) -> SharedUploads {
        SharedUploads {
            local: Uploads::new(max_session),
            redis,
            max_session,
        }
    }

    /// What this replica saw itself.
    pub fn local(&self) -> &Uploads {
        &self.local
    }

    fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref().filter(|r| r.is_up())
    }

    fn session_key(redis: &Redis, uuid: &str) -> String {
        redis.key("up:s", &[uuid.as_bytes()])
    }

    fn push_key(redis: &Redis, token: TokenKey, repository: &RepositoryName) -> String {
        redis.key("up:p", &[&token.bytes(), repository.as_str().as_bytes()])
    }

    fn retention(&self) -> u64 {
        self.max_session.max(SESSION_RETENTION).as_millis() as u64
    }

    /// The registry opened session `uuid` for `token` (of `subject`).
    pub async fn started(
        &self,
        uuid: &str,
        repository: RepositoryName,
        token: TokenKey,
        subject: &str,
        token_lifetime: Duration,
    ) {
        let now = Instant::now();
        if let Some(redis) = self.redis() {
            let session = Self::session_key(redis, uuid);
            let push = Self::push_key(redis, token, &repository);
            let started = unix_ms();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&session)
                .ignore()
                .hset_multiple(
                    &session,
                    &[
                        ("repository", repository.as_str().to_owned()),
                        ("subject", subject.to_owned()),
                        ("token", hex(&token.bytes())),
                        ("started", started.to_string()),
                        ("bytes", "0".to_owned()),
                        ("lifetime", token_lifetime.as_secs().to_string()),
                    ],
                )
                .ignore()
                .pexpire(&session, self.retention() as i64)
                .ignore()
                .cmd("SET")
                .arg(&push)
                .arg(started)
                .arg("PX")
                .arg(self.max_session.as_millis() as u64)
                .ignore();
            redis
                .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await;
        }
        self.local
            .started(uuid, repository, token, subject, token_lifetime, now);
    }

    /// The registry acknowledged `bytes` bytes of session `uuid`, sent with `token`.
    pub async fn progress(&self, uuid: &str, token: TokenKey, bytes: u64) {
        self.local.progress(uuid, token, bytes, Instant::now());
        let Some(redis) = self.redis() else { return };
        let key = Self::session_key(redis, uuid);
        let Some(Some(session)) = self.fetch(redis, &key).await else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.hset(&key, "bytes", session.bytes.max(bytes)).ignore();
        if session.token != token {
            pipe.hset(&key, "token", hex(&token.bytes())).ignore();
            self.remember_push(&mut pipe, redis, token, &session);
        }
        redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await;
    }

    /// Add to `pipe`: `token`'s push to the session's repository began when the session did
    /// (first writer wins; kept while a session may still be under way).
    fn remember_push(
        &self,
        pipe: &mut redis::Pipeline,
        redis: &Redis,
        token: TokenKey,
        session: &Session,
    ) {
        if let Some(left) = self.max_session.checked_sub(session.started.elapsed()) {
            pipe.cmd("SET")
                .arg(Self::push_key(redis, token, &session.repository))
                .arg(ms_of(session.started))
                .arg("NX")
                .arg("PX")
                .arg(left.as_millis().max(1) as u64)
                .ignore();
        }
    }

    /// Session `uuid` is complete or cancelled (by `token`): what it was.
    pub async fn finished(&self, uuid: &str, token: TokenKey) -> Option<Session> {
        let local = self.local.finished(uuid, token, Instant::now());
        let Some(redis) = self.redis() else {
            return local;
        };
        let key = Self::session_key(redis, uuid);
        let shared = self.fetch(redis, &key).await.flatten();
        if let Some(session) = &shared {
            let mut pipe = redis::pipe();
            pipe.del(&key).ignore();
            self.remember_push(&mut pipe, redis, token, session);
            redis
                .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await;
        }
        shared.or(local)
    }

    /// The session `uuid`, as any replica last recorded it.
    pub async fn session(&self, uuid: &str) -> Option<Session> {
        if let Some(redis) = self.redis() {
            let key = Self::session_key(redis, uuid);
            if let Some(Some(session)) = self.fetch(redis, &key).await {
                return Some(session);
            }
        }
        self.local.session(uuid)
    }

    /// When the latest upload `token` took part in on `repository` started, on any replica,
    /// if within `max_session`.
    pub async fn push_started_by(
        &self,
        token: TokenKey,
        repository: &RepositoryName,
    ) -> Option<Instant> {
        let now = Instant::now();
        if let Some(redis) = self.redis() {
            let key = Self::push_key(redis, token, repository);
            let started: Option<Option<u64>> =
                redis.run(|mut c| async move { c.get(&key).await }).await;
            if let Some(Some(ms)) = started {
                let started = instant_of(ms);
                if now.saturating_duration_since(started) < self.max_session {
                    return Some(started);
                }
            }
        }
        self.local.push_started_by(token, repository, now)
    }

    pub fn open_sessions(&self) -> usize {
        self.local.open_sessions()
    }

    /// `None`: Redis failed; `Some(None)`: no such session there.
    async fn fetch(&self, redis: &Redis, key: &str) -> Option<Option<Session>> {
        let key = key.to_owned();
        let fields: HashMap<String, String> = redis
            .run(|mut c| async move { c.hgetall(&key).await })
            .await?;
        Some(parse(&fields))
    }
}

fn parse(fields: &HashMap<String, String>) -> Option<Session> {
    let text = |name: &str| fields.get(name).map(String::as_str);
    let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
    let token = text("token")?;
    if token.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(token.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Session {
        repository: RepositoryName::parse(text("repository")?).ok()?,
        subject: text("subject")?.to_owned(),
        token: TokenKey::from_bytes(bytes),
        started: instant_of(number("started")?),
        bytes: number("bytes")?,
        token_lifetime: Duration::from_secs(number("lifetime")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(token: &str) -> HashMap<String, String> {
        [
            ("repository", "g/app"),
            ("subject", "alice"),
            ("token", token),
            ("started", "1000"),
            ("bytes", "42"),
            ("lifetime", "300"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn a_record_read_back_is_whole_or_nothing() {
        let hex = "00112233445566778899aabbccddeeff";
        let session = parse(&fields(hex)).unwrap();
        assert_eq!(session.token.bytes()[15], 0xff);
        assert_eq!((session.bytes, session.subject.as_str()), (42, "alice"));
        // Anything malformed (another writer, a truncated record) is no session at all.
        for bad in [
            "",
            "00",
            &hex[..31],
            "zz112233445566778899aabbccddeeff",
            "é0112233445566778899aabbccddeef",
        ] {
            assert!(parse(&fields(bad)).is_none(), "{bad:?}");
        }
        let mut missing = fields(hex);
        missing.remove("started");
        assert!(parse(&missing).is_none());
        let mut bad_repo = fields(hex);
        bad_repo.insert("repository".into(), "../../etc".into());
        assert!(parse(&bad_repo).is_none());
    }
}
