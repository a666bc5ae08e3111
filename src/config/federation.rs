//! `federation:` (CI workload identity: an OIDC ID token is the password) and `ci:` (the CI
//! job tokens' own key): their shape on disk and their validation, each problem naming its key.
//!
//! What a federation may grant is checked here, once: the grant's path is a group or project
//! of gateway.yaml, its actions are registry actions, and every rule names at least one claim
//! (a rule with none would let any token of the issuer in).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use super::Problem;
use crate::auth::directory::Directory;
use crate::auth::federation::rules::{ClaimPattern, Grant, Rule};
use crate::auth::scope::{Action, Actions, RepositoryName};

/// `max_token_age` when absent: GitLab's `id_tokens` and Kubernetes' projected tokens live an
/// hour by default; GitHub's a few minutes.
pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(3600);
/// The longest `max_token_age` accepted: an ID token is meant to be fresh.
const MAX_MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);
/// The Basic username an ID token logs in with (`docker login -u oidc`).
pub const OIDC_USERNAME: &str = "oidc";

/// One `federation:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name, issuer, audience and rules"
)]
pub struct FederationFile {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub max_token_age: Option<String>,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with claims and grant")]
pub struct RuleFile {
    pub claims: BTreeMap<String, String>,
    pub grant: GrantFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with path and actions")]
pub struct GrantFile {
    pub path: String,
    pub actions: Vec<String>,
}

/// `ci:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with signing_key")]
pub struct CiFile {
    #[serde(default)]
    pub signing_key: Option<String>,
}

/// One validated federation: an issuer whose ID tokens, for `audience`, log in.
#[derive(Debug, Clone)]
pub struct Federation {
    /// Unique; in logs, metrics, `/readyz` and the registry token's `sub`.
    pub name: String,
    /// `https://...`, compared with the token's `iss` exactly.
    pub issuer: String,
    pub audience: String,
    /// Where the keys are, when not where discovery says.
    pub jwks_uri: Option<String>,
    /// Extra CA certificate(s) for the issuer's HTTPS.
    pub ca: Option<PathBuf>,
    /// Tokens issued (`iat`) longer ago are refused.
    pub max_token_age: Duration,
    pub rules: Vec<Rule>,
}

/// `https://host[/path]` with no query or fragment: where an issuer or its keys live.
fn https_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if uri.scheme_str() != Some("https") || uri.authority().is_none() {
        return Err(format!(
            "{text:?} must be an https:// URL: ID token keys fetched over plain HTTP could be replaced on the way"
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    Ok(text.to_owned())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub(super) fn validate(
    c: &mut Checker,
    federations: Vec<FederationFile>,
    directory: &Directory,
    base: &Path,
) -> Vec<Federation> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut pairs: HashMap<(String, String), String> = HashMap::new();
    let mut out = Vec::new();
    if !federations.is_empty() && directory.user(OIDC_USERNAME).is_some() {
        c.problems.push(Problem::new(
            "users",
            format!("a user is named {OIDC_USERNAME:?}, the username ID tokens log in with when federation is configured: rename the user"),
        ));
    }
    for (i, f) in federations.into_iter().enumerate() {
        let key = |rest: &str| format!("federation[{i}].{rest}");
        if !valid_name(&f.name) {
            c.problems.push(Problem::new(
                key("name"),
                format!(
                    "{:?} is not a federation name: 1 to 64 lowercase letters, digits, - and _",
                    f.name
                ),
            ));
        } else if let Some(first) = names.get(&f.name) {
            c.problems.push(Problem::new(
                key("name"),
                format!("{:?} is already the name of {first}", f.name),
            ));
        } else {
            names.insert(f.name.clone(), format!("federation[{i}]"));
        }
        let issuer = c.check(key("issuer"), https_url(f.issuer.trim()));
        if f.audience.trim().is_empty() {
            c.problems.push(Problem::new(
                key("audience"),
                "must not be empty: ID tokens for other audiences (other services) must not log in here",
            ));
        }
        if let Some(issuer) = &issuer {
            let pair = (issuer.clone(), f.audience.clone());
            if let Some(first) = pairs.get(&pair) {
                c.problems.push(Problem::new(
                    key("audience"),
                    format!(
                        "{first} already has this issuer and audience: a token would match both"
                    ),
                ));
            } else {
                pairs.insert(pair, format!("federation[{i}]"));
            }
        }
        let jwks_uri = f
            .jwks_uri
            .as_deref()
            .and_then(|u| c.check(key("jwks_uri"), https_url(u.trim())));
        let max_token_age = match f.max_token_age.as_deref() {
            None => DEFAULT_MAX_TOKEN_AGE,
            Some(text) => match super::parse_duration(text) {
                Ok(d) if !d.is_zero() && d <= MAX_MAX_TOKEN_AGE => d,
                Ok(_) => {
                    c.problems.push(Problem::new(
                        key("max_token_age"),
                        "must be between 1s and 24h",
                    ));
                    DEFAULT_MAX_TOKEN_AGE
                }
                Err(e) => {
                    c.problems.push(Problem::new(key("max_token_age"), e));
                    DEFAULT_MAX_TOKEN_AGE
                }
            },
        };
        if f.rules.is_empty() {
            c.problems.push(Problem::new(
                key("rules"),
                "has no rules: no ID token of this issuer could be granted anything",
            ));
        }
        let mut rules = Vec::new();
        for (r, rule) in f.rules.into_iter().enumerate() {
            let key = |rest: &str| format!("federation[{i}].rules[{r}].{rest}");
            if let Some(rule) = validate_rule(c, &key, rule, directory) {
                rules.push(rule);
            }
        }
        if let Some(issuer) = issuer {
            out.push(Federation {
                name: f.name,
                issuer,
                audience: f.audience,
                jwks_uri,
                ca: f.ca.as_deref().map(|p| base.join(p)),
                max_token_age,
                rules,
            });
        }
    }
    out
}

fn validate_rule(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    rule: RuleFile,
    directory: &Directory,
) -> Option<Rule> {
    let before = c.problems.len();
    if rule.claims.is_empty() {
        c.problems.push(Problem::new(
            key("claims"),
            "must name at least one claim: a rule without claims would grant to every token of the issuer",
        ));
    }
    let mut claims = Vec::new();
    for (name, pattern) in rule.claims {
        if name.is_empty() || pattern.is_empty() {
            c.problems.push(Problem::new(
                key(&format!("claims.{name}")),
                "claim names and patterns must not be empty",
            ));
            continue;
        }
        if pattern.chars().all(|ch| ch == '*') {
            c.problems.push(Problem::new(
                key(&format!("claims.{name}")),
                format!("{pattern:?} matches anything: name the value (globs such as \"myorg/*\" are allowed)"),
            ));
            continue;
        }
        claims.push(ClaimPattern::new(name, pattern));
    }
    let path = match RepositoryName::parse(rule.grant.path.trim_matches('/')) {
        Ok(path)
            if directory.groups().iter().any(|g| g.path == path)
                || directory.projects().iter().any(|p| p.path == path) =>
        {
            Some(path)
        }
        Ok(_) => {
            c.problems.push(Problem::new(
                key("grant.path"),
                format!(
                    "{:?} is not a group or project of this file: add it under groups or projects",
                    rule.grant.path
                ),
            ));
            None
        }
        Err(e) => {
            c.problems
                .push(Problem::new(key("grant.path"), e.to_string()));
            None
        }
    };
    let mut actions = Actions::NONE;
    if rule.grant.actions.is_empty() {
        c.problems.push(Problem::new(
            key("grant.actions"),
            "must list at least one of pull, push, delete",
        ));
    }
    for (a, word) in rule.grant.actions.iter().enumerate() {
        match word.as_str() {
            "pull" => actions = actions.with(Action::Pull),
            "push" => actions = actions.with(Action::Push),
            "delete" => actions = actions.with(Action::Delete),
            other => c.problems.push(Problem::new(
                key(&format!("grant.actions[{a}]")),
                format!("unknown action {other:?}: use pull, push or delete"),
            )),
        }
    }
    if c.problems.len() > before {
        return None;
    }
    Some(Rule {
        claims,
        grant: Grant {
            path: path?,
            actions,
        },
    })
}

/// `ci.signing_key`, resolved against the config's folder.
pub(super) fn ci_signing_key(ci: Option<&CiFile>, base: &Path) -> Option<PathBuf> {
    ci.and_then(|ci| ci.signing_key.as_deref())
        .map(|p| base.join(p))
}
