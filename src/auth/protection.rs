//! GitLab's project and user settings that narrow what the policy grants, and the container
//! protection rules: pure decisions, no I/O.
//!
//! [`super::policy`] says what a role may do; this module takes away what a project's or a
//! user's settings forbid, the way GitLab's `ProjectPolicy` `prevent` rules do:
//! - `container_registry_access_level: disabled`: nothing, for anyone (administrators too);
//!   `private`: pulls need a reporter+ member (or an administrator, a deploy token, the job of
//!   the project itself), even when the project is public;
//! - `archived: true`: pull only, for everyone;
//! - `job_token_allowlist` (GitLab's CI/CD job token scope): a job of another project reaches
//!   a PRIVATE project only when the list names the job's project or one of its groups;
//! - external users: internal projects are as good as private (members only);
//! - locked users cannot sign in; two-factor users cannot use their password.
//!
//! And the container protection rules:
//! - protected repositories (`repository_path_pattern`, `*` wildcards): a push scope below the
//!   rule's level is refused at `/jwt/auth` (GitLab's `repository_path_push_protected?`);
//! - protected tags (`tag_name_pattern`, RE2): push and delete below the rule's level refused;
//! - immutable tags (RE2): an existing tag is never overwritten, and never deleted, by anyone.
//!
//! Patterns are compiled once, when the configuration is loaded; nothing here compiles a
//! regex per request.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use super::credentials::{AuthFailure, Credential, Principal};
use super::directory::{Directory, NamespaceKind, Project, Role, Visibility};
use super::scope::{Action, Actions, RepositoryName, Scope};

/// GitLab's longest `tag_name_pattern` (its model validates 100 characters).
pub const MAX_TAG_PATTERN_CHARS: usize = 100;
/// GitLab's longest `repository_path_pattern`.
pub const MAX_REPOSITORY_PATTERN_CHARS: usize = 255;
/// What one compiled pattern may cost in memory (the regex crate's own bound).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A caller's standing on a project, GitLab's access levels with the administrator on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessLevel {
    NoAccess,
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
    Admin,
}

impl AccessLevel {
    pub fn of_role(role: Option<Role>) -> AccessLevel {
        match role {
            None => AccessLevel::NoAccess,
            Some(Role::Guest) => AccessLevel::Guest,
            Some(Role::Reporter) => AccessLevel::Reporter,
            Some(Role::Developer) => AccessLevel::Developer,
            Some(Role::Maintainer) => AccessLevel::Maintainer,
            Some(Role::Owner) => AccessLevel::Owner,
        }
    }
}

/// The `minimum_access_level_for_push` / `_for_delete` of a protection rule: GitLab allows
/// maintainer, owner and admin only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinimumLevel {
    Maintainer,
    Owner,
    Admin,
}

impl MinimumLevel {
    pub fn allows(self, level: AccessLevel) -> bool {
        level
            >= match self {
                MinimumLevel::Maintainer => AccessLevel::Maintainer,
                MinimumLevel::Owner => AccessLevel::Owner,
                MinimumLevel::Admin => AccessLevel::Admin,
            }
    }
}

impl FromStr for MinimumLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "maintainer" => Ok(MinimumLevel::Maintainer),
            "owner" => Ok(MinimumLevel::Owner),
            "admin" => Ok(MinimumLevel::Admin),
            other => Err(format!(
                "unknown access level {other:?}: use maintainer, owner or admin (GitLab's levels for protection rules)"
            )),
        }
    }
}

impl fmt::Display for MinimumLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MinimumLevel::Maintainer => "maintainer",
            MinimumLevel::Owner => "owner",
            MinimumLevel::Admin => "admin",
        })
    }
}

/// `container_registry_access_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryAccessLevel {
    #[default]
    Enabled,
    Private,
    Disabled,
}

impl FromStr for RegistryAccessLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" => Ok(RegistryAccessLevel::Enabled),
            "private" => Ok(RegistryAccessLevel::Private),
            "disabled" => Ok(RegistryAccessLevel::Disabled),
            other => Err(format!(
                "unknown value {other:?}: use enabled, private or disabled"
            )),
        }
    }
}

/// A protected repository path: `*` matches any run of characters, the rest literally, the
/// whole path, case-insensitively (GitLab matches with `ILIKE`).
#[derive(Debug, Clone)]
pub struct RepositoryRule {
    pub pattern: String,
    matcher: Regex,
    pub minimum_for_push: MinimumLevel,
}

