//! Verified tokens, remembered until they expire.
//!
//! A client sends the same token with every request of a pull or push (dozens to thousands of
//! requests in its five minutes). Verifying an ES256 or RS256 signature each time is the most
//! expensive thing the gateway does on a small request; a token that verified once stays
//! valid until its `exp` (tokens are not revocable: the registry could not be told either).
//! So the claims of a verified token are kept, keyed by the token's SHA-256, and only the
//! time window (`nbf`, `exp`) is checked again on a hit.
//!
//! Bounded: at most [`CAPACITY`] entries; when full, expired entries go, and if that frees
//! nothing the cache starts over (a flood of distinct tokens costs verifications, not memory).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use super::token::Claims;

/// Most tokens remembered at once (each entry is the claims plus 32 bytes).
pub const CAPACITY: usize = 8192;

/// Verified claims by token digest.
#[derive(Default)]
pub struct Verdicts {
    entries: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

fn key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

impl Verdicts {
    /// The claims of `token` if it verified before and `now` (Unix seconds) is inside its
    /// validity window.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key(token))
            .filter(|claims| claims.nbf <= now && now < claims.exp)
            .cloned()
    }

    /// Remember a token that just verified.
    pub fn insert(&self, token: &str, claims: &Arc<Claims>, now: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, claims| now < claims.exp);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key(token), Arc::clone(claims));
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
        verdicts.insert("token-a", &claims(100, 400), 100);
        assert!(verdicts.get("token-a", 99).is_none(), "before nbf");
        assert_eq!(verdicts.get("token-a", 100).unwrap().sub, "alice");
        assert!(verdicts.get("token-a", 399).is_some());
        assert!(verdicts.get("token-a", 400).is_none(), "at exp");
        assert!(verdicts.get("token-b", 200).is_none(), "another token");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_and_never_grows_past_capacity() {
        let verdicts = Verdicts::default();
        for i in 0..CAPACITY {
            verdicts.insert(&format!("old-{i}"), &claims(0, 10), 0);
        }
        verdicts.insert("live", &claims(0, 1000), 20);
        assert!(verdicts.get("live", 20).is_some());
        assert_eq!(verdicts.entries.lock().unwrap().len(), 1);
        for i in 0..2 * CAPACITY {
            verdicts.insert(&format!("t-{i}"), &claims(0, 1000), 20);
        }
        assert!(verdicts.entries.lock().unwrap().len() <= CAPACITY);
    }
}
