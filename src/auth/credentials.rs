//! Who is asking: a Basic `Authorization` header turned into a [`Principal`].
//!
//! Access tokens are matched by the SHA-256 of the secret, compared in constant time; only a
//! password costs a slow hash, and that runs on a blocking thread so it never stalls the
//! runtime ([`super::slow_hash`]). A failed Basic login that ran no slow hash spends one on
//! the dummy hash, so timing does not tell which usernames exist. Nothing here logs or returns
//! a secret.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use base64::Engine;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::directory::{
    Directory, NamespaceToken, PersonalAccessToken, RegistryScopes, TokenHolder, User,
};
use super::password_cache::PasswordCache;
use super::scope::{stable_id, RepositoryName};
use super::slow_hash::{self, DummyHash};
use super::token::{CallerInfo, InternalClaims, Purpose, Tokens, UserInfo, VerifyError};

/// How a principal proved who it is.
///
/// A personal access token is identified by its digest, not its name: names are labels and,
/// as in GitLab, two tokens of one user may share one. Everything derived from the credential
/// later (the refresh token's binding, the fingerprint push grace re-checks) must follow the
/// exact token that authenticated, or a read-only token would borrow the rights and the
/// lifetime of a namesake.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password,
    PersonalAccessToken {
        /// The token's name, for logs only: it is not unique.
        name: String,
        /// SHA-256 of the token's secret: which token it was.
        digest: [u8; 32],
    },
}

impl fmt::Debug for Credential {
    // The digest is the stored form of a secret: keep it out of every Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password => f.write_str("Password"),
            Credential::PersonalAccessToken { name, .. } => f
                .debug_struct("PersonalAccessToken")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

impl Credential {
    /// The credential's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::PersonalAccessToken { .. } => "personal_access_token",
        }
    }
}

/// The authenticated caller of the token endpoint.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credentials: may pull public projects.
    Anonymous,
    User {
        username: String,
        admin: bool,
        /// What the credential allows (a password allows both registry scopes).
        scopes: RegistryScopes,
        credential: Credential,
    },
    /// A deploy token or a project/group access token: acts only inside its namespace.
    Token(NamespaceToken),
    /// A CI job of `project` running for `username` (Basic user `gitlab-ci-token`).
    CiJob {
        username: String,
        project: RepositoryName,
        /// When the job token expires (Unix seconds): push grace ends there too.
        expires: u64,
    },
}

impl Principal {
    /// GitLab's `has_registry_ability?` (`ContainerRegistryAuthenticationService#execute`):
    /// false for a credential that carries none of the registry abilities (a token with only
    /// `admin_mode`, `read_user`, ...), which gets `403 access forbidden` rather than a token.
    /// Anonymous callers have `read_container_image` (`read_only_authentication_abilities`),
    /// CI jobs the `build_*_container_image` abilities.
    pub fn has_registry_ability(&self) -> bool {
        match self {
            Principal::Anonymous | Principal::CiJob { .. } => true,
            Principal::User { scopes, .. } => !scopes.is_empty(),
            Principal::Token(token) => !token.scopes.is_empty(),
        }
    }

    /// The `auth_type` and `user` claims GitLab puts in a registry token
    /// (`CRAS#authorized_token`, `#user_info_token`), `auth_type` in
    /// `Gitlab::Auth::Result#type`'s words.
    pub fn gitlab_info(&self) -> CallerInfo {
        let user = |token_type: &str, username: &str| UserInfo {
            token_type: token_type.to_owned(),
            username: username.to_owned(),
            user_id: Some(stable_id("user", username)),
            deploy_token_id: None,
        };
        let (auth_type, user_info) = match self {
            Principal::Anonymous => ("none", None),
            Principal::User {
                username,
                credential: Credential::Password,
                ..
            } => ("gitlab_or_ldap", Some(user("gitlab_or_ldap", username))),
            Principal::User { username, .. } => (
                "personal_access_token",
                Some(user("personal_access_token", username)),
            ),
            // Project and group access tokens are personal access tokens of a bot user.
            Principal::Token(token) if token.role.is_some() => (
                "personal_access_token",
                Some(user("personal_access_token", &token.username)),
            ),
            Principal::Token(token) => (
                "deploy_token",
                Some(UserInfo {
                    token_type: "deploy_token".into(),
                    username: token.username.clone(),
                    user_id: None,
                    deploy_token_id: Some(stable_id(
                        "deploy_token",
                        &format!("{}\0{}", token.namespace, token.username),
                    )),
                }),
            ),
            Principal::CiJob { username, .. } => ("build", Some(user("build", username))),
        };
        CallerInfo {
            auth_type,
            user_info,
        }
    }

