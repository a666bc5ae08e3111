//! What the page needs from the token store, as one small interface ([`TokenBackend`]).
//!
//! The page never touches the store itself: it asks this trait to list, create and revoke,
//! and renders the answer. [`ConfigTokens`] is the stand-in used when no store is wired: it
//! lists gateway.yaml's tokens (read-only) and refuses every change with a 503. The store's
//! adapter implements the same trait over `crate::api::service`.
//!
//! Who may manage which project's tokens is decided here too ([`maintained`]): maintainers
//! and owners of a project or group, and administrators, as in GitLab.

use std::sync::Arc;

use time::{Date, OffsetDateTime};

use crate::auth::credentials::{Credential, Principal};
use crate::auth::directory::{Directory, NamespaceKind, RegistryScopes, Role, SharedDirectory};
use crate::auth::identity::BoxFuture;
use crate::auth::scope::RepositoryName;

/// One token as the page lists it. Never the secret.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: u64,
    pub name: String,
    /// The Basic username that goes with it (deploy tokens, bots); `None` for personal ones.
    pub username: Option<String>,
    pub scopes: Vec<String>,
    /// Access tokens act with this role.
    pub role: Option<Role>,
    pub created_at: Option<OffsetDateTime>,
    pub expires_at: Option<Date>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked: bool,
    pub active: bool,
    /// From gateway.yaml: listed, never changed here.
    pub from_config: bool,
}

/// A token to create, as the form gave it (checked by the store, which knows the rules).
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Date>,
    /// Access tokens: the role they act with.
    pub role: Option<Role>,
    /// Deploy tokens: the username wanted (the store picks one when absent).
    pub username: Option<String>,
}

/// A token just made: its row and, this once, its secret.
#[derive(Clone)]
pub struct Created {
    pub row: TokenRow,
    pub secret: String,
    /// What `docker login -u` takes with it.
    pub username: String,
}

/// Deploy tokens or access tokens of a project or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceTokenKind {
    Deploy,
    Access,
}

/// A project or group the caller may manage tokens of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub path: RepositoryName,
    pub kind: NamespaceKind,
}

/// Why the store refused, with the text to show (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The form's values break a rule (unknown scope, expiry in the past, ...): 400.
    #[error("{0}")]
    Invalid(String),
    /// No such token among the caller's (another user's id looks the same): 404.
    #[error("no such token")]
    NotFound,
    /// The caller may not manage these tokens: 403.
    #[error("you may not manage these tokens")]
    Forbidden,
    /// The store cannot answer or change anything now: 503.
    #[error("{0}")]
    Unavailable(String),
}

/// The token store, as the page sees it.
pub trait TokenBackend: Send + Sync {
    /// The caller's personal access tokens (active and inactive).
    fn personal_tokens<'a>(
        &'a self,
        owner: &'a Principal,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>>;

    fn create_personal<'a>(
        &'a self,
        owner: &'a Principal,
        new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>>;

    /// Revoke one of the caller's own tokens; someone else's id is [`BackendError::NotFound`].
    fn revoke_personal<'a>(
        &'a self,
        owner: &'a Principal,
        id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>>;

    fn namespace_tokens<'a>(
        &'a self,
        caller: &'a Principal,
        namespace: &'a Namespace,
        kind: NamespaceTokenKind,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>>;

    fn create_namespace_token<'a>(
        &'a self,
        caller: &'a Principal,
        namespace: &'a Namespace,
        kind: NamespaceTokenKind,
        new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>>;

    fn revoke_namespace_token<'a>(
        &'a self,
        caller: &'a Principal,
        namespace: &'a Namespace,
        kind: NamespaceTokenKind,
        id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>>;

    /// The longest lifetime a new token may have, in days, for the form's hint.
    fn max_lifetime_days(&self) -> Option<u32> {
        None
    }

    /// Is `secret`, a personal access token that just signed in, an API credential (GitLab's
    /// rule: the `api` scope)? The default trusts the registry abilities the caller checked.
    fn is_api_token(&self, _secret: &str) -> bool {
        true
    }

    /// Is the credential a session was opened with still good (user not blocked, token not
    /// revoked or expired)? Asked on every request of the session.
    fn still_valid<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, bool>;
}

/// The projects and groups whose tokens `caller` may manage: those where they are
/// maintainer or owner (a group role reaches its subgroups), or all for administrators.
pub fn maintained(directory: &Directory, caller: &Principal) -> Vec<Namespace> {
    let Principal::User {
        username, admin, ..
    } = caller
    else {
        return Vec::new();
    };
    let group_role = |path: &RepositoryName| {
        directory
            .groups()
            .iter()
            .filter(|g| path.is_within(&g.path))
            .filter_map(|g| g.members.get(username).copied())
            .max()
    };
    let mut out: Vec<Namespace> = directory
        .groups()
        .iter()
        .filter(|g| *admin || group_role(&g.path) >= Some(Role::Maintainer))
        .map(|g| Namespace {
            path: g.path.clone(),
            kind: NamespaceKind::Group,
        })
        .collect();
    out.extend(
        directory
            .projects()
            .iter()
            .filter(|p| *admin || p.members.get(username).copied() >= Some(Role::Maintainer))
            .map(|p| Namespace {
                path: p.path.clone(),
                kind: NamespaceKind::Project,
            }),
    );
    out.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    out
}

