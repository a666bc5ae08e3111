//! Sign-in sessions of the token page: random ids held server-side in a bounded map.
//!
//! The cookie carries 32 random bytes (aws-lc-rs); the map is keyed by their SHA-256, so the
//! map never holds what a client could present, and a lookup's timing says nothing about a
//! stored id. A session ends at its idle timeout, at its absolute lifetime, at sign-out, or
//! when a full map evicts it (the oldest idle one goes first: [`crate::bounded`]); a new id
//! is made at every sign-in, so an id planted before sign-in is worth nothing (no fixation).
//!
//! Each session has its own CSRF token, put in every form and compared in constant time on
//! every POST. The sign-in form itself has no session yet: it is protected by a double-submit
//! cookie ([`pre_session_token`]) and the Origin check, without growing the map for strangers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::auth::credentials::{token_digest, Principal};
use crate::bounded::BoundedMap;

/// The session cookie's name.
pub const COOKIE: &str = "portcullis_session";
/// The sign-in form's double-submit cookie.
pub const PRE_COOKIE: &str = "portcullis_signin";

/// How long sessions live and how many are kept (`page:` in gateway.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however busy.
    pub lifetime: Duration,
    /// Sessions kept at most; a sign-in beyond evicts the least recently used.
    pub max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle_timeout: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// A token secret made on the previous request, to show once after the redirect.
#[derive(Clone)]
pub struct Revealed {
    /// The Basic username that goes with the secret (`docker login -u`).
    pub username: String,
    /// What it is, for the heading: "personal access token laptop".
    pub label: String,
    pub secret: String,
}

/// Why a request was refused, by its status (`Flash` renders it on the page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flash {
    Notice(String),
    Alert(String),
}

/// One signed-in user.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    /// Compared with every form's `authenticity_token`.
    pub csrf: String,
    signed_in: Instant,
    last_seen: Instant,
    /// Shown once by the next page (POST-redirect-GET), then gone.
    pub revealed: Option<Revealed>,
    pub flash: Option<Flash>,
    /// Signed out or expired: never served again. (The map has no removal; an ended entry
    /// waits for eviction and is treated as absent.)
    ended: bool,
}

impl Session {
    /// Does `token` match this session's CSRF token?
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }

    fn end(&mut self) {
        self.ended = true;
        self.revealed = None;
        self.flash = None;
    }
}

/// The sessions of one gateway.
pub struct Sessions {
    limits: SessionLimits,
    map: Mutex<BoundedMap<[u8; 32], Session>>,
}

/// A fresh random value, base64url without padding (43 characters for 32 bytes).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The double-submit value of the sign-in form: random, set as [`PRE_COOKIE`] and echoed in
/// the form; a cross-site page can neither read the cookie nor (SameSite=Strict) send it.
pub fn pre_session_token() -> String {
    random_token()
}

/// Does the sign-in form's token match its cookie?
pub fn pre_session_matches(cookie: Option<&str>, form: Option<&str>) -> bool {
    match (cookie, form) {
        (Some(cookie), Some(form)) if cookie.len() == 43 => {
            bool::from(cookie.as_bytes().ct_eq(form.as_bytes()))
        }
        _ => false,
    }
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            map: Mutex::new(BoundedMap::new(limits.max_sessions)),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BoundedMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a session for `principal`; the id to put in the cookie. Always a new id.
    pub fn start(&self, principal: Principal, now: Instant) -> String {
        let id = random_token();
        let session = Session {
            principal,
            csrf: random_token(),
            signed_in: now,
            last_seen: now,
            revealed: None,
            flash: None,
            ended: false,
        };
        self.map().insert(token_digest(&id), session);
        id
    }

    /// The live session with this id, its last use set to `now` and its one-time contents
    /// (the revealed secret, the flash) taken out of the store: they are shown once.
    pub fn take(&self, id: &str, now: Instant) -> Option<Session> {
        let key = token_digest(id);
        let mut map = self.map();
        let session = map.get_mut(&key)?;
        let idle = now.saturating_duration_since(session.last_seen) >= self.limits.idle_timeout;
        let old = now.saturating_duration_since(session.signed_in) >= self.limits.lifetime;
        if session.ended || idle || old {
            session.end();
            return None;
        }
        session.last_seen = now;
        let copy = session.clone();
        session.revealed = None;
        session.flash = None;
        Some(copy)
    }

    /// Keep something for the next page of this session (after the redirect).
    pub fn stash(&self, id: &str, revealed: Option<Revealed>, flash: Option<Flash>) {
        if let Some(session) = self.map().get_mut(&token_digest(id)) {
            session.revealed = revealed;
            session.flash = flash;
        }
    }

    /// End the session (sign-out): its id is worth nothing from now on.
    pub fn end(&self, id: &str) {
        if let Some(session) = self.map().get_mut(&token_digest(id)) {
            session.end();
        }
    }

    /// Sessions held (live or waiting for eviction).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max: usize) -> Sessions {
        Sessions::new(SessionLimits {
            idle_timeout: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
            max_sessions: max,
        })
    }

    #[test]
    fn idle_and_absolute_expiry_end_a_session() {
        let s = sessions(10);
        let t0 = Instant::now();
        let id = s.start(Principal::Anonymous, t0);
        assert!(s.take(&id, t0 + Duration::from_secs(59)).is_some());
        // Kept alive by use, until the absolute lifetime.
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_secs(50);
            assert!(s.take(&id, t).is_some());
        }
        assert!(s.take(&id, t0 + Duration::from_secs(600)).is_none());
        let id = s.start(Principal::Anonymous, t0);
        assert!(s.take(&id, t0 + Duration::from_secs(61)).is_none());
        // Once expired, never back.
        assert!(s.take(&id, t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn the_map_holds_at_most_max_sessions_and_ids_are_fresh() {
        let s = sessions(100);
        let now = Instant::now();
        let ids: Vec<String> = (0..1000)
            .map(|_| s.start(Principal::Anonymous, now))
            .collect();
        assert_eq!(s.len(), 100);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 1000);
        assert!(s.take(ids.last().unwrap(), now).is_some());
        assert!(s.take(&ids[0], now).is_none());
    }

    #[test]
    fn one_time_contents_are_shown_once_and_sign_out_ends_it() {
        let s = sessions(10);
        let now = Instant::now();
        let id = s.start(Principal::Anonymous, now);
        s.stash(&id, None, Some(Flash::Notice("made".into())));
        assert_eq!(
            s.take(&id, now).unwrap().flash,
            Some(Flash::Notice("made".into()))
        );
        assert_eq!(s.take(&id, now).unwrap().flash, None);
        let csrf = s.take(&id, now).unwrap().csrf;
        assert!(s.take(&id, now).unwrap().csrf_matches(&csrf));
        assert!(!s.take(&id, now).unwrap().csrf_matches("wrong"));
        s.end(&id);
        assert!(s.take(&id, Instant::now()).is_none());
    }

    #[test]
    fn the_sign_in_double_submit_needs_both_equal() {
        let t = pre_session_token();
        assert!(pre_session_matches(Some(&t), Some(&t)));
        assert!(!pre_session_matches(Some(&t), Some("x")));
        assert!(!pre_session_matches(None, Some(&t)));
        assert!(!pre_session_matches(Some(""), Some("")));
    }
}