    pub fn subject(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::User { username, .. } => username,
            Principal::Token(token) => &token.username,
            Principal::CiJob { username, .. } => username,
        }
    }

    /// The kind of credential, for logs.
    pub fn credential_kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { credential, .. } => credential.kind(),
            Principal::Token(token) => token.kind(),
            Principal::CiJob { .. } => "ci_job_token",
        }
    }

    /// Which credential of its kind, for the audit log (never the secret): a personal access
    /// token's name, a deploy or access token's project or group, a CI job's project.
    pub fn credential_name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous
            | Principal::User {
                credential: Credential::Password,
                ..
            } => None,
            Principal::User {
                credential: Credential::PersonalAccessToken { name, .. },
                ..
            } => Some(name),
            Principal::Token(token) => Some(token.namespace.as_str()),
            Principal::CiJob { project, .. } => Some(project.as_str()),
        }
    }
}

/// Basic credentials as the client sent them. `Debug` never shows the secret.
pub struct BasicCredentials {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What was wrong with an `Authorization` header, before any credential was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Authorization header uses a scheme other than Basic")]
    NotBasic,
    #[error("the Authorization header is not valid Basic credentials (base64 of username:secret)")]
    Malformed,
}

impl BasicCredentials {
    /// Parse `Basic base64(username:secret)`.
    pub fn parse(header: &[u8]) -> Result<BasicCredentials, HeaderError> {
        let text = std::str::from_utf8(header).map_err(|_| HeaderError::Malformed)?;
        let (scheme, encoded) = text.trim().split_once(' ').ok_or(HeaderError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(HeaderError::NotBasic);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| HeaderError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| HeaderError::Malformed)?;
        // An empty username is allowed: GitLab finds personal and access tokens by the secret
        // alone (`lib/gitlab/auth.rb`, `personal_access_token_check`), so `docker login -u ""`
        // works with one.
        let (username, secret) = decoded.split_once(':').ok_or(HeaderError::Malformed)?;
        Ok(BasicCredentials {
            username: username.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// Why credentials were refused. The log reason tells them all apart; the client message
/// does not tell an unknown user from a wrong secret, and only a caller who presented the
/// right secret learns that a token was revoked or an account blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password or token")]
    WrongSecret,
    #[error("token {name:?} expired at {expired_at}")]
    TokenExpired { name: String, expired_at: String },
    #[error("token {name:?} was revoked")]
    TokenRevoked { name: String },
    #[error("token {name:?} has no registry scope (read_registry, write_registry or api)")]
    InsufficientScope { name: String },
    #[error("the account is blocked")]
    UserBlocked,
    /// `locked: true` (GitLab's `access_locked?`): no credential signs in.
    #[error("the account is locked")]
    UserLocked,
    /// `two_factor: true`: the password is refused, tokens still work.
    #[error(
        "the account has two-factor authentication: its password cannot be used, only a token"
    )]
    PasswordNeedsToken,
}

impl AuthFailure {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::TokenExpired { .. } => "token_expired",
            AuthFailure::TokenRevoked { .. } => "token_revoked",
            AuthFailure::InsufficientScope { .. } => "insufficient_scope",
            AuthFailure::UserBlocked => "user_blocked",
            AuthFailure::UserLocked => "user_locked",
            AuthFailure::PasswordNeedsToken => "password_needs_token",
        }
    }

    pub fn client_message(&self) -> &'static str {
        match self {
            // GitLab's own text (`app/controllers/jwt_controller.rb`, `render_access_denied`),
            // without its help-page link, which would point at a GitLab instance.
            AuthFailure::UnknownUser | AuthFailure::WrongSecret => GITLAB_ACCESS_DENIED,
            AuthFailure::TokenExpired { .. } => "HTTP Basic: Access denied. The access token has expired: create a new one.",
            AuthFailure::TokenRevoked { .. } => "HTTP Basic: Access denied. The access token has been revoked.",
            AuthFailure::InsufficientScope { .. } => {
                "HTTP Basic: Access denied. The access token has no registry scope: it needs read_registry (pull) and write_registry (push), or api."
            }
            AuthFailure::UserBlocked => "HTTP Basic: Access denied. The account is blocked.",
            AuthFailure::UserLocked => "HTTP Basic: Access denied. Your account is locked.",
            AuthFailure::PasswordNeedsToken => "HTTP Basic: Access denied. You must use a personal access token with 'read_registry' or 'write_registry' scope for the container registry: this account has two-factor authentication enabled.",
        }
    }
}

