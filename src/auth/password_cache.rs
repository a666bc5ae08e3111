//! Remembering successful password checks for a bounded time.
//!
//! One `docker push` makes dozens of token requests, each with the same Basic credentials;
//! paying bcrypt or argon2 for every one of them would make the slow hash the bottleneck. A
//! success is remembered, for [`TTL`], under an HMAC (with a key made at start-up) of the
//! username, the STORED hash and the password: a changed password or a reloaded config yields
//! another key, so the old entry simply never matches again. Failures are never cached. The
//! entries are a [`BoundedMap`]: at most [`CAPACITY`], O(1) per insert.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

use crate::bounded::BoundedMap;

/// How long a verified password is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// At most this many entries; past it, idle ones go first (see [`BoundedMap`]).
const CAPACITY: usize = 10_000;

pub struct PasswordCache {
    key: hmac::Key,
    entries: Mutex<BoundedMap<[u8; 32], Instant>>,
    ttl: Duration,
}

impl Default for PasswordCache {
    fn default() -> Self {
        PasswordCache::new(TTL)
    }
}

impl PasswordCache {
    pub fn new(ttl: Duration) -> PasswordCache {
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).unwrap_or_else(|_| {
                hmac::Key::new(
                    hmac::HMAC_SHA256,
                    &Instant::now().elapsed().as_nanos().to_le_bytes(),
                )
            });
        PasswordCache {
            key,
            entries: Mutex::new(BoundedMap::new(CAPACITY)),
            ttl,
        }
    }

    fn entry_key(&self, username: &str, stored_hash: &str, password: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in [username, stored_hash, password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// True when this exact (username, stored hash, password) was verified within the TTL.
    pub fn contains(
        &self,
        username: &str,
        stored_hash: &str,
        password: &str,
        now: Instant,
    ) -> bool {
        let key = self.entry_key(username, stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).is_some_and(|expires| now < *expires)
    }

    /// Remember a successful verification.
    pub fn insert(&self, username: &str, stored_hash: &str, password: &str, now: Instant) {
        let key = self.entry_key(username, stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, now + self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_is_remembered_until_the_ttl_and_only_for_the_same_inputs() {
        let cache = PasswordCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!cache.contains("alice", "$2y$hash", "pw", t0));
        cache.insert("alice", "$2y$hash", "pw", t0);
        assert!(cache.contains("alice", "$2y$hash", "pw", t0 + Duration::from_secs(59)));
        assert!(
            !cache.contains("alice", "$2y$hash", "pw", t0 + Duration::from_secs(60)),
            "expired"
        );
        assert!(
            !cache.contains("alice", "$2y$hash", "other", t0),
            "another password"
        );
        assert!(
            !cache.contains("alice", "$2y$changed", "pw", t0),
            "a changed stored hash"
        );
        assert!(!cache.contains("bob", "$2y$hash", "pw", t0), "another user");
        // Length-prefixed parts: shifting characters between fields is another key.
        cache.insert("ab", "c", "d", t0);
        assert!(!cache.contains("a", "bc", "d", t0));
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_what_is_in_use() {
        let cache = PasswordCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert("alice", "h", "pw", t0);
        for i in 0..CAPACITY * 10 {
            cache.insert(&format!("user{i}"), "h", "p", t0);
            if i % 1000 == 0 {
                assert!(cache.contains("alice", "h", "pw", t0), "evicted at {i}");
            }
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CAPACITY);
    }
}
