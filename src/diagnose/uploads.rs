//! Upload sessions in flight, as the registry reported them.
//!
//! A session starts when `POST .../blobs/uploads/` is answered 202 with `Docker-Upload-UUID`,
//! grows with each PATCH answered with `Range: 0-N`, and ends with the PUT that completes it
//! (or a DELETE). Each session remembers which registry TOKEN last moved it on, and each token
//! that uploaded to a repository is remembered as "this token pushed there since" until
//! `max_session`, so the manifest PUT that ends a push belongs to it too. Push grace extends
//! only that token: another token of the same user, expired, gains nothing from a push it took
//! no part in. Nothing here holds a body or a credential.
//!
//! Every map is bounded: at most [`CAPACITY`] entries each, the oldest evicted first, keyed by
//! fixed-size digests (an upload UUID is a client-supplied string of any length) and pruned in
//! insertion order, so no insert ever walks the whole map.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use crate::auth::scope::RepositoryName;
use crate::auth::token::Claims;

/// One upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub repository: RepositoryName,
    /// The token subject that started it.
    pub subject: String,
    /// The registry token that started it, or last moved it on.
    pub token: TokenKey,
    pub started: Instant,
    /// Bytes the registry has acknowledged.
    pub bytes: u64,
    /// Lifetime of the token that started it (exp - iat).
    pub token_lifetime: Duration,
}

/// At most this many live sessions, and as many push records; the oldest go first.
pub const CAPACITY: usize = 50_000;

/// Sessions are forgotten this long after they started even if never finished (abandoned
/// uploads), unless `max_session` is longer: push grace ends at `max_session` anyway, and
/// a day keeps the audit's size and duration of ordinary long uploads.
const SESSION_RETENTION: Duration = Duration::from_secs(86_400);

/// 128 bits of SHA-256 over `parts`, domain-separated: a fixed-size key for any input.
fn key_of(domain: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(domain);
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&context.finish().as_ref()[..16]);
    key
}

/// Which upload session: a digest of its UUID, whatever the UUID's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey([u8; 16]);

impl SessionKey {
    fn of(uuid: &str) -> SessionKey {
        SessionKey(key_of(b"portcullis upload session\0", &[uuid.as_bytes()]))
    }
}

/// Which registry token: a digest of the claims that make it unique (its random `jti`, signed
/// by the gateway, with subject, credential fingerprint and validity).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 16]);

impl TokenKey {
    pub fn of(claims: &Claims) -> TokenKey {
        TokenKey(key_of(
            b"portcullis registry token\0",
            &[
                claims.jti.as_bytes(),
                claims.sub.as_bytes(),
                claims.cred.as_deref().unwrap_or("").as_bytes(),
                &claims.iat.to_be_bytes(),
                &claims.exp.to_be_bytes(),
            ],
        ))
    }
}

