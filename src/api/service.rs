//! The token service: list, create, revoke and rotate tokens, with GitLab's rules on who may.
//!
//! The REST handlers ([`super::rest`]) and the token page call this and nothing below it:
//! typed inputs, typed answers, typed errors ([`ServiceError`], each with GitLab's status and
//! message). Rules, as GitLab's:
//! - personal access tokens: a user lists, makes, revokes and rotates their own; an admin
//!   anyone's (and only an admin makes one for another user);
//! - deploy tokens and project/group access tokens: maintainers and owners of the project or
//!   group (an admin everywhere); an access token's role is at most the maker's own;
//! - a token's lifetime is at most `tokens.max_lifetime` (365 days), which is also the expiry
//!   of a token made without one;
//! - tokens from gateway.yaml are listed (`source: config`) and never changed here.
//!
//! Every change is written to the store first, then put in force in the mirror (so it holds at
//! once on this replica), then audited: who, what, the token's id and name, never the secret.

use std::sync::Arc;

use aws_lc_rs::rand::SecureRandom;
use time::{Date, Duration, OffsetDateTime};

use crate::auth::credentials::{token_digest, Principal};
use crate::auth::directory::{
    Directory, NamespaceKind, NamespaceToken, RegistryScopes, Role, TokenHolder, Visibility,
};
use crate::auth::scope::{stable_id, RepositoryName};
use crate::store::mirror::StoreMirror;
use crate::store::{StoreError, StoredToken, TokenKind, MAX_TOKENS_PER_OWNER, STORE_TIMEOUT};
use crate::telemetry::audit::Audit;

/// The default `tokens.max_lifetime`: GitLab's 365 days.
pub const DEFAULT_MAX_LIFETIME_DAYS: i64 = 365;
/// Longest token name, description or deploy username accepted (GitLab: 255).
pub const MAX_NAME_CHARS: usize = 255;
/// The most scopes one token may list.
pub const MAX_SCOPES: usize = 32;

/// Scopes a personal access token may be made with here. GitLab's own endpoint allows only
/// `k8s_proxy`; we deliberately allow the registry scopes and `api` (issue 18).
pub const PERSONAL_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_user",
    "read_registry",
    "write_registry",
    "read_repository",
    "write_repository",
    "k8s_proxy",
    "self_rotate",
];
/// Scopes of project and group access tokens (GitLab's `resource_bot_scopes`, those that
/// mean something here or are accepted as GitLab accepts them).
pub const ACCESS_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_registry",
    "write_registry",
    "read_repository",
    "write_repository",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "self_rotate",
];
/// Scopes of deploy tokens (GitLab's `DeployToken::AVAILABLE_SCOPES`).
pub const DEPLOY_SCOPES: &[&str] = &[
    "read_repository",
    "read_registry",
    "write_registry",
    "read_package_registry",
    "write_package_registry",
    "read_virtual_registry",
    "write_virtual_registry",
];

/// Who calls the service: a signed-in user, or a project/group access token's bot.
#[derive(Debug, Clone)]
pub struct Actor {
    pub username: String,
    pub admin: bool,
    /// A bot acts in one project or group with one role.
    pub bot: Option<(NamespaceKind, RepositoryName, Role)>,
    /// SHA-256 of the token the caller used (for `/self`), if it used one.
    pub digest: Option<[u8; 32]>,
}

impl Actor {
    /// The actor behind a principal: users and access-token bots (deploy tokens, CI jobs and
    /// anonymous callers are not API users).
    pub fn of(principal: &Principal) -> Option<Actor> {
        match principal {
            Principal::User {
                username,
                admin,
                credential,
                ..
            } => Some(Actor {
                username: username.clone(),
                admin: *admin,
                bot: None,
                digest: match credential {
                    crate::auth::credentials::Credential::PersonalAccessToken {
                        digest, ..
                    } => Some(*digest),
                    crate::auth::credentials::Credential::Password => None,
                },
            }),
            Principal::Token(token) => token.role.map(|role| Actor {
                username: token.username.clone(),
                admin: false,
                bot: Some((token.namespace_kind, token.namespace.clone(), role)),
                digest: Some(token.digest),
            }),
            Principal::Anonymous | Principal::CiJob { .. } => None,
        }
    }
}

/// A project or a group, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    Project(RepositoryName),
    Group(RepositoryName),
}

impl Namespace {
    pub fn path(&self) -> &RepositoryName {
        match self {
            Namespace::Project(path) | Namespace::Group(path) => path,
        }
    }

    /// The numeric id (the same the registry token's claims carry).
    pub fn id(&self) -> u64 {
        match self {
            Namespace::Project(path) => stable_id("project", path.as_str()),
            Namespace::Group(path) => stable_id("namespace", path.as_str()),
        }
    }

    fn kind_word(&self) -> &'static str {
        match self {
            Namespace::Project(_) => "Project",
            Namespace::Group(_) => "Group",
        }
    }
}

/// Where a listed token is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Made through the API: may be revoked and rotated.
    Store,
    /// In gateway.yaml: read-only here.
    Config,
}

