//! GitLab's registry permissions: who may do what to which repository.
//!
//! Pure functions over a [`Principal`], a [`Scope`] and the [`Directory`]; no I/O. A scope
//! the caller may not have is not an error: it is down-scoped to what is allowed, possibly
//! nothing (GitLab's behaviour; the endpoint turns "nothing at all, anonymously" into 403).
//!
//! The rules mirror GitLab's `app/services/auth/container_registry_authentication_service.rb`
//! ("CRAS"); each function names the method it follows, and `docs/gitlab-compatibility.md`
//! lists them all. In short:
//! - pull (`build_can_pull?`, `user_can_pull?`, `deploy_token_can_pull?`): the
//!   `read_container_image` ability (`read_registry`, `read_api`, `api`, a password), and the
//!   project is public, or internal and the caller a signed-in user, or the caller reporter+;
//! - push (`build_can_push?`, `user_can_push?`, `deploy_token_can_push?`): the
//!   `create_container_image` ability (`write_registry` alone is enough: it does not pull) and
//!   developer+;
//! - delete and `*` (`user_can_admin?`, `build_can_delete?`): the `admin_container_image`
//!   ability (only `api` and a password) and maintainer+; a CI job deletes in its own project;
//! - administrators: every action on every repository a project owns (GitLab's policies let
//!   an admin do everything), still bound by their credential's abilities;
//! - a repository no project owns: nothing, administrators included
//!   (`process_repository_access` returns without a project), and the project must be at
//!   most two levels above the image (`ContainerRegistry::Path::LEVELS_SUPPORTED = 3`);
//! - `registry:catalog:*`: administrators only, and only exactly `*`
//!   (`process_registry_access`); any other type, `repository(plugin)` included: nothing
//!   (`process_scope`);
//! - project members include every parent group's members (the highest role wins);
//! - deploy tokens: pull with `read_registry`, push with `write_registry`, inside their
//!   project or group whatever its visibility, and public projects anywhere; never delete;
//! - project and group access tokens: a bot user with its own role and scopes, a member
//!   inside its project or group only, a signed-in non-member elsewhere (public and internal
//!   projects pull);
//! - "inside a project" means the repositories that project owns: a nested project
//!   (`g/app/vault` below `g/app`) is another project, out of reach of `g/app`'s tokens;
//!   "inside a group" means every project of the group and of its subgroups.

use super::credentials::Principal;
use super::directory::{Directory, NamespaceKind, Project, RegistryScopes, Role, Visibility};
use super::protection;
use super::scope::{AccessMeta, Action, Actions, RepositoryName, Resource, ResourceAccess, Scope};

/// `ContainerRegistry::Path::LEVELS_SUPPORTED`: the owning project is one of the three
/// longest prefixes of an image path, so an image lies at most two levels below it.
const LEVELS_SUPPORTED: usize = 3;
/// `Namespace::NUMBER_OF_ANCESTORS_ALLOWED`: `Path#valid?` wants fewer components.
const NUMBER_OF_ANCESTORS_ALLOWED: usize = 20;

/// The project that owns `name` as GitLab's `ContainerRegistry::Path#repository_project`
/// finds it: a valid path has 2 to 19 components, and the project is the longest of the
/// path's three longest prefixes that is a project.
pub fn owning_project<'a>(directory: &'a Directory, name: &RepositoryName) -> Option<&'a Project> {
    let depth = |n: &RepositoryName| n.as_str().split('/').count();
    let components = depth(name);
    if !(2..NUMBER_OF_ANCESTORS_ALLOWED).contains(&components) {
        return None;
    }
    directory
        .project_for(name)
        .filter(|project| components - depth(&project.path) < LEVELS_SUPPORTED)
}

