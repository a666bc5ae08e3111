//! Who exists: users with their credentials, and projects with their members and visibility.
//!
//! Built once from `gateway.yaml` and shared read-only. Lookups are what the token service
//! needs on every request: a user by name, and the project that owns a repository (the
//! longest project path the repository name lies within).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use super::scope::RepositoryName;

/// A project role, GitLab's order: guest < reporter < developer < maintainer < owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "guest" => Ok(Role::Guest),
            "reporter" => Ok(Role::Reporter),
            "developer" => Ok(Role::Developer),
            "maintainer" => Ok(Role::Maintainer),
            "owner" => Ok(Role::Owner),
            other => Err(format!(
                "unknown role {other:?}: use guest, reporter, developer, maintainer or owner"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Guest => "guest",
            Role::Reporter => "reporter",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        })
    }
}

/// Who may see a project at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Visibility {
    Private,
    Internal,
    Public,
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Visibility::Private),
            "internal" => Ok(Visibility::Internal),
            "public" => Ok(Visibility::Public),
            other => Err(format!(
                "unknown visibility {other:?}: use private, internal or public"
            )),
        }
    }
}

/// GitLab token scopes that exist but say nothing about the registry. `admin_mode` is one: the
/// registry doc says a token without it still works for registry operations, even for an
/// administrator, so it changes nothing here.
const OTHER_GITLAB_SCOPES: &[&str] = &[
    "admin_mode",
    "read_user",
    "read_repository",
    "write_repository",
    "read_virtual_registry",
    "write_virtual_registry",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "ai_features",
    "sudo",
    "read_service_ping",
    "self_rotate",
    "read_package_registry",
    "write_package_registry",
];

/// The registry abilities a credential carries: GitLab's authentication abilities
/// (`lib/gitlab/auth.rb`, `abilities_for_scopes`), of which the registry looks at three.
/// A password carries all three (`full_authentication_abilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryScopes {
    /// `read_container_image`: from `read_registry`, `read_api` or `api`.
    pub read_registry: bool,
    /// `create_container_image`: from `write_registry` or `api`.
    pub write_registry: bool,
    /// `admin_container_image` (delete and `*`): only `api` and a password have it, never
    /// `read_registry` + `write_registry`.
    pub admin_container_image: bool,
}

impl RegistryScopes {
    pub const ALL: RegistryScopes = RegistryScopes {
        read_registry: true,
        write_registry: true,
        admin_container_image: true,
    };

    /// Parse the `scopes:` list of a token, as GitLab's `abilities_for_scopes` maps them:
    /// `api` gives all three abilities, `read_api` pulls (`read_only_authentication_abilities`
    /// include `read_container_image`), `read_registry` pulls, `write_registry` pushes and
    /// nothing else; `admin_mode` and GitLab's other scope names are accepted and grant
    /// nothing here. Anything else is refused: a typo in a scope would otherwise silently make
    /// a token useless.
    pub fn parse(names: &[String]) -> Result<RegistryScopes, String> {
        let mut scopes = RegistryScopes::default();
        for name in names {
            match name.as_str() {
                "read_registry" | "read_api" => scopes.read_registry = true,
                "write_registry" => scopes.write_registry = true,
                "api" => scopes = RegistryScopes::ALL,
                known if OTHER_GITLAB_SCOPES.contains(&known) => {}
                other => {
                    return Err(format!(
                        "unknown scope {other:?}: use read_registry, write_registry, read_api or api (admin_mode and GitLab's other scopes are accepted and grant nothing here)"
                    ))
                }
            }
        }
        Ok(scopes)
    }

    /// True when the credential has no registry ability at all (GitLab's
    /// `has_registry_ability?` is false: `403 access forbidden`).
    pub fn is_empty(self) -> bool {
        !self.read_registry && !self.write_registry && !self.admin_container_image
    }
}