impl RepositoryRule {
    pub fn new(pattern: &str, minimum_for_push: MinimumLevel) -> Result<RepositoryRule, String> {
        if pattern.is_empty() || pattern.chars().count() > MAX_REPOSITORY_PATTERN_CHARS {
            return Err(format!(
                "must be 1 to {MAX_REPOSITORY_PATTERN_CHARS} characters"
            ));
        }
        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
        let matcher = RegexBuilder::new(&format!("^{}$", body.join(".*")))
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("cannot be compiled: {e}"))?;
        Ok(RepositoryRule {
            pattern: pattern.to_owned(),
            matcher,
            minimum_for_push,
        })
    }

    pub fn matches(&self, repository: &RepositoryName) -> bool {
        self.matcher.is_match(repository.as_str())
    }
}

/// Compile a GitLab tag pattern (RE2 syntax, matched anywhere in the tag unless anchored).
pub fn tag_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() || pattern.chars().count() > MAX_TAG_PATTERN_CHARS {
        return Err(format!("must be 1 to {MAX_TAG_PATTERN_CHARS} characters"));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("not a valid RE2 pattern: {e}"))
}

/// A protected tag rule.
#[derive(Debug, Clone)]
pub struct TagRule {
    pub pattern: Regex,
    pub minimum_for_push: MinimumLevel,
    pub minimum_for_delete: MinimumLevel,
}

/// What the gateway checks on `PUT` and `DELETE /v2/<name>/manifests/<reference>`.
#[derive(Debug, Clone, Default)]
pub struct TagProtection {
    pub protected: Vec<TagRule>,
    pub immutable: Vec<Regex>,
}

/// Why a tag operation is refused; the message names the rule, as `docker push` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRefusal {
    Protected {
        tag: String,
        pattern: String,
        operation: &'static str,
        minimum: MinimumLevel,
    },
    Immutable {
        tag: String,
        pattern: String,
        operation: &'static str,
    },
}

impl TagRefusal {
    pub fn message(&self) -> String {
        match self {
            TagRefusal::Protected {
                tag,
                pattern,
                operation,
                minimum,
            } => format!(
                "{operation} of protected tag {tag:?} forbidden: the protected tag rule {pattern:?} needs at least {minimum} access"
            ),
            TagRefusal::Immutable {
                tag,
                pattern,
                operation,
            } => format!(
                "{operation} of immutable tag {tag:?} forbidden: it matches the immutable tag rule {pattern:?}, and an immutable tag, once pushed, is never overwritten or deleted, by anyone"
            ),
        }
    }

    /// For logs and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            TagRefusal::Protected { .. } => "protected_tag",
            TagRefusal::Immutable { .. } => "immutable_tag",
        }
    }
}

impl TagProtection {
    pub fn is_empty(&self) -> bool {
        self.protected.is_empty() && self.immutable.is_empty()
    }

    /// Does pushing `tag` depend on whether it already exists (an immutable tag)?
    pub fn is_immutable(&self, tag: &str) -> Option<&Regex> {
        self.immutable.iter().find(|p| p.is_match(tag))
    }

    /// A push of `tag` by a caller at `level`; `exists` says whether the tag is there already.
    pub fn push(&self, tag: &str, level: AccessLevel, exists: bool) -> Result<(), TagRefusal> {
        if let Some(rule) = self
            .protected
            .iter()
            .find(|r| r.pattern.is_match(tag) && !r.minimum_for_push.allows(level))
        {
            return Err(TagRefusal::Protected {
                tag: tag.to_owned(),
                pattern: rule.pattern.as_str().to_owned(),
                operation: "push",
                minimum: rule.minimum_for_push,
            });
        }
        match self.is_immutable(tag) {
            Some(pattern) if exists => Err(TagRefusal::Immutable {
                tag: tag.to_owned(),
                pattern: pattern.as_str().to_owned(),
                operation: "overwrite",
            }),
            _ => Ok(()),
        }
    }

    /// A delete of `tag` (by tag, or of the manifest it points to) by a caller at `level`.
    pub fn delete(&self, tag: &str, level: AccessLevel) -> Result<(), TagRefusal> {
        if let Some(pattern) = self.is_immutable(tag) {
            return Err(TagRefusal::Immutable {
                tag: tag.to_owned(),
                pattern: pattern.as_str().to_owned(),
                operation: "delete",
            });
        }
        match self
            .protected
            .iter()
            .find(|r| r.pattern.is_match(tag) && !r.minimum_for_delete.allows(level))
        {
            Some(rule) => Err(TagRefusal::Protected {
                tag: tag.to_owned(),
                pattern: rule.pattern.as_str().to_owned(),
                operation: "delete",
                minimum: rule.minimum_for_delete,
            }),
            None => Ok(()),
        }
    }
}

