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

/// Where each username and each token digest was first seen, to report duplicates.
#[derive(Default)]
struct Seen {
    usernames: HashMap<String, String>,
    digests: HashMap<[u8; 32], String>,
}

impl Seen {
    fn username(&mut self, c: &mut Checker, key: String, username: &str) {
        if let Some(first) = self.usernames.get(username) {
            c.problems.push(Problem::new(
                key,
                format!("username {username:?} is already used at {first}: a Basic username must name one user, deploy token or bot"),
            ));
        } else {
            self.usernames.insert(username.to_owned(), key);
        }
    }

    fn digest(&mut self, c: &mut Checker, key: String, digest: [u8; 32]) {
        if let Some(first) = self.digests.get(&digest) {
            c.problems.push(Problem::new(
                key,
                format!("the same token is already configured at {first}"),
            ));
        } else {
            self.digests.insert(digest, key);
        }
    }
}

pub(super) fn validate(
    c: &mut Checker,
    users: Vec<UserFile>,
    groups: Vec<ProjectFile>,
    projects: Vec<ProjectFile>,
) -> Directory {
    let mut seen = Seen::default();
    let user_settings = super::settings::users(&users);
    super::settings::refuse_on_groups(c, &groups);
    let project_settings = super::settings::projects(c, &groups, &projects);
    let users = validate_users(c, &mut seen, users);
    let known: HashSet<String> = users.iter().map(|u| u.username.clone()).collect();
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
    Directory::new(users, groups, projects, tokens).with_settings(project_settings, user_settings)
}

fn validate_users(c: &mut Checker, seen: &mut Seen, users: Vec<UserFile>) -> Vec<User> {
    let mut out = Vec::with_capacity(users.len());
    for (i, user) in users.into_iter().enumerate() {
        let key = format!("users[{i}]");
        check_username(c, &format!("{key}.username"), &user.username);
        seen.username(c, format!("{key}.username"), &user.username);
        let password_hash = user
            .password_hash
            .as_deref()
            .and_then(|h| c.check(format!("{key}.password_hash"), PasswordHash::parse(h)));
        let mut tokens = Vec::new();
        for (j, pat) in user.personal_access_tokens.into_iter().enumerate() {
            let pkey = format!("{key}.personal_access_tokens[{j}]");
            if let Some(token) = validate_pat(c, &pkey, pat) {
                seen.digest(c, format!("{pkey}.token_sha256"), token.digest);
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

fn check_username(c: &mut Checker, key: &str, username: &str) {
    if username.is_empty() || username.contains(':') {
        c.problems.push(Problem::new(
            key,
            "must be non-empty and must not contain ':' (it is sent in Basic auth)",
        ));
    }
    if username == crate::auth::credentials::CI_USERNAME {
        c.problems.push(Problem::new(
            key,
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
    key: &str,
    sha256: &str,
    scopes: &[String],
    expires_at: Option<&str>,
) -> Option<TokenBasics> {
    let digest = c.check(format!("{key}.token_sha256"), parse_sha256_hex(sha256));
    let scopes = c.check(format!("{key}.scopes"), RegistryScopes::parse(scopes));
    let expires_at = match expires_at {
        None => Some(None),
        Some(text) => c
            .check(format!("{key}.expires_at"), parse_expiry(text))
            .map(Some),
    };
    Some(TokenBasics {
        digest: digest?,
        scopes: scopes?,
        expires_at: expires_at?,
    })
}

fn validate_pat(
    c: &mut Checker,
    key: &str,
    pat: PersonalAccessTokenFile,
) -> Option<PersonalAccessToken> {
    let basics = token_basics(
        c,
        key,
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
    users: &HashSet<String>,
    list: &str,
    entries: Vec<ProjectFile>,
    kind: NamespaceKind,
    tokens: &mut Vec<NamespaceToken>,
) -> Vec<(RepositoryName, Visibility, HashMap<String, Role>)> {
    let mut paths = HashSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let key = format!("{list}[{i}]");
        let path = c.check(
            format!("{key}.path"),
            RepositoryName::parse(&entry.path).map_err(|e| e.to_string()),
        );
        if !paths.insert(entry.path.clone()) {
            c.problems.push(Problem::new(
                format!("{key}.path"),
                format!("{:?} is defined twice", entry.path),
            ));
        }
        let visibility = c.check(
            format!("{key}.visibility"),
            entry.visibility.parse::<Visibility>(),
        );
        let mut members = HashMap::new();
        for (name, role) in entry.members {
            let mkey = format!("{key}.members.{name}");
            if !users.contains(&name) {
                c.problems.push(Problem::new(
                    &mkey,
                    format!("no user {name:?} is defined under users"),
                ));
            }
            if let Some(role) = c.check(mkey, role.parse::<Role>()) {
                members.insert(name, role);
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
            let key = format!("{key}.deploy_tokens[{j}]");
            tokens.extend(namespace_token(c, seen, &key, fields, None, &path, kind));
        }
        for (j, token) in entry.access_tokens.into_iter().enumerate() {
            let fields = TokenFields {
                username: token.username,
                token_sha256: &token.token_sha256,
                scopes: &token.scopes,
                expires_at: token.expires_at.as_deref(),
                revoked: token.revoked,
            };
            let key = format!("{key}.access_tokens[{j}]");
            tokens.extend(namespace_token(
                c,
                seen,
                &key,
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
    key: &str,
    token: TokenFields<'_>,
    role: Option<&str>,
    namespace: &RepositoryName,
    kind: NamespaceKind,
) -> Option<NamespaceToken> {
    check_username(c, &format!("{key}.username"), &token.username);
    seen.username(c, format!("{key}.username"), &token.username);
    let role = match role {
        None => Some(None),
        Some(role) => c
            .check(format!("{key}.role"), role.parse::<Role>())
            .map(Some),
    };
    let basics = token_basics(c, key, token.token_sha256, token.scopes, token.expires_at)?;
    seen.digest(c, format!("{key}.token_sha256"), basics.digest);
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
        .map(|(i, g)| (format!("groups[{i}].visibility"), &g.path, g.visibility))
        .chain(
            projects
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("projects[{i}].visibility"), &p.path, p.visibility)),
        );
    // A path's parent groups are its proper prefixes: looked up, not searched for (a pass over
    // every group for each of 100,000 projects took most of a second).
    let by_path: HashMap<&str, &Group> = groups.iter().map(|g| (g.path.as_str(), g)).collect();
    for (key, path, visibility) in below {
        let parents = std::iter::successors(Some(path.as_str()), |p| p.rfind('/').map(|i| &p[..i]))
            .skip(1)
            .filter_map(|p| by_path.get(p).copied());
        for parent in parents {
            if visibility > parent.visibility {
                c.problems.push(Problem::new(
                    key.clone(),
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