/// What GitLab answers any refused Basic login (`app/controllers/jwt_controller.rb`,
/// `render_access_denied`), up to its help-page link.
pub const GITLAB_ACCESS_DENIED: &str = "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect or you're required to use a token instead of a password. If a token was provided, it was either incorrect, expired, or improperly scoped.";

/// SHA-256 of a token secret, the form tokens are stored in.
pub fn token_digest(secret: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Check Basic credentials against the directory. A failure that ran no slow hash of its own
/// (unknown user, no password, wrong token secret) spends one on `dummy`, so no answer says by
/// its timing whether the username exists.
pub async fn authenticate(
    directory: &Arc<Directory>,
    cache: &PasswordCache,
    dummy: &DummyHash,
    credentials: &BasicCredentials,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    let mut hashed = false;
    let result = check_basic(directory, cache, credentials, now, &mut hashed).await;
    if result.is_err() && !hashed {
        dummy.spend(directory).await;
    }
    result
}

/// [`authenticate`], then, when gateway.yaml knows neither the user's secret nor the token,
/// the identity sources beside it (the token store, ...) in their order. A source that cannot
/// answer leaves gateway.yaml's verdict standing.
pub async fn authenticate_with_sources(
    directory: &Arc<Directory>,
    cache: &PasswordCache,
    dummy: &DummyHash,
    sources: &super::identity::Identities,
    credentials: &BasicCredentials,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    use super::identity::Lookup;
    let verdict = authenticate(directory, cache, dummy, credentials, now).await;
    match verdict {
        Err(AuthFailure::UnknownUser | AuthFailure::WrongSecret)
            if !sources.sources().is_empty() =>
        {
            match sources.authenticate(credentials, now).await {
                Lookup::Found(principal) => Ok(principal),
                Lookup::Refused(failure) => Err(failure),
                Lookup::NotMine => verdict,
                Lookup::Unavailable(why) => {
                    tracing::info!("an identity source could not answer: {why}");
                    verdict
                }
            }
        }
        other => other,
    }
}

/// [`authenticate`]'s checks; `hashed` says whether a slow hash ran.
async fn check_basic(
    directory: &Directory,
    cache: &PasswordCache,
    credentials: &BasicCredentials,
    now: OffsetDateTime,
    hashed: &mut bool,
) -> Result<Principal, AuthFailure> {
    let digest = token_digest(&credentials.secret);
    // Personal, project and group access tokens: the secret alone says who acts, whatever the
    // username (GitLab `lib/gitlab/auth.rb`, `find_for_git_client` tries
    // `personal_access_token_check`, which never looks at the login, before any password).
    if let Some(holder) = directory.token_by_digest(&digest) {
        return token_principal(directory, holder, now);
    }
    let Some(user) = directory.user(&credentials.username) else {
        // Not a user: a deploy token (it needs its own username: `deploy_token_check`
        // returns unless `login == token.username`), or nobody.
        let tokens = directory.namespace_tokens(&credentials.username);
        if tokens.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        let token = tokens
            .iter()
            .filter(|t| t.role.is_none())
            .find(|t| bool::from(t.digest.ct_eq(&digest)))
            .ok_or(AuthFailure::WrongSecret)?;
        return namespace_principal(token, now);
    };

    let Some(hash) = user.password_hash.clone() else {
        return Err(AuthFailure::WrongSecret);
    };
    let (username, secret) = (&credentials.username, &credentials.secret);
    if !cache.contains(username, hash.as_str(), secret, Instant::now()) {
        let stored = hash.as_str().to_owned();
        *hashed = true;
        if !slow_hash::verify(hash, secret.clone()).await {
            return Err(AuthFailure::WrongSecret);
        }
        cache.insert(username, &stored, secret, Instant::now());
    }
    // Account settings (locked, two-factor): see `protection`.
    super::protection::may_sign_in(directory, &user.username, Some(&Credential::Password))?;
    user_principal(user, RegistryScopes::ALL, Credential::Password)
}

/// A personal or access token found by its digest, as a principal if it is still good.
pub(crate) fn token_principal(
    directory: &Directory,
    holder: TokenHolder<'_>,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    match holder {
        TokenHolder::Personal(user, token) => {
            let (scopes, credential) = pat_credential(token, now)?;
            super::protection::may_sign_in(directory, &user.username, Some(&credential))?;
            user_principal(user, scopes, credential)
        }
        TokenHolder::Bot(token) => namespace_principal(token, now),
    }
}

