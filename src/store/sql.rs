//! The SQL stores: SQLite (rusqlite, the library bundled: nothing to install) and PostgreSQL
//! (tokio-postgres), one schema ([`super::schema`]) and the same statements, written with
//! `$N` parameters (SQLite reads them as `?N`).
//!
//! Every write bumps `portcullis_changes.version` in its transaction; that row's lock also
//! orders concurrent writers of several replicas, so `MAX(id) + 1` is a safe next id. SQLite
//! runs on a blocking thread (its calls are synchronous); PostgreSQL reconnects when its
//! connection dropped, and every call is under [`super::STORE_TIMEOUT`] (the callers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::{Date, OffsetDateTime};

use super::schema::MIGRATIONS;
use super::{StoreError, StoredToken, TokenKind, TokenStore, MAX_TOKENS};
use crate::auth::identity::BoxFuture;

const COLUMNS: &str = "id, kind, owner, name, username, digest, scopes, access_level, description, created_at, expires_at, last_used_at, revoked, created_by";

/// A row as both databases hand it over.
struct Row {
    id: i64,
    kind: String,
    owner: String,
    name: String,
    username: String,
    digest: String,
    scopes: String,
    access_level: Option<String>,
    description: Option<String>,
    created_at: i64,
    expires_at: Option<String>,
    last_used_at: Option<i64>,
    revoked: bool,
    created_by: String,
}

impl Row {
    fn of(token: &StoredToken, id: i64) -> Row {
        Row {
            id,
            kind: token.kind.as_str().to_owned(),
            owner: token.owner.clone(),
            name: token.name.clone(),
            username: token.username.clone(),
            digest: token.digest.iter().map(|b| format!("{b:02x}")).collect(),
            scopes: token.scopes.join(" "),
            access_level: token.access_level.map(|r| r.to_string()),
            description: token.description.clone(),
            created_at: millis(token.created_at),
            expires_at: token.expires_at.map(|d| d.to_string()),
            last_used_at: token.last_used_at.map(millis),
            revoked: token.revoked,
            created_by: token.created_by.clone(),
        }
    }

    /// The token, or `None` for a row this binary cannot read (skipped, logged).
    fn token(self) -> Option<StoredToken> {
        let mut digest = [0u8; 32];
        if self.digest.len() != 64 {
            return None;
        }
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(self.digest.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Some(StoredToken {
            id: u64::try_from(self.id).ok()?,
            kind: TokenKind::parse(&self.kind)?,
            owner: self.owner,
            name: self.name,
            username: self.username,
            digest,
            scopes: self.scopes.split_whitespace().map(str::to_owned).collect(),
            access_level: match self.access_level {
                Some(text) => Some(text.parse().ok()?),
                None => None,
            },
            description: self.description,
            created_at: from_millis(self.created_at)?,
            expires_at: match self.expires_at {
                Some(text) => Some(Date::parse(&text, format).ok()?),
                None => None,
            },
            last_used_at: self.last_used_at.and_then(from_millis),
            revoked: self.revoked,
            created_by: self.created_by,
        })
    }
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn rows_to_tokens(rows: Vec<Row>) -> Vec<StoredToken> {
    let mut skipped = 0usize;
    let tokens: Vec<StoredToken> = rows
        .into_iter()
        .filter_map(|row| {
            let token = row.token();
            skipped += usize::from(token.is_none());
            token
        })
        .collect();
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "token store: rows this version cannot read were skipped"
        );
    }
    tokens
}

/// `$N` to SQLite's `?N`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// A SQL store.
pub enum SqlStore {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Box<Postgres>),
}

impl SqlStore {
    /// Open `sqlite:///path` or `postgres://...` and migrate it.
    pub async fn open(url: &str) -> Result<SqlStore, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.to_owned();
            let connection = tokio::task::spawn_blocking(move || open_sqlite(&path))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
            return Ok(SqlStore::Sqlite(Arc::new(Mutex::new(connection))));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let postgres = Postgres::open(url).await?;
            return Ok(SqlStore::Postgres(Box::new(postgres)));
        }
        Err(StoreError::Unavailable(
            "store.url must start with sqlite:// or postgres://".into(),
        ))
    }

    /// Run `work` on the SQLite connection on a blocking thread.
    async fn sqlite<T: Send + 'static>(
        connection: &Arc<Mutex<rusqlite::Connection>>,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection).map_err(sqlite_error)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