/// A stored password hash. Verified off the async runtime (it is slow on purpose).
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$` (htpasswd -B).
    Bcrypt(String),
    /// An argon2 PHC string (`$argon2id$v=19$...`).
    Argon2(String),
}

impl PasswordHash {
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        if text.starts_with("$argon2") {
            let parsed = argon2::PasswordHash::new(text)
                .map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err("not a valid argon2 PHC string: it has no salt or no hash".into());
            }
            Ok(PasswordHash::Argon2(text.to_owned()))
        } else if ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| text.starts_with(p))
        {
            if text.len() != 60 {
                return Err("not a valid bcrypt hash (expected 60 characters)".into());
            }
            Ok(PasswordHash::Bcrypt(text.to_owned()))
        } else {
            Err("unsupported password hash: use bcrypt ($2y$..., htpasswd -B) or argon2id ($argon2id$...); `portcullis hash-password` makes one".into())
        }
    }

    /// The stored hash text (the password cache keys on it, so a change invalidates).
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Bcrypt(hash) | PasswordHash::Argon2(hash) => hash,
        }
    }

    /// Check a password. Slow by design: call from a blocking thread.
    pub fn verify(&self, password: &str) -> bool {
        use argon2::PasswordVerifier;
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Argon2(hash) => match argon2::PasswordHash::new(hash) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                Err(_) => false,
            },
        }
    }
}

impl fmt::Debug for PasswordHash {
    // Never print the hash itself: it is offline-crackable material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Bcrypt(_) => f.write_str("PasswordHash::Bcrypt(..)"),
            PasswordHash::Argon2(_) => f.write_str("PasswordHash::Argon2(..)"),
        }
    }
}

/// A personal access token, stored only as the SHA-256 of its secret.
#[derive(Clone)]
pub struct PersonalAccessToken {
    pub name: String,
    pub digest: [u8; 32],
    pub scopes: RegistryScopes,
    /// The token stops working at this instant (GitLab: at the start of its expiry date, UTC).
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
}

impl fmt::Debug for PersonalAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonalAccessToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub password_hash: Option<PasswordHash>,
    pub admin: bool,
    /// A blocked user cannot sign in with any credential.
    pub blocked: bool,
    pub personal_access_tokens: Vec<PersonalAccessToken>,
}

#[derive(Debug, Clone)]
pub struct Project {
    /// The project owns repositories `path` and `path/...`.
    pub path: RepositoryName,
    pub visibility: Visibility,
    /// Effective members: the project's own and those inherited from every parent group, the
    /// highest role winning.
    pub members: HashMap<String, Role>,
}

/// A group: members and tokens that reach every project (and subgroup) below its path.
#[derive(Debug, Clone)]
pub struct Group {
    pub path: RepositoryName,
    pub visibility: Visibility,
    pub members: HashMap<String, Role>,
}

/// Whether a token belongs to a project or to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    Project,
    Group,
}

/// A token that acts only inside one project or group (deploy tokens, project and group
/// access tokens): its own username, a digest, scopes, and for access tokens a role.
#[derive(Clone)]
pub struct NamespaceToken {
    /// The Basic username that goes with the token (`gitlab+deploy-token-1`, a bot's name).
    pub username: String,
    pub digest: [u8; 32],
    pub scopes: RegistryScopes,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
    /// The project or group the token acts in.
    pub namespace: RepositoryName,
    pub namespace_kind: NamespaceKind,
    /// Access tokens act with this role; deploy tokens have none (their scopes decide).
    pub role: Option<Role>,
}

impl NamespaceToken {
    /// `deploy_token`, `project_access_token` or `group_access_token`, for logs.
    pub fn kind(&self) -> &'static str {
        match (self.role, self.namespace_kind) {
            (None, _) => "deploy_token",
            (Some(_), NamespaceKind::Project) => "project_access_token",
            (Some(_), NamespaceKind::Group) => "group_access_token",
        }
    }
}

impl fmt::Debug for NamespaceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamespaceToken")
            .field("username", &self.username)
            .field("kind", &self.kind())
            .field("namespace", &self.namespace)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The directory in force, shared by the token endpoint and push grace and swapped whole on
/// reload; each reader works on the snapshot it took.
#[derive(Clone, Default)]
pub struct SharedDirectory(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Directory>>>);

impl SharedDirectory {
    pub fn new(directory: Directory) -> SharedDirectory {
        SharedDirectory(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(directory),
        )))
    }

    pub fn get(&self) -> std::sync::Arc<Directory> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, directory: Directory) {
        self.replace_shared(std::sync::Arc::new(directory));
    }

    /// Put in force a directory someone else also holds (no copy).
    pub fn replace_shared(&self, directory: std::sync::Arc<Directory>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = directory;
    }
}

/// Users, groups, projects and namespace tokens, indexed for the token service.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: HashMap<String, User>,
    /// Deploy and access tokens by username (a username may hold several deploy tokens).
    namespace_tokens: HashMap<String, Vec<NamespaceToken>>,
    /// Sorted by path, so a path is found by binary search (the owning project of a
    /// repository is its longest prefix found: a few searches, whatever the directory's size).
    projects: Vec<Project>,
    /// Sorted by path, as the projects.
    groups: Vec<Group>,
    /// Project settings and user account settings ([`super::protection`]), kept apart from
    /// the identities so a project or user without any has none to store.
    project_settings: HashMap<RepositoryName, super::protection::ProjectSettings>,
    user_settings: HashMap<String, super::protection::UserSettings>,
    /// Personal and project/group access tokens by digest: GitLab finds them by the secret
    /// alone, whatever the Basic username (`lib/gitlab/auth.rb`,
    /// `personal_access_token_check`). Deploy tokens are not here: they need their username.
    by_digest: HashMap<[u8; 32], DigestOwner>,
}

/// Where a token found by its digest lives (indexes into the maps above).
#[derive(Debug, Clone)]
enum DigestOwner {
    Personal { username: String, index: usize },
    Bot { username: String, index: usize },
}

/// A personal or access token found by its digest, and who holds it.
#[derive(Debug, Clone, Copy)]
pub enum TokenHolder<'a> {
    Personal(&'a User, &'a PersonalAccessToken),
    Bot(&'a NamespaceToken),
}

impl Directory {
    /// Index everything; each project's members become its effective members (its own plus
    /// every parent group's, the highest role winning).
    pub fn new(
        users: Vec<User>,
        groups: Vec<Group>,
        projects: Vec<Project>,
        tokens: Vec<NamespaceToken>,
    ) -> Directory {
        Self::new_on(users, groups, projects, tokens, false)
    }

    /// [`Directory::new`], on two threads when `two_threads` (start-up and `portcullis check`
    /// with a large directory: nothing else is running yet): the projects are sorted beside the
    /// token indexes, and each half of them gets its groups' members on its own thread. The
    /// same directory either way.
    pub fn new_on(
        users: Vec<User>,
        mut groups: Vec<Group>,
        mut projects: Vec<Project>,
        tokens: Vec<NamespaceToken>,
        two_threads: bool,
    ) -> Directory {
        groups.sort_by(|a, b| a.path.cmp(&b.path));
        let sort = |projects: &mut Vec<Project>| projects.sort_by(|a, b| a.path.cmp(&b.path));
        // Each project's parent groups are its path's prefixes: a few searches a project, not
        // a pass over every group (100,000 projects in 1,000 groups took a second that way).
        let inherit = |projects: &mut [Project]| {
            for project in projects {
                for prefix in prefixes(project.path.as_str()) {
                    let Some(group) = find(&groups, prefix, |g| &g.path) else {
                        continue;
                    };
                    for (user, role) in &group.members {
                        let entry = project.members.entry(user.clone()).or_insert(*role);
                        *entry = (*entry).max(*role);
                    }
                }
            }
        };
        let indexes = |users: &[User], tokens: Vec<NamespaceToken>| {
            let mut namespace_tokens: HashMap<String, Vec<NamespaceToken>> =
                HashMap::with_capacity(tokens.len());
            for token in tokens {
                namespace_tokens
                    .entry(token.username.clone())
                    .or_default()
                    .push(token);
            }
            let personal = users.iter().map(|u| u.personal_access_tokens.len()).sum();
            let mut by_digest = HashMap::with_capacity(personal);
            for user in users {
                for (index, token) in user.personal_access_tokens.iter().enumerate() {
                    let username = user.username.clone();
                    by_digest.insert(token.digest, DigestOwner::Personal { username, index });
                }
            }
            for (username, tokens) in &namespace_tokens {
                for (index, token) in tokens.iter().enumerate() {
                    if token.role.is_some() {
                        let username = username.clone();
                        by_digest.insert(token.digest, DigestOwner::Bot { username, index });
                    }
                }
            }
            (namespace_tokens, by_digest)
        };
        let (namespace_tokens, by_digest) = if two_threads {
            let resume = std::panic::resume_unwind;
            let (indexes, sorted) = std::thread::scope(|scope| {
                let sorted = scope.spawn(move || {
                    sort(&mut projects);
                    projects
                });
                let indexes = indexes(&users, tokens);
                (indexes, sorted.join().unwrap_or_else(|e| resume(e)))
            });
            projects = sorted;
            let half = projects.len() / 2;
            let (low, high) = projects.split_at_mut(half);
            std::thread::scope(|scope| {
                let other = scope.spawn(|| inherit(high));
                inherit(low);
                other.join().unwrap_or_else(|e| resume(e));
            });
            indexes
        } else {
            sort(&mut projects);
            inherit(&mut projects);
            indexes(&users, tokens)
        };
        Directory {
            users: users.into_iter().map(|u| (u.username.clone(), u)).collect(),
            namespace_tokens,
            projects,
            groups,
            project_settings: HashMap::new(),
            user_settings: HashMap::new(),
            by_digest,
        }
    }

    /// The personal or project/group access token whose secret has this SHA-256. A hash map
    /// lookup, not a constant-time compare: its timing depends on the digest of the guess,
    /// which tells a guesser nothing about any stored secret.
    pub fn token_by_digest(&self, digest: &[u8; 32]) -> Option<TokenHolder<'_>> {
        match self.by_digest.get(digest)? {
            DigestOwner::Personal { username, index } => {
                let user = self.users.get(username)?;
                Some(TokenHolder::Personal(
                    user,
                    user.personal_access_tokens.get(*index)?,
                ))
            }
            DigestOwner::Bot { username, index } => self
                .namespace_tokens
                .get(username)?
                .get(*index)
                .map(TokenHolder::Bot),
        }
    }

    /// Add the projects' and users' settings (only those that differ from the defaults need
    /// an entry).
    pub fn with_settings(
        mut self,
        projects: HashMap<RepositoryName, super::protection::ProjectSettings>,
        users: HashMap<String, super::protection::UserSettings>,
    ) -> Directory {
        self.project_settings = projects;
        self.user_settings = users;
        self
    }

    /// The settings of the project at `path` (the defaults when it has none).
    pub fn project_settings(&self, path: &RepositoryName) -> &super::protection::ProjectSettings {
        static DEFAULT: std::sync::OnceLock<super::protection::ProjectSettings> =
            std::sync::OnceLock::new();
        self.project_settings
            .get(path)
            .unwrap_or_else(|| DEFAULT.get_or_init(Default::default))
    }

    /// A user's account settings (the defaults for unknown names).
    pub fn user_settings(&self, username: &str) -> super::protection::UserSettings {
        self.user_settings
            .get(username)
            .copied()
            .unwrap_or_default()
    }

    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    /// The deploy and access tokens that go with a Basic username.
    pub fn namespace_tokens(&self, username: &str) -> &[NamespaceToken] {
        self.namespace_tokens
            .get(username)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The project that owns `repository`, if any: the longest of its prefixes that is a
    /// project (one binary search per prefix, longest first).
    pub fn project_for(&self, repository: &RepositoryName) -> Option<&Project> {
        prefixes(repository.as_str()).find_map(|prefix| find(&self.projects, prefix, |p| &p.path))
    }

    /// The group at exactly `path`, if any.
    pub fn group(&self, path: &str) -> Option<&Group> {
        find(&self.groups, path, |g| &g.path)
    }

    /// The project and group paths whose leading components are `prefix` (`prefix` itself and
    /// everything below `prefix/`; every path for an empty prefix), projects first, each in
    /// path order: found by binary search, not by a pass over the directory.
    pub fn paths_below<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a str> + 'a {
        fn below<'a, T>(
            items: &'a [T],
            prefix: &str,
            key: impl Fn(&T) -> &RepositoryName + Copy + 'a,
        ) -> impl Iterator<Item = &'a str> + 'a {
            let (exact, range) = if prefix.is_empty() {
                (None, items)
            } else {
                // `prefix-x` and `prefix.x` sort between `prefix` and `prefix/...`: two ranges.
                let under = format!("{prefix}/");
                let first = items.partition_point(|t| key(t).as_str() < under.as_str());
                let len = items[first..].partition_point(|t| key(t).as_str().starts_with(&under));
                (find(items, prefix, key), &items[first..first + len])
            };
            exact.into_iter().chain(range).map(move |t| key(t).as_str())
        }
        below(&self.projects, prefix, |p| &p.path).chain(below(&self.groups, prefix, |g| &g.path))
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn projects(&self) -> &[Project] {
        &self.projects
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// This directory with the token store's tokens added (personal tokens of users it has,
    /// deploy and access tokens), indexed like its own. A digest gateway.yaml uses already
    /// keeps pointing at gateway.yaml's token.
    pub fn with_tokens(
        &self,
        personal: Vec<(String, PersonalAccessToken)>,
        namespace: Vec<NamespaceToken>,
    ) -> Directory {
        let mut directory = self.clone();
        for (username, token) in personal {
            let Some(user) = directory.users.get_mut(&username) else {
                continue;
            };
            let index = user.personal_access_tokens.len();
            directory
                .by_digest
                .entry(token.digest)
                .or_insert(DigestOwner::Personal { username, index });
            user.personal_access_tokens.push(token);
        }
        for token in namespace {
            let list = directory
                .namespace_tokens
                .entry(token.username.clone())
                .or_default();
            let index = list.len();
            if token.role.is_some() {
                let username = token.username.clone();
                directory
                    .by_digest
                    .entry(token.digest)
                    .or_insert(DigestOwner::Bot { username, index });
            }
            list.push(token);
        }
        directory
    }

    /// Every deploy and access token, for listings.
    pub fn all_namespace_tokens(&self) -> impl Iterator<Item = &NamespaceToken> {
        self.namespace_tokens.values().flatten()
    }
}

/// `a/b/c`, `a/b`, `a`: a path and its parents, longest first.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind('/').map(|i| &p[..i]))
}

/// The item at exactly `path` in a slice sorted by path.
fn find<'a, T>(items: &'a [T], path: &str, key: impl Fn(&T) -> &RepositoryName) -> Option<&'a T> {
    items
        .binary_search_by(|t| key(t).as_str().cmp(path))
        .ok()
        .map(|i| &items[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(path: &str) -> Project {
        Project {
            path: RepositoryName::parse(path).unwrap(),
            visibility: Visibility::Private,
            members: HashMap::new(),
        }
    }

    #[test]
    fn the_longest_project_path_owns_a_repository() {
        let dir = Directory::new(
            vec![],
            vec![],
            vec![project("group"), project("group/app")],
            vec![],
        );
        let owner = |name| {
            dir.project_for(&RepositoryName::parse(name).unwrap())
                .map(|p| p.path.as_str().to_owned())
        };
        assert_eq!(owner("group/app/sub").as_deref(), Some("group/app"));
        assert_eq!(owner("group/application").as_deref(), Some("group"));
        assert_eq!(owner("other/app"), None);
    }

    #[test]
    fn paths_below_a_prefix_are_found_between_names_that_sort_around_them() {
        let group = |path: &str| Group {
            path: RepositoryName::parse(path).unwrap(),
            visibility: Visibility::Private,
            members: HashMap::new(),
        };
        let dir = Directory::new(
            vec![],
            vec![group("a"), group("a-b")],
            vec![
                project("a-b/x"),
                project("a/b"),
                project("a.c/x"),
                project("a/b/c"),
                project("a/b0"),
                project("b/a"),
            ],
            vec![],
        );
        let below = |prefix| dir.paths_below(prefix).collect::<Vec<_>>();
        assert_eq!(below("a"), ["a/b", "a/b/c", "a/b0", "a"]);
        assert_eq!(below("a/b"), ["a/b", "a/b/c"]);
        assert_eq!(below("a-b"), ["a-b/x", "a-b"]);
        assert_eq!(below("c"), Vec::<&str>::new());
        assert_eq!(below("").len(), 8);
        assert!(dir.group("a-b").is_some() && dir.group("a/b").is_none());
        let owner = |name| {
            dir.project_for(&RepositoryName::parse(name).unwrap())
                .map(|p| p.path.as_str().to_owned())
        };
        assert_eq!(owner("a/b/c/d").as_deref(), Some("a/b/c"));
        assert_eq!(owner("a/b/cd").as_deref(), Some("a/b"));
        assert_eq!(owner("a/b0/x").as_deref(), Some("a/b0"));
        assert_eq!(owner("a/c"), None);
    }

    #[test]
    fn a_directory_indexed_on_two_threads_is_the_one_indexed_on_one() {
        let group = |g: usize| Group {
            path: RepositoryName::parse(&format!("g{g}")).unwrap(),
            visibility: Visibility::Private,
            members: [
                (format!("u{g}"), Role::Reporter),
                ("all".into(), Role::Guest),
            ]
            .into(),
        };
        let projects = || -> Vec<Project> {
            (0..101)
                .rev()
                .map(|p| {
                    let mut project = project(&format!("g{}/p{p}", p % 7));
                    project
                        .members
                        .insert(format!("u{}", p % 5), Role::Developer);
                    project
                })
                .collect()
        };
        let user = |u: usize| User {
            username: format!("u{u}"),
            password_hash: None,
            admin: false,
            blocked: false,
            personal_access_tokens: vec![PersonalAccessToken {
                name: "t".into(),
                digest: [u as u8; 32],
                scopes: RegistryScopes::ALL,
                expires_at: None,
                revoked: false,
            }],
        };
        let token = |t: usize| NamespaceToken {
            username: format!("bot{t}"),
            digest: [100 + t as u8; 32],
            scopes: RegistryScopes::ALL,
            expires_at: None,
            revoked: false,
            namespace: RepositoryName::parse(&format!("g{t}/p{t}")).unwrap(),
            namespace_kind: NamespaceKind::Project,
            role: (t % 2 == 0).then_some(Role::Developer),
        };
        let build = |two| {
            Directory::new_on(
                (0..5).map(user).collect(),
                (0..7).rev().map(group).collect(),
                projects(),
                (0..6).map(token).collect(),
                two,
            )
        };
        let (one, two) = (build(false), build(true));
        let shape = |d: &Directory| {
            let projects: Vec<_> = d
                .projects()
                .iter()
                .map(|p| (p.path.to_string(), p.members.clone()))
                .collect();
            let groups: Vec<_> = d.groups().iter().map(|g| g.path.to_string()).collect();
            let digests: Vec<_> = (0..=255u8)
                .filter_map(|b| d.token_by_digest(&[b; 32]).map(|h| format!("{b}: {h:?}")))
                .collect();
            let bots: Vec<_> = (0..6)
                .map(|t| format!("{:?}", d.namespace_tokens(&format!("bot{t}"))))
                .collect();
            (projects, groups, digests, bots)
        };
        assert_eq!(shape(&one), shape(&two));
        assert_eq!(one.projects().len(), 101);
        assert_eq!(one.projects()[0].path.as_str(), "g0/p0");
        assert_eq!(
            one.projects()[0].members.get("all"),
            Some(&Role::Guest),
            "inherited"
        );
        assert_eq!(shape(&one).2.len(), 5 + 3);
    }

    #[test]
    fn projects_inherit_members_from_every_parent_group_highest_role_wins() {
        let group = |path: &str, members: &[(&str, Role)]| Group {
            path: RepositoryName::parse(path).unwrap(),
            visibility: Visibility::Private,
            members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
        };
        let mut app = project("top/sub/app");
        app.members.insert("dora".into(), Role::Developer);
        app.members.insert("carol".into(), Role::Guest);
        let dir = Directory::new(
            vec![],
            vec![
                group(
                    "top",
                    &[("carol", Role::Maintainer), ("dora", Role::Reporter)],
                ),
                group("top/sub", &[("erin", Role::Reporter)]),
                group("other", &[("frank", Role::Owner)]),
            ],
            vec![app],
            vec![],
        );
        let members = &dir
            .project_for(&RepositoryName::parse("top/sub/app/image").unwrap())
            .unwrap()
            .members;
        assert_eq!(members.get("carol"), Some(&Role::Maintainer));
        assert_eq!(members.get("dora"), Some(&Role::Developer));
        assert_eq!(members.get("erin"), Some(&Role::Reporter));
        assert_eq!(members.get("frank"), None);
    }

    #[test]
    fn roles_are_ordered_as_gitlab_orders_them() {
        assert!(Role::Guest < Role::Reporter && Role::Reporter < Role::Developer);
        assert!(Role::Developer < Role::Maintainer && Role::Maintainer < Role::Owner);
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn scope_names_are_checked() {
        let scopes = RegistryScopes::parse(&["read_registry".into()]).unwrap();
        assert!(scopes.read_registry && !scopes.write_registry);
        assert_eq!(
            RegistryScopes::parse(&["api".into()]).unwrap(),
            RegistryScopes::ALL
        );
        assert!(RegistryScopes::parse(&["admin_mode".into()])
            .unwrap()
            .is_empty());
        assert!(RegistryScopes::parse(&["read_regsitry".into()])
            .unwrap_err()
            .contains("read_regsitry"));
    }

    #[test]
    fn password_hashes_are_recognised_and_verified() {
        let bcrypt_hash = bcrypt::hash("s3cret", 4).unwrap();
        let hash = PasswordHash::parse(&bcrypt_hash).unwrap();
        assert!(hash.verify("s3cret"));
        assert!(!hash.verify("wrong"));
        assert!(PasswordHash::parse("plaintext").is_err());
        assert!(PasswordHash::parse("$argon2id$garbage").is_err());
        assert_eq!(format!("{hash:?}"), "PasswordHash::Bcrypt(..)");
    }
}
