//! `ldap:`: the directory service (LDAP, Active Directory) users may log in with.
//!
//! The file shape ([`LdapFile`]) and the validated settings ([`LdapSettings`]) live together
//! here so the section is one room. Validation names every bad key (`ldap.url`,
//! `ldap.group_links[0].path`, ...). The bind password is a [`BindPassword`], whose `Debug`
//! never shows it: [`super::Config`] is `Debug`, and nothing may print a secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use super::{parse_duration, Problem};
use crate::auth::directory::{Directory, Role};
use crate::auth::scope::RepositoryName;

/// How stale group membership and account state may be, unless `ldap.sync_interval` says.
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Every network exchange with the directory (connect, TLS, bind, search) together.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Directory connections open at once, unless `ldap.max_connections` says.
const DEFAULT_MAX_CONNECTIONS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url, bind_dn, bind_password, user_base (and uid_attribute, group_base, group_links, ...)"
)]
pub struct LdapFile {
    pub url: String,
    #[serde(default)]
    pub start_tls: bool,
    #[serde(default)]
    pub ca: Option<String>,
    pub bind_dn: String,
    pub bind_password: String,
    pub user_base: String,
    #[serde(default)]
    pub uid_attribute: Option<String>,
    #[serde(default)]
    pub user_filter: Option<String>,
    #[serde(default)]
    pub group_base: Option<String>,
    #[serde(default)]
    pub group_links: Vec<GroupLinkFile>,
    #[serde(default)]
    pub admin_group: Option<String>,
    #[serde(default)]
    pub sync_interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with cn, path and role")]
pub struct GroupLinkFile {
    pub cn: String,
    pub path: String,
    pub role: String,
}

/// The service account's password. `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct BindPassword(String);

impl BindPassword {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BindPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// GitLab's LDAP group link: members of the directory group `cn` get `role` in `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLink {
    pub cn: String,
    pub path: RepositoryName,
    pub role: Role,
}

/// The validated `ldap:` section.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`, as ldap3 takes it.
    pub url: String,
    pub start_tls: bool,
    /// Extra CA certificate(s) to trust besides the system's.
    pub ca: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_password: BindPassword,
    pub user_base: String,
    pub uid_attribute: String,
    /// ANDed with the uid match; always parenthesised.
    pub user_filter: Option<String>,
    /// Where groups are searched; `None`: only `memberOf` on the user counts.
    pub group_base: Option<String>,
    pub group_links: Vec<GroupLink>,
    pub admin_group: Option<String>,
    pub sync_interval: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
}

