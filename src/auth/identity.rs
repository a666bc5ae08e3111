//! Identity sources: where a credential is recognised, and what memberships come with it.
//!
//! gateway.yaml's directory is always there; the directory service (LDAP), CI workload
//! identity (OIDC federation) and the token store (tokens made through the API) plug in
//! beside it through [`IdentitySource`]. A source answers one question: "who is this
//! credential, and what are their memberships". It never decides what they may do: that is
//! [`super::policy`], a pure function of the [`Principal`] it returns and the resource.
//!
//! Sources are asked in a fixed order (see [`Identities`]); the first one that does not say
//! [`Lookup::NotMine`] decides. A source that cannot be reached says
//! [`Lookup::Unavailable`]: the login fails with a 503 naming the source, and the other
//! sources keep working.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::OffsetDateTime;

use super::credentials::{AuthFailure, BasicCredentials, Principal};
use super::directory::Role;
use super::scope::RepositoryName;

/// A boxed future, so the trait stays object safe without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one source says of a Basic credential.
#[derive(Debug)]
pub enum Lookup {
    /// Not a credential of this source: ask the next one.
    NotMine,
    /// Recognised and good.
    Found(Principal),
    /// Recognised and refused (wrong password, disabled account, ...).
    Refused(AuthFailure),
    /// The source could not answer (directory down, issuer unreachable). The text is for
    /// the log and names what failed; it never contains a secret.
    Unavailable(String),
}

/// Whether a source can answer now, for `/readyz` and the per-source gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Answers nothing new; what the text says (never a secret).
    Degraded(String),
}

/// One place identities come from.
pub trait IdentitySource: Send + Sync {
    /// A short stable name for logs, metrics and `/readyz` (`ldap`, `federation:github`,
    /// `store`).
    fn name(&self) -> &str;

    /// Recognise `credentials`. Must never log the secret; must spend bounded time (every
    /// network call under a timeout).
    fn authenticate<'a>(
        &'a self,
        credentials: &'a BasicCredentials,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Lookup>;

    /// Whether the source can answer now.
    fn health(&self) -> Health {
        Health::Up
    }
}

/// Memberships a source vouches for beside gateway.yaml's `members:` (LDAP group links): a
/// role in a group or project path, which reaches every project at or below it, as a
/// group membership does. The policy takes the highest role that applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memberships(pub Arc<[(RepositoryName, Role)]>);

impl Memberships {
    /// The highest role these memberships give in the project at `path`.
    pub fn role_in(&self, path: &RepositoryName) -> Option<Role> {
        self.0
            .iter()
            .filter(|(at, _)| path.is_within(at))
            .map(|(_, role)| *role)
            .max()
    }

    /// [`Memberships::role_in`] as gateway.yaml's `members:` work: a role in a GROUP reaches
    /// every project at or below it; a role in a PROJECT is that project's alone (a project
    /// nested below it is a project of its own, with members of its own). `is_group` says
    /// which paths are groups.
    pub fn role_in_project(
        &self,
        project: &RepositoryName,
        is_group: impl Fn(&RepositoryName) -> bool,
    ) -> Option<Role> {
        self.0
            .iter()
            .filter(|(at, _)| at == project || (project.is_within(at) && is_group(at)))
            .map(|(_, role)| *role)
            .max()
    }
}

/// The sources beside gateway.yaml, in the order they are asked.
#[derive(Clone, Default)]
pub struct Identities {
    sources: Vec<Arc<dyn IdentitySource>>,
}

impl Identities {
    pub fn new(sources: Vec<Arc<dyn IdentitySource>>) -> Identities {
        Identities { sources }
    }

    pub fn sources(&self) -> &[Arc<dyn IdentitySource>] {
        &self.sources
    }

    /// Ask each source in turn; the first that is not [`Lookup::NotMine`] decides.
    pub async fn authenticate(
        &self,
        credentials: &BasicCredentials,
        now: OffsetDateTime,
    ) -> Lookup {
        for source in &self.sources {
            match source.authenticate(credentials, now).await {
                Lookup::NotMine => continue,
                decided => return decided,
            }
        }
        Lookup::NotMine
    }
}

/// Whether a source's last exchange with its service worked: what [`IdentitySource::health`]
/// reports, `portcullis_identity_source_up{source}` shows, and the log says ONCE per change
/// (one ERROR when an outage starts, one INFO when it ends), never once per request.
pub struct SourceHealth {
    name: String,
    /// Why the source is down; `None` while it answers.
    down: std::sync::Mutex<Option<String>>,
}

impl SourceHealth {
    /// A source that has not failed yet (its gauge starts at 1).
    pub fn new(name: impl Into<String>) -> SourceHealth {
        let name = name.into();
        crate::telemetry::metrics::metrics().identity_source_up(&name, true);
        SourceHealth {
            name,
            down: std::sync::Mutex::new(None),
        }
    }

    /// The service answered (whatever it said).
    pub fn answered(&self) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.take().is_some() {
            crate::telemetry::metrics::metrics().identity_source_up(&self.name, true);
            tracing::info!(source = ?self.name, "identity source {} answers again: its logins work", self.name);
        }
    }

    /// The service could not be reached; `why` names what failed (never a secret).
    pub fn failed(&self, why: &str) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_none() {
            crate::telemetry::metrics::metrics().identity_source_up(&self.name, false);
            tracing::error!(source = ?self.name, error = ?why, "identity source {} cannot be reached: its logins fail with 503 until it answers again (logins still in the password cache keep working; gateway.yaml users and tokens are not affected)", self.name);
        }
        *down = Some(why.to_owned());
    }

    pub fn health(&self) -> Health {
        match &*self.down.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Health::Up,
            Some(why) => Health::Degraded(why.clone()),
        }
    }
}
