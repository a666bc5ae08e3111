//! The directory service (LDAP, Active Directory) as an [`IdentitySource`].
//!
//! Search-then-bind: the service account (`ldap.bind_dn`) finds the one entry whose
//! `uid_attribute` equals the username (escaped, [`filter`]), reads its groups, and only then
//! binds as THAT entry's DN with the password given. A DN is never built from a username, an
//! empty password never reaches the directory (it would be an anonymous bind, which servers
//! answer with success), and a service bind that fails is an outage, not a login.
//!
//! What the directory said is kept per user ([`Known`], in a [`BoundedMap`] keyed by the
//! username's digest) for `ldap.sync_interval`: within it a login whose password is in the
//! password cache costs no directory round trip; past it the account and its groups are read
//! again (the password is bound again only when the cache window is over), so a user removed
//! from a group or from the directory, or disabled, loses access within `sync_interval`.
//! When the directory cannot be reached, a login whose password is still in the cache keeps
//! working with what was last read, until the cache window ends; any other directory login
//! fails with 503 ([`Lookup::Unavailable`]), and [`SourceHealth`] logs it once.
//!
//! This module never decides what anyone may do: it returns a [`Principal::User`] with the
//! [`Memberships`] the group links give, and [`super::policy`] does the rest.

pub mod client;
pub mod filter;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use time::OffsetDateTime;

use self::client::{Account, Answer, Client, DirectoryError};
use super::credentials::{token_digest, AuthFailure, BasicCredentials, Credential, Principal};
use super::directory::RegistryScopes;
use super::identity::{BoxFuture, Health, IdentitySource, Lookup, Memberships, SourceHealth};
use super::password_cache::PasswordCache;
use crate::bounded::BoundedMap;
use crate::config::ldap::LdapSettings;

/// Users remembered at once; past it, idle ones are read again from the directory.
const CAPACITY: usize = 10_000;
/// Longest username sent to the directory (the endpoint refuses longer ones before this).
const MAX_USERNAME_BYTES: usize = 255;

/// What the directory last said of one user.
#[derive(Clone)]
struct Known {
    account: Account,
    /// When the directory said it.
    read_at: Instant,
}

/// Why the directory source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read ldap.ca {path}: {message}")]
    Ca { path: String, message: String },
}

pub struct LdapSource {
    client: Client,
    /// Keyed by the SHA-256 of the username; `None`: was here, now gone from the directory.
    users: Mutex<BoundedMap<[u8; 32], Option<Known>>>,
    /// Directory passwords verified lately, exactly as gateway.yaml's are remembered: under
    /// an HMAC of the username, the DN (the stored side) and the password, for the cache TTL.
    passwords: PasswordCache,
    health: SourceHealth,
}

impl LdapSource {
    pub fn new(settings: &LdapSettings) -> Result<LdapSource, SetupError> {
        let tls = tls_config(settings)?;
        Ok(LdapSource {
            client: Client::new(settings.clone(), Some(Arc::new(tls))),
            users: Mutex::new(BoundedMap::new(CAPACITY)),
            passwords: PasswordCache::default(),
            health: SourceHealth::new("ldap"),
        })
    }