impl TokenKey {
    /// The 128 bits, for a shared store's record (see `crate::shared::uploads`).
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// A key read back from a shared store.
    pub fn from_bytes(bytes: [u8; 16]) -> TokenKey {
        TokenKey(bytes)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Which (subject, repository): for the audit's push duration only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SubjectPush([u8; 16]);

impl SubjectPush {
    fn of(subject: &str, repository: &RepositoryName) -> SubjectPush {
        SubjectPush(key_of(
            b"portcullis subject push\0",
            &[subject.as_bytes(), repository.as_str().as_bytes()],
        ))
    }
}

/// Which (token, repository): the push record push grace trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenPush([u8; 16]);

impl TokenPush {
    fn of(token: TokenKey, repository: &RepositoryName) -> TokenPush {
        TokenPush(key_of(
            b"portcullis token push\0",
            &[&token.0, repository.as_str().as_bytes()],
        ))
    }
}

/// A map with a hard cap, oldest entry evicted first, and entries older than `retention`
/// pruned from the old end as new ones arrive: every operation is O(log n), none walks the map.
struct Bounded<K, V> {
    entries: HashMap<K, (u64, Instant, V)>,
    /// Insertion sequence -> key: the oldest entry is the first.
    order: BTreeMap<u64, K>,
    next: u64,
    capacity: usize,
    retention: Duration,
}

impl<K: Copy + Eq + Hash, V> Bounded<K, V> {
    fn new(capacity: usize, retention: Duration) -> Bounded<K, V> {
        Bounded {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            capacity,
            retention,
        }
    }

    /// Insert (or replace, making it the newest) `key`, recorded at `at`.
    fn insert(&mut self, key: K, at: Instant, value: V, now: Instant) {
        self.remove(&key);
        let seq = self.next;
        self.next += 1;
        self.entries.insert(key, (seq, at, value));
        self.order.insert(seq, key);
        self.prune(now);
    }

    /// Drop what is past `retention` (from the old end, stopping at the first entry that is
    /// not), then the oldest entries beyond `capacity`.
    fn prune(&mut self, now: Instant) {
        while let Some((&seq, key)) = self.order.first_key_value() {
            let stale = self
                .entries
                .get(key)
                .is_none_or(|(_, at, _)| now.saturating_duration_since(*at) >= self.retention);
            if !stale && self.entries.len() <= self.capacity {
                break;
            }
            let key = *key;
            self.order.remove(&seq);
            self.entries.remove(&key);
        }
    }

    fn get(&self, key: &K) -> Option<(Instant, &V)> {
        self.entries.get(key).map(|(_, at, value)| (*at, value))
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, _, value)| value)
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let (seq, _, value) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

struct State {
    sessions: Bounded<SessionKey, Session>,
    /// (token, repository) -> start of the latest session that token took part in.
    pushes: Bounded<TokenPush, ()>,
    /// (subject, repository) -> start of the latest session: the audit's push duration.
    subject_pushes: Bounded<SubjectPush, ()>,
}

/// The registry of upload sessions.
pub struct Uploads {
    max_session: Duration,
    state: Mutex<State>,
}

impl Uploads {
    pub fn new(max_session: Duration) -> Uploads {
        Uploads::with_capacity(max_session, CAPACITY)
    }

    fn with_capacity(max_session: Duration, capacity: usize) -> Uploads {
        Uploads {
            max_session,
            state: Mutex::new(State {
                sessions: Bounded::new(capacity, max_session.max(SESSION_RETENTION)),
                pushes: Bounded::new(capacity, max_session),
                subject_pushes: Bounded::new(capacity, max_session),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry opened session `uuid` for `token` (of `subject`).
    pub fn started(
        &self,
        uuid: &str,
        repository: RepositoryName,
        token: TokenKey,
        subject: &str,
        token_lifetime: Duration,
        now: Instant,
    ) {
        let mut state = self.state();
        state
            .pushes
            .insert(TokenPush::of(token, &repository), now, (), now);
        state
            .subject_pushes
            .insert(SubjectPush::of(subject, &repository), now, (), now);
        let session = Session {
            repository,
            subject: subject.to_owned(),
            token,
            started: now,
            bytes: 0,
            token_lifetime,
        };
        state
            .sessions
            .insert(SessionKey::of(uuid), now, session, now);
    }

    /// The registry acknowledged `bytes` bytes of session `uuid`, sent with `token`: that token
    /// now carries the session (a client may change tokens in the middle of a push).
    pub fn progress(&self, uuid: &str, token: TokenKey, bytes: u64, now: Instant) {
        let mut state = self.state();
        let Some(session) = state.sessions.get_mut(&SessionKey::of(uuid)) else {
            return;
        };
        session.bytes = session.bytes.max(bytes);
        let joined = (session.token != token).then(|| {
            session.token = token;
            (TokenPush::of(token, &session.repository), session.started)
        });
        if let Some((push, started)) = joined {
            if state.pushes.get(&push).is_none() {
                state.pushes.insert(push, started, (), now);
            }
        }
    }

    /// Session `uuid` is complete or cancelled (by `token`): what it was.
    pub fn finished(&self, uuid: &str, token: TokenKey, now: Instant) -> Option<Session> {
        let mut state = self.state();
        let session = state.sessions.remove(&SessionKey::of(uuid))?;
        let push = TokenPush::of(token, &session.repository);
        if state.pushes.get(&push).is_none() {
            state.pushes.insert(push, session.started, (), now);
        }
        Some(session)
    }

    /// The session `uuid`, whatever its age (push grace compares it with `max_session`).
    pub fn session(&self, uuid: &str) -> Option<Session> {
        self.state()
            .sessions
            .get(&SessionKey::of(uuid))
            .map(|(_, s)| s.clone())
    }

    /// When the latest upload `token` took part in on `repository` started, if within
    /// `max_session`: the manifest PUT that finishes that token's push belongs to it. The only
    /// push record push grace trusts.
    pub fn push_started_by(
        &self,
        token: TokenKey,
        repository: &RepositoryName,
        now: Instant,
    ) -> Option<Instant> {
        self.state()
            .pushes
            .get(&TokenPush::of(token, repository))
            .map(|(started, ())| started)
            .filter(|started| now.saturating_duration_since(*started) < self.max_session)
    }

    /// When `subject`'s latest upload to `repository` started, if within `max_session`: for
    /// the audit's push duration only, never to decide anything (any token of the subject
    /// counts here).
    pub fn push_started(
        &self,
        subject: &str,
        repository: &RepositoryName,
        now: Instant,
    ) -> Option<Instant> {
        self.state()
            .subject_pushes
            .get(&SubjectPush::of(subject, repository))
            .map(|(started, ())| started)
            .filter(|started| now.saturating_duration_since(*started) < self.max_session)
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

    fn token(jti: &str) -> TokenKey {
        TokenKey::of(&Claims {
            iss: "portcullis".into(),
            sub: "alice".into(),
            aud: "container_registry".into(),
            exp: 2,
            nbf: 0,
            iat: 1,
            jti: jti.into(),
            access: vec![],
            cred: Some("pat:00".into()),
            auth_type: None,
            user: None,
        })
    }

    #[test]
    fn a_session_lives_from_start_to_finish_within_max_session() {
        let uploads = Uploads::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (t1, t2) = (token("one"), token("two"));
        uploads.started(
            "u1",
            repo("g/app"),
            t1,
            "alice",
            Duration::from_secs(300),
            t0,
        );
        uploads.progress("u1", t1, 1024, t0);
        uploads.progress("u1", t1, 10, t0);
        let session = uploads.session("u1").unwrap();
        assert_eq!((session.bytes, session.subject.as_str()), (1024, "alice"));
        assert_eq!(session.token, t1);
        uploads.finished("u1", t1, t0);
        assert!(uploads.session("u1").is_none());
        // The push is still remembered for the manifest PUT, for that token only.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(uploads.push_started_by(t1, &repo("g/app"), later), Some(t0));
        assert_eq!(uploads.push_started_by(t2, &repo("g/app"), later), None);
        assert_eq!(uploads.push_started_by(t1, &repo("g/other"), later), None);
        assert_eq!(
            uploads.push_started_by(t1, &repo("g/app"), t0 + Duration::from_secs(60)),
            None
        );
        // The audit's view: any push of the subject.
        assert_eq!(
            uploads.push_started("alice", &repo("g/app"), later),
            Some(t0)
        );
        assert_eq!(uploads.push_started("bob", &repo("g/app"), t0), None);
    }

    #[test]
    fn a_token_that_takes_over_a_session_carries_it_and_its_push() {
        let uploads = Uploads::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (t1, t2) = (token("one"), token("two"));
        uploads.started("u1", repo("g/app"), t1, "alice", Duration::ZERO, t0);
        uploads.progress("u1", t2, 10, t0 + Duration::from_secs(1));
        assert_eq!(uploads.session("u1").unwrap().token, t2);
        assert_eq!(
            uploads.push_started_by(t2, &repo("g/app"), t0 + Duration::from_secs(2)),
            Some(t0)
        );
    }

    #[test]
    fn the_maps_stay_bounded_over_a_million_uploads() {
        let uploads = Uploads::with_capacity(Duration::from_secs(3600), 10_000);
        let t0 = Instant::now();
        let clock = std::time::Instant::now();
        let long_uuid = "u".repeat(64 * 1024);
        for i in 0..1_000_000u32 {
            let uuid = format!("{i:036}");
            let t = token(&uuid);
            let repository = repo("g/app");
            uploads.started(&uuid, repository, t, "alice", Duration::ZERO, t0);
            if i % 100_000 == 0 {
                // A huge UUID costs one fixed-size key like any other.
                uploads.started(&long_uuid, repo("g/app"), t, "alice", Duration::ZERO, t0);
            }
            if i % 3 == 0 {
                uploads.finished(&uuid, t, t0);
            }
        }
        let state = uploads.state();
        assert!(state.sessions.len() <= 10_000, "{}", state.sessions.len());
        assert!(state.pushes.len() <= 10_000);
        assert!(state.subject_pushes.len() <= 10_000);
        assert!(state.sessions.order.len() == state.sessions.len());
        assert!(state.pushes.order.len() == state.pushes.len());
        // The oldest went first: the newest sessions are there.
        drop(state);
        assert!(uploads.session(&format!("{:036}", 999_998)).is_some());
        assert!(uploads.session(&format!("{:036}", 1)).is_none());
        // A generous bound that only an O(n) walk per insert would break.
        assert!(
            clock.elapsed() < Duration::from_secs(60),
            "{:?}",
            clock.elapsed()
        );
    }

    #[test]
    fn entries_past_their_retention_are_pruned_as_new_ones_arrive() {
        let uploads = Uploads::with_capacity(Duration::from_secs(10), 1_000);
        let t0 = Instant::now();
        let t = token("one");
        for i in 0..100 {
            uploads.started(
                &format!("u{i}"),
                repo("g/app"),
                t,
                "alice",
                Duration::ZERO,
                t0,
            );
        }
        let late = t0 + SESSION_RETENTION + Duration::from_secs(1);
        uploads.started("new", repo("g/app"), t, "alice", Duration::ZERO, late);
        assert_eq!(uploads.open_sessions(), 1);
        assert_eq!(uploads.state().pushes.len(), 1);
    }

    #[test]
    fn range_headers_give_the_bytes_received() {
        assert_eq!(bytes_from_range("0-1048575"), Some(1_048_576));
        assert_eq!(bytes_from_range("0-0"), Some(1));
        assert_eq!(bytes_from_range("bytes"), None);
    }
}
