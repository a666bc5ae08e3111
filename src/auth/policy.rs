//! GitLab's registry permissions: who may do what to which repository.
//!
//! Pure functions over a [`Principal`], a [`Resource`] and the [`Directory`]; no I/O. A scope
//! the caller may not have is not an error: it is down-scoped to what is allowed, possibly
//! nothing, and the registry refuses the request later (GitLab's behaviour).
//!
//! The rules (GitLab `ContainerRegistryAuthenticationService` and the permissions table):
//! - pull: the credential carries `read_registry`, and the project is public, or internal and
//!   the caller signed in, or the caller is at least reporter;
//! - push: `read_registry` and `write_registry`, and at least developer;
//! - delete: `write_registry`, and at least maintainer (GitLab's implementation; its older
//!   docs said developer, corrected in gitlab-org/gitlab!181835);
//! - administrators: every action on every repository, and `registry:catalog:*`, still bound
//!   by their credential's scopes;
//! - a repository no project owns: administrators only;
//! - project members include every parent group's members (the highest role wins);
//! - deploy tokens: pull with `read_registry`, push with both scopes, inside their project or
//!   group only, whatever its visibility; never delete;
//! - project and group access tokens: a bot with its own role and scopes, inside its project
//!   or group only;
//! - "inside a project" means the repositories that project owns: a nested project
//!   (`g/app/vault` below `g/app`) is another project, out of reach of `g/app`'s tokens;
//!   "inside a group" means every project of the group and of its subgroups;
//! - `api` on a token means both registry scopes; `admin_mode` changes nothing.

use super::credentials::Principal;
use super::directory::{Directory, NamespaceKind, Project, RegistryScopes, Role, Visibility};
use super::protection;
use super::scope::{Action, Actions, Resource, ResourceAccess, Scope};

/// The actions `principal` may perform on `resource`.
pub fn allowed_actions(
    principal: &Principal,
    resource: &Resource,
    directory: &Directory,
) -> Actions {
    let Resource::Repository(name) = resource else {
        // Only administrators see the catalog; no one gets resources the registry does not know.
        return match (principal, resource) {
            (
                Principal::User {
                    admin: true,
                    scopes,
                    ..
                },
                Resource::Catalog,
            ) if scopes.read_registry => Actions::of(&[Action::All]),
            _ => Actions::NONE,
        };
    };
    match principal {
        Principal::User {
            admin: true,
            scopes,
            ..
        } => administrator(*scopes),
        Principal::User {
            username, scopes, ..
        } => {
            let Some(project) = directory.project_for(name) else {
                return Actions::NONE;
            };
            member(
                project,
                project.members.get(username).copied(),
                true,
                *scopes,
            )
        }
        Principal::Anonymous => match directory.project_for(name) {
            Some(project) => member(
                project,
                None,
                false,
                RegistryScopes {
                    read_registry: true,
                    write_registry: false,
                },
            ),
            None => Actions::NONE,
        },
        Principal::CiJob {
            username,
            project: own,
            ..
        } => {
            // GitLab's build_can_pull?/build_can_push?: the job's own project is always
            // readable and writable as far as the user's role allows; other projects are
            // readable where the user can read them. Jobs never delete.
            let Some(project) = directory.project_for(name) else {
                return Actions::NONE;
            };
            let role = project.members.get(username).copied();
            if &project.path == own {
                let mut actions = Actions::of(&[Action::Pull]);
                if role.is_some_and(|r| r >= Role::Developer) {
                    actions = actions.with(Action::Push);
                }
                actions
            } else {
                member(
                    project,
                    role,
                    true,
                    RegistryScopes {
                        read_registry: true,
                        write_registry: false,
                    },
                )
            }
        }
        Principal::Token(token) => {
            // Deploy and access tokens act inside their own project or group only. What counts
            // is the project that OWNS the repository (the longest project path): a project
            // token reaches its project's own repositories, never those of a project nested
            // below it (`g/app/vault` is not `g/app`'s); a group token reaches every project
            // of the group and its subgroups.
            let project = directory
                .project_for(name)
                .filter(|owner| match token.namespace_kind {
                    NamespaceKind::Project => owner.path == token.namespace,
                    NamespaceKind::Group => owner.path.is_within(&token.namespace),
                });
            match (project, token.role) {
                (None, _) => Actions::NONE,
                (Some(project), Some(role)) => member(project, Some(role), true, token.scopes),
                (Some(_), None) => deploy_token(token.scopes),
            }
        }
    }
}

/// Administrators: everything on every repository, bound by their credential's scopes.
fn administrator(scopes: RegistryScopes) -> Actions {
    let mut actions = Actions::NONE;
    if scopes.read_registry {
        actions = actions.with(Action::Pull);
    }
    if scopes.read_registry && scopes.write_registry {
        actions = actions.with(Action::Push).with(Action::All);
    }
    if scopes.write_registry {
        actions = actions.with(Action::Delete);
    }
    actions
}

