//! Verified tokens, remembered until they expire.
//!
//! A client sends the same token with every request of a pull or push (dozens to thousands of
//! requests in its five minutes). Verifying an ES256 or RS256 signature each time is the most
//! expensive thing the gateway does on a small request; a token that verified once stays
//! valid until its `exp` (tokens are not revocable: the registry could not be told either).
//! So the claims of a verified token are kept, keyed by a SHA-256 that determines the whole
//! token, and only the time window (`nbf`, `exp`) is checked again on a hit.
//!
//! The key: every token the gateway signs with its current key starts with the same header
//! segment (algorithm, `kid`, and the `x5c` certificate chain: over a kilobyte). When a token's
//! header is byte for byte that segment, only the rest is hashed (behind a distinct prefix
//! byte), which determines the token as exactly as hashing all of it and costs less than
//! half; any other token is hashed whole.
//!
//! Bounded: at most [`CAPACITY`] entries ([`BoundedMap`]: O(1) eviction of the least recently
//! used, never a walk over the map); a flood of distinct tokens costs verifications, not
//! memory.

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use super::token::Claims;
use crate::bounded::BoundedMap;

/// Most tokens remembered at once (each entry is the claims plus 32 bytes).
pub const CAPACITY: usize = 8192;

/// Verified claims by token key.
pub struct Verdicts {
    entries: Mutex<BoundedMap<[u8; 32], Arc<Claims>>>,
    /// The header segment of tokens signed with the current key.
    header: String,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts::new(String::new())
    }
}

impl Verdicts {
    /// A cache for tokens whose usual header segment is `header` (see the module doc).
    pub fn new(header: String) -> Verdicts {
        Verdicts {
            entries: Mutex::new(BoundedMap::new(CAPACITY)),
            header,
        }
    }

    fn key(&self, token: &str) -> [u8; 32] {
        let mut context = digest::Context::new(&digest::SHA256);
        match token.split_once('.') {
            Some((header, rest)) if !self.header.is_empty() && header == self.header => {
                context.update(&[1]);
                context.update(rest.as_bytes());
            }
            _ => {
                context.update(&[0]);
                context.update(token.as_bytes());
            }
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }

    /// The claims of `token` if it verified before and `now` (Unix seconds) is inside its
    /// validity window.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        let key = self.key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .filter(|claims| claims.nbf <= now && now < claims.exp)
            .cloned()
    }

    /// Remember a token that just verified.
    pub fn insert(&self, token: &str, claims: &Arc<Claims>) {
        let key = self.key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, Arc::clone(claims));
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
        assert!(verdicts.get("token-a", 99).is_none(), "before nbf");
        assert_eq!(verdicts.get("token-a", 100).unwrap().sub, "alice");
        assert!(verdicts.get("token-a", 399).is_some());
        assert!(verdicts.get("token-a", 400).is_none(), "at exp");
        assert!(verdicts.get("token-b", 200).is_none(), "another token");
    }

    #[test]
    fn a_full_cache_never_grows_past_capacity_and_keeps_what_is_in_use() {
        let verdicts = Verdicts::default();
        verdicts.insert("live", &claims(0, 1000));
        for i in 0..4 * CAPACITY {
            verdicts.insert(&format!("t-{i}"), &claims(0, 1000));
            if i % 1000 == 0 {
                assert!(verdicts.get("live", 20).is_some(), "an entry in use stays");
            }
        }
        assert!(verdicts.entries.lock().unwrap().len() <= CAPACITY);
    }

    #[test]
    fn the_key_determines_the_whole_token_with_or_without_the_usual_header() {
        let verdicts = Verdicts::new("HEADER".into());
        verdicts.insert("HEADER.payload.sig", &claims(0, 1000));
        assert!(verdicts.get("HEADER.payload.sig", 1).is_some());
        // Same payload and signature behind another header: another token.
        assert!(verdicts.get("OTHER.payload.sig", 1).is_none());
        assert!(verdicts.get("HEADERX.payload.sig", 1).is_none());
        // A token whose whole text equals the usual header's remainder is not confused.
        assert!(verdicts.get("payload.sig", 1).is_none());
        verdicts.insert("OTHER.payload.sig", &claims(0, 1000));
        assert!(verdicts.get("OTHER.payload.sig", 1).is_some());
    }
}