/// Check `ldap:` against the rest of the file (`directory`: group links name its paths).
pub(super) fn validate(
    c: &mut Checker,
    raw: Option<LdapFile>,
    base: &Path,
    directory: &Directory,
) -> Option<LdapSettings> {
    let raw = raw?;
    let before = c.problems.len();
    let url = raw.url.trim().to_owned();
    let (scheme, host) = match url.split_once("://") {
        Some((scheme, rest)) => (
            scheme.to_ascii_lowercase(),
            rest.trim_end_matches('/').to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    let host_only = host
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(host.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    if !matches!(scheme.as_str(), "ldap" | "ldaps") || host_only.is_empty() || host.contains('/') {
        c.problems.push(Problem::new(
            "ldap.url",
            format!("{url:?} is not a directory address: write ldaps://host:636, or ldap://host:389 with start_tls: true"),
        ));
    } else if scheme == "ldaps" && raw.start_tls {
        c.problems.push(Problem::new(
            "ldap.start_tls",
            "ldaps:// is TLS already: start_tls applies to ldap:// only",
        ));
    } else if scheme == "ldap"
        && !raw.start_tls
        && !matches!(host_only, "127.0.0.1" | "::1" | "localhost")
    {
        c.problems.push(Problem::new(
            "ldap.url",
            "ldap:// without start_tls sends every password in clear: use ldaps://, or set start_tls: true",
        ));
    }
    if raw.ca.is_some() && scheme == "ldap" && !raw.start_tls {
        c.problems.push(Problem::new(
            "ldap.ca",
            "a CA only applies to ldaps:// or start_tls: true",
        ));
    }
    for (key, value) in [
        ("ldap.bind_dn", &raw.bind_dn),
        ("ldap.user_base", &raw.user_base),
    ] {
        if value.trim().is_empty() {
            c.problems.push(Problem::new(key, "must not be empty"));
        }
    }
    if raw.bind_password.is_empty() {
        c.problems.push(Problem::new(
            "ldap.bind_password",
            "must not be empty: an empty password is an anonymous bind (write \"${LDAP_BIND_PASSWORD}\" and set the variable)",
        ));
    }
    let uid_attribute = raw.uid_attribute.unwrap_or_else(|| "uid".into());
    if !is_attribute_name(&uid_attribute) {
        c.problems.push(Problem::new(
            "ldap.uid_attribute",
            format!("{uid_attribute:?} is not an attribute name (uid, or sAMAccountName on Active Directory)"),
        ));
    }
    let user_filter = raw
        .user_filter
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty());
    if let Some(filter) = &user_filter {
        if !(filter.starts_with('(') && filter.ends_with(')'))
            || ldap3::parse_filter(filter.as_str()).is_err()
        {
            c.problems.push(Problem::new(
                "ldap.user_filter",
                format!(
                    "{filter:?} is not an LDAP filter (RFC 4515), e.g. (objectClass=inetOrgPerson)"
                ),
            ));
        }
    }
    let mut group_links = Vec::new();
    for (i, link) in raw.group_links.into_iter().enumerate() {
        let key = |field: &str| format!("ldap.group_links[{i}].{field}");
        if link.cn.trim().is_empty() {
            c.problems
                .push(Problem::new(key("cn"), "must not be empty"));
        }
        let path = c
            .check(
                key("path"),
                RepositoryName::parse(link.path.trim()).map_err(|e| e.to_string()),
            )
            .and_then(|path| {
                let known = directory.groups().iter().any(|g| g.path == path)
                    || directory.projects().iter().any(|p| p.path == path);
                c.check(
                    key("path"),
                    known.then_some(path).ok_or_else(|| {
                        format!("{:?} is not a group or project in this file: add it to groups: or projects:", link.path)
                    }),
                )
            });
        let role = c.check(key("role"), link.role.trim().parse::<Role>());
        if let (Some(path), Some(role)) = (path, role) {
            group_links.push(GroupLink {
                cn: link.cn.trim().to_owned(),
                path,
                role,
            });
        }
    }
    let duration = |c: &mut Checker, key: &str, text: Option<&str>, default: Duration| {
        let value = match text {
            None => default,
            Some(text) => c.check(key, parse_duration(text)).unwrap_or(default),
        };
        if value.is_zero() {
            c.problems.push(Problem::new(key, "must be longer than 0s"));
        }
        value
    };
    let sync_interval = duration(
        c,
        "ldap.sync_interval",
        raw.sync_interval.as_deref(),
        DEFAULT_SYNC_INTERVAL,
    );
    let timeout = duration(c, "ldap.timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT);
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=1024).contains(&max_connections) {
        c.problems.push(Problem::new(
            "ldap.max_connections",
            "must be between 1 and 1024",
        ));
    }
    if c.problems.len() > before {
        return None;
    }
    Some(LdapSettings {
        url: format!("{scheme}://{host}"),
        start_tls: raw.start_tls,
        ca: raw.ca.as_deref().map(|p| base.join(p)),
        bind_dn: raw.bind_dn.trim().to_owned(),
        bind_password: BindPassword(raw.bind_password),
        user_base: raw.user_base.trim().to_owned(),
        uid_attribute,
        user_filter,
        group_base: raw
            .group_base
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty()),
        group_links,
        admin_group: raw
            .admin_group
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty()),
        sync_interval,
        timeout,
        max_connections,
    })
}

/// RFC 4512 `descr` (letters, digits, hyphens, starting with a letter) or a numeric OID.
fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() => {
            chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        }
        Some(first) if first.is_ascii_digit() => name
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|ch| ch.is_ascii_digit())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_descrs_or_oids() {
        for good in [
            "uid",
            "sAMAccountName",
            "x-foo",
            "0.9.2342.19200300.100.1.1",
        ] {
            assert!(is_attribute_name(good), "{good}");
        }
        for bad in ["", "uid)(x", "u id", "-uid", "1..2", "uid=*"] {
            assert!(!is_attribute_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_bind_password_never_shows_in_debug() {
        let password = BindPassword("hunter2".into());
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
