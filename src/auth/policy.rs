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
//! - a repository no project owns: administrators only.

use super::credentials::Principal;
use super::directory::{Directory, RegistryScopes, Role, Visibility};
use super::scope::{Action, Actions, Resource, ResourceAccess, Scope};

/// The actions `principal` may perform on `resource`.
pub fn allowed_actions(
    principal: &Principal,
    resource: &Resource,
    directory: &Directory,
) -> Actions {
    let (admin, scopes, username) = match principal {
        Principal::Anonymous => (
            false,
            RegistryScopes {
                read_registry: true,
                write_registry: false,
            },
            None,
        ),
        Principal::User {
            username,
            admin,
            scopes,
            ..
        } => (*admin, *scopes, Some(username.as_str())),
    };
    let read = scopes.read_registry;
    let write = scopes.write_registry;

    match resource {
        Resource::Catalog if admin && read => Actions::of(&[Action::All]),
        Resource::Catalog | Resource::Other { .. } => Actions::NONE,
        Resource::Repository(_) if admin => {
            let mut actions = Actions::NONE;
            if read {
                actions = actions.with(Action::Pull);
            }
            if read && write {
                actions = actions.with(Action::Push).with(Action::All);
            }
            if write {
                actions = actions.with(Action::Delete);
            }
            actions
        }
        Resource::Repository(name) => {
            let Some(project) = directory.project_for(name) else {
                return Actions::NONE;
            };
            let role: Option<Role> = username.and_then(|u| project.members.get(u).copied());
            let at_least = |minimum: Role| role.is_some_and(|r| r >= minimum);
            let can_see = match project.visibility {
                Visibility::Public => true,
                Visibility::Internal => username.is_some(),
                Visibility::Private => at_least(Role::Reporter),
            };
            let mut actions = Actions::NONE;
            if read && can_see {
                actions = actions.with(Action::Pull);
            }
            if read && write && at_least(Role::Developer) {
                actions = actions.with(Action::Push);
            }
            if write && at_least(Role::Maintainer) {
                actions = actions.with(Action::Delete);
            }
            actions
        }
    }
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
    use crate::auth::directory::Project;
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
        Directory::new(
            vec![],
            vec![
                project("g/private", Visibility::Private, &roles),
                project("g/internal", Visibility::Internal, &roles),
                project("g/public", Visibility::Public, &roles),
            ],
        )
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
