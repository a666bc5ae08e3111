//! A store in memory: for tests and `store: { url: "memory:" }` (tokens end with the process).

use std::sync::Mutex;

use time::OffsetDateTime;

use super::{StoreError, StoredToken, TokenStore, MAX_TOKENS};
use crate::auth::identity::BoxFuture;

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tokens: Vec<StoredToken>,
    version: i64,
}

impl State {
    fn insert(&mut self, token: &StoredToken) -> Result<u64, StoreError> {
        if self.tokens.len() >= MAX_TOKENS {
            return Err(StoreError::Full);
        }
        let clash = self.tokens.iter().any(|t| {
            t.digest == token.digest || (token.kind.is_deploy() && t.username == token.username)
        });
        if clash {
            return Err(StoreError::Conflict);
        }
        let id = self.tokens.iter().map(|t| t.id).max().unwrap_or(0) + 1;
        let mut token = token.clone();
        token.id = id;
        self.tokens.push(token);
        self.version += 1;
        Ok(id)
    }

    fn revoke(&mut self, id: u64) -> bool {
        match self.tokens.iter_mut().find(|t| t.id == id && !t.revoked) {
            Some(token) => {
                token.revoked = true;
                self.version += 1;
                true
            }
            None => false,
        }
    }
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl TokenStore for MemoryStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<StoredToken>, StoreError>> {
        let all = self.with(|s| s.tokens.clone());
        Box::pin(async move { Ok(all) })
    }

    fn version(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        let version = self.with(|s| s.version);
        Box::pin(async move { Ok(version) })
    }

    fn insert<'a>(&'a self, token: &'a StoredToken) -> BoxFuture<'a, Result<u64, StoreError>> {
        let result = self.with(|s| s.insert(token));
        Box::pin(async move { result })
    }

    fn revoke(&self, id: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let result = self.with(|s| s.revoke(id));
        Box::pin(async move { Ok(result) })
    }

    fn rotate<'a>(
        &'a self,
        old: u64,
        new: &'a StoredToken,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let result = self.with(|s| {
            if !s.tokens.iter().any(|t| t.id == old && !t.revoked) {
                return Err(StoreError::Conflict);
            }
            let id = s.insert(new)?;
            s.revoke(old);
            Ok(id)
        });
        Box::pin(async move { result })
    }

    fn find_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        let found = self.with(|s| s.tokens.iter().find(|t| &t.digest == digest).cloned());
        Box::pin(async move { Ok(found) })
    }

    fn touch<'a>(
        &'a self,
        used: &'a [(u64, OffsetDateTime)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|s| {
            for (id, at) in used {
                if let Some(token) = s.tokens.iter_mut().find(|t| t.id == *id) {
                    token.last_used_at = Some(*at);
                }
            }
        });
        Box::pin(async { Ok(()) })
    }
}