/// The Basic username of CI jobs (`CI_REGISTRY_USER`); the password is a job token.
pub const CI_USERNAME: &str = "gitlab-ci-token";

/// Check a CI job token: valid signature and expiry, and a user and project that still exist
/// (a blocked or removed user, or a removed project, ends the job's access at once).
pub fn authenticate_job(
    directory: &Directory,
    tokens: &Tokens,
    secret: &str,
) -> Result<Principal, AuthFailure> {
    let claims = match verify_internal(tokens, Purpose::CiJob, secret, "CI job token") {
        Ok(claims) => claims,
        // Not a job token: GitLab's `find_for_git_client` goes on to the personal and access
        // tokens, whatever the login, so `gitlab-ci-token` + a PAT acts as the PAT's owner.
        // Digest lookups only: no slow hash runs for this username.
        Err(AuthFailure::WrongSecret) => {
            return match directory.token_by_digest(&token_digest(secret)) {
                Some(holder) => token_principal(directory, holder, OffsetDateTime::now_utc()),
                None => Err(AuthFailure::WrongSecret),
            }
        }
        Err(other) => return Err(other),
    };
    let user = directory
        .user(&claims.sub)
        .ok_or(AuthFailure::UnknownUser)?;
    if user.blocked {
        return Err(AuthFailure::UserBlocked);
    }
    super::protection::may_sign_in(directory, &user.username, None)?;
    let project = RepositoryName::parse(claims.project.as_deref().unwrap_or_default())
        .ok()
        .filter(|p| {
            directory
                .project_for(p)
                .is_some_and(|owner| &owner.path == p)
        })
        .ok_or(AuthFailure::WrongSecret)?;
    Ok(Principal::CiJob {
        username: user.username.clone(),
        project,
        expires: claims.exp,
    })
}

/// How long a refresh token lives when its credential does not expire sooner, unless
/// `token.refresh_lifetime` says otherwise (docker keeps it as its identity token).
pub const REFRESH_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// A fingerprint of the credential `principal` used, and when that credential expires. A
/// refresh token carries it and works only while the same credential is still there and good;
/// registry tokens carry it for push grace. A personal access token's fingerprint is made from
/// the digest of the very token that authenticated (never looked up by its name, which other
/// tokens may share). CI jobs and anonymous callers get no refresh tokens.
pub fn binding(
    principal: &Principal,
    directory: &Directory,
) -> Option<(String, Option<OffsetDateTime>)> {
    match principal {
        Principal::User {
            username,
            credential: Credential::Password,
            ..
        } => {
            let hash = directory.user(username)?.password_hash.as_ref()?;
            Some((
                format!("password:{}", fingerprint(hash.as_str().as_bytes())),
                None,
            ))
        }
        Principal::User {
            username,
            credential: Credential::PersonalAccessToken { digest, .. },
            ..
        } => {
            let token = directory
                .user(username)?
                .personal_access_tokens
                .iter()
                .find(|t| &t.digest == digest)?;
            Some((
                format!("pat:{}", fingerprint(&token.digest)),
                token.expires_at,
            ))
        }
        Principal::Token(token) => Some((
            format!("token:{}", fingerprint(&token.digest)),
            token.expires_at,
        )),
        Principal::CiJob {
            project, expires, ..
        } => Some((format!("job:{expires}:{project}"), None)),
        Principal::Anonymous => None,
    }
}

