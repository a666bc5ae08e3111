//! The token store: tokens made through the API (issue 18), kept across restarts.
//!
//! One module owns the schema and its migrations ([`schema`]); the rest of the gateway sees
//! typed functions ([`TokenStore`]), never SQL. Two back ends share one schema: SQLite
//! embedded (the default, a file beside gateway.yaml) and PostgreSQL for several replicas.
//! Only the SHA-256 of a secret is ever stored.
//!
//! The request path never reads the store: [`mirror::StoreMirror`] keeps every stored token
//! in memory (bounded by [`MAX_TOKENS`]) and merges them into the directory the token
//! endpoint, push grace and the tag guard already read. Writes go to the store first and then
//! to the mirror, so a token made or revoked here counts at once on this replica; other
//! replicas learn of it by polling the store's change counter every [`SYNC_INTERVAL`].

pub mod memory;
pub mod mirror;
pub mod schema;
pub mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::{Date, OffsetDateTime};

use crate::auth::directory::Role;
use crate::auth::identity::BoxFuture;

/// The most tokens the store holds (active or not): each replica keeps them all in memory.
pub const MAX_TOKENS: usize = 100_000;
/// The most unrevoked tokens one user or one project/group may hold.
pub const MAX_TOKENS_PER_OWNER: usize = 100;
/// How often a replica asks the store whether another replica changed anything. A token
/// revoked on one replica stops on the others within this interval plus one store round trip
/// (the README states 5 seconds).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Every store call gives up after this long: an API write then answers 503.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What kind of token a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Personal,
    ProjectAccess,
    GroupAccess,
    ProjectDeploy,
    GroupDeploy,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Personal => "personal",
            TokenKind::ProjectAccess => "project_access",
            TokenKind::GroupAccess => "group_access",
            TokenKind::ProjectDeploy => "project_deploy",
            TokenKind::GroupDeploy => "group_deploy",
        }
    }

    pub fn parse(text: &str) -> Option<TokenKind> {
        Some(match text {
            "personal" => TokenKind::Personal,
            "project_access" => TokenKind::ProjectAccess,
            "group_access" => TokenKind::GroupAccess,
            "project_deploy" => TokenKind::ProjectDeploy,
            "group_deploy" => TokenKind::GroupDeploy,
            _ => return None,
        })
    }

    /// Deploy tokens need their own username at login; the others are found by the secret.
    pub fn is_deploy(self) -> bool {
        matches!(self, TokenKind::ProjectDeploy | TokenKind::GroupDeploy)
    }
}

/// One stored token. `owner` is the user (personal tokens) or the project or group path.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: u64,
    pub kind: TokenKind,
    pub owner: String,
    pub name: String,
    /// The username that goes with the token: the owner (personal), the bot user (access
    /// tokens), `gitlab+deploy-token-N` or the chosen one (deploy tokens).
    pub username: String,
    pub digest: [u8; 32],
    /// GitLab's scope names as given (`api`, `read_registry`, ...).
    pub scopes: Vec<String>,
    /// Access tokens act with this role.
    pub access_level: Option<Role>,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    /// The token works until the start of this day (UTC), as in GitLab.
    pub expires_at: Option<Date>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked: bool,
    /// Who made it (for the audit log and listings).
    pub created_by: String,
}

impl fmt::Debug for StoredToken {
    // The digest is the stored form of a secret: never in Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("username", &self.username)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl StoredToken {
    /// Not revoked and not expired at `now`.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        !self.revoked && self.expires_at.is_none_or(|day| now.date() < day)
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or answered an error (the text never holds a secret).
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint: a token with this digest or deploy username exists.
    #[error("a token with this secret or username exists already")]
    Conflict,
    /// The store is full ([`MAX_TOKENS`]).
    #[error("the token store holds the most tokens it may ({MAX_TOKENS})")]
    Full,
}