    fn known(&self, key: &[u8; 32]) -> Option<Known> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(key).cloned().flatten()
    }

    fn remember(&self, key: [u8; 32], known: Known) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.insert(key, Some(known));
    }

    /// The directory no longer vouches for this user: drop what was kept, so a cached
    /// password cannot carry them through a later outage. Unknown usernames are not stored
    /// (a stream of made-up names must not push real users out of the map).
    fn forget(&self, key: &[u8; 32]) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = users.get_mut(key) {
            *entry = None;
        }
    }

    /// The principal an account stands for: its uid, the roles its groups link to, and
    /// admin when it is in `ldap.admin_group`.
    fn principal(&self, account: &Account) -> Principal {
        let settings = self.client.settings();
        let mut links: Vec<_> = settings
            .group_links
            .iter()
            .filter(|link| account.groups.contains(&link.cn.to_lowercase()))
            .map(|link| (link.path.clone(), link.role))
            .collect();
        links.sort();
        links.dedup();
        let admin = settings
            .admin_group
            .as_ref()
            .is_some_and(|group| account.groups.contains(&group.to_lowercase()));
        Principal::User {
            username: account.uid.clone(),
            admin,
            scopes: RegistryScopes::ALL,
            credential: Credential::Password,
            memberships: Memberships(links.into()),
        }
    }

    async fn check(&self, credentials: &BasicCredentials) -> Lookup {
        let (username, password) = (&credentials.username, &credentials.secret);
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Lookup::NotMine;
        }
        if password.is_empty() {
            // An empty password is an unauthenticated bind (RFC 4513 5.1.2), which
            // directories answer with success: it is never sent, and never a login.
            return Lookup::Refused(AuthFailure::WrongSecret);
        }
        let key = token_digest(username);
        let now = Instant::now();
        let known = self.known(&key);
        let cached = known.as_ref().filter(|k| {
            self.passwords
                .contains(username, &k.account.dn, password, now)
        });
        let sync_interval = self.client.settings().sync_interval;
        if let Some(known) = cached.filter(|k| now.duration_since(k.read_at) < sync_interval) {
            return Lookup::Found(self.principal(&known.account));
        }
        // Bind again only when the password is not in the cache window.
        let bind = cached.is_none().then_some(password.as_str());
        match self.client.lookup(username, bind).await {
            Ok(answer) => {
                self.health.answered();
                self.settle(key, username, password, cached.is_none(), answer)
            }
            Err(error) => self.unavailable(cached, &error),
        }
    }

    fn settle(
        &self,
        key: [u8; 32],
        username: &str,
        password: &str,
        bound: bool,
        answer: Answer,
    ) -> Lookup {
        match answer {
            Answer::NoSuchUser => {
                self.forget(&key);
                Lookup::NotMine
            }
            Answer::Ambiguous => {
                tracing::warn!(
                    "ldap: more than one directory entry matches one username under ldap.user_base: the login is refused (make ldap.uid_attribute unique, or narrow ldap.user_filter)"
                );
                self.forget(&key);
                Lookup::Refused(AuthFailure::UnknownUser)
            }
            Answer::Disabled => {
                self.forget(&key);
                Lookup::Refused(AuthFailure::UserBlocked)
            }
            Answer::WrongPassword => Lookup::Refused(AuthFailure::WrongSecret),
            Answer::Account(account) => {
                if bound {
                    self.passwords
                        .insert(username, &account.dn, password, Instant::now());
                }
                let principal = self.principal(&account);
                self.remember(
                    key,
                    Known {
                        account,
                        read_at: Instant::now(),
                    },
                );
                Lookup::Found(principal)
            }
        }
    }

    /// The directory did not answer: a password still in the cache window keeps working with
    /// what was last read; anything else is a 503.
    fn unavailable(&self, cached: Option<&Known>, error: &DirectoryError) -> Lookup {
        let why = error.to_string();
        self.health.failed(&why);
        match cached {
            Some(known) => Lookup::Found(self.principal(&known.account)),
            None => Lookup::Unavailable(format!("ldap: {why}")),
        }
    }
}

impl IdentitySource for LdapSource {
    fn name(&self) -> &str {
        "ldap"
    }

    fn authenticate<'a>(
        &'a self,
        credentials: &'a BasicCredentials,
        _now: OffsetDateTime,
    ) -> BoxFuture<'a, Lookup> {
        Box::pin(self.check(credentials))
    }

    fn health(&self) -> Health {
        self.health.health()
    }
}

/// The system's roots plus those of `ldap.ca`, for ldaps:// and StartTLS.
fn tls_config(settings: &LdapSettings) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca {
        let error = |message: String| SetupError::Ca {
            path: path.display().to_string(),
            message,
        };
        for cert in crate::pem::certificates(path).map_err(error)? {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