/// For a repository no project owns, the configured project or group path nearest to it (the
/// most leading components in common, then the fewest edits): what the operator likely meant.
/// Only the paths sharing the most leading components are weighed, and at most
/// [`NEAREST_CANDIDATES`] of them: any client can ask for a repository no project owns, and a
/// pass of edit distances over a directory of 100,000 projects would be its price.
pub fn nearest_path(directory: &Directory, name: &RepositoryName) -> Option<String> {
    let wanted: Vec<&str> = name.as_str().split('/').collect();
    // The longest leading run of `wanted`'s components that some path begins with.
    let paths = (0..=wanted.len()).rev().find_map(|k| {
        let mut paths = directory.paths_below(&wanted[..k].join("/")).peekable();
        paths.peek()?;
        Some(paths)
    })?;
    paths
        .take(NEAREST_CANDIDATES)
        .min_by_key(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            let common = parts
                .iter()
                .zip(&wanted)
                .take_while(|(a, b)| a == b)
                .count();
            let prefix = wanted[..parts.len().min(wanted.len())].join("/");
            (
                std::cmp::Reverse(common),
                crate::config::edit_distance(path, &prefix),
                std::cmp::Reverse(path.len()),
            )
        })
        .map(str::to_owned)
}

/// How many configured paths [`nearest_path`] weighs at most.
const NEAREST_CANDIDATES: usize = 1_000;

/// The actions `principal` may perform on `resource` (`CRAS#can_access?` per action).
pub fn allowed_actions(
    principal: &Principal,
    resource: &Resource,
    directory: &Directory,
) -> Actions {
    let Resource::Repository(name) = resource else {
        // `CRAS#process_registry_access`: `current_user&.admin?`, name `catalog`. That the
        // request asked for exactly `*` is checked in [`grant`].
        return match (principal, resource) {
            (Principal::User { admin: true, .. }, Resource::Catalog) => Actions::of(&[Action::All]),
            _ => Actions::NONE,
        };
    };
    // `CRAS#process_repository_access`: `return unless requested_project`.
    let Some(project) = owning_project(directory, name) else {
        return Actions::NONE;
    };
    match principal {
        Principal::User {
            username,
            admin,
            scopes,
            memberships,
            ..
        } => user(
            project,
            project.members.get(username).copied().max(
                memberships.role_in_project(&project.path, |path| {
                    directory.groups().iter().any(|g| &g.path == path)
                }),
            ),
            *admin,
            *scopes,
        ),
        // `Gitlab::Auth.read_only_authentication_abilities`: read_container_image only.
        Principal::Anonymous => can_pull(project, None, false, true),
        Principal::CiJob {
            username,
            project: own,
            ..
        } => {
            if &project.path == own {
                // `build_can_pull?` / `build_can_push?` / `build_can_delete?`: the job's own
                // project, whatever the user's role there (GitLab checks none). Never `*`:
                // build abilities lack admin_container_image (`user_can_admin?`).
                Actions::of(&[Action::Pull, Action::Push, Action::Delete])
            } else {
                // `build_can_pull?`: other projects where the user may
                // `build_read_container_image`. The CI job token allowlist
                // (`ci_job_token_scope`) narrows this for private projects afterwards, in
                // `protection::restrict` (called from `grant`).
                can_pull(project, project.members.get(username).copied(), true, true)
            }
        }
        Principal::Token(token) => {
            // Deploy and access tokens are members only of the project that OWNS the
            // repository (the longest project path), or of every project of their group.
            let inside = match token.namespace_kind {
                NamespaceKind::Project => project.path == token.namespace,
                NamespaceKind::Group => project.path.is_within(&token.namespace),
            };
            match token.role {
                // A bot: a signed-in user, a member inside, a stranger outside.
                Some(role) => user(project, inside.then_some(role), false, token.scopes),
                None => deploy_token(project, inside, token.scopes),
            }
        }
        // A federated CI workload: the actions its matched rules grant on projects at or
        // below their paths, nothing elsewhere (public projects included: it is no user).
        Principal::Federated(federated) => federated.actions_in(&project.path),
    }
}

