//! One conversation with the directory: connect (TLS or StartTLS), bind as the service
//! account, find the user, read their groups, and (when asked) bind as the user's DN with the
//! password they gave.
//!
//! Every conversation holds one of `ldap.max_connections` permits and runs, permit wait
//! included, under `ldap.timeout`; the connection is closed at its end, or the moment the
//! timeout drops it. Nothing here logs, and no error text carries a
//! password: the service password and the user's are only ever handed to `simple_bind`.

use std::collections::BTreeSet;
use std::sync::Arc;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use tokio::sync::Semaphore;

use super::filter;
use crate::config::ldap::LdapSettings;

/// LDAP result codes the source tells apart (RFC 4511 4.1.9).
const RC_SIZE_LIMIT_EXCEEDED: u32 = 4;
const RC_INVALID_CREDENTIALS: u32 = 49;
/// AD `userAccountControl` bit 2: ACCOUNTDISABLE.
const UAC_ACCOUNT_DISABLE: u32 = 2;
/// Most groups read for one user; past it the rest are ignored (and said so).
const MAX_GROUPS: i32 = 1000;

/// Why the directory could not answer. The texts name what failed, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    #[error("no answer from {url} within ldap.timeout ({seconds}s)")]
    Timeout { url: String, seconds: u64 },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the service bind as ldap.bind_dn was refused (result code {rc}: {text}): check ldap.bind_dn and ldap.bind_password")]
    ServiceBind { rc: u32, text: String },
    #[error("{what} failed: {reason}")]
    Operation { what: &'static str, reason: String },
}

/// What the directory says of a username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No such user under `user_base` (or the filter excludes them).
    NoSuchUser,
    /// More than one entry matched: refused, the directory is ambiguous.
    Ambiguous,
    /// Active Directory's ACCOUNTDISABLE bit is set.
    Disabled,
    /// The password was checked and is wrong.
    WrongPassword,
    /// The account exists, is enabled, and (if asked) the password is right.
    Account(Account),
}

/// A directory account as the gateway keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub dn: String,
    /// The directory's own spelling of the uid (the principal's username).
    pub uid: String,
    /// The `cn` of every group that lists the user, lowercased.
    pub groups: BTreeSet<String>,
}

/// Talks to one directory.
pub struct Client {
    settings: LdapSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    permits: Semaphore,
}

