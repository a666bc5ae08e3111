//! Validation of who exists: users, groups, projects, and the tokens that belong to them.
//!
//! Beyond each value's own form, it checks what only the whole file can tell: one identity per
//! username (a Basic username must name one user, one deploy token or one bot), one place per
//! token, members that are users, and a project or subgroup that is not more visible than any
//! of its parent groups (GitLab refuses that too).

use std::collections::{HashMap, HashSet};

use super::file::{PersonalAccessTokenFile, ProjectFile, UserFile};
use super::validate::{parse_expiry, parse_sha256_hex, Checker};
use super::Problem;
use crate::auth::directory::{
    Directory, Group, NamespaceKind, NamespaceToken, PasswordHash, PersonalAccessToken, Project,
    RegistryScopes, Role, User, Visibility,
};
use crate::auth::scope::RepositoryName;

/// Where an entry is in the file (`users[3]`, `projects[5].deploy_tokens[0]`), made into a
/// key string only for a problem: a string for each key of each entry was a third of a large
/// directory's validation (100,000 projects: a million strings, nearly all never shown).
#[derive(Debug, Clone, Copy)]
struct At {
    list: &'static str,
    index: usize,
    within: Option<(&'static str, usize)>,
}

impl At {
    fn new(list: &'static str, index: usize) -> At {
        At {
            list,
            index,
            within: None,
        }
    }

    /// The `index`th entry of this entry's `list`.
    fn within(self, list: &'static str, index: usize) -> At {
        At {
            within: Some((list, index)),
            ..self
        }
    }

    /// The key of `field` of this entry, e.g. `users[0].personal_access_tokens[1].scopes`.
    fn key(self, field: &str) -> String {
        match self.within {
            None => format!("{}[{}].{field}", self.list, self.index),
            Some((list, index)) => format!("{}[{}].{list}[{index}].{field}", self.list, self.index),
        }
    }
}

/// [`Checker::check`] with the key made only when there is a problem.
fn check<T>(c: &mut Checker, at: At, field: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            c.problems.push(Problem::new(at.key(field), message));
            None
        }
    }
}

/// Where each username and each token digest was first seen, to report duplicates.
#[derive(Default)]
struct Seen {
    usernames: HashMap<String, At>,
    digests: HashMap<[u8; 32], At>,
}

impl Seen {
    /// `at`'s `username`.
    fn username(&mut self, c: &mut Checker, at: At, username: &str) {
        if let Some(first) = self.usernames.get(username) {
            let first = first.key("username");
            c.problems.push(Problem::new(
                at.key("username"),
                format!("username {username:?} is already used at {first}: a Basic username must name one user, deploy token or bot"),
            ));
        } else {
            self.usernames.insert(username.to_owned(), at);
        }
    }

    /// `at`'s `token_sha256`.
    fn digest(&mut self, c: &mut Checker, at: At, digest: [u8; 32]) {
        if let Some(first) = self.digests.get(&digest) {
            let first = first.key("token_sha256");
            c.problems.push(Problem::new(
                at.key("token_sha256"),
                format!("the same token is already configured at {first}"),
            ));
        } else {
            self.digests.insert(digest, at);
        }
    }
}

/// Below this many projects the directory is indexed on one thread (a thread would cost more
/// than it saves).
const TWO_THREADS_FROM: usize = 10_000;

/// `every_core`: start-up or `portcullis check`, where a large directory may be indexed on two
/// threads ([`Directory::new_on`]); a reload runs beside traffic, on one.
pub(super) fn validate(
    c: &mut Checker,
    users: Vec<UserFile>,
    groups: Vec<ProjectFile>,
    projects: Vec<ProjectFile>,
    every_core: bool,
) -> Directory {
    let mut seen = Seen::default();
    let user_settings = super::settings::users(&users);
    super::settings::refuse_on_groups(c, &groups);
    let project_settings = super::settings::projects(c, &groups, &projects);
    let users = validate_users(c, &mut seen, users);
    let known: HashSet<&str> = users.iter().map(|u| u.username.as_str()).collect();
    let mut tokens = Vec::new();
    let groups: Vec<Group> = namespaces(
        c,
        &mut seen,
        &known,
        "groups",
        groups,
        NamespaceKind::Group,
        &mut tokens,
    )
    .into_iter()
    .map(|(path, visibility, members)| Group {
        path,
        visibility,
        members,
    })
    .collect();
    let projects: Vec<Project> = namespaces(
        c,
        &mut seen,
        &known,
        "projects",
        projects,
        NamespaceKind::Project,
        &mut tokens,
    )
    .into_iter()
    .map(|(path, visibility, members)| Project {
        path,
        visibility,
        members,
    })
    .collect();
    check_visibility(c, &groups, &projects);
    let two_threads = every_core && projects.len() >= TWO_THREADS_FROM;
    Directory::new_on(users, groups, projects, tokens, two_threads)
        .with_settings(project_settings, user_settings)
}