/// A project member (or a bot with a role, or nobody when `role` is None) on `project`.
fn member(
    project: &Project,
    role: Option<Role>,
    signed_in: bool,
    scopes: RegistryScopes,
) -> Actions {
    let at_least = |minimum: Role| role.is_some_and(|r| r >= minimum);
    let can_see = match project.visibility {
        Visibility::Public => true,
        Visibility::Internal => signed_in,
        Visibility::Private => at_least(Role::Reporter),
    };
    let mut actions = Actions::NONE;
    if scopes.read_registry && can_see {
        actions = actions.with(Action::Pull);
    }
    if scopes.read_registry && scopes.write_registry && at_least(Role::Developer) {
        actions = actions.with(Action::Push);
    }
    if scopes.write_registry && at_least(Role::Maintainer) {
        actions = actions.with(Action::Delete);
    }
    actions
}

/// Deploy tokens: their scopes decide, whatever the project's visibility; they never delete.
fn deploy_token(scopes: RegistryScopes) -> Actions {
    let mut actions = Actions::NONE;
    if scopes.read_registry {
        actions = actions.with(Action::Pull);
    }
    if scopes.read_registry && scopes.write_registry {
        actions = actions.with(Action::Push);
    }
    actions
}

/// Down-scope every requested scope to what is allowed; resources with nothing left are
/// dropped from the token.
pub fn grant(
    principal: &Principal,
    requested: &[Scope],
    directory: &Directory,
) -> Vec<ResourceAccess> {
    requested
        .iter()
        .filter_map(|scope| {
            let allowed = allowed_actions(principal, &scope.resource, directory);
            // Project and user settings take away what they forbid (see `protection`).
            let allowed = match &scope.resource {
                Resource::Repository(name) => {
                    protection::restrict(principal, name, directory, allowed)
                }
                _ => allowed,
            };
            let granted = intersect(scope.actions, allowed);
            (!granted.is_empty()).then(|| ResourceAccess::new(&scope.resource, granted))
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
            ],
            vec![],
        )
    }

    fn namespace_token(
        namespace: &str,
        kind: NamespaceKind,
        role: Option<Role>,
        read: bool,
        write: bool,
    ) -> Principal {
        Principal::Token(NamespaceToken {
            username: "bot".into(),
            digest: [0; 32],
            scopes: RegistryScopes {
                read_registry: read,
                write_registry: write,
            },
            expires_at: None,
            revoked: false,
            namespace: RepositoryName::parse(namespace).unwrap(),
            namespace_kind: kind,
            role,
        })
    }

    fn user(name: &str, read: bool, write: bool) -> Principal {
        Principal::User {
            username: name.into(),
            admin: name == "admin",
            scopes: RegistryScopes {
                read_registry: read,
                write_registry: write,
            },
            credential: Credential::Password,
        }
    }

    /// The actions granted when `principal` asks for everything on `repository`.
    fn granted(principal: &Principal, repository: &str) -> String {
        let scopes =
            Scope::parse_all([format!("repository:{repository}:pull,push,delete").as_str()])
                .unwrap();
        grant(principal, &scopes, &directory())
            .first()
            .map(|a| a.actions.join(","))
            .unwrap_or_default()
    }

    #[test]
    fn the_gitlab_permission_table() {
        // (who, read_registry, write_registry, repository, expected)
        // Sources: GitLab permissions table "Container registry" rows; ContainerRegistry-
        // AuthenticationService (pull: read_container_image, push: create_container_image,
        // delete: destroy_container_image = maintainer+); the registry doc's minimum scopes.
        let table: &[(&str, bool, bool, &str, &str)] = &[
            // Private project: reporter+ reads, developer+ writes, maintainer+ deletes.
            ("guest", true, true, "g/private", ""),
            ("reporter", true, true, "g/private", PULL),
            ("developer", true, true, "g/private", PUSH),
            (
                "maintainer",
                true,
                true,
                "g/private/sub",
                "pull,push,delete",
            ),
            ("owner", true, true, "g/private", "pull,push,delete"),
            ("stranger", true, true, "g/private", ""),
            // Internal project: any signed-in user reads.
            ("stranger", true, true, "g/internal", PULL),
            ("guest", true, true, "g/internal", PULL),
            // Public project: anyone reads; writing still needs the role.
            ("stranger", true, true, "g/public", PULL),
            ("developer", true, true, "g/public", PUSH),
            // Token scopes bound every role: read_registry for pull, both for push.
            ("owner", true, false, "g/private", PULL),
            ("owner", false, true, "g/private", "delete"),
            ("developer", false, true, "g/private", ""),
            ("developer", false, false, "g/public", ""),
            // Roles are inherited from parent groups, the highest winning: carol maintains
            // group g; reporter is only a guest of g but keeps the project's reporter role.
            ("carol", true, true, "g/private", "pull,push,delete"),
            ("carol", true, true, "h/private", ""),
            ("reporter", true, true, "g/private", PULL),
            // Repositories no project owns: nobody but administrators.
            ("owner", true, true, "elsewhere/app", ""),
            // Administrators: everything, bound by their credential's scopes.
            ("admin", true, true, "g/private", "pull,push,delete"),
            ("admin", true, true, "elsewhere/app", "pull,push,delete"),
            ("admin", true, false, "g/private", PULL),
        ];
        for (who, read, write, repository, expected) in table {
            let principal = user(who, *read, *write);
            assert_eq!(
                granted(&principal, repository),
                *expected,
                "{who} read={read} write={write} on {repository}"
            );
        }
    }

    #[test]
    fn deploy_and_access_tokens_act_only_inside_their_namespace() {
        use NamespaceKind::{Group as G, Project as P};
        // (token, repository, expected). Sources: GitLab deploy token docs (read_registry pulls,
        // read_registry + write_registry push, whatever the visibility); project/group access
        // tokens are bot members with their own role and scopes.
        let table: &[(Principal, &str, &str)] = &[
            (
                namespace_token("g/private", P, None, true, false),
                "g/private/app",
                PULL,
            ),
            (
                namespace_token("g/private", P, None, true, true),
                "g/private",
                PUSH,
            ),
            (
                namespace_token("g/private", P, None, false, true),
                "g/private",
                "",
            ),
            (
                namespace_token("g/private", P, None, true, true),
                "g/public",
                "",
            ),
            (
                namespace_token("g", G, None, true, true),
                "g/internal",
                PUSH,
            ),
            (namespace_token("g", G, None, true, true), "h/private", ""),
            (
                namespace_token("g/private", P, Some(Role::Developer), true, true),
                "g/private",
                PUSH,
            ),
            (
                namespace_token("g/private", P, Some(Role::Guest), true, true),
                "g/private",
                "",
            ),
            (
                namespace_token("g/private", P, Some(Role::Guest), true, true),
                "g/private",
                "",
            ),
            (
                namespace_token("g/public", P, Some(Role::Guest), true, true),
                "g/public",
                PULL,
            ),
            (
                namespace_token("g", G, Some(Role::Maintainer), true, true),
                "g/private",
                "pull,push,delete",
            ),
            (
                namespace_token("g", G, Some(Role::Owner), true, true),
                "h/private",
                "",
            ),
            // A project nested below the token's project is another project: out of reach,
            // its images too; the group's tokens still reach it.
            (
                namespace_token("g/private", P, None, true, true),
                "g/private/vault",
                "",
            ),
            (
                namespace_token("g/private", P, None, true, true),
                "g/private/vault/image",
                "",
            ),
            (
                namespace_token("g/private", P, Some(Role::Owner), true, true),
                "g/private/vault",
                "",
            ),
            (
                namespace_token("g/private", P, Some(Role::Owner), true, true),
                "g/private/app",
                "pull,push,delete",
            ),
            (
                namespace_token("g", G, None, true, true),
                "g/private/vault",
                PUSH,
            ),
            (
                namespace_token("g", G, Some(Role::Maintainer), true, true),
                "g/private/vault/image",
                "pull,push,delete",
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
            &namespace_token("g", G, Some(Role::Owner), true, true),
            &catalog,
            &directory()
        )
        .is_empty());
    }

    #[test]
    fn anonymous_callers_pull_public_projects_only() {
        assert_eq!(granted(&Principal::Anonymous, "g/public"), PULL);
        assert_eq!(granted(&Principal::Anonymous, "g/internal"), "");
        assert_eq!(granted(&Principal::Anonymous, "g/private"), "");
    }

    #[test]
    fn catalog_and_star_are_for_administrators() {
        let catalog = Scope::parse_all(["registry:catalog:*"]).unwrap();
        assert!(grant(&user("owner", true, true), &catalog, &directory()).is_empty());
        let access = grant(&user("admin", true, true), &catalog, &directory());
        assert_eq!(access[0].kind, "registry");
        assert_eq!(access[0].actions, vec!["*"]);

        let star = Scope::parse_all(["repository:g/private:*"]).unwrap();
        assert!(grant(&user("owner", true, true), &star, &directory()).is_empty());
        assert_eq!(
            grant(&user("admin", true, true), &star, &directory())[0].actions,
            vec!["*"]
        );
    }

    #[test]
    fn unknown_resource_types_grant_nothing_and_other_scopes_survive() {
        let scopes =
            Scope::parse_all(["helmchart:g/public:pull", "repository:g/public:pull"]).unwrap();
        let access = grant(&user("admin", true, true), &scopes, &directory());
        assert_eq!(access.len(), 1);
        assert_eq!(access[0].name, "g/public");
    }
}