/// The binding a personal (`personal`) or deploy/access token with this digest gives its
/// registry and refresh tokens (what [`binding`] makes), for revocation.
pub(crate) fn token_binding(personal: bool, digest: &[u8; 32]) -> String {
    let kind = if personal { "pat" } else { "token" };
    format!("{kind}:{}", fingerprint(digest))
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"portcullis refresh binding\0");
    context.update(bytes);
    context.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Check a refresh token: signed by us, not expired, and the credential it came from is still
/// there, unchanged and good (not expired, revoked, scope-less, or its user blocked). The
/// principal gets the credential's CURRENT scopes.
pub fn authenticate_refresh(
    directory: &Directory,
    tokens: &Tokens,
    refresh_token: &str,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    let claims = verify_internal(tokens, Purpose::Refresh, refresh_token, "refresh token")?;
    let bound = claims.binding.as_deref().unwrap_or_default();
    if bound.starts_with("job:") {
        // CI jobs get no refresh tokens.
        return Err(AuthFailure::WrongSecret);
    }
    resolve_binding(directory, &claims.sub, bound, now)
}

/// The principal whose credential has fingerprint `bound`, if that credential is still there
/// and good now (not expired, revoked, scope-less; its user not blocked). Used by refresh
/// tokens and by push grace.
pub fn resolve_binding(
    directory: &Directory,
    subject: &str,
    bound: &str,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    let stale = || AuthFailure::TokenRevoked {
        name: "refresh token".into(),
    };
    if let Some(rest) = bound.strip_prefix("job:") {
        let (expires, project) = rest.split_once(':').ok_or_else(stale)?;
        let expires: u64 = expires.parse().map_err(|_| stale())?;
        if u64::try_from(now.unix_timestamp()).unwrap_or(0) >= expires {
            return Err(AuthFailure::TokenExpired {
                name: "CI job token".into(),
                expired_at: "its expiry".into(),
            });
        }
        let user = directory.user(subject).ok_or(AuthFailure::UnknownUser)?;
        if user.blocked {
            return Err(AuthFailure::UserBlocked);
        }
        super::protection::may_sign_in(directory, &user.username, None)?;
        let project = RepositoryName::parse(project).map_err(|_| stale())?;
        return Ok(Principal::CiJob {
            username: user.username.clone(),
            project,
            expires,
        });
    }
    let Some(user) = directory.user(subject) else {
        let token = directory
            .namespace_tokens(subject)
            .iter()
            .find(|t| bound == format!("token:{}", fingerprint(&t.digest)))
            .ok_or_else(stale)?;
        if token.scopes.is_empty() {
            return Err(AuthFailure::InsufficientScope {
                name: token.username.clone(),
            });
        }
        return namespace_principal(token, now);
    };
    let (scopes, credential) = if let Some(fp) = bound.strip_prefix("password:") {
        user.password_hash
            .as_ref()
            .filter(|h| fingerprint(h.as_str().as_bytes()) == fp)
            .ok_or_else(stale)?;
        (RegistryScopes::ALL, Credential::Password)
    } else {
        let token = user
            .personal_access_tokens
            .iter()
            .find(|t| bound == format!("pat:{}", fingerprint(&t.digest)))
            .ok_or_else(stale)?;
        pat_credential(token, now)?
    };
    if scopes.is_empty() {
        return Err(AuthFailure::InsufficientScope {
            name: credential_label(&credential).to_owned(),
        });
    }
    super::protection::may_sign_in(directory, &user.username, Some(&credential))?;
    user_principal(user, scopes, credential)
}

fn credential_label(credential: &Credential) -> &str {
    match credential {
        Credential::Password => "password",
        Credential::PersonalAccessToken { name, .. } => name,
    }
}

/// Verify a CI job or refresh token; an expired one says so, anything else is a wrong secret.
fn verify_internal(
    tokens: &Tokens,
    purpose: Purpose,
    token: &str,
    name: &str,
) -> Result<InternalClaims, AuthFailure> {
    tokens.verify_internal(purpose, token).map_err(|e| match e {
        VerifyError::Expired => AuthFailure::TokenExpired {
            name: name.to_owned(),
            expired_at: "its expiry".into(),
        },
        _ => AuthFailure::WrongSecret,
    })
}