fn validate_users(c: &mut Checker, seen: &mut Seen, users: Vec<UserFile>) -> Vec<User> {
    let mut out = Vec::with_capacity(users.len());
    for (i, user) in users.into_iter().enumerate() {
        let at = At::new("users", i);
        check_username(c, at, &user.username);
        seen.username(c, at, &user.username);
        let password_hash = user
            .password_hash
            .as_deref()
            .and_then(|h| check(c, at, "password_hash", PasswordHash::parse(h)));
        let mut tokens = Vec::new();
        for (j, pat) in user.personal_access_tokens.into_iter().enumerate() {
            let at = at.within("personal_access_tokens", j);
            if let Some(token) = validate_pat(c, at, pat) {
                seen.digest(c, at, token.digest);
                tokens.push(token);
            }
        }
        out.push(User {
            username: user.username,
            password_hash,
            admin: user.admin,
            blocked: user.blocked,
            personal_access_tokens: tokens,
        });
    }
    out
}

/// `at`'s `username`.
fn check_username(c: &mut Checker, at: At, username: &str) {
    if username.is_empty() || username.contains(':') {
        c.problems.push(Problem::new(
            at.key("username"),
            "must be non-empty and must not contain ':' (it is sent in Basic auth)",
        ));
    }
    if username == crate::auth::credentials::CI_USERNAME {
        c.problems.push(Problem::new(
            at.key("username"),
            "gitlab-ci-token is reserved for CI job tokens (`portcullis ci-token`)",
        ));
    }
}

/// The fields every token has, checked once.
struct TokenBasics {
    digest: [u8; 32],
    scopes: RegistryScopes,
    expires_at: Option<time::OffsetDateTime>,
}

fn token_basics(
    c: &mut Checker,
    at: At,
    sha256: &str,
    scopes: &[String],
    expires_at: Option<&str>,
) -> Option<TokenBasics> {
    let digest = check(c, at, "token_sha256", parse_sha256_hex(sha256));
    let scopes = check(c, at, "scopes", RegistryScopes::parse(scopes));
    let expires_at = match expires_at {
        None => Some(None),
        Some(text) => check(c, at, "expires_at", parse_expiry(text)).map(Some),
    };
    Some(TokenBasics {
        digest: digest?,
        scopes: scopes?,
        expires_at: expires_at?,
    })
}

fn validate_pat(
    c: &mut Checker,
    at: At,
    pat: PersonalAccessTokenFile,
) -> Option<PersonalAccessToken> {
    let basics = token_basics(
        c,
        at,
        &pat.token_sha256,
        &pat.scopes,
        pat.expires_at.as_deref(),
    )?;
    Some(PersonalAccessToken {
        name: pat.name,
        digest: basics.digest,
        scopes: basics.scopes,
        expires_at: basics.expires_at,
        revoked: pat.revoked,
    })
}

