//! SQLite and PostgreSQL stores (filled in next).

use super::{StoreError, StoredToken, TokenStore};
use crate::auth::identity::BoxFuture;
use time::OffsetDateTime;

pub struct SqlStore;

impl SqlStore {
    pub async fn open(url: &str) -> Result<SqlStore, StoreError> {
        Err(StoreError::Unavailable(format!(
            "unsupported store url {url:?}"
        )))
    }
}

impl TokenStore for SqlStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<StoredToken>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn version(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
    fn insert<'a>(&'a self, _token: &'a StoredToken) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("not yet".into())) })
    }
    fn revoke(&self, _id: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("not yet".into())) })
    }
    fn rotate<'a>(
        &'a self,
        _old: u64,
        _new: &'a StoredToken,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("not yet".into())) })
    }
    fn touch<'a>(
        &'a self,
        _used: &'a [(u64, OffsetDateTime)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