/// `CRAS#user_can_pull?`, `#user_can_push?`, `#user_can_admin?` for a signed-in user with
/// `role` (None: not a member) and the credential's abilities. Administrators may do
/// everything GitLab's policies allow anyone (`can?` is true for an admin).
fn user(project: &Project, role: Option<Role>, admin: bool, scopes: RegistryScopes) -> Actions {
    let at_least = |minimum: Role| admin || role.is_some_and(|r| r >= minimum);
    let mut actions = if admin && scopes.read_registry {
        Actions::of(&[Action::Pull])
    } else {
        can_pull(project, role, true, scopes.read_registry)
    };
    if scopes.write_registry && at_least(Role::Developer) {
        actions = actions.with(Action::Push);
    }
    // delete and `*` both need `admin_container_image` (maintainer+).
    if scopes.admin_container_image && at_least(Role::Maintainer) {
        actions = actions.with(Action::Delete).with(Action::All);
    }
    actions
}

/// `read_container_image` on `project` for `role` (None: not a member), if the credential
/// carries the ability: public for anyone, internal for signed-in users, private for
/// reporter+.
fn can_pull(project: &Project, role: Option<Role>, signed_in: bool, ability: bool) -> Actions {
    let can_see = match project.visibility {
        Visibility::Public => true,
        Visibility::Internal => signed_in,
        Visibility::Private => role.is_some_and(|r| r >= Role::Reporter),
    };
    if ability && can_see {
        Actions::of(&[Action::Pull])
    } else {
        Actions::NONE
    }
}

/// `CRAS#deploy_token_can_pull?` / `#deploy_token_can_push?`: inside its namespace its scopes
/// decide, whatever the visibility; elsewhere it reads public projects as anyone may. Deploy
/// tokens never delete (they never carry admin_container_image).
fn deploy_token(project: &Project, inside: bool, scopes: RegistryScopes) -> Actions {
    let mut actions = Actions::NONE;
    if scopes.read_registry && (inside || project.visibility == Visibility::Public) {
        actions = actions.with(Action::Pull);
    }
    if scopes.write_registry && inside {
        actions = actions.with(Action::Push);
    }
    actions
}

/// Down-scope every requested scope to what is allowed; resources with nothing left are
/// dropped from the token (`CRAS#scopes` compacts them away).
pub fn grant(
    principal: &Principal,
    requested: &[Scope],
    directory: &Directory,
) -> Vec<ResourceAccess> {
    requested
        .iter()
        .filter_map(|scope| {
            if scope.resource == Resource::Catalog && scope.actions != Actions::of(&[Action::All]) {
                // `process_registry_access`: `return unless actions == ['*']`.
                return None;
            }
            let allowed = allowed_actions(principal, &scope.resource, directory);
            // Project and user settings take away what they forbid (see `protection`).
            let allowed = match &scope.resource {
                Resource::Repository(name) => {
                    protection::restrict(principal, name, directory, allowed)
                }
                _ => allowed,
            };
            let granted = intersect(scope.actions, allowed);
            (!granted.is_empty()).then(|| {
                let mut access = ResourceAccess::new(&scope.resource, granted);
                if let Resource::Repository(name) = &scope.resource {
                    access.meta = owning_project(directory, name).map(|p| AccessMeta::of(&p.path));
                }
                access
            })
        })
        .collect()
}