/// A token as listings show it (never its secret or digest).
#[derive(Debug, Clone)]
pub struct TokenView {
    pub id: u64,
    pub kind: TokenKind,
    pub name: String,
    /// The owner (personal) or the bot / deploy username.
    pub username: String,
    /// The owning user's id (personal tokens and bots).
    pub user_id: u64,
    pub scopes: Vec<String>,
    pub access_level: Option<Role>,
    pub description: Option<String>,
    pub created_at: Option<OffsetDateTime>,
    pub expires_at: Option<Date>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked: bool,
    pub active: bool,
    pub source: Source,
}

/// A token just made: its secret, shown once.
#[derive(Clone)]
pub struct CreatedToken {
    pub token: TokenView,
    pub secret: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Date>,
    pub description: Option<String>,
    /// Access tokens: the role (GitLab's default: maintainer).
    pub access_level: Option<Role>,
    /// Deploy tokens: the username (default `gitlab+deploy-token-N`).
    pub username: Option<String>,
}

/// A user as the API shows one.
#[derive(Debug, Clone)]
pub struct UserView {
    pub id: u64,
    pub username: String,
    pub admin: bool,
    pub blocked: bool,
    pub bot: bool,
}

/// A project or group as the API shows one.
#[derive(Debug, Clone)]
pub struct NamespaceView {
    pub namespace: Namespace,
    pub visibility: Visibility,
}

/// Why the service refused. Each maps to GitLab's status and body ([`ServiceError::status`],
/// [`ServiceError::body`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// `401 Unauthorized` (GitLab's `unauthorized!`).
    #[error("401 Unauthorized")]
    Unauthorized,
    /// `403 Forbidden` (`forbidden!`).
    #[error("403 Forbidden")]
    Forbidden,
    /// `404 <what> Not Found` (`not_found!(what)`); `None`: `404 Not found`.
    #[error("404 Not found")]
    NotFound(Option<&'static str>),
    /// `400 Bad request - <why>` (`bad_request!(why)`).
    #[error("400 Bad request - {0}")]
    BadRequest(String),
    /// A parameter failed validation (Grape: `{"error": "<param> ..."}`, 400).
    #[error("{0}")]
    Invalid(String),
    /// The store could not take the write: 503.
    #[error("503 Service Unavailable - {0}")]
    Unavailable(String),
}

impl ServiceError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ServiceError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::BadRequest(_) | ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// GitLab's JSON body: `{"message": ...}`, or `{"error": ...}` for a parameter.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ServiceError::Invalid(text) => serde_json::json!({ "error": text }),
            ServiceError::NotFound(Some(what)) => {
                serde_json::json!({ "message": format!("404 {what} Not Found") })
            }
            other => serde_json::json!({ "message": other.to_string() }),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        match error {
            StoreError::Unavailable(why) => ServiceError::Unavailable(format!(
                "the token store is unavailable ({why}); existing tokens keep working, try again later"
            )),
            StoreError::Conflict => {
                ServiceError::BadRequest("a token with this username exists already".into())
            }
            StoreError::Full => ServiceError::BadRequest(error.to_string()),
        }
    }
}

/// The token service; cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    mirror: Arc<StoreMirror>,
    audit: Audit,
    max_lifetime_days: i64,
}

impl TokenService {
    pub fn new(mirror: Arc<StoreMirror>, audit: Audit, max_lifetime_days: i64) -> TokenService {
        TokenService {
            mirror,
            audit,
            max_lifetime_days,
        }
    }

    /// The most days a token may live (`tokens.max_lifetime`).
    pub fn max_lifetime_days(&self) -> i64 {
        self.max_lifetime_days
    }

    /// The mirror (for tests and the page).
    pub fn mirror(&self) -> &Arc<StoreMirror> {
        &self.mirror
    }

    fn directory(&self) -> Arc<Directory> {
        self.mirror.directory()
    }

    /// The actor behind an API token (GitLab's rule: a personal, project or group access
    /// token with `api`, or `read_api` when `read`). Notes the token's use. The token page
    /// signs in with this too.
    pub fn actor_for_api_token(&self, secret: &str, read: bool) -> Result<Actor, ApiTokenFailure> {
        use crate::auth::credentials::{token_principal, AuthFailure};
        let digest = token_digest(secret);
        let directory = self.mirror.directory();
        let now = OffsetDateTime::now_utc();
        // Personal and access tokens only, found by the secret: a password or a deploy token
        // is no API credential.
        let holder = directory
            .token_by_digest(&digest)
            .ok_or(ApiTokenFailure::Unknown)?;
        let scopes = api_scopes(&holder, self.mirror.tokens_scopes(&digest));
        let principal =
            token_principal(&directory, holder, now).map_err(|failure| match failure {
                AuthFailure::TokenExpired { .. } => ApiTokenFailure::Expired,
                AuthFailure::TokenRevoked { .. } => ApiTokenFailure::Revoked,
                _ => ApiTokenFailure::Unknown,
            })?;
        if !(scopes.api || (read && scopes.read_api)) {
            return Err(ApiTokenFailure::InsufficientScope);
        }
        self.mirror.note_use(&digest, now);
        Actor::of(&principal).ok_or(ApiTokenFailure::Unknown)
    }

