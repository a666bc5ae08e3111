//! `portcullis ci-token`: mint a CI job token and print the variables a job uses, as
//! `NAME=value` lines ready for `eval` (GitLab's CI_REGISTRY, CI_REGISTRY_USER,
//! CI_REGISTRY_PASSWORD, CI_JOB_TOKEN, CI_REGISTRY_IMAGE).
//!
//! The token is stateless: signed under the job audience with `ci.signing_key` (only that key
//! is read, so the CI side needs no registry key), or without it with `token.signing_key` as
//! before; verified at `/jwt/auth` without anything stored. Rotating the key that signs them
//! revokes every job token.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::auth::ci_key::CiKey;
use crate::auth::credentials::CI_USERNAME;
use crate::auth::directory::Role;
use crate::auth::keys::SigningKey;
use crate::auth::scope::RepositoryName;
use crate::auth::token::{issue_job_token, Purpose, Tokens};
use crate::config::{parse_duration, Config};

pub struct CiTokenOptions {
    pub config: PathBuf,
    pub project: String,
    pub user: String,
    pub ttl: String,
}

/// What to print: the variables on stdout, and a warning for stderr when the job will only
/// be able to pull.
pub struct CiToken {
    pub variables: String,
    pub warning: Option<String>,
}

pub fn ci_token(options: &CiTokenOptions) -> Result<CiToken, String> {
    let config = Config::load(&options.config).map_err(|e| e.to_string())?;
    let ttl: Duration = parse_duration(&options.ttl).map_err(|e| format!("--ttl: {e}"))?;
    let user = config.directory.user(&options.user).ok_or_else(|| {
        format!(
            "--user: no user {:?} in {}",
            options.user,
            options.config.display()
        )
    })?;
    if user.blocked {
        return Err(format!("--user: {} is blocked", user.username));
    }
    let path = RepositoryName::parse(&options.project).map_err(|e| format!("--project: {e}"))?;
    let project = config
        .directory
        .project_for(&path)
        .filter(|p| p.path == path)
        .ok_or_else(|| {
            format!(
                "--project: no project {:?} in {}",
                options.project,
                options.config.display()
            )
        })?;
    let now = SystemTime::now();
    let exp = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + ttl.as_secs().max(1);
    let token = match &config.ci_signing_key {
        // Only the CI key is read: the CI side needs no registry key.
        Some(path) => {
            let ci = CiKey::load(path).map_err(|e| format!("ci.signing_key: {e}"))?;
            issue_job_token(
                &ci,
                &config.token.issuer,
                &user.username,
                project.path.as_str(),
                exp,
                now,
            )
        }
        None => {
            let key = SigningKey::load(&config.token.signing_key, &config.token.certificate)
                .map_err(|e| e.to_string())?;
            Tokens::new(&config.token, key, Vec::new()).issue_internal(
                Purpose::CiJob,
                &user.username,
                Some(project.path.as_str()),
                None,
                exp,
                now,
            )
        }
    }
    .map_err(|e| format!("signing the job token: {e}"))?;
    let registry = &config.public_url.authority;
    let warning =
        (project.members.get(&user.username).copied() < Some(Role::Developer)).then(|| {
            format!(
                "note: {} is not a developer of {}: as in GitLab (build_can_push?), the job can still push to and delete from its own project",
                user.username, project.path
            )
        });
    Ok(CiToken {
        variables: format!(
            "CI_REGISTRY={registry}\nCI_REGISTRY_IMAGE={registry}/{project}\nCI_REGISTRY_USER={CI_USERNAME}\nCI_REGISTRY_PASSWORD={token}\nCI_JOB_TOKEN={token}\n",
            project = project.path
        ),
        warning,
    })
}