impl Client {
    pub fn new(settings: LdapSettings, tls: Option<Arc<rustls::ClientConfig>>) -> Client {
        Client {
            permits: Semaphore::new(settings.max_connections),
            settings,
            tls,
        }
    }

    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// Look `username` up; with `password`, also bind as the account found. Bounded by
    /// `ldap.timeout` as a whole.
    pub async fn lookup(
        &self,
        username: &str,
        password: Option<&str>,
    ) -> Result<Answer, DirectoryError> {
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.converse(username, password)).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Timeout {
                url: self.settings.url.clone(),
                seconds: timeout.as_secs(),
            }),
        }
    }

    async fn converse(
        &self,
        username: &str,
        password: Option<&str>,
    ) -> Result<Answer, DirectoryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DirectoryError::Operation {
                what: "taking a connection slot",
                reason: "closed".into(),
            })?;
        let s = &self.settings;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(s.timeout)
            .set_starttls(s.start_tls);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &s.url)
            .await
            .map_err(|e| DirectoryError::Connect {
                url: s.url.clone(),
                reason: e.to_string(),
            })?;
        // The connection is driven inside this very future, not by a task of its own: when the
        // timeout drops the conversation, the socket closes then and there, before the permit
        // is given back, so `max_connections` bounds open sockets, not just conversations.
        let driver = conn.drive();
        tokio::pin!(driver);
        tokio::select! {
            biased;
            answer = self.talk(&mut ldap, username, password) => answer,
            ended = &mut driver => Err(DirectoryError::Operation {
                what: "the conversation",
                reason: match ended {
                    Ok(()) => "the directory closed the connection".into(),
                    Err(e) => e.to_string(),
                },
            }),
        }
    }

    /// Service bind, user search, group search, user bind, on an open connection.
    async fn talk(
        &self,
        ldap: &mut ldap3::Ldap,
        username: &str,
        password: Option<&str>,
    ) -> Result<Answer, DirectoryError> {
        let s = &self.settings;
        let bound = ldap
            .simple_bind(&s.bind_dn, s.bind_password.expose())
            .await
            .map_err(|e| operation("the service bind", e))?;
        if bound.rc != 0 {
            return Err(DirectoryError::ServiceBind {
                rc: bound.rc,
                text: bound.text,
            });
        }

        let uid_attribute = s.uid_attribute.as_str();
        let user_filter = filter::user(uid_attribute, username, s.user_filter.as_deref());
        let ldap3::SearchResult(entries, result) = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(
                &s.user_base,
                Scope::Subtree,
                &user_filter,
                vec![uid_attribute, "memberOf", "userAccountControl"],
            )
            .await
            .map_err(|e| operation("the user search", e))?;
        if result.rc == RC_SIZE_LIMIT_EXCEEDED || entries.len() > 1 {
            return Ok(Answer::Ambiguous);
        }
        if result.rc != 0 {
            return Err(DirectoryError::Operation {
                what: "the user search",
                reason: format!("result code {}: {}", result.rc, result.text),
            });
        }
        let Some(entry) = entries.into_iter().next() else {
            return Ok(Answer::NoSuchUser);
        };
        let entry = SearchEntry::construct(entry);
        if entry.dn.trim().is_empty() {
            return Ok(Answer::NoSuchUser);
        }
        let values = |name: &str| -> Vec<String> {
            entry
                .attrs
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.iter().cloned())
                .collect()
        };
        let disabled = values("userAccountControl")
            .iter()
            .filter_map(|v| v.trim().parse::<i64>().ok())
            .any(|flags| (flags as u32) & UAC_ACCOUNT_DISABLE != 0);
        if disabled {
            return Ok(Answer::Disabled);
        }
        let uid = values(uid_attribute)
            .into_iter()
            .find(|v| v.eq_ignore_ascii_case(username))
            .unwrap_or_else(|| username.to_owned());
        let mut groups: BTreeSet<String> = values("memberOf")
            .iter()
            .filter_map(|dn| filter::cn_of_member_of(dn, s.group_base.as_deref()))
            .map(|cn| cn.to_lowercase())
            .collect();
        if let Some(group_base) = &s.group_base {
            let ldap3::SearchResult(found, result) = ldap
                .with_search_options(SearchOptions::new().sizelimit(MAX_GROUPS))
                .search(
                    group_base,
                    Scope::Subtree,
                    &filter::groups(&entry.dn, &uid),
                    vec!["cn"],
                )
                .await
                .map_err(|e| operation("the group search", e))?;
            if result.rc != 0 && result.rc != RC_SIZE_LIMIT_EXCEEDED {
                return Err(DirectoryError::Operation {
                    what: "the group search",
                    reason: format!("result code {}: {}", result.rc, result.text),
                });
            }
            for group in found {
                let group = SearchEntry::construct(group);
                for (key, cns) in &group.attrs {
                    if key.eq_ignore_ascii_case("cn") {
                        groups.extend(cns.iter().map(|cn| cn.to_lowercase()));
                    }
                }
            }
        }

        if let Some(password) = password {
            // Never an empty password: RFC 4513 5.1.2 makes that an unauthenticated bind,
            // which servers answer with success. The caller refuses it too.
            if password.is_empty() {
                return Ok(Answer::WrongPassword);
            }
            let result = ldap
                .simple_bind(&entry.dn, password)
                .await
                .map_err(|e| operation("the user bind", e))?;
            match result.rc {
                0 => {}
                RC_INVALID_CREDENTIALS => return Ok(Answer::WrongPassword),
                // Other refusals of a user bind (e.g. 53 unwillingToPerform for a locked
                // account) are still refusals, not outages.
                rc if rc < 80 && rc != 51 && rc != 52 => return Ok(Answer::WrongPassword),
                rc => {
                    return Err(DirectoryError::Operation {
                        what: "the user bind",
                        reason: format!("result code {rc}: {}", result.text),
                    })
                }
            }
        }
        // No unbind: closing the connection ends the session (RFC 4511 4.3), and an unbind
        // would race the driver's end against this answer.
        Ok(Answer::Account(Account {
            dn: entry.dn,
            uid,
            groups,
        }))
    }
}

fn operation(what: &'static str, error: ldap3::LdapError) -> DirectoryError {
    DirectoryError::Operation {
        what,
        reason: error.to_string(),
    }
}