/// The store's typed operations. Implemented by [`memory::MemoryStore`] and
/// [`sql::SqlStore`] (SQLite, PostgreSQL).
pub trait TokenStore: Send + Sync {
    /// Every token, for the mirror.
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<StoredToken>, StoreError>>;
    /// A counter every write bumps: a replica reloads when it changed.
    fn version(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// Insert a token; `token.id` is ignored and the new id returned.
    fn insert<'a>(&'a self, token: &'a StoredToken) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Mark a token revoked. `Ok(false)`: no such token (or revoked already).
    fn revoke(&self, id: u64) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Revoke `old` and insert `new` in one transaction (rotation).
    fn rotate<'a>(
        &'a self,
        old: u64,
        new: &'a StoredToken,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The token whose secret has this digest, if the store has one (a replica asks when a
    /// login presents a secret it does not know: another replica may have just made it).
    fn find_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>>;
    /// Record last use times (batched; not a change other replicas need to hear of).
    fn touch<'a>(
        &'a self,
        used: &'a [(u64, OffsetDateTime)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Open the store `url` names (`sqlite:///path`, `postgres://...`, or `memory:` for tests)
/// and apply its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn TokenStore>, StoreError> {
    if url == "memory:" {
        return Ok(Arc::new(memory::MemoryStore::default()));
    }
    sql::SqlStore::open(url)
        .await
        .map(|s| Arc::new(s) as Arc<dyn TokenStore>)
}

/// `store.url`, checked: `sqlite:///absolute/path` (or `sqlite://relative/path`, against
/// gateway.yaml's folder), `postgres://` / `postgresql://`, or `memory:`. Absent: a file
/// `portcullis.db` beside gateway.yaml.
pub fn validate_url(
    problems: &mut Vec<crate::config::Problem>,
    url: Option<&str>,
    base: &std::path::Path,
) -> String {
    let Some(url) = url.map(str::trim) else {
        return format!("sqlite://{}", base.join("portcullis.db").display());
    };
    if url == "memory:" || url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url.to_owned();
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => {
            format!("sqlite://{}", base.join(path).display())
        }
        _ => {
            problems.push(crate::config::Problem::new(
                "store.url",
                format!(
                    "{:?} is not a store URL: use sqlite:///path/portcullis.db or postgres://user@host/database",
                    mirror::redact_url(url)
                ),
            ));
            String::new()
        }
    }
}

/// `tokens.max_lifetime`, checked: whole days, 1 to 3650 (GitLab's default: 365).
pub fn validate_lifetime(problems: &mut Vec<crate::config::Problem>, text: Option<&str>) -> i64 {
    const DEFAULT: i64 = crate::api::service::DEFAULT_MAX_LIFETIME_DAYS;
    let Some(text) = text else {
        return DEFAULT;
    };
    match crate::config::parse_duration(text) {
        Ok(duration)
            if duration.as_secs() % 86_400 == 0
                && (1..=3650).contains(&(duration.as_secs() / 86_400)) =>
        {
            (duration.as_secs() / 86_400) as i64
        }
        Ok(_) => {
            problems.push(crate::config::Problem::new(
                "tokens.max_lifetime",
                "must be whole days between 1d and 3650d (tokens expire at the start of a day, as in GitLab)",
            ));
            DEFAULT
        }
        Err(error) => {
            problems.push(crate::config::Problem::new("tokens.max_lifetime", error));
            DEFAULT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn store_urls_are_checked_and_the_default_is_beside_gateway_yaml() {
        let mut problems = Vec::new();
        let base = Path::new("/etc/portcullis");
        assert_eq!(
            validate_url(&mut problems, None, base),
            "sqlite:///etc/portcullis/portcullis.db"
        );
        assert_eq!(
            validate_url(&mut problems, Some("sqlite://db/t.db"), base),
            "sqlite:///etc/portcullis/db/t.db"
        );
        assert_eq!(
            validate_url(&mut problems, Some("sqlite:///var/lib/p.db"), base),
            "sqlite:///var/lib/p.db"
        );
        assert!(
            validate_url(&mut problems, Some("postgres://u@h/d"), base).starts_with("postgres://")
        );
        assert!(problems.is_empty());
        validate_url(&mut problems, Some("mysql://u:hunter2@h/d"), base);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "store.url");
        assert!(
            !problems[0].message.contains("hunter2"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn max_lifetime_is_whole_days_within_bounds() {
        let mut problems = Vec::new();
        assert_eq!(validate_lifetime(&mut problems, None), 365);
        assert_eq!(validate_lifetime(&mut problems, Some("30d")), 30);
        assert!(problems.is_empty());
        for bad in ["12h", "0d", "4000d", "soon"] {
            let mut problems = Vec::new();
            validate_lifetime(&mut problems, Some(bad));
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].key, "tokens.max_lifetime");
        }
    }

    #[test]
    fn a_stored_token_is_active_until_the_start_of_its_expiry_day() {
        let now = OffsetDateTime::now_utc();
        let token = StoredToken {
            id: 1,
            kind: TokenKind::Personal,
            owner: "a".into(),
            name: "n".into(),
            username: "a".into(),
            digest: [7; 32],
            scopes: vec!["api".into()],
            access_level: None,
            description: None,
            created_at: now,
            expires_at: Some(now.date()),
            last_used_at: None,
            revoked: false,
            created_by: "a".into(),
        };
        assert!(!token.active(now), "expires at the start of its day");
        let tomorrow = StoredToken {
            expires_at: now.date().next_day(),
            ..token.clone()
        };
        assert!(tomorrow.active(now));
        assert!(!StoredToken {
            revoked: true,
            ..tomorrow
        }
        .active(now));
        assert!(!format!("{token:?}").contains("digest"));
    }
}