    // ---- users, projects, groups ----

    /// `GET /user`: the caller.
    pub fn current_user(&self, actor: &Actor) -> UserView {
        let directory = self.directory();
        match directory.user(&actor.username) {
            Some(user) => UserView {
                id: user_id(&user.username),
                username: user.username.clone(),
                admin: user.admin,
                blocked: user.blocked,
                bot: false,
            },
            None => UserView {
                id: user_id(&actor.username),
                username: actor.username.clone(),
                admin: false,
                blocked: false,
                bot: actor.bot.is_some(),
            },
        }
    }

    /// `GET /users/:id` and `/users?username=`: users of gateway.yaml.
    pub fn find_user(&self, _actor: &Actor, key: &UserKey) -> Result<UserView, ServiceError> {
        let directory = self.directory();
        let user = directory
            .users()
            .find(|u| match key {
                UserKey::Id(id) => user_id(&u.username) == *id,
                UserKey::Username(name) => u.username.eq_ignore_ascii_case(name),
            })
            .ok_or(ServiceError::NotFound(Some("User")))?;
        Ok(UserView {
            id: user_id(&user.username),
            username: user.username.clone(),
            admin: user.admin,
            blocked: user.blocked,
            bot: false,
        })
    }

    /// A project or group by numeric id or path, if the actor may see it (GitLab answers
    /// `404 Project Not Found` for one it may not, never 403).
    pub fn find_namespace(
        &self,
        actor: &Actor,
        kind: NamespaceKind,
        key: &str,
    ) -> Result<NamespaceView, ServiceError> {
        let directory = self.directory();
        let found = match kind {
            NamespaceKind::Project => directory
                .projects()
                .iter()
                .find(|p| matches_key(key, &p.path, "project"))
                .map(|p| (Namespace::Project(p.path.clone()), p.visibility)),
            NamespaceKind::Group => directory
                .groups()
                .iter()
                .find(|g| matches_key(key, &g.path, "namespace"))
                .map(|g| (Namespace::Group(g.path.clone()), g.visibility)),
        };
        let what = match kind {
            NamespaceKind::Project => "Project",
            NamespaceKind::Group => "Group",
        };
        let (namespace, visibility) = found.ok_or(ServiceError::NotFound(Some(what)))?;
        let visible = visibility != Visibility::Private
            || actor.admin
            || role_in(&directory, actor, &namespace).is_some();
        if !visible {
            return Err(ServiceError::NotFound(Some(what)));
        }
        Ok(NamespaceView {
            namespace,
            visibility,
        })
    }

    // ---- personal access tokens ----

    /// `GET /personal_access_tokens`: the caller's own; an admin's all (or one user's).
    pub fn list_personal(
        &self,
        actor: &Actor,
        user_id_filter: Option<u64>,
    ) -> Result<Vec<TokenView>, ServiceError> {
        if actor.bot.is_some() {
            return Ok(Vec::new());
        }
        let wanted: Option<String> = match user_id_filter {
            Some(id) => {
                let directory = self.directory();
                let name = directory
                    .users()
                    .find(|u| user_id(&u.username) == id)
                    .map(|u| u.username.clone());
                match name {
                    Some(name) if actor.admin || name == actor.username => Some(name),
                    // GitLab: `unauthorized!` unless the caller may read that user's tokens.
                    _ if !actor.admin => return Err(ServiceError::Unauthorized),
                    _ => return Ok(Vec::new()),
                }
            }
            None if actor.admin => None,
            None => Some(actor.username.clone()),
        };
        let mut all = self.personal_tokens();
        all.retain(|t| wanted.as_ref().is_none_or(|name| &t.username == name));
        Ok(all)
    }

    /// `GET /personal_access_tokens/self`.
    pub fn personal_self(&self, actor: &Actor) -> Result<TokenView, ServiceError> {
        let digest = actor.digest.ok_or(ServiceError::NotFound(None))?;
        self.view_by_digest(&digest)
            .ok_or(ServiceError::NotFound(None))
    }

    /// `POST /user/personal_access_tokens` (`for_user` = the caller) and
    /// `POST /users/:id/personal_access_tokens` (admins only).
    pub async fn create_personal(
        &self,
        actor: &Actor,
        for_user: &str,
        new: NewToken,
    ) -> Result<CreatedToken, ServiceError> {
        if actor.bot.is_some() {
            return Err(ServiceError::Forbidden);
        }
        if for_user != actor.username && !actor.admin {
            return Err(ServiceError::Forbidden);
        }
        let directory = self.directory();
        let user = directory
            .user(for_user)
            .ok_or(ServiceError::NotFound(Some("User")))?;
        let now = OffsetDateTime::now_utc();
        check_name(&new.name)?;
        check_scopes(&new.scopes, PERSONAL_SCOPES)?;
        let expires_at = self.check_expiry(new.expires_at, now)?;
        self.check_owner_count(TokenKind::Personal, &user.username)?;
        let (secret, digest) = new_secret("glpat-");
        let stored = StoredToken {
            id: 0,
            kind: TokenKind::Personal,
            owner: user.username.clone(),
            name: new.name,
            username: user.username.clone(),
            digest,
            scopes: new.scopes,
            access_level: None,
            description: check_description(new.description)?,
            created_at: now,
            expires_at: Some(expires_at),
            last_used_at: None,
            revoked: false,
            created_by: actor.username.clone(),
        };
        self.insert(actor, stored, secret, "token_created").await
    }

