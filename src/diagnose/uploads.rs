//! Upload sessions in flight, as the registry reported them.
//!
//! A session starts when `POST .../blobs/uploads/` is answered 202 with `Docker-Upload-UUID`,
//! grows with each PATCH answered with `Range: 0-N`, and ends with the PUT that completes it
//! (or a DELETE). A finished session is remembered as "this subject pushed to this repository
//! since" until `max_session`, so the manifest PUT that ends a push belongs to it too. Nothing
//! here holds a body or a credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::scope::RepositoryName;

/// One upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub repository: RepositoryName,
    /// The token subject that started it.
    pub subject: String,
    pub started: Instant,
    /// Bytes the registry has acknowledged.
    pub bytes: u64,
    /// Lifetime of the token that started it (exp - iat).
    pub token_lifetime: Duration,
}

/// At most this many live sessions and push records; the oldest go first.
const CAPACITY: usize = 50_000;

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// (subject, repository) -> start of the most recent session of a push.
    pushes: HashMap<(String, RepositoryName), Instant>,
}

/// The registry of upload sessions.
pub struct Uploads {
    max_session: Duration,
    state: Mutex<State>,
}

impl Uploads {
    pub fn new(max_session: Duration) -> Uploads {
        Uploads {
            max_session,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry opened session `uuid`.
    pub fn started(
        &self,
        uuid: &str,
        repository: RepositoryName,
        subject: &str,
        token_lifetime: Duration,
        now: Instant,
    ) {
        let mut state = self.state();
        if state.sessions.len() >= CAPACITY || state.pushes.len() >= CAPACITY {
            let max = self.max_session;
            state
                .sessions
                .retain(|_, s| now.duration_since(s.started) < max);
            state
                .pushes
                .retain(|_, started| now.duration_since(*started) < max);
        }
        state
            .pushes
            .insert((subject.to_owned(), repository.clone()), now);
        state.sessions.insert(
            uuid.to_owned(),
            Session {
                repository,
                subject: subject.to_owned(),
                started: now,
                bytes: 0,
                token_lifetime,
            },
        );
    }

    /// The registry acknowledged `bytes` bytes of session `uuid`.
    pub fn progress(&self, uuid: &str, bytes: u64) {
        if let Some(session) = self.state().sessions.get_mut(uuid) {
            session.bytes = session.bytes.max(bytes);
        }
    }

    /// Session `uuid` is complete or cancelled: what it was.
    pub fn finished(&self, uuid: &str) -> Option<Session> {
        self.state().sessions.remove(uuid)
    }

    /// The session `uuid`, whatever its age (push grace compares it with `max_session`).
    pub fn session(&self, uuid: &str) -> Option<Session> {
        self.state().sessions.get(uuid).cloned()
    }

    /// When `subject`'s latest upload to `repository` started, if within `max_session`: the
    /// manifest PUT that finishes a push belongs to that push.
    pub fn push_started(
        &self,
        subject: &str,
        repository: &RepositoryName,
        now: Instant,
    ) -> Option<Instant> {
        self.state()
            .pushes
            .get(&(subject.to_owned(), repository.clone()))
            .copied()
            .filter(|started| now.duration_since(*started) < self.max_session)
    }

    pub fn open_sessions(&self) -> usize {
        self.state().sessions.len()
    }
}

/// The upload offset from a `Range: 0-N` answer: N + 1 bytes received.
pub fn bytes_from_range(value: &str) -> Option<u64> {
    let (_, end) = value.trim().split_once('-')?;
    end.trim().parse::<u64>().ok().map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    #[test]
    fn a_session_lives_from_start_to_finish_within_max_session() {
        let uploads = Uploads::new(Duration::from_secs(60));
        let t0 = Instant::now();
        uploads.started("u1", repo("g/app"), "alice", Duration::from_secs(300), t0);
        uploads.progress("u1", 1024);
        uploads.progress("u1", 10);
        let session = uploads.session("u1").unwrap();
        assert_eq!((session.bytes, session.subject.as_str()), (1024, "alice"));
        uploads.finished("u1");
        assert!(uploads.session("u1").is_none());
        // The push is still remembered for the manifest PUT.
        assert_eq!(
            uploads.push_started("alice", &repo("g/app"), t0 + Duration::from_secs(30)),
            Some(t0)
        );
        assert_eq!(uploads.push_started("bob", &repo("g/app"), t0), None);
        assert_eq!(
            uploads.push_started("alice", &repo("g/app"), t0 + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn range_headers_give_the_bytes_received() {
        assert_eq!(bytes_from_range("0-1048575"), Some(1_048_576));
        assert_eq!(bytes_from_range("0-0"), Some(1));
        assert_eq!(bytes_from_range("bytes"), None);
    }
}
