//! Verified tokens, remembered until they expire.
//!
//! A client sends the same token with every request of a pull or push (dozens to thousands of
//! requests in its five minutes). Verifying an ES256 or RS256 signature each time is the most
//! expensive thing the gateway does on a small request; a token that verified once stays
//! valid until its `exp` (tokens are not revocable: the registry could not be told either).
//! So the claims of a verified token are kept together with the token itself, and only the
//! time window (`nbf`, `exp`) is checked again on a hit.
//!
//! A hit needs the token to be byte for byte the one that verified: the entry keeps the token
//! and it is compared whole (a `memcmp`), so no hash collision can hand one token's claims to
//! another. The map's key only finds the entry: a SipHash (std's `RandomState`, random keys
//! drawn at start-up, so no client can aim tokens at one bucket) of the token's length and last
//! [`KEY_TAIL`] bytes, which are the signature's. Hashing the whole token twice (the 128-bit key
//! this replaces) was 11% of a small request's instructions with GitLab's 2 KB tokens; the tail
//! and the comparison cost a few hundred.
//!
//! Bounded: at most [`CAPACITY`] entries ([`BoundedMap`]: O(1) eviction of the least recently
//! used, never a walk over the map); a flood of distinct tokens costs verifications, not
//! memory. Only tokens the gateway signed are kept, each beside its claims (which already hold
//! most of what the token says), and a token is at most `server.max_header_bytes`.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use super::token::Claims;
use crate::bounded::BoundedMap;

/// Most tokens remembered at once (each entry is the token and its claims).
pub const CAPACITY: usize = 8192;

/// How many of a token's last bytes its map key hashes (the signature's: 86 of an ES256
/// token's base64url, 342 of an RS256 one's).
pub const KEY_TAIL: usize = 32;

/// A verified token and its claims.
struct Verdict {
    token: Box<str>,
    claims: Arc<Claims>,
}

/// Verified claims by token key.
pub struct Verdicts {
    entries: Mutex<BoundedMap<u64, Verdict>>,
    key: RandomState,
    /// Credentials revoked through the token API: tokens bound to them stop at once, cached
    /// or not.
    revoked: Revocations,
}

/// Bindings (`claims.cred`) of revoked credentials, each kept until every registry token
/// that can carry it has expired. One atomic load on the hot path while there are none.
/// Bounded: one entry per revocation within a token lifetime, and at most [`CAPACITY`] * 8
/// (the oldest go first, which only ends their early stop: their tokens expire anyway).
#[derive(Default)]
struct Revocations {
    any: std::sync::atomic::AtomicBool,
    entries: Mutex<std::collections::HashMap<String, u64>>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            entries: Mutex::new(BoundedMap::new(CAPACITY)),
            key: RandomState::new(),
            revoked: Revocations::default(),
        }
    }
}

impl Verdicts {
    /// Where `token`'s entry is looked for: its length and last [`KEY_TAIL`] bytes, hashed
    /// under the random key. Finds an entry, proves nothing: [`Verdicts::get`] compares the
    /// whole token.
    fn key(&self, bytes: &[u8]) -> u64 {
        let tail = &bytes[bytes.len().saturating_sub(KEY_TAIL)..];
        self.key.hash_one((bytes.len(), tail))
    }

    /// The claims of `token` if this very token verified before and `now` (Unix seconds) is
    /// inside its validity window. Bytes, as the header carried them: a stored token was valid
    /// UTF-8 when it verified, so one equal to it is too, and is not scanned again.
    pub fn get(&self, token: &[u8], now: u64) -> Option<Arc<Claims>> {
        let key = self.key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .filter(|verdict| verdict.token.as_bytes() == token)
            .map(|verdict| &verdict.claims)
            .filter(|claims| claims.nbf <= now && now < claims.exp)
            .cloned()
    }

    /// Stop every token bound to `binding` (a revoked credential) until `until` (Unix
    /// seconds), cached verdicts included.
    pub fn revoke(&self, binding: &str, until: u64, now: u64) {
        use std::sync::atomic::Ordering;
        let mut entries = self
            .revoked
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, end| *end > now);
        if entries.len() >= CAPACITY * 8 {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(binding.to_owned(), until);
        self.revoked.any.store(true, Ordering::Release);
    }