    /// `DELETE /personal_access_tokens/:id`: GitLab answers `404` for an id that does not
    /// exist and `400 Bad request` for another user's token.
    pub async fn revoke_personal(&self, actor: &Actor, id: u64) -> Result<(), ServiceError> {
        let token = self
            .personal_by_id(id)
            .ok_or(ServiceError::NotFound(None))?;
        if actor.bot.is_some() || (token.username != actor.username && !actor.admin) {
            return Err(ServiceError::BadRequest("the token is not yours".into()));
        }
        if token.source == Source::Config {
            return Err(config_token());
        }
        self.revoke(actor, &token).await
    }

    /// `DELETE /personal_access_tokens/self`.
    pub async fn revoke_personal_self(&self, actor: &Actor) -> Result<(), ServiceError> {
        let token = self.personal_self(actor)?;
        if token.source == Source::Config {
            return Err(config_token());
        }
        if token.kind != TokenKind::Personal {
            return Err(ServiceError::BadRequest(
                "not a personal access token".into(),
            ));
        }
        self.revoke(actor, &token).await
    }

    /// `POST /personal_access_tokens/:id/rotate`: revoke it and make its successor (same
    /// name, scopes), which expires at `expires_at` or after the maximum lifetime.
    pub async fn rotate_personal(
        &self,
        actor: &Actor,
        id: u64,
        expires_at: Option<Date>,
    ) -> Result<CreatedToken, ServiceError> {
        let token = self.personal_by_id(id);
        let allowed = token
            .as_ref()
            .is_some_and(|t| actor.bot.is_none() && (t.username == actor.username || actor.admin));
        let Some(token) = token.filter(|_| allowed) else {
            // GitLab: only admins are told the token does not exist.
            return Err(if actor.admin {
                ServiceError::NotFound(None)
            } else {
                ServiceError::Unauthorized
            });
        };
        self.rotate(actor, &token, expires_at).await
    }

    // ---- deploy tokens ----

    /// `GET /projects/:id/deploy_tokens` (and groups): maintainers and owners.
    pub fn list_deploy(
        &self,
        actor: &Actor,
        namespace: &Namespace,
    ) -> Result<Vec<TokenView>, ServiceError> {
        self.may_manage(actor, namespace, ServiceError::Forbidden)?;
        Ok(self.namespace_tokens(namespace, true))
    }

    /// `POST /projects/:id/deploy_tokens` (and groups).
    pub async fn create_deploy(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        new: NewToken,
    ) -> Result<CreatedToken, ServiceError> {
        self.may_manage(actor, namespace, ServiceError::Forbidden)?;
        let now = OffsetDateTime::now_utc();
        check_name(&new.name)?;
        check_scopes(&new.scopes, DEPLOY_SCOPES)?;
        // Deploy tokens may not expire, as in GitLab; when given, the date must be future
        // and within the maximum.
        let expires_at = match new.expires_at {
            Some(day) => Some(self.check_expiry(Some(day), now)?),
            None => None,
        };
        let kind = match namespace {
            Namespace::Project(_) => TokenKind::ProjectDeploy,
            Namespace::Group(_) => TokenKind::GroupDeploy,
        };
        self.check_owner_count(kind, namespace.path().as_str())?;
        let username = match new.username.filter(|u| !u.is_empty()) {
            Some(username) => {
                check_deploy_username(&username)?;
                username
            }
            None => format!("gitlab+deploy-token-{}", random_hex(6)),
        };
        let directory = self.directory();
        if directory.user(&username).is_some() || !directory.namespace_tokens(&username).is_empty()
        {
            return Err(ServiceError::BadRequest(
                "Username has already been taken".into(),
            ));
        }
        let (secret, digest) = new_secret("gldt-");
        let stored = StoredToken {
            id: 0,
            kind,
            owner: namespace.path().as_str().to_owned(),
            name: new.name,
            username,
            digest,
            scopes: new.scopes,
            access_level: None,
            description: None,
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked: false,
            created_by: actor.username.clone(),
        };
        self.insert(actor, stored, secret, "token_created").await
    }

    /// `DELETE /projects/:id/deploy_tokens/:token_id` (and groups).
    pub async fn revoke_deploy(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        id: u64,
    ) -> Result<(), ServiceError> {
        self.may_manage(actor, namespace, ServiceError::Forbidden)?;
        let token = self
            .namespace_tokens(namespace, true)
            .into_iter()
            .find(|t| t.id == id)
            .ok_or(ServiceError::NotFound(Some("Deploy Token")))?;
        if token.source == Source::Config {
            return Err(config_token());
        }
        self.revoke(actor, &token).await
    }