/// A personal access token that matched: its scopes and credential, if it is still good.
fn pat_credential(
    token: &PersonalAccessToken,
    now: OffsetDateTime,
) -> Result<(RegistryScopes, Credential), AuthFailure> {
    usable(&token.name, token.revoked, token.expires_at, now)?;
    Ok((
        token.scopes,
        Credential::PersonalAccessToken {
            name: token.name.clone(),
            digest: token.digest,
        },
    ))
}

/// A user whose credential checked out, as a principal unless the account is blocked.
fn user_principal(
    user: &User,
    scopes: RegistryScopes,
    credential: Credential,
) -> Result<Principal, AuthFailure> {
    if user.blocked {
        return Err(AuthFailure::UserBlocked);
    }
    Ok(Principal::User {
        username: user.username.clone(),
        admin: user.admin,
        scopes,
        credential,
    })
}

/// A deploy or access token that matched, as a principal if it is still good.
pub(crate) fn namespace_principal(
    token: &NamespaceToken,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    usable(&token.username, token.revoked, token.expires_at, now)?;
    Ok(Principal::Token(token.clone()))
}

/// A token whose secret matched: is it still good for the registry?
fn usable(
    name: &str,
    revoked: bool,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), AuthFailure> {
    if revoked {
        return Err(AuthFailure::TokenRevoked {
            name: name.to_owned(),
        });
    }
    if let Some(expires_at) = expires_at.filter(|at| now >= *at) {
        return Err(AuthFailure::TokenExpired {
            name: name.to_owned(),
            expired_at: expires_at.date().to_string(),
        });
    }
    // A token with no registry ability is still a good credential: GitLab authenticates it
    // and then refuses it with `403 access forbidden` (`has_registry_ability?`), which the
    // endpoint does ([`Principal::has_registry_ability`]). Refresh tokens and push grace
    // check it themselves ([`resolve_binding`]).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let c = BasicCredentials::parse(basic("alice:pa:ss").as_bytes()).unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("alice", "pa:ss"));
        let c = BasicCredentials::parse(b"basic YWxpY2U6").unwrap();
        assert_eq!(c.secret, "");
        // An empty username: a personal access token alone says who acts (GitLab
        // lib/gitlab/auth.rb, personal_access_token_check ignores the login).
        let c = BasicCredentials::parse(b"Basic OnNlY3JldA==").unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("", "secret"));
    }

    #[test]
    fn malformed_headers_are_told_apart_from_other_schemes() {
        assert_eq!(
            BasicCredentials::parse(b"Bearer abc").unwrap_err(),
            HeaderError::NotBasic
        );
        for bad in [&b"Basic"[..], b"Basic !!!", b"Basic YWxpY2U=", b"\xff\xfe"] {
            assert_eq!(
                BasicCredentials::parse(bad).unwrap_err(),
                HeaderError::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = BasicCredentials::parse(basic("alice:hunter2").as_bytes()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_binding_follows_the_exact_token_not_a_namesake() {
        let now = OffsetDateTime::now_utc();
        let read_only = RegistryScopes {
            read_registry: true,
            write_registry: false,
            admin_container_image: false,
        };
        let pat = |secret: &str, scopes| PersonalAccessToken {
            name: "shared".into(),
            digest: token_digest(secret),
            scopes,
            expires_at: None,
            revoked: false,
        };
        let mut erin = User {
            username: "erin".into(),
            password_hash: None,
            admin: false,
            blocked: false,
            personal_access_tokens: vec![
                pat("api-secret", RegistryScopes::ALL),
                pat("ro-secret", read_only),
            ],
        };
        let directory = Directory::new(vec![erin.clone()], vec![], vec![], vec![]);
        let (scopes, credential) = pat_credential(&erin.personal_access_tokens[1], now).unwrap();
        let principal = user_principal(&erin, scopes, credential).unwrap();
        let (bound, _) = binding(&principal, &directory).unwrap();
        match resolve_binding(&directory, "erin", &bound, now).unwrap() {
            Principal::User { scopes, .. } => assert_eq!(scopes, read_only),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{principal:?}").contains("digest"));

        erin.personal_access_tokens[1].revoked = true;
        let directory = Directory::new(vec![erin], vec![], vec![], vec![]);
        let refused = resolve_binding(&directory, "erin", &bound, now).unwrap_err();
        assert_eq!(refused.reason(), "token_revoked");
    }

    #[test]
    fn token_digests_are_sha256() {
        let hex: String = token_digest("abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