/// A project's settings beyond members and visibility (the defaults change nothing).
#[derive(Debug, Clone, Default)]
pub struct ProjectSettings {
    pub registry_access: RegistryAccessLevel,
    pub archived: bool,
    /// `None`: the setting is off (any job whose user may read the project pulls from it).
    pub job_token_allowlist: Option<Vec<RepositoryName>>,
    pub repositories: Vec<RepositoryRule>,
    pub tags: Arc<TagProtection>,
}

/// A user's account settings (the defaults change nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSettings {
    pub two_factor: bool,
    pub external: bool,
    pub locked: bool,
}

/// Can this user sign in with this credential? Locked accounts cannot sign in at all; an
/// account with two-factor authentication cannot use its password, only tokens.
pub fn may_sign_in(
    directory: &Directory,
    username: &str,
    credential: Option<&Credential>,
) -> Result<(), AuthFailure> {
    let settings = directory.user_settings(username);
    if settings.locked {
        return Err(AuthFailure::UserLocked);
    }
    if settings.two_factor && credential == Some(&Credential::Password) {
        return Err(AuthFailure::PasswordNeedsToken);
    }
    Ok(())
}

/// The caller's access level on `project`.
pub fn access_level(
    principal: &Principal,
    project: &Project,
    directory: &Directory,
) -> AccessLevel {
    match principal {
        Principal::Anonymous => AccessLevel::NoAccess,
        Principal::User { admin: true, .. } => AccessLevel::Admin,
        Principal::User {
            username,
            memberships,
            ..
        } => AccessLevel::of_role(project.members.get(username).copied().max(
            memberships.role_in_project(&project.path, |path| {
                directory.groups().iter().any(|g| &g.path == path)
            }),
        )),
        Principal::CiJob { username, .. } => {
            AccessLevel::of_role(project.members.get(username).copied())
        }
        // A deploy token has no access level: every protection rule applies to it.
        Principal::Token(token) => {
            let inside = match token.namespace_kind {
                NamespaceKind::Project => project.path == token.namespace,
                NamespaceKind::Group => project.path.is_within(&token.namespace),
            };
            AccessLevel::of_role(token.role.filter(|_| inside))
        }
        // No role: like a deploy token, every protection rule applies to it.
        Principal::Federated(_) => AccessLevel::NoAccess,
    }
}

/// Take away from `actions` (what the policy allows `principal` on `repository`) what the
/// project's and the user's settings forbid.
pub fn restrict(
    principal: &Principal,
    repository: &RepositoryName,
    directory: &Directory,
    actions: Actions,
) -> Actions {
    let Some(project) = directory.project_for(repository) else {
        return actions;
    };
    let settings = directory.project_settings(&project.path);
    if settings.registry_access == RegistryAccessLevel::Disabled {
        return Actions::NONE;
    }
    let mut actions = actions;
    if settings.archived {
        actions = only_pull(actions);
    }
    let level = access_level(principal, project, directory);
    let member_reads = level >= AccessLevel::Reporter;
    let exempt = match principal {
        // Deploy tokens read whatever the visibility; a job always reads its own project.
        Principal::Token(token) => token.role.is_none(),
        Principal::CiJob { project: own, .. } => own == &project.path,
        // A federation's grant names the path explicitly, as a deploy token's project does.
        Principal::Federated(_) => true,
        _ => false,
    };
    let members_only = settings.registry_access == RegistryAccessLevel::Private
        || (project.visibility == Visibility::Internal && is_external(principal, directory));
    if members_only && !member_reads && !exempt {
        actions = without_pull(actions);
    }
    if let Principal::CiJob { project: own, .. } = principal {
        if own != &project.path
            && project.visibility == Visibility::Private
            && !job_allowed(own, settings, directory)
        {
            return Actions::NONE;
        }
    }
    actions
}

/// Does `project`'s allowlist admit jobs of `own`? Off (no list): yes.
fn job_allowed(own: &RepositoryName, settings: &ProjectSettings, directory: &Directory) -> bool {
    let Some(list) = &settings.job_token_allowlist else {
        return true;
    };
    list.iter().any(|entry| {
        entry == own || (own.is_within(entry) && directory.group(entry.as_str()).is_some())
    })
}