    // ---- project and group access tokens ----

    /// `GET /projects/:id/access_tokens` (and groups): GitLab answers 401 to non-maintainers.
    pub fn list_access(
        &self,
        actor: &Actor,
        namespace: &Namespace,
    ) -> Result<Vec<TokenView>, ServiceError> {
        self.may_manage(actor, namespace, ServiceError::Unauthorized)?;
        Ok(self.namespace_tokens(namespace, false))
    }

    /// `POST /projects/:id/access_tokens` (and groups).
    pub async fn create_access(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        new: NewToken,
    ) -> Result<CreatedToken, ServiceError> {
        let directory = self.directory();
        let role = self.may_manage(
            actor,
            namespace,
            ServiceError::BadRequest(format!(
                "User does not have permission to create {} access token",
                namespace.kind_word().to_lowercase()
            )),
        )?;
        let now = OffsetDateTime::now_utc();
        check_name(&new.name)?;
        check_scopes(&new.scopes, ACCESS_SCOPES)?;
        let expires_at = self.check_expiry(new.expires_at, now)?;
        let level = new.access_level.unwrap_or(Role::Maintainer);
        if !actor.admin && role.is_some_and(|own| level > own) {
            return Err(ServiceError::BadRequest(
                "Access level of the token can't be greater the access level of the user who created the token".into(),
            ));
        }
        let kind = match namespace {
            Namespace::Project(_) => TokenKind::ProjectAccess,
            Namespace::Group(_) => TokenKind::GroupAccess,
        };
        self.check_owner_count(kind, namespace.path().as_str())?;
        let prefix = match namespace {
            Namespace::Project(_) => "project",
            Namespace::Group(_) => "group",
        };
        let username = format!("{prefix}_{}_bot_{}", namespace.id(), random_hex(16));
        drop(directory);
        let (secret, digest) = new_secret("glpat-");
        let stored = StoredToken {
            id: 0,
            kind,
            owner: namespace.path().as_str().to_owned(),
            name: new.name,
            username,
            digest,
            scopes: new.scopes,
            access_level: Some(level),
            description: check_description(new.description)?,
            created_at: now,
            expires_at: Some(expires_at),
            last_used_at: None,
            revoked: false,
            created_by: actor.username.clone(),
        };
        self.insert(actor, stored, secret, "token_created").await
    }

    /// `DELETE /projects/:id/access_tokens/:token_id` (and groups).
    pub async fn revoke_access(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        id: u64,
    ) -> Result<(), ServiceError> {
        let token = self
            .namespace_tokens(namespace, false)
            .into_iter()
            .find(|t| t.id == id);
        let Some(token) = token else {
            let what = match namespace {
                Namespace::Project(_) => "project Access Token",
                Namespace::Group(_) => "group Access Token",
            };
            return Err(ServiceError::NotFound(Some(what)));
        };
        self.may_manage(
            actor,
            namespace,
            ServiceError::BadRequest(format!(
                "{} cannot delete {}",
                actor.username, token.username
            )),
        )?;
        if token.source == Source::Config {
            return Err(config_token());
        }
        self.revoke(actor, &token).await
    }

    /// `POST /projects/:id/access_tokens/:token_id/rotate` (and groups).
    pub async fn rotate_access(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        id: u64,
        expires_at: Option<Date>,
    ) -> Result<CreatedToken, ServiceError> {
        let own = actor
            .digest
            .is_some_and(|d| self.view_by_digest(&d).is_some_and(|t| t.id == id));
        let allowed = own
            || self
                .may_manage(actor, namespace, ServiceError::Unauthorized)
                .is_ok();
        let token = self
            .namespace_tokens(namespace, false)
            .into_iter()
            .find(|t| t.id == id)
            .filter(|_| allowed);
        let Some(token) = token else {
            return Err(if actor.admin {
                ServiceError::NotFound(None)
            } else {
                ServiceError::Unauthorized
            });
        };
        self.rotate(actor, &token, expires_at).await
    }

    // ---- the rules ----

    /// May `actor` manage `namespace`'s tokens? Maintainers and owners (and admins) may; a
    /// namespace the actor cannot see is `404`, one it sees without the role is `denied`.
    /// Returns the actor's role (`None` for an admin without one).
    fn may_manage(
        &self,
        actor: &Actor,
        namespace: &Namespace,
        denied: ServiceError,
    ) -> Result<Option<Role>, ServiceError> {
        let directory = self.directory();
        let role = role_in(&directory, actor, namespace);
        if actor.admin {
            return Ok(role);
        }
        match role {
            Some(role) if role >= Role::Maintainer => Ok(Some(role)),
            _ => Err(denied),
        }
    }

    fn check_expiry(
        &self,
        expires_at: Option<Date>,
        now: OffsetDateTime,
    ) -> Result<Date, ServiceError> {
        let today = now.date();
        let max = today + Duration::days(self.max_lifetime_days);
        match expires_at {
            None => Ok(max),
            Some(day) if day <= today => Err(ServiceError::BadRequest(
                "Expiration date must be in the future".into(),
            )),
            Some(day) if day > max => Err(ServiceError::BadRequest(format!(
                "Expiration date must be before {max}"
            ))),
            Some(day) => Ok(day),
        }
    }