fn intersect(requested: Actions, allowed: Actions) -> Actions {
    requested
        .iter()
        .filter(|a| allowed.contains(*a))
        .fold(Actions::NONE, Actions::with)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::auth::credentials::Credential;
    use crate::auth::directory::{Group, NamespaceToken, Project};
    use crate::auth::scope::RepositoryName;

    const PULL: &str = "pull";
    const PUSH: &str = "pull,push";
    const ALL: &str = "pull,push,delete";
    /// `read_registry` + `write_registry`: GitLab's read_container_image +
    /// create_container_image, never admin_container_image.
    const RW: RegistryScopes = RegistryScopes {
        read_registry: true,
        write_registry: true,
        admin_container_image: false,
    };
    const R: RegistryScopes = RegistryScopes {
        read_registry: true,
        write_registry: false,
        admin_container_image: false,
    };
    const W: RegistryScopes = RegistryScopes {
        read_registry: false,
        write_registry: true,
        admin_container_image: false,
    };
    /// `api` or a password: full_authentication_abilities.
    const API: RegistryScopes = RegistryScopes::ALL;

    fn directory() -> Directory {
        let project = |path: &str, visibility, members: &[(&str, Role)]| Project {
            path: RepositoryName::parse(path).unwrap(),
            visibility,
            members: members
                .iter()
                .map(|(u, r)| (u.to_string(), *r))
                .collect::<HashMap<_, _>>(),
        };
        let roles = [
            ("guest", Role::Guest),
            ("reporter", Role::Reporter),
            ("developer", Role::Developer),
            ("maintainer", Role::Maintainer),
            ("owner", Role::Owner),
        ];
        let group = Group {
            path: RepositoryName::parse("g").unwrap(),
            visibility: Visibility::Public,
            // A group maintainer is at least maintainer on every project below.
            members: [
                ("carol".to_string(), Role::Maintainer),
                ("reporter".to_string(), Role::Guest),
            ]
            .into(),
        };
        Directory::new(
            vec![],
            vec![group],
            vec![
                project("g/private", Visibility::Private, &roles),
                // A separate project nested below g/private, with no members of its own.
                project("g/private/vault", Visibility::Private, &[]),
                project("g/internal", Visibility::Internal, &roles),
                project("g/public", Visibility::Public, &roles),
                project("h/private", Visibility::Private, &[]),
                // A single-component project: not a valid GitLab registry path.
                project("solo", Visibility::Public, &roles),
            ],
            vec![],
        )
    }

    fn namespace_token(
        namespace: &str,
        kind: NamespaceKind,
        role: Option<Role>,
        scopes: RegistryScopes,
    ) -> Principal {
        Principal::Token(NamespaceToken {
            username: "bot".into(),
            digest: [0; 32],
            scopes,
            expires_at: None,
            revoked: false,
            namespace: RepositoryName::parse(namespace).unwrap(),
            namespace_kind: kind,
            role,
        })
    }

    fn user(name: &str, scopes: RegistryScopes) -> Principal {
        Principal::User {
            username: name.into(),
            admin: name == "admin",
            scopes,
            credential: Credential::Password,
            memberships: Default::default(),
        }
    }

    fn job(name: &str, project: &str) -> Principal {
        Principal::CiJob {
            username: name.into(),
            project: RepositoryName::parse(project).unwrap(),
            expires: u64::MAX,
        }
    }

    /// The actions granted when `principal` asks for `actions` on `repository`.
    fn asked(principal: &Principal, scope: &str) -> String {
        let scopes = Scope::parse_all([scope]).unwrap();
        grant(principal, &scopes, &directory())
            .first()
            .map(|a| a.actions.join(","))
            .unwrap_or_default()
    }

    /// The actions granted when `principal` asks for pull, push and delete on `repository`.
    fn granted(principal: &Principal, repository: &str) -> String {
        asked(
            principal,
            &format!("repository:{repository}:pull,push,delete"),
        )
    }

    /// One row per rule of issue 15 (first half), each naming the GitLab source it mirrors.
    /// (principal, scope, granted, source)
    #[test]
    fn gitlab_rules_one_row_per_rule() {
        use NamespaceKind::Project as P;
        let rows: Vec<(Principal, &str, &str, &str)> = vec![
            // Delete and `*`: admin_container_image (api / password) and maintainer+.
            (user("maintainer", RW), "repository:g/private:pull,push,delete", PUSH,
             "CRAS#can_access? 'delete' -> user_can_admin?: read+write PAT lacks admin_container_image"),
            (user("maintainer", API), "repository:g/private:pull,push,delete", ALL,
             "CRAS#user_can_admin?; lib/gitlab/auth.rb full_authentication_abilities"),
            (user("developer", API), "repository:g/private:delete", "",
             "CRAS#user_can_admin?: admin_container_image is maintainer+"),
            (user("maintainer", API), "repository:g/private:*", "*",
             "CRAS#can_access? '*' -> user_can_admin? (not only administrators)"),
            (user("maintainer", RW), "repository:g/private:*", "",
             "CRAS#can_access? '*' -> user_can_admin?"),
            (namespace_token("g/private", P, None, RW), "repository:g/private:pull,push,delete", PUSH,
             "CRAS#can_access? 'delete': deploy tokens have no admin_container_image"),
            (namespace_token("g/private", P, Some(Role::Owner), RW), "repository:g/private:delete", "",
             "CRAS#user_can_admin?: a bot's read+write token lacks admin_container_image"),
            (namespace_token("g/private", P, Some(Role::Maintainer), API), "repository:g/private:delete", "delete",
             "CRAS#user_can_admin?: a bot with api and maintainer deletes"),
            (job("guest", "g/private"), "repository:g/private:pull,push,delete", ALL,
             "CRAS#build_can_delete?: a job deletes in its own project"),
            (job("guest", "g/private"), "repository:g/private:*", "",
             "CRAS#can_access? '*': user_can_admin? only, build abilities lack admin_container_image"),
            // Scopes.
            (user("owner", W), "repository:g/private:pull,push", "push",
             "lib/gitlab/auth.rb abilities_for_scopes: write_registry -> create_container_image only"),
            (user("owner", R), "repository:g/private:pull,push", PULL,
             "lib/gitlab/auth.rb abilities_for_scopes: read_registry -> read_container_image"),
            (namespace_token("g/private", P, None, W), "repository:g/private:pull,push", "push",
             "CRAS#deploy_token_can_push? without deploy_token_can_pull?"),
            // Repositories no project owns, path levels, names, types.
            (user("admin", API), "repository:elsewhere/app:pull,push,delete", "",
             "CRAS#process_repository_access: return unless requested_project"),
            (user("admin", API), "repository:g/private:pull,push,delete", ALL,
             "GitLab policies allow an administrator everything on a project"),
            (user("owner", API), "repository:g/private/a/b:pull", PULL,
             "ContainerRegistry::Path LEVELS_SUPPORTED = 3: two levels below the project"),
            (user("owner", API), "repository:g/private/a/b/c:pull", "",
             "ContainerRegistry::Path LEVELS_SUPPORTED = 3: three levels below is no project's"),
            (user("owner", API), "repository:solo:pull", "",
             "ContainerRegistry::Path#valid?: components.size > 1"),
            (user("owner", API), "repository:G/Private:pull", PULL,
             "ContainerRegistry::Path#initialize: path.to_s.downcase"),
            (user("admin", API), "repository(plugin):g/public:pull", "",
             "CRAS#process_scope: only the types 'registry' and 'repository'"),
            (user("admin", API), "helmchart:g/public:pull", "",
             "CRAS#process_scope: unknown types grant nothing"),
            (user("admin", R), "registry:catalog:*", "*",
             "CRAS#process_registry_access: current_user&.admin?"),
            (user("admin", API), "registry:catalog:pull", "",
             "CRAS#process_registry_access: return unless actions == ['*']"),
            (user("admin", API), "registry:catalog:*,pull", "",
             "CRAS#process_registry_access: return unless actions == ['*']"),
            (user("owner", API), "registry:catalog:*", "",
             "CRAS#process_registry_access: return unless current_user&.admin?"),
            (user("admin", API), "registry:other:*", "",
             "CRAS#process_registry_access: return unless name == 'catalog'"),
            // Deploy tokens and bots outside their namespace.
            (namespace_token("g/private", P, None, RW), "repository:g/public:pull,push", PULL,
             "CRAS#deploy_token_can_pull?: can?(deploy_token, :read_container_image) on a public project"),
            (namespace_token("g/private", P, None, RW), "repository:g/internal:pull", "",
             "CRAS#deploy_token_can_pull?: a deploy token is no signed-in user"),
            (namespace_token("h/private", P, Some(Role::Owner), RW), "repository:g/internal:pull,push", PULL,
             "CRAS#user_can_pull?: a bot is a signed-in user; internal projects are readable"),
            (namespace_token("h/private", P, Some(Role::Owner), RW), "repository:g/private:pull", "",
             "CRAS#user_can_pull?: private needs membership"),
            // CI jobs.
            (job("reporter", "g/private"), "repository:g/private:pull,push", PUSH,
             "CRAS#build_can_push?: own project, no role check"),
            (job("reporter", "g/private"), "repository:g/public:pull,push", PULL,
             "CRAS#build_can_push?: only the job's own project"),
            (job("stranger", "g/public"), "repository:g/private:pull", "",
             "CRAS#build_can_pull?: other private projects need the user's access"),
            (job("reporter", "g/public"), "repository:g/private:pull", PULL,
             "CRAS#build_can_pull?: can_user?(:build_read_container_image) elsewhere"),
            // Anonymous.
            (Principal::Anonymous, "repository:g/public:pull,push", PULL,
             "spec CRAS 'unauthorized' / 'for public project' / 'when pulling and pushing'"),
            (Principal::Anonymous, "repository:g/public:push", "",
             "spec CRAS 'unauthorized' / 'for public project' / 'when pushing' (403 at the endpoint)"),
            (Principal::Anonymous, "repository:g/private:pull", "",
             "spec CRAS 'unauthorized' / 'for private project' (403 at the endpoint)"),
            (Principal::Anonymous, "repository:g/internal:pull", "",
             "read_container_image on internal projects needs a signed-in user"),
            // The old spec's 'user authorization' contexts.
            (user("developer", API), "repository:g/private:push", "push",
             "spec CRAS 'user authorization' / 'allow developer to push images'"),
            (user("reporter", API), "repository:g/private:pull", PULL,
             "spec CRAS 'user authorization' / 'allow reporter to pull images'"),
            (user("reporter", API), "repository:g/private:push,pull", PULL,
             "spec CRAS 'user authorization' / 'return a least of privileges'"),
            (user("guest", API), "repository:g/private:pull,push", "",
             "spec CRAS 'user authorization' / 'disallow guest to pull or push images'"),
        ];
        for (principal, scope, expected, source) in &rows {
            assert_eq!(
                asked(principal, scope),
                *expected,
                "{principal:?} asking {scope}: {source}"
            );
        }
    }

    #[test]
    fn access_entries_carry_gitlabs_meta_block() {
        // CRAS.access_metadata: project_path (downcased), project_id, root_namespace_id.
        let scopes = Scope::parse_all(["repository:G/Private/App:pull"]).unwrap();
        let access = grant(&user("owner", API), &scopes, &directory());
        let meta = access[0].meta.as_ref().expect("meta");
        assert_eq!(access[0].name, "g/private/app");
        assert_eq!(meta.project_path, "g/private");
        let again = AccessMeta::of(&RepositoryName::parse("g/private").unwrap());
        assert_eq!(meta, &again, "ids are stable");
        let public = AccessMeta::of(&RepositoryName::parse("g/public").unwrap());
        assert_ne!(meta.project_id, public.project_id);
        assert_eq!(meta.root_namespace_id, public.root_namespace_id);
        assert!(meta.project_id < 1 << 53);
    }

    #[test]
    fn the_gitlab_permission_table() {
        // (who, abilities, repository, expected). Sources: GitLab permissions table
        // "Container registry" rows; CRAS (pull: read_container_image, push:
        // create_container_image, delete: admin_container_image = maintainer+).
        let table: &[(&str, RegistryScopes, &str, &str)] = &[
            // Private project: reporter+ reads, developer+ writes, maintainer+ deletes.
            ("guest", API, "g/private", ""),
            ("reporter", API, "g/private", PULL),
            ("developer", API, "g/private", PUSH),
            ("maintainer", API, "g/private/sub", ALL),
            ("maintainer", RW, "g/private/sub", PUSH),
            ("owner", API, "g/private", ALL),
            ("stranger", API, "g/private", ""),
            // Internal project: any signed-in user reads.
            ("stranger", API, "g/internal", PULL),
            ("guest", RW, "g/internal", PULL),
            // Public project: anyone reads; writing still needs the role.
            ("stranger", API, "g/public", PULL),
            ("developer", RW, "g/public", PUSH),
            // Abilities bound every role.
            ("owner", R, "g/private", PULL),
            ("owner", W, "g/private", "push"),
            ("developer", W, "g/private", "push"),
            ("developer", RegistryScopes::default(), "g/public", ""),
            // Roles are inherited from parent groups, the highest winning: carol maintains
            // group g; reporter is only a guest of g but keeps the project's reporter role.
            ("carol", API, "g/private", ALL),
            ("carol", API, "h/private", ""),
            ("reporter", API, "g/private", PULL),
            // Repositories no project owns: nobody, administrators included.
            ("owner", API, "elsewhere/app", ""),
            ("admin", API, "elsewhere/app", ""),
            // Administrators: everything on a project's repositories, bound by abilities.
            ("admin", API, "g/private", ALL),
            ("admin", RW, "g/private", PUSH),
            ("admin", R, "g/private", PULL),
        ];
        for (who, scopes, repository, expected) in table {
            let principal = user(who, *scopes);
            assert_eq!(
                granted(&principal, repository),
                *expected,
                "{who} {scopes:?} on {repository}"
            );
        }
    }

    #[test]
    fn deploy_and_access_tokens_act_as_members_only_inside_their_namespace() {
        use NamespaceKind::{Group as G, Project as P};
        // (token, repository, expected). Sources: CRAS#deploy_token_can_pull?/push? (scopes
        // decide inside, whatever the visibility); project/group access tokens are bot users
        // with their own role and scopes (CRAS#user_can_*).
        let table: &[(Principal, &str, &str)] = &[
            (
                namespace_token("g/private", P, None, R),
                "g/private/app",
                PULL,
            ),
            (namespace_token("g/private", P, None, RW), "g/private", PUSH),
            (
                namespace_token("g/private", P, None, W),
                "g/private",
                "push",
            ),
            (namespace_token("g", G, None, RW), "g/internal", PUSH),
            (namespace_token("g", G, None, RW), "h/private", ""),
            (
                namespace_token("g/private", P, Some(Role::Developer), RW),
                "g/private",
                PUSH,
            ),
            (
                namespace_token("g/private", P, Some(Role::Guest), RW),
                "g/private",
                "",
            ),
            (
                namespace_token("g/public", P, Some(Role::Guest), RW),
                "g/public",
                PULL,
            ),
            (
                namespace_token("g", G, Some(Role::Maintainer), API),
                "g/private",
                ALL,
            ),
            (
                namespace_token("g", G, Some(Role::Maintainer), RW),
                "g/private",
                PUSH,
            ),
            (
                namespace_token("g", G, Some(Role::Owner), API),
                "h/private",
                "",
            ),
            // A project nested below the token's project is another project: out of reach,
            // its images too; the group's tokens still reach it.
            (
                namespace_token("g/private", P, None, RW),
                "g/private/vault",
                "",
            ),
            (
                namespace_token("g/private", P, None, RW),
                "g/private/vault/image",
                "",
            ),
            (
                namespace_token("g/private", P, Some(Role::Owner), API),
                "g/private/vault",
                "",
            ),
            (
                namespace_token("g/private", P, Some(Role::Owner), API),
                "g/private/app",
                ALL,
            ),
            (namespace_token("g", G, None, RW), "g/private/vault", PUSH),
            (
                namespace_token("g", G, Some(Role::Maintainer), API),
                "g/private/vault/image",
                ALL,
            ),
        ];
        for (principal, repository, expected) in table {
            assert_eq!(
                granted(principal, repository),
                *expected,
                "{principal:?} on {repository}"
            );
        }
        let catalog = Scope::parse_all(["registry:catalog:*"]).unwrap();
        assert!(grant(
            &namespace_token("g", G, Some(Role::Owner), API),
            &catalog,
            &directory()
        )
        .is_empty());
    }

    #[test]
    fn unknown_resource_types_grant_nothing_and_other_scopes_survive() {
        let scopes =
            Scope::parse_all(["helmchart:g/public:pull", "repository:g/public:pull"]).unwrap();
        let access = grant(&user("admin", API), &scopes, &directory());
        assert_eq!(access.len(), 1);
        assert_eq!(access[0].name, "g/public");
    }

    #[test]
    fn memberships_from_an_identity_source_count_like_members_the_highest_wins() {
        let with = |name: &str, links: &[(&str, Role)]| Principal::User {
            username: name.into(),
            admin: false,
            scopes: API,
            credential: Credential::Password,
            memberships: crate::auth::identity::Memberships(
                links
                    .iter()
                    .map(|(path, role)| (RepositoryName::parse(path).unwrap(), *role))
                    .collect(),
            ),
        };
        // A group link reaches every project below it; a project link only that project.
        let dev_of_g = with("ldap-user", &[("g", Role::Developer)]);
        assert_eq!(granted(&dev_of_g, "g/private/app"), "pull,push");
        assert_eq!(granted(&dev_of_g, "g/private/vault/app"), "pull,push");
        assert_eq!(granted(&dev_of_g, "h/private/app"), "");
        let reporter_of_project = with("ldap-user", &[("g/private", Role::Reporter)]);
        assert_eq!(granted(&reporter_of_project, "g/private/app"), "pull");
        assert_eq!(granted(&reporter_of_project, "g/private/vault/app"), "");
        // The highest of the links and the project's own members: role.
        let both = with("reporter", &[("g", Role::Maintainer)]);
        assert_eq!(granted(&both, "g/private/app"), "pull,push,delete");
        let lower_link = with("maintainer", &[("g", Role::Guest)]);
        assert_eq!(granted(&lower_link, "g/private/app"), "pull,push,delete");
    }

    #[test]
    fn the_nearest_path_weighs_only_paths_sharing_the_most_leading_components() {
        let project = |path: &str| Project {
            path: RepositoryName::parse(path).unwrap(),
            visibility: Visibility::Private,
            members: HashMap::new(),
        };
        let mut projects: Vec<Project> = (0..5_000).map(|i| project(&format!("g{i}/p"))).collect();
        projects.push(project("mygroup/myproject"));
        projects.push(project("mygroup/other"));
        let directory = Directory::new(vec![], vec![], projects, vec![]);
        let nearest = |name: &str| nearest_path(&directory, &RepositoryName::parse(name).unwrap());
        assert_eq!(
            nearest("mygroup/myprojet/image").as_deref(),
            Some("mygroup/myproject")
        );
        assert_eq!(nearest("g17/q").as_deref(), Some("g17/p"));
        // Nothing in common: still a path (one of the first NEAREST_CANDIDATES in path order).
        assert!(nearest("zzz/app").is_some());
        let empty = Directory::new(vec![], vec![], vec![], vec![]);
        assert_eq!(
            nearest_path(&empty, &RepositoryName::parse("a/b").unwrap()),
            None
        );
    }
}