    /// Was the credential these claims are bound to revoked?
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        use std::sync::atomic::Ordering;
        if !self.revoked.any.load(Ordering::Acquire) {
            return false;
        }
        let Some(binding) = claims.cred.as_deref() else {
            return false;
        };
        self.revoked
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(binding)
    }

    /// Remember a token that just verified (in place of another with the same key, should
    /// one be there: that one is verified again when it next comes).
    pub fn insert(&self, token: &str, claims: &Arc<Claims>) {
        let key = self.key(token.as_bytes());
        let verdict = Verdict {
            token: token.into(),
            claims: Arc::clone(claims),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(nbf: u64, exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "portcullis".into(),
            sub: "alice".into(),
            aud: "container_registry".into(),
            exp,
            nbf,
            iat: nbf,
            jti: "1".into(),
            access: Vec::new(),
            cred: None,
            auth_type: None,
            user: None,
        })
    }

    #[test]
    fn a_remembered_token_is_valid_only_inside_its_window() {
        let verdicts = Verdicts::default();
        verdicts.insert("token-a", &claims(100, 400));
        assert!(verdicts.get(b"token-a", 99).is_none(), "before nbf");
        assert_eq!(verdicts.get(b"token-a", 100).unwrap().sub, "alice");
        assert!(verdicts.get(b"token-a", 399).is_some());
        assert!(verdicts.get(b"token-a", 400).is_none(), "at exp");
        assert!(verdicts.get(b"token-b", 200).is_none(), "another token");
    }

    #[test]
    fn a_full_cache_never_grows_past_capacity_and_keeps_what_is_in_use() {
        let verdicts = Verdicts::default();
        verdicts.insert("live", &claims(0, 1000));
        for i in 0..4 * CAPACITY {
            verdicts.insert(&format!("t-{i}"), &claims(0, 1000));
            if i % 1000 == 0 {
                assert!(verdicts.get(b"live", 20).is_some(), "an entry in use stays");
            }
        }
        assert!(verdicts.entries.lock().unwrap().len() <= CAPACITY);
    }

    #[test]
    fn a_revoked_binding_stops_its_cached_tokens_and_no_other() {
        let verdicts = Verdicts::default();
        let mut bound = (*claims(0, 1000)).clone();
        bound.cred = Some("pat:abc".into());
        let bound = Arc::new(bound);
        verdicts.insert("t", &bound);
        assert!(!verdicts.is_revoked(&verdicts.get(b"t", 1).unwrap()));
        verdicts.revoke("pat:abc", 500, 1);
        assert!(verdicts.is_revoked(&verdicts.get(b"t", 1).unwrap()));
        assert!(!verdicts.is_revoked(&claims(0, 1000)), "unbound claims");
        verdicts.revoke("pat:other", 900, 600);
        assert!(!verdicts.is_revoked(&bound), "expired entries are dropped");
    }

    #[test]
    fn every_byte_of_the_token_counts() {
        let verdicts = Verdicts::default();
        verdicts.insert("header.payload.sig", &claims(0, 1000));
        assert!(verdicts.get(b"header.payload.sig", 1).is_some());
        for other in [
            "Header.payload.sig",
            "header.payload.siG",
            "header.payload.sig.",
            "",
        ] {
            assert!(verdicts.get(other.as_bytes(), 1).is_none(), "{other:?}");
        }
        // Two caches draw their own keys: the same token has another key in each.
        assert_ne!(
            Verdicts::default().key(b"header.payload.sig"),
            verdicts.key(b"header.payload.sig")
        );
    }

    #[test]
    fn a_token_sharing_the_keyed_tail_is_a_miss_and_replaces_nothing_it_should_not() {
        let verdicts = Verdicts::default();
        let signature = "s".repeat(KEY_TAIL);
        let genuine = format!("header.payload-a.{signature}");
        let forged = format!("header.payload-b.{signature}");
        assert_eq!(
            verdicts.key(genuine.as_bytes()),
            verdicts.key(forged.as_bytes()),
            "same length and tail"
        );
        verdicts.insert(&genuine, &claims(0, 1000));
        assert!(
            verdicts.get(forged.as_bytes(), 1).is_none(),
            "the whole token is compared"
        );
        assert!(verdicts.get(genuine.as_bytes(), 1).is_some());
        let mut other = (*claims(0, 1000)).clone();
        other.sub = "bob".into();
        verdicts.insert(&forged, &Arc::new(other));
        assert_eq!(verdicts.get(forged.as_bytes(), 1).unwrap().sub, "bob");
        assert!(
            verdicts.get(genuine.as_bytes(), 1).is_none(),
            "replaced: verified again next time"
        );
    }
}