    fn check_owner_count(&self, kind: TokenKind, owner: &str) -> Result<(), ServiceError> {
        let now = OffsetDateTime::now_utc();
        let held = self
            .mirror
            .tokens()
            .iter()
            .filter(|t| t.kind == kind && t.owner == owner && t.active(now))
            .count();
        if held >= MAX_TOKENS_PER_OWNER {
            return Err(ServiceError::BadRequest(format!(
                "at most {MAX_TOKENS_PER_OWNER} active tokens of one kind per user, project or group: revoke some first"
            )));
        }
        Ok(())
    }

    // ---- store writes ----

    async fn insert(
        &self,
        actor: &Actor,
        stored: StoredToken,
        secret: String,
        event: &str,
    ) -> Result<CreatedToken, ServiceError> {
        let store = self.mirror.store()?;
        let id = tokio::time::timeout(STORE_TIMEOUT, store.insert(&stored))
            .await
            .map_err(|_| StoreError::Unavailable("the store did not answer in time".into()))??;
        let mut stored = stored;
        stored.id = id;
        let kept = stored.clone();
        self.mirror.apply(move |tokens| tokens.push(kept));
        self.audit_change(event, actor, &stored);
        Ok(CreatedToken {
            token: view(&stored, OffsetDateTime::now_utc()),
            secret,
        })
    }

    async fn revoke(&self, actor: &Actor, token: &TokenView) -> Result<(), ServiceError> {
        let store = self.mirror.store()?;
        let revoked = tokio::time::timeout(STORE_TIMEOUT, store.revoke(token.id))
            .await
            .map_err(|_| StoreError::Unavailable("the store did not answer in time".into()))??;
        let id = token.id;
        self.mirror.apply(move |tokens| {
            if let Some(t) = tokens.iter_mut().find(|t| t.id == id) {
                t.revoked = true;
            }
        });
        if !revoked {
            // Revoked already (here or on another replica): GitLab answers 400 then too.
            return Err(ServiceError::BadRequest(
                "the token is revoked already".into(),
            ));
        }
        self.audit
            .record("token_revoked")
            .field("user", actor.username.as_str())
            .field("token_id", token.id)
            .field("token_name", token.name.as_str())
            .field("token_kind", token.kind.as_str())
            .field("token_username", token.username.as_str())
            .write(&self.audit);
        tracing::info!(user = ?actor.username, token_id = token.id, token_name = ?token.name, kind = token.kind.as_str(), "token revoked");
        Ok(())
    }

    async fn rotate(
        &self,
        actor: &Actor,
        token: &TokenView,
        expires_at: Option<Date>,
    ) -> Result<CreatedToken, ServiceError> {
        if token.source == Source::Config {
            return Err(config_token());
        }
        if !token.active {
            return Err(ServiceError::BadRequest("Token already revoked".into()));
        }
        let old = self
            .mirror
            .tokens()
            .into_iter()
            .find(|t| t.id == token.id)
            .ok_or(ServiceError::NotFound(None))?;
        let now = OffsetDateTime::now_utc();
        let expires = self.check_expiry(expires_at, now)?;
        let prefix = if old.kind.is_deploy() {
            "gldt-"
        } else {
            "glpat-"
        };
        let (secret, digest) = new_secret(prefix);
        let mut new = old.clone();
        new.digest = digest;
        new.created_at = now;
        new.expires_at = Some(expires);
        new.last_used_at = None;
        new.revoked = false;
        new.created_by = actor.username.clone();
        let store = self.mirror.store()?;
        let id = tokio::time::timeout(STORE_TIMEOUT, store.rotate(old.id, &new))
            .await
            .map_err(|_| StoreError::Unavailable("the store did not answer in time".into()))?
            .map_err(|e| match e {
                StoreError::Conflict => ServiceError::BadRequest("Token already revoked".into()),
                other => other.into(),
            })?;
        new.id = id;
        let kept = new.clone();
        let old_id = old.id;
        self.mirror.apply(move |tokens| {
            if let Some(t) = tokens.iter_mut().find(|t| t.id == old_id) {
                t.revoked = true;
            }
            tokens.push(kept);
        });
        self.audit
            .record("token_rotated")
            .field("user", actor.username.as_str())
            .field("token_id", old.id)
            .field("new_token_id", new.id)
            .field("token_name", new.name.as_str())
            .field("token_kind", new.kind.as_str())
            .write(&self.audit);
        tracing::info!(user = ?actor.username, token_id = old.id, new_token_id = new.id, token_name = ?new.name, "token rotated");
        Ok(CreatedToken {
            token: view(&new, now),
            secret,
        })
    }