/// Validate projects or groups (same keys); collect their deploy and access tokens.
fn namespaces(
    c: &mut Checker,
    seen: &mut Seen,
    users: &HashSet<&str>,
    list: &'static str,
    entries: Vec<ProjectFile>,
    kind: NamespaceKind,
    tokens: &mut Vec<NamespaceToken>,
) -> Vec<(RepositoryName, Visibility, HashMap<String, Role>)> {
    let mut paths = HashSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = At::new(list, i);
        let path = check(
            c,
            at,
            "path",
            RepositoryName::parse(&entry.path).map_err(|e| e.to_string()),
        );
        if paths.contains(&entry.path) {
            c.problems.push(Problem::new(
                at.key("path"),
                format!("{:?} is defined twice", entry.path),
            ));
        } else {
            paths.insert(entry.path);
        }
        let visibility = check(c, at, "visibility", entry.visibility.parse::<Visibility>());
        let mut members = HashMap::with_capacity(entry.members.len());
        for (name, role) in entry.members {
            let member_key = || format!("{}.{name}", at.key("members"));
            if !users.contains(name.as_str()) {
                c.problems.push(Problem::new(
                    member_key(),
                    format!("no user {name:?} is defined under users"),
                ));
            }
            match role.parse::<Role>() {
                Ok(role) => {
                    members.insert(name, role);
                }
                Err(message) => c.problems.push(Problem::new(member_key(), message)),
            }
        }
        let Some(path) = path else { continue };
        for (j, token) in entry.deploy_tokens.into_iter().enumerate() {
            let fields = TokenFields {
                username: token.username,
                token_sha256: &token.token_sha256,
                scopes: &token.scopes,
                expires_at: token.expires_at.as_deref(),
                revoked: token.revoked,
            };
            let at = at.within("deploy_tokens", j);
            tokens.extend(namespace_token(c, seen, at, fields, None, &path, kind));
        }
        for (j, token) in entry.access_tokens.into_iter().enumerate() {
            let fields = TokenFields {
                username: token.username,
                token_sha256: &token.token_sha256,
                scopes: &token.scopes,
                expires_at: token.expires_at.as_deref(),
                revoked: token.revoked,
            };
            let at = at.within("access_tokens", j);
            tokens.extend(namespace_token(
                c,
                seen,
                at,
                fields,
                Some(&token.role),
                &path,
                kind,
            ));
        }
        if let Some(visibility) = visibility {
            out.push((path, visibility, members));
        }
    }
    out
}

/// The fields deploy and access tokens share, as written in the file.
struct TokenFields<'a> {
    username: String,
    token_sha256: &'a str,
    scopes: &'a [String],
    expires_at: Option<&'a str>,
    revoked: bool,
}

/// A deploy token (`role` None) or an access token of `namespace`.
fn namespace_token(
    c: &mut Checker,
    seen: &mut Seen,
    at: At,
    token: TokenFields<'_>,
    role: Option<&str>,
    namespace: &RepositoryName,
    kind: NamespaceKind,
) -> Option<NamespaceToken> {
    check_username(c, at, &token.username);
    seen.username(c, at, &token.username);
    let role = match role {
        None => Some(None),
        Some(role) => check(c, at, "role", role.parse::<Role>()).map(Some),
    };
    let basics = token_basics(c, at, token.token_sha256, token.scopes, token.expires_at)?;
    seen.digest(c, at, basics.digest);
    Some(NamespaceToken {
        username: token.username,
        digest: basics.digest,
        scopes: basics.scopes,
        expires_at: basics.expires_at,
        revoked: token.revoked,
        namespace: namespace.clone(),
        namespace_kind: kind,
        role: role?,
    })
}

/// A project or subgroup may not be more visible than any group above it.
fn check_visibility(c: &mut Checker, groups: &[Group], projects: &[Project]) {
    let below = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (At::new("groups", i), &g.path, g.visibility))
        .chain(
            projects
                .iter()
                .enumerate()
                .map(|(i, p)| (At::new("projects", i), &p.path, p.visibility)),
        );
    // A path's parent groups are its proper prefixes: looked up, not searched for (a pass over
    // every group for each of 100,000 projects took most of a second).
    let by_path: HashMap<&str, &Group> = groups.iter().map(|g| (g.path.as_str(), g)).collect();
    for (at, path, visibility) in below {
        let parents = std::iter::successors(Some(path.as_str()), |p| p.rfind('/').map(|i| &p[..i]))
            .skip(1)
            .filter_map(|p| by_path.get(p).copied());
        for parent in parents {
            if visibility > parent.visibility {
                c.problems.push(Problem::new(
                    at.key("visibility"),
                    format!(
                        "{path} is {} but its group {} is {}: it cannot be more visible than its group",
                        visibility_name(visibility),
                        parent.path,
                        visibility_name(parent.visibility)
                    ),
                ));
            }
        }
    }
}

fn visibility_name(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Private => "private",
        Visibility::Internal => "internal",
        Visibility::Public => "public",
    }
}