/// GitLab's scope names of a token from its registry abilities (gateway.yaml keeps only what
/// the registry needs, so `api` is shown for tokens that have its delete ability).
pub fn scope_names(scopes: RegistryScopes) -> Vec<String> {
    if scopes.admin_container_image {
        return vec!["api".into()];
    }
    let mut out = Vec::new();
    if scopes.read_registry {
        out.push("read_registry".into());
    }
    if scopes.write_registry {
        out.push("write_registry".into());
    }
    out
}

/// The stand-in without a store: gateway.yaml's tokens, read-only.
pub struct ConfigTokens {
    directory: SharedDirectory,
}

impl ConfigTokens {
    pub fn new(directory: SharedDirectory) -> Arc<ConfigTokens> {
        Arc::new(ConfigTokens { directory })
    }
}

const NO_STORE: &str = "tokens cannot be created or revoked here: this gateway has no token store (tokens in gateway.yaml are changed there)";

fn row_of(
    id: usize,
    name: &str,
    scopes: RegistryScopes,
    expires_at: Option<OffsetDateTime>,
    revoked: bool,
) -> TokenRow {
    let now = OffsetDateTime::now_utc();
    TokenRow {
        id: id as u64 + 1,
        name: name.to_owned(),
        username: None,
        scopes: scope_names(scopes),
        role: None,
        created_at: None,
        expires_at: expires_at.map(|at| at.date()),
        last_used_at: None,
        revoked,
        active: !revoked && expires_at.is_none_or(|at| at > now),
        from_config: true,
    }
}

impl TokenBackend for ConfigTokens {
    fn personal_tokens<'a>(
        &'a self,
        owner: &'a Principal,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>> {
        Box::pin(async move {
            let directory = self.directory.get();
            Ok(directory
                .user(owner.subject())
                .map(|user| {
                    user.personal_access_tokens
                        .iter()
                        .enumerate()
                        .map(|(i, t)| row_of(i, &t.name, t.scopes, t.expires_at, t.revoked))
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn create_personal<'a>(
        &'a self,
        _owner: &'a Principal,
        _new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>> {
        Box::pin(async { Err(BackendError::Unavailable(NO_STORE.into())) })
    }

    fn revoke_personal<'a>(
        &'a self,
        _owner: &'a Principal,
        _id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>> {
        Box::pin(async { Err(BackendError::Unavailable(NO_STORE.into())) })
    }

    fn namespace_tokens<'a>(
        &'a self,
        caller: &'a Principal,
        namespace: &'a Namespace,
        kind: NamespaceTokenKind,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>> {
        Box::pin(async move {
            let directory = self.directory.get();
            if !maintained(&directory, caller).contains(namespace) {
                return Err(BackendError::Forbidden);
            }
            // gateway.yaml's deploy and access tokens are found by username or digest only;
            // listing them is the store's (it lists them read-only, `"source": "config"`).
            let _ = kind;
            Ok(Vec::new())
        })
    }

    fn create_namespace_token<'a>(
        &'a self,
        _caller: &'a Principal,
        _namespace: &'a Namespace,
        _kind: NamespaceTokenKind,
        _new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>> {
        Box::pin(async { Err(BackendError::Unavailable(NO_STORE.into())) })
    }

    fn revoke_namespace_token<'a>(
        &'a self,
        _caller: &'a Principal,
        _namespace: &'a Namespace,
        _kind: NamespaceTokenKind,
        _id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>> {
        Box::pin(async { Err(BackendError::Unavailable(NO_STORE.into())) })
    }

    fn still_valid<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, bool> {
        Box::pin(async move { config_still_valid(&self.directory.get(), principal) })
    }
}

/// What gateway.yaml says of a session's credential: a user it knows must not be blocked,
/// and a token it holds must still be usable. Users and tokens it does not know (LDAP, the
/// store) are for their own source to judge.
pub fn config_still_valid(directory: &Directory, principal: &Principal) -> bool {
    let Principal::User {
        username,
        credential,
        ..
    } = principal
    else {
        return false;
    };
    if directory.user(username).is_some_and(|u| u.blocked) {
        return false;
    }
    if let Credential::PersonalAccessToken { digest, .. } = credential {
        // A token the directory no longer holds (removed from gateway.yaml or the store)
        // ends the session as a revoked one does.
        let now = OffsetDateTime::now_utc();
        return matches!(
            directory.token_by_digest(digest),
            Some(crate::auth::directory::TokenHolder::Personal(_, token))
                if !token.revoked && token.expires_at.is_none_or(|at| at > now)
        );
    }
    true
}
