//! Validation of the GitLab project and user settings (`container_registry_access_level`,
//! `archived`, `job_token_allowlist`, `container_protection`; `two_factor`, `external`,
//! `locked`): every value typed and every pattern compiled here, at load, each problem naming
//! its key. The decisions themselves are in [`crate::auth::protection`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::file::{ContainerProtectionFile, ProjectFile, UserFile};
use super::validate::Checker;
use super::Problem;
use crate::auth::protection::{
    tag_pattern, MinimumLevel, ProjectSettings, RegistryAccessLevel, RepositoryRule, TagProtection,
    TagRule, UserSettings,
};
use crate::auth::scope::RepositoryName;

/// The account settings of every user that has any.
pub(super) fn users(users: &[UserFile]) -> HashMap<String, UserSettings> {
    users
        .iter()
        .map(|u| {
            let settings = UserSettings {
                two_factor: u.two_factor,
                external: u.external,
                locked: u.locked,
            };
            (u.username.clone(), settings)
        })
        .filter(|(_, s)| *s != UserSettings::default())
        .collect()
}

/// Groups have none of the project settings: a key set on a group is a mistake to report.
pub(super) fn refuse_on_groups(c: &mut Checker, groups: &[ProjectFile]) {
    for (i, group) in groups.iter().enumerate() {
        let set = [
            (
                "container_registry_access_level",
                group.container_registry_access_level.is_some(),
            ),
            ("archived", group.archived.is_some()),
            ("job_token_allowlist", group.job_token_allowlist.is_some()),
            ("container_protection", group.container_protection.is_some()),
        ];
        for (name, _) in set.iter().filter(|(_, set)| *set) {
            c.problems.push(Problem::new(
                format!("groups[{i}].{name}"),
                "is a project setting: set it on each project under projects",
            ));
        }
    }
}

/// The settings of every project, by path.
pub(super) fn projects(
    c: &mut Checker,
    groups: &[ProjectFile],
    projects: &[ProjectFile],
) -> HashMap<RepositoryName, ProjectSettings> {
    // Only an allowlist needs the paths defined (two sets of 100,000 at directory scale).
    let allowlists = projects.iter().any(|p| p.job_token_allowlist.is_some());
    let group_paths = defined_paths(allowlists, groups);
    let project_paths = defined_paths(allowlists, projects);
    let mut out = HashMap::new();
    for (i, project) in projects.iter().enumerate() {
        // None of these keys: the defaults, which the directory gives a project it has no
        // settings for (an entry and an allocation for each of 100,000 projects otherwise).
        if project.container_registry_access_level.is_none()
            && project.archived.is_none()
            && project.job_token_allowlist.is_none()
            && project.container_protection.is_none()
        {
            continue;
        }
        let key = format!("projects[{i}]");
        let Ok(path) = RepositoryName::parse(&project.path) else {
            continue; // reported with the path itself
        };
        let registry_access = match &project.container_registry_access_level {
            None => Some(RegistryAccessLevel::Enabled),
            Some(text) => c.check(
                format!("{key}.container_registry_access_level"),
                text.parse(),
            ),
        };
        let job_token_allowlist = project.job_token_allowlist.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(j, entry)| {
                    let ekey = format!("{key}.job_token_allowlist[{j}]");
                    let name = c.check(
                        ekey.clone(),
                        RepositoryName::parse(entry).map_err(|e| e.to_string()),
                    )?;
                    if !group_paths.contains(entry.as_str())
                        && !project_paths.contains(entry.as_str())
                    {
                        c.problems.push(Problem::new(
                            ekey,
                            format!("{entry:?} is no project or group defined in this file"),
                        ));
                    }
                    Some(name)
                })
                .collect()
        });
        let protection = project
            .container_protection
            .as_ref()
            .map(|p| protection(c, &key, &path, p))
            .unwrap_or_default();
        let Some(registry_access) = registry_access else {
            continue;
        };
        let settings = ProjectSettings {
            registry_access,
            archived: project.archived.unwrap_or(false),
            job_token_allowlist,
            repositories: protection.0,
            tags: Arc::new(protection.1),
        };
        out.insert(path, settings);
    }
    out
}

/// The paths of `list` when `wanted`, else none.
fn defined_paths(wanted: bool, list: &[ProjectFile]) -> HashSet<&str> {
    match wanted {
        true => list.iter().map(|p| p.path.as_str()).collect(),
        false => HashSet::new(),
    }
}

fn level(c: &mut Checker, key: String, text: &str) -> Option<MinimumLevel> {
    c.check(key, text.parse::<MinimumLevel>())
}

fn protection(
    c: &mut Checker,
    key: &str,
    project: &RepositoryName,
    file: &ContainerProtectionFile,
) -> (Vec<RepositoryRule>, TagProtection) {
    let key = format!("{key}.container_protection");
    let mut repositories = Vec::new();
    for (j, rule) in file.repositories.iter().enumerate() {
        let rkey = format!("{key}.repositories[{j}]");
        let pattern = &rule.repository_path_pattern;
        let minimum = level(
            c,
            format!("{rkey}.minimum_access_level_for_push"),
            &rule.minimum_access_level_for_push,
        );
        // GitLab: the pattern must start with the project's own path.
        if !pattern.to_ascii_lowercase().starts_with(project.as_str()) {
            c.problems.push(Problem::new(
                format!("{rkey}.repository_path_pattern"),
                format!(
                    "{pattern:?} must start with the project's path {:?}",
                    project.as_str()
                ),
            ));
            continue;
        }
        if let Some(minimum) = minimum {
            repositories.extend(c.check(
                format!("{rkey}.repository_path_pattern"),
                RepositoryRule::new(pattern, minimum),
            ));
        }
    }
    let mut tags = TagProtection::default();
    for (j, rule) in file.tags.iter().enumerate() {
        let tkey = format!("{key}.tags[{j}]");
        let pattern = c.check(
            format!("{tkey}.tag_name_pattern"),
            tag_pattern(&rule.tag_name_pattern),
        );
        let push = level(
            c,
            format!("{tkey}.minimum_access_level_for_push"),
            &rule.minimum_access_level_for_push,
        );
        let delete = level(
            c,
            format!("{tkey}.minimum_access_level_for_delete"),
            &rule.minimum_access_level_for_delete,
        );
        if let (Some(pattern), Some(push), Some(delete)) = (pattern, push, delete) {
            tags.protected.push(TagRule {
                pattern,
                minimum_for_push: push,
                minimum_for_delete: delete,
            });
        }
    }
    for (j, pattern) in file.immutable_tags.iter().enumerate() {
        tags.immutable
            .extend(c.check(format!("{key}.immutable_tags[{j}]"), tag_pattern(pattern)));
    }
    (repositories, tags)
}