fn sqlite_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict
        }
        _ => StoreError::Unavailable(format!("sqlite: {error}")),
    }
}

fn open_sqlite(path: &str) -> Result<rusqlite::Connection, StoreError> {
    let connection = rusqlite::Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("sqlite: cannot open {path:?}: {e}")))?;
    connection
        .busy_timeout(Duration::from_secs(3))
        .map_err(sqlite_error)?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(sqlite_error)?;
    migrate_sqlite(&connection).map_err(sqlite_error)?;
    Ok(connection)
}

fn migrate_sqlite(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS portcullis_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let done: i64 = connection.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM portcullis_migrations",
            [],
            |row| row.get(0),
        )?;
        check_known(done).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            connection.execute_batch(migration)?;
            connection.execute(
                "INSERT INTO portcullis_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![index as i64 + 1, millis(OffsetDateTime::now_utc())],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// A store migrated further than this binary knows is refused: it must not write to a schema
/// it does not understand.
fn check_known(done: i64) -> Result<(), StoreError> {
    if done > MIGRATIONS.len() as i64 {
        return Err(StoreError::Unavailable(format!(
            "the store's schema is version {done}, newer than this gateway knows ({}): upgrade the gateway",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

fn sqlite_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: row.get(0)?,
        kind: row.get(1)?,
        owner: row.get(2)?,
        name: row.get(3)?,
        username: row.get(4)?,
        digest: row.get(5)?,
        scopes: row.get(6)?,
        access_level: row.get(7)?,
        description: row.get(8)?,
        created_at: row.get(9)?,
        expires_at: row.get(10)?,
        last_used_at: row.get(11)?,
        revoked: row.get(12)?,
        created_by: row.get(13)?,
    })
}

const INSERT: &str = "INSERT INTO portcullis_tokens (id, kind, owner, name, username, digest, scopes, access_level, description, created_at, expires_at, last_used_at, revoked, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const BUMP: &str = "UPDATE portcullis_changes SET version = version + 1 WHERE id = 1";
const NEXT_ID: &str = "SELECT COALESCE(MAX(id), 0) + 1, COUNT(*) FROM portcullis_tokens";
const DEPLOY_TAKEN: &str =
    "SELECT COUNT(*) FROM portcullis_tokens WHERE username = $1 AND kind IN ('project_deploy', 'group_deploy')";
const REVOKE: &str =
    "UPDATE portcullis_tokens SET revoked = TRUE WHERE id = $1 AND revoked = FALSE";

fn sqlite_insert(
    tx: &rusqlite::Transaction<'_>,
    token: &StoredToken,
) -> rusqlite::Result<Result<u64, StoreError>> {
    tx.execute(BUMP, [])?;
    let (id, count): (i64, i64) = tx.query_row(NEXT_ID, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if count as usize >= MAX_TOKENS {
        return Ok(Err(StoreError::Full));
    }
    if token.kind.is_deploy() {
        let taken: i64 =
            tx.query_row(&sqlite_sql(DEPLOY_TAKEN), [&token.username], |r| r.get(0))?;
        if taken > 0 {
            return Ok(Err(StoreError::Conflict));
        }
    }
    let r = Row::of(token, id);
    tx.execute(
        &sqlite_sql(INSERT),
        rusqlite::params![
            r.id,
            r.kind,
            r.owner,
            r.name,
            r.username,
            r.digest,
            r.scopes,
            r.access_level,
            r.description,
            r.created_at,
            r.expires_at,
            r.last_used_at,
            r.revoked,
            r.created_by
        ],
    )?;
    Ok(Ok(id as u64))
}

impl TokenStore for SqlStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<StoredToken>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM portcullis_tokens ORDER BY id");
            let rows = match self {
                SqlStore::Sqlite(c) => {
                    SqlStore::sqlite(c, move |c| {
                        let mut statement = c.prepare(&sql)?;
                        let rows = statement.query_map([], sqlite_row)?;
                        rows.collect::<rusqlite::Result<Vec<Row>>>()
                    })
                    .await?
                }
                SqlStore::Postgres(p) => p.load_all(&sql).await?,
            };
            Ok(rows_to_tokens(rows))
        })
    }

    fn version(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let sql = "SELECT version FROM portcullis_changes WHERE id = 1";
            match self {
                SqlStore::Sqlite(c) => {
                    SqlStore::sqlite(c, move |c| c.query_row(sql, [], |r| r.get(0))).await
                }
                SqlStore::Postgres(p) => {
                    let client = p.client().await?;
                    let row = client.query_one(sql, &[]).await.map_err(|e| p.failed(e))?;
                    Ok(row.get(0))
                }
            }
        })
    }

    fn insert<'a>(&'a self, token: &'a StoredToken) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            match self {
                SqlStore::Sqlite(c) => {
                    let token = token.clone();
                    SqlStore::sqlite(c, move |c| {
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let result = sqlite_insert(&tx, &token)?;
                        if result.is_ok() {
                            tx.commit()?;
                        }
                        Ok(result)
                    })
                    .await?
                }
                SqlStore::Postgres(p) => p.insert(None, token).await,
            }
        })
    }

    fn revoke(&self, id: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let id = i64::try_from(id).unwrap_or(i64::MAX);
            match self {
                SqlStore::Sqlite(c) => {
                    SqlStore::sqlite(c, move |c| {
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let changed = tx.execute(&sqlite_sql(REVOKE), [id])?;
                        if changed > 0 {
                            tx.execute(BUMP, [])?;
                        }
                        tx.commit()?;
                        Ok(changed > 0)
                    })
                    .await
                }
                SqlStore::Postgres(p) => p.revoke(id).await,
            }
        })
    }

    fn rotate<'a>(
        &'a self,
        old: u64,
        new: &'a StoredToken,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let old = i64::try_from(old).unwrap_or(i64::MAX);
            match self {
                SqlStore::Sqlite(c) => {
                    let token = new.clone();
                    SqlStore::sqlite(c, move |c| {
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        if tx.execute(&sqlite_sql(REVOKE), [old])? == 0 {
                            return Ok(Err(StoreError::Conflict));
                        }
                        let result = sqlite_insert(&tx, &token)?;
                        if result.is_ok() {
                            tx.commit()?;
                        }
                        Ok(result)
                    })
                    .await?
                }
                SqlStore::Postgres(p) => p.insert(Some(old), new).await,
            }
        })
    }

    fn find_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(async move {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let sql = format!("SELECT {COLUMNS} FROM portcullis_tokens WHERE digest = $1");
            let rows = match self {
                SqlStore::Sqlite(c) => {
                    SqlStore::sqlite(c, move |c| {
                        let mut statement = c.prepare(&sqlite_sql(&sql))?;
                        let rows = statement.query_map([hex], sqlite_row)?;
                        rows.collect::<rusqlite::Result<Vec<Row>>>()
                    })
                    .await?
                }
                SqlStore::Postgres(p) => p.rows(&sql, &hex).await?,
            };
            Ok(rows_to_tokens(rows).into_iter().next())
        })
    }

    fn touch<'a>(
        &'a self,
        used: &'a [(u64, OffsetDateTime)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let used: Vec<(i64, i64)> = used
                .iter()
                .map(|(id, at)| (i64::try_from(*id).unwrap_or(i64::MAX), millis(*at)))
                .collect();
            let sql = "UPDATE portcullis_tokens SET last_used_at = $1 WHERE id = $2";
            match self {
                SqlStore::Sqlite(c) => {
                    SqlStore::sqlite(c, move |c| {
                        let tx = c.transaction()?;
                        for (id, at) in used {
                            tx.execute(&sqlite_sql(sql), [at, id])?;
                        }
                        tx.commit()
                    })
                    .await
                }
                SqlStore::Postgres(p) => {
                    let client = p.client().await?;
                    for (id, at) in used {
                        client
                            .execute(sql, &[&at, &id])
                            .await
                            .map_err(|e| p.failed(e))?;
                    }
                    Ok(())
                }
            }
        })
    }
}