    fn audit_change(&self, event: &str, actor: &Actor, token: &StoredToken) {
        self.audit
            .record(event)
            .field("user", actor.username.as_str())
            .field("token_id", token.id)
            .field("token_name", token.name.as_str())
            .field("token_kind", token.kind.as_str())
            .field("token_owner", token.owner.as_str())
            .field("token_username", token.username.as_str())
            .field("scopes", token.scopes.clone())
            .field("expires_at", token.expires_at.map(|d| d.to_string()))
            .write(&self.audit);
        tracing::info!(user = ?actor.username, token_id = token.id, token_name = ?token.name, kind = token.kind.as_str(), owner = ?token.owner, "token created");
    }

    // ---- listings ----

    /// Every personal token: the store's and gateway.yaml's.
    fn personal_tokens(&self) -> Vec<TokenView> {
        let now = OffsetDateTime::now_utc();
        let mut out: Vec<TokenView> = self
            .mirror
            .tokens()
            .iter()
            .filter(|t| t.kind == TokenKind::Personal)
            .map(|t| view(t, now))
            .collect();
        let base = self.mirror.base();
        let mut users: Vec<_> = base.users().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        for user in users {
            for (index, token) in user.personal_access_tokens.iter().enumerate() {
                out.push(TokenView {
                    id: config_id(&format!("pat\0{}\0{index}", user.username)),
                    kind: TokenKind::Personal,
                    name: token.name.clone(),
                    username: user.username.clone(),
                    user_id: user_id(&user.username),
                    scopes: scope_names(token.scopes),
                    access_level: None,
                    description: None,
                    created_at: None,
                    expires_at: token.expires_at.map(|at| at.date()),
                    last_used_at: None,
                    revoked: token.revoked,
                    active: !token.revoked && token.expires_at.is_none_or(|at| now < at),
                    source: Source::Config,
                });
            }
        }
        out
    }

    fn personal_by_id(&self, id: u64) -> Option<TokenView> {
        self.personal_tokens().into_iter().find(|t| t.id == id)
    }

    /// A namespace's deploy (`deploy`) or access tokens, the store's and gateway.yaml's.
    fn namespace_tokens(&self, namespace: &Namespace, deploy: bool) -> Vec<TokenView> {
        let now = OffsetDateTime::now_utc();
        let kinds = match (namespace, deploy) {
            (Namespace::Project(_), true) => TokenKind::ProjectDeploy,
            (Namespace::Project(_), false) => TokenKind::ProjectAccess,
            (Namespace::Group(_), true) => TokenKind::GroupDeploy,
            (Namespace::Group(_), false) => TokenKind::GroupAccess,
        };
        let path = namespace.path().as_str();
        let mut out: Vec<TokenView> = self
            .mirror
            .tokens()
            .iter()
            .filter(|t| t.kind == kinds && t.owner == path)
            .map(|t| view(t, now))
            .collect();
        let base = self.mirror.base();
        let mut config: Vec<&NamespaceToken> = base
            .all_namespace_tokens()
            .filter(|t| t.namespace.as_str() == path && t.role.is_none() == deploy)
            .filter(|t| {
                matches!(
                    (t.namespace_kind, namespace),
                    (NamespaceKind::Project, Namespace::Project(_))
                        | (NamespaceKind::Group, Namespace::Group(_))
                )
            })
            .collect();
        config.sort_by(|a, b| a.username.cmp(&b.username));
        for token in config {
            out.push(TokenView {
                id: config_id(&format!("ns\0{path}\0{}", token.username)),
                kind: kinds,
                name: token.username.clone(),
                username: token.username.clone(),
                user_id: user_id(&token.username),
                scopes: scope_names(token.scopes),
                access_level: token.role,
                description: None,
                created_at: None,
                expires_at: token.expires_at.map(|at| at.date()),
                last_used_at: None,
                revoked: token.revoked,
                active: !token.revoked && token.expires_at.is_none_or(|at| now < at),
                source: Source::Config,
            });
        }
        out
    }

    /// The token (store or gateway.yaml, personal or access) with this digest.
    fn view_by_digest(&self, digest: &[u8; 32]) -> Option<TokenView> {
        let now = OffsetDateTime::now_utc();
        if let Some(token) = self.mirror.tokens().iter().find(|t| &t.digest == digest) {
            return Some(view(token, now));
        }
        let base = self.mirror.base();
        for user in base.users() {
            if let Some(index) = user
                .personal_access_tokens
                .iter()
                .position(|t| &t.digest == digest)
            {
                let id = config_id(&format!("pat\0{}\0{index}", user.username));
                return self.personal_tokens().into_iter().find(|t| t.id == id);
            }
        }
        None
    }
}

/// Which API scopes a token carries. gateway.yaml's tokens keep only their registry
/// abilities: `api` is the only scope that gives `admin_container_image`, so that is `api`
/// (a `read_api` token of gateway.yaml cannot be told from `read_registry`: no API).
struct ApiScopes {
    api: bool,
    read_api: bool,
}