fn is_external(principal: &Principal, directory: &Directory) -> bool {
    match principal {
        Principal::User {
            username,
            admin: false,
            ..
        }
        | Principal::CiJob { username, .. } => directory.user_settings(username).external,
        _ => false,
    }
}

fn only_pull(actions: Actions) -> Actions {
    if actions.contains(Action::Pull) || actions.contains(Action::All) {
        Actions::of(&[Action::Pull])
    } else {
        Actions::NONE
    }
}

fn without_pull(actions: Actions) -> Actions {
    actions
        .iter()
        .filter(|a| *a != Action::Pull)
        .fold(Actions::NONE, Actions::with)
}

/// GitLab's `repository_path_push_protected?`: does any requested push (or `*`) scope name a
/// repository a protection rule keeps from this caller? The first such repository, if any.
pub fn push_protected<'a>(
    principal: &Principal,
    requested: &'a [Scope],
    directory: &Directory,
) -> Option<&'a RepositoryName> {
    requested.iter().find_map(|scope| {
        let super::scope::Resource::Repository(name) = &scope.resource else {
            return None;
        };
        let pushes = scope.actions.contains(Action::Push) || scope.actions.contains(Action::All);
        (pushes && repository_protected(principal, name, directory)).then_some(name)
    })
}

/// Is `repository` a protected path this caller may not push to?
pub fn repository_protected(
    principal: &Principal,
    repository: &RepositoryName,
    directory: &Directory,
) -> bool {
    let Some(project) = directory.project_for(repository) else {
        return false;
    };
    let rules = &directory.project_settings(&project.path).repositories;
    if rules.is_empty() {
        return false;
    }
    let level = access_level(principal, project, directory);
    rules
        .iter()
        .any(|rule| rule.matches(repository) && !rule.minimum_for_push.allows(level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TagProtection {
        TagProtection {
            protected: vec![TagRule {
                pattern: tag_pattern("^v[0-9]+").unwrap(),
                minimum_for_push: MinimumLevel::Maintainer,
                minimum_for_delete: MinimumLevel::Owner,
            }],
            immutable: vec![tag_pattern("^release-").unwrap()],
        }
    }

    #[test]
    fn protected_tags_need_the_rules_level_for_push_and_for_delete() {
        let tags = rules();
        // (tag, level, exists, push allowed, delete allowed)
        let table = [
            ("v1.2", AccessLevel::Developer, false, false, false),
            ("v1.2", AccessLevel::Maintainer, true, true, false),
            ("v1.2", AccessLevel::Owner, true, true, true),
            ("v1.2", AccessLevel::Admin, true, true, true),
            ("latest", AccessLevel::Developer, true, true, true),
            // RE2 matches anywhere unless anchored: "dev-v1" does not start with v.
            ("dev-v1", AccessLevel::Guest, true, true, true),
            ("vlatest", AccessLevel::Developer, true, true, true),
        ];
        for (tag, level, exists, push, delete) in table {
            assert_eq!(
                tags.push(tag, level, exists).is_ok(),
                push,
                "push {tag} {level:?}"
            );
            assert_eq!(
                tags.delete(tag, level).is_ok(),
                delete,
                "delete {tag} {level:?}"
            );
        }
        let refusal = tags.push("v3", AccessLevel::Developer, false).unwrap_err();
        assert!(
            refusal.message().contains("protected tag"),
            "{}",
            refusal.message()
        );
    }

    #[test]
    fn immutable_tags_are_created_once_then_never_overwritten_or_deleted_by_anyone() {
        let tags = rules();
        assert!(tags
            .push("release-1", AccessLevel::Developer, false)
            .is_ok());
        for level in [
            AccessLevel::Maintainer,
            AccessLevel::Owner,
            AccessLevel::Admin,
        ] {
            let refusal = tags.push("release-1", level, true).unwrap_err();
            assert_eq!(refusal.reason(), "immutable_tag");
            assert!(refusal.message().contains("immutable tag"));
            assert!(tags.delete("release-1", level).is_err());
        }
        assert!(tags
            .push("prerelease-1", AccessLevel::Developer, true)
            .is_ok());
    }

    #[test]
    fn repository_patterns_are_globs_over_the_whole_path() {
        let rule = RepositoryRule::new("g/app/release*", MinimumLevel::Maintainer).unwrap();
        let matches = |name: &str| rule.matches(&RepositoryName::parse(name).unwrap());
        assert!(matches("g/app/release"));
        assert!(matches("g/app/release/x86"));
        assert!(matches("g/app/releases"));
        assert!(!matches("g/app/nightly"));
        assert!(!matches("g/app"));
        // Regex characters in the pattern are literal.
        let dotted = RepositoryRule::new("g/app/a.b", MinimumLevel::Owner).unwrap();
        assert!(!dotted.matches(&RepositoryName::parse("g/app/axb").unwrap()));
    }

    fn directory() -> Directory {
        use crate::auth::directory::Group;
        use std::collections::HashMap;
        let name = |p: &str| RepositoryName::parse(p).unwrap();
        let project = |path: &str, visibility, members: &[(&str, Role)]| Project {
            path: name(path),
            visibility,
            members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
        };
        let group = Group {
            path: name("tools"),
            visibility: Visibility::Private,
            members: HashMap::new(),
        };
        let dev = [("dev", Role::Developer)];
        let settings = HashMap::from([
            (
                name("g/target"),
                ProjectSettings {
                    job_token_allowlist: Some(vec![name("g/deployer"), name("tools")]),
                    ..ProjectSettings::default()
                },
            ),
            (
                name("g/members"),
                ProjectSettings {
                    registry_access: RegistryAccessLevel::Private,
                    ..ProjectSettings::default()
                },
            ),
        ]);
        let users = HashMap::from([(
            "ext".to_string(),
            UserSettings {
                external: true,
                ..UserSettings::default()
            },
        )]);
        Directory::new(
            vec![],
            vec![group],
            vec![
                project("g/target", Visibility::Private, &dev),
                project("g/deployer", Visibility::Private, &dev),
                project("g/deployer/sub", Visibility::Private, &dev),
                project("tools/ci", Visibility::Private, &dev),
                project("g/other", Visibility::Private, &dev),
                project("g/members", Visibility::Public, &[("rep", Role::Reporter)]),
                project("g/internal", Visibility::Internal, &[]),
            ],
            vec![],
        )
        .with_settings(settings, users)
    }

    #[test]
    fn the_job_token_allowlist_names_projects_exactly_and_groups_with_everything_below() {
        let dir = directory();
        let all = Actions::of(&[Action::Pull]);
        let target = RepositoryName::parse("g/target/img").unwrap();
        let job = |own: &str| Principal::CiJob {
            username: "dev".into(),
            project: RepositoryName::parse(own).unwrap(),
            expires: u64::MAX,
        };
        for (own, allowed) in [
            ("g/deployer", true),
            ("tools/ci", true),
            ("g/target", true),
            // A project nested below an allowlisted project is another project.
            ("g/deployer/sub", false),
            ("g/other", false),
        ] {
            assert_eq!(
                restrict(&job(own), &target, &dir, all) == all,
                allowed,
                "{own}"
            );
        }
    }

    #[test]
    fn members_only_registries_and_external_users() {
        let dir = directory();
        let pull = Actions::of(&[Action::Pull]);
        let user = |name: &str| Principal::User {
            username: name.into(),
            admin: false,
            scopes: crate::auth::directory::RegistryScopes::ALL,
            credential: Credential::Password,
            memberships: Default::default(),
        };
        let repo = |p: &str| RepositoryName::parse(p).unwrap();
        assert_eq!(restrict(&user("rep"), &repo("g/members"), &dir, pull), pull);
        assert!(restrict(&user("stranger"), &repo("g/members"), &dir, pull).is_empty());
        assert!(restrict(&Principal::Anonymous, &repo("g/members"), &dir, pull).is_empty());
        assert!(restrict(&user("ext"), &repo("g/internal"), &dir, pull).is_empty());
        assert_eq!(
            restrict(&user("other"), &repo("g/internal"), &dir, pull),
            pull
        );
    }

    #[test]
    fn levels_and_bad_patterns() {
        assert!(MinimumLevel::Maintainer.allows(AccessLevel::Owner));
        assert!(!MinimumLevel::Owner.allows(AccessLevel::Maintainer));
        assert!(!MinimumLevel::Admin.allows(AccessLevel::Owner));
        assert!(MinimumLevel::Admin.allows(AccessLevel::Admin));
        assert!("developer".parse::<MinimumLevel>().is_err());
        assert!("publik".parse::<RegistryAccessLevel>().is_err());
        assert!(tag_pattern("^v[0-9").unwrap_err().contains("RE2"));
        // Backreferences are not RE2.
        assert!(tag_pattern(r"(a)\1").is_err());
        assert!(tag_pattern(&"a".repeat(101)).is_err());
    }
}