/// A PostgreSQL connection, made again when it dropped.
pub struct Postgres {
    config: tokio_postgres::Config,
    client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// One transaction at a time on the one connection (statements of two would interleave).
    writes: tokio::sync::Mutex<()>,
}

impl Postgres {
    async fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!("store.url is not a PostgreSQL URL: {e}"))
        })?;
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("portcullis");
        let postgres = Postgres {
            config,
            client: tokio::sync::Mutex::new(None),
            writes: tokio::sync::Mutex::new(()),
        };
        let client = postgres.client().await?;
        postgres.migrate(&client).await?;
        Ok(postgres)
    }

    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| StoreError::Unavailable(format!("postgres: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!("token store: the PostgreSQL connection ended: {error}");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn failed(&self, error: tokio_postgres::Error) -> StoreError {
        if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict;
        }
        StoreError::Unavailable(format!("postgres: {error}"))
    }

    async fn migrate(&self, client: &tokio_postgres::Client) -> Result<(), StoreError> {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS portcullis_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .map_err(|e| self.failed(e))?;
        // One gateway migrates at a time (several replicas may start together).
        client
            .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7061729)")
            .await
            .map_err(|e| self.failed(e))?;
        let result = async {
            let done: i64 = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0)::BIGINT FROM portcullis_migrations",
                    &[],
                )
                .await
                .map_err(|e| self.failed(e))?
                .get(0);
            check_known(done)?;
            for (index, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
                client
                    .batch_execute(migration)
                    .await
                    .map_err(|e| self.failed(e))?;
                client
                    .execute(
                        "INSERT INTO portcullis_migrations (version, applied_at) VALUES ($1, $2)",
                        &[&(index as i64 + 1), &millis(OffsetDateTime::now_utc())],
                    )
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Ok(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(|e| self.failed(e))?;
        result
    }

    async fn rows(&self, sql: &str, digest: &str) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(sql, &[&digest])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(pg_row).collect())
    }

    async fn load_all(&self, sql: &str) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(sql, &[]).await.map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(pg_row).collect())
    }

    /// Insert `token`, revoking `old` first when rotating, in one transaction.
    async fn insert(&self, old: Option<i64>, token: &StoredToken) -> Result<u64, StoreError> {
        let _write = self.writes.lock().await;
        let client = self.client().await?;
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| self.failed(e))?;
        let result = async {
            // The change counter's row lock orders writers across replicas.
            client
                .execute(BUMP, &[])
                .await
                .map_err(|e| self.failed(e))?;
            if let Some(old) = old {
                if client
                    .execute(REVOKE, &[&old])
                    .await
                    .map_err(|e| self.failed(e))?
                    == 0
                {
                    return Err(StoreError::Conflict);
                }
            }
            let row = client
                .query_one(NEXT_ID, &[])
                .await
                .map_err(|e| self.failed(e))?;
            let (id, count): (i64, i64) = (row.get(0), row.get(1));
            if count as usize >= MAX_TOKENS {
                return Err(StoreError::Full);
            }
            if token.kind.is_deploy() {
                let taken: i64 = client
                    .query_one(DEPLOY_TAKEN, &[&token.username])
                    .await
                    .map_err(|e| self.failed(e))?
                    .get(0);
                if taken > 0 {
                    return Err(StoreError::Conflict);
                }
            }
            let r = Row::of(token, id);
            client
                .execute(
                    INSERT,
                    &[
                        &r.id,
                        &r.kind,
                        &r.owner,
                        &r.name,
                        &r.username,
                        &r.digest,
                        &r.scopes,
                        &r.access_level,
                        &r.description,
                        &r.created_at,
                        &r.expires_at,
                        &r.last_used_at,
                        &r.revoked,
                        &r.created_by,
                    ],
                )
                .await
                .map_err(|e| self.failed(e))?;
            Ok(id as u64)
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(|e| self.failed(e))?;
        result
    }

    async fn revoke(&self, id: i64) -> Result<bool, StoreError> {
        let _write = self.writes.lock().await;
        let client = self.client().await?;
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| self.failed(e))?;
        let result = async {
            let changed = client
                .execute(REVOKE, &[&id])
                .await
                .map_err(|e| self.failed(e))?;
            if changed > 0 {
                client
                    .execute(BUMP, &[])
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Ok(changed > 0)
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(|e| self.failed(e))?;
        result
    }
}

fn pg_row(row: &tokio_postgres::Row) -> Row {
    Row {
        id: row.get(0),
        kind: row.get(1),
        owner: row.get(2),
        name: row.get(3),
        username: row.get(4),
        digest: row.get(5),
        scopes: row.get(6),
        access_level: row.get(7),
        description: row.get(8),
        created_at: row.get(9),
        expires_at: row.get(10),
        last_used_at: row.get(11),
        revoked: row.get(12),
        created_by: row.get(13),
    }
}