fn api_scopes(holder: &TokenHolder<'_>, stored: Option<Vec<String>>) -> ApiScopes {
    if let Some(names) = stored {
        return ApiScopes {
            api: names.iter().any(|s| s == "api"),
            read_api: names.iter().any(|s| s == "read_api"),
        };
    }
    let scopes = match holder {
        TokenHolder::Personal(_, token) => token.scopes,
        TokenHolder::Bot(token) => token.scopes,
    };
    ApiScopes {
        api: scopes.admin_container_image,
        read_api: false,
    }
}

/// Why a token is no API credential (the REST handlers render GitLab's bodies for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiTokenFailure {
    /// Not a personal or access token (a password, a deploy token, nothing we know).
    #[error("not a personal, project or group access token")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
    /// Neither `api` nor (for reads) `read_api`.
    #[error("the token has no api scope")]
    InsufficientScope,
}

/// How `/users/:id` or `/users?username=` names a user.
#[derive(Debug, Clone)]
pub enum UserKey {
    Id(u64),
    Username(String),
}

/// A user's numeric id: the `user_id` registry tokens carry.
pub fn user_id(username: &str) -> u64 {
    stable_id("user", username)
}

/// Ids of gateway.yaml's tokens: stable, and far above the store's sequence.
fn config_id(key: &str) -> u64 {
    stable_id("config token", key)
}

fn config_token() -> ServiceError {
    ServiceError::BadRequest(
        "this token is defined in gateway.yaml (source: config): change it there".into(),
    )
}

fn matches_key(key: &str, path: &RepositoryName, kind: &str) -> bool {
    match key.parse::<u64>() {
        Ok(id) => stable_id(kind, path.as_str()) == id,
        Err(_) => key == path.as_str(),
    }
}

/// The actor's role in a project or group: its own membership (projects include what their
/// groups give), or a bot's role in its namespace.
fn role_in(directory: &Directory, actor: &Actor, namespace: &Namespace) -> Option<Role> {
    if let Some((kind, path, role)) = &actor.bot {
        let same = matches!(
            (kind, namespace),
            (NamespaceKind::Project, Namespace::Project(_))
                | (NamespaceKind::Group, Namespace::Group(_))
        ) && path == namespace.path();
        let below = *kind == NamespaceKind::Group && namespace.path().is_within(path);
        return (same || below).then_some(*role);
    }
    match namespace {
        Namespace::Project(path) => directory
            .projects()
            .iter()
            .find(|p| &p.path == path)
            .and_then(|p| p.members.get(&actor.username).copied()),
        Namespace::Group(path) => directory
            .groups()
            .iter()
            .filter(|g| path.is_within(&g.path))
            .filter_map(|g| g.members.get(&actor.username).copied())
            .max(),
    }
}

fn view(token: &StoredToken, now: OffsetDateTime) -> TokenView {
    TokenView {
        id: token.id,
        kind: token.kind,
        name: token.name.clone(),
        username: token.username.clone(),
        user_id: user_id(&token.username),
        scopes: token.scopes.clone(),
        access_level: token.access_level,
        description: token.description.clone(),
        created_at: Some(token.created_at),
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        revoked: token.revoked,
        active: token.active(now),
        source: Source::Store,
    }
}

/// The scope names a gateway.yaml token's abilities correspond to.
fn scope_names(scopes: RegistryScopes) -> Vec<String> {
    if scopes == RegistryScopes::ALL {
        return vec!["api".into()];
    }
    let mut names = Vec::new();
    if scopes.read_registry {
        names.push("read_registry".into());
    }
    if scopes.write_registry {
        names.push("write_registry".into());
    }
    names
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.trim().is_empty() {
        return Err(ServiceError::Invalid("name is empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(format!(
            "name is too long or has control characters (at most {MAX_NAME_CHARS} characters)"
        )));
    }
    Ok(())
}

fn check_description(description: Option<String>) -> Result<Option<String>, ServiceError> {
    match description {
        Some(text) if text.chars().count() > MAX_NAME_CHARS => Err(ServiceError::Invalid(format!(
            "description is too long (at most {MAX_NAME_CHARS} characters)"
        ))),
        other => Ok(other.filter(|t| !t.is_empty())),
    }
}

/// Grape's `values:` check: every scope known, at least one, none twice.
fn check_scopes(scopes: &[String], allowed: &[&str]) -> Result<(), ServiceError> {
    if scopes.is_empty() {
        return Err(ServiceError::Invalid("scopes is empty".into()));
    }
    if scopes.len() > MAX_SCOPES || scopes.iter().any(|s| !allowed.contains(&s.as_str())) {
        return Err(ServiceError::Invalid(
            "scopes does not have a valid value".into(),
        ));
    }
    Ok(())
}

fn check_deploy_username(username: &str) -> Result<(), ServiceError> {
    let ok = username.len() <= MAX_NAME_CHARS
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if !ok {
        return Err(ServiceError::BadRequest(
            "Username can contain only letters, digits, '_', '-', '+', and '.'".into(),
        ));
    }
    Ok(())
}

/// A fresh secret (`prefix` + 20 random bytes in URL-safe base64) and its digest.
fn new_secret(prefix: &str) -> (String, [u8; 32]) {
    use base64::Engine;
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    let secret = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = token_digest(&secret);
    (secret, digest)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
