//! The schema and its versioned migrations, the same for SQLite and PostgreSQL.
//!
//! Each migration runs once, in order, inside a transaction, and is recorded in
//! `portcullis_migrations`; a store whose version is newer than this binary knows is refused
//! (an older gateway must not write to a schema it does not understand).

/// The migrations, in order. Written in the SQL both databases accept.
pub const MIGRATIONS: &[&str] = &[
    // 1: tokens and the change counter.
    "CREATE TABLE portcullis_tokens (
        id BIGINT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        username TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        access_level TEXT,
        description TEXT,
        created_at BIGINT NOT NULL,
        expires_at TEXT,
        last_used_at BIGINT,
        revoked BOOLEAN NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE INDEX portcullis_tokens_owner ON portcullis_tokens (kind, owner);
    CREATE TABLE portcullis_changes (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
    INSERT INTO portcullis_changes (id, version) VALUES (1, 0);",
];
