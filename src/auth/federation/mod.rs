//! CI workload identity: an OIDC ID token is the password (`docker login -u oidc`).
//!
//! A GitHub Actions job, a GitLab CI job (`id_tokens:`) or a Kubernetes pod (a projected
//! service-account token) holds an ID token signed by its platform. The gateway checks it
//! against the keys the issuer publishes, and grants what the `federation:` rules its claims
//! match say. Nothing secret is stored anywhere.
//!
//! The username rule: the Basic username `oidc` (exactly) says "the password is an ID
//! token"; the token's `iss` (and `aud`) pick the federation. Any other username is not ours,
//! so an ID token can never be mistaken for a password or an access token, nor the reverse.
//!
//! - [`fetch`]: discovery and JWKS over HTTPS, bounded in time and size.
//! - [`keys`]: the issuer's keys, cached and refreshed.
//! - [`verify`]: one token's checks.
//! - [`rules`]: claims to grants (pure).
//!
//! Never logged: the token, or any part of it. Logged: the federation, the `sub` and the
//! reason a token was refused.

pub mod fetch;
pub mod keys;
pub mod rules;
pub mod verify;

use std::sync::Arc;

use time::OffsetDateTime;

use super::credentials::{AuthFailure, BasicCredentials, Principal};
use super::identity::{BoxFuture, Health, IdentitySource, Lookup};
use crate::config::federation::{Federation, OIDC_USERNAME};
use keys::{IssuerKeys, KeyLookup};
use rules::Grant;
use verify::IdTokenError;

/// A principal that logged in with an ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federated {
    /// `federation:<name>:<sub>`: the registry token's `sub`, the audit record's `user`.
    pub account: String,
    pub federation: String,
    pub issuer: String,
    /// The token's `sub` claim.
    pub subject: String,
    /// Every matching rule's grant.
    pub grants: Vec<Grant>,
    /// `claim=value` of the claims the matching rules looked at, for the audit log.
    pub matched: Vec<String>,
}

impl Federated {
    /// The actions the grants give on a repository owned by the project at `project`.
    pub fn actions_in(&self, project: &super::scope::RepositoryName) -> super::scope::Actions {
        self.grants
            .iter()
            .filter(|g| project.is_within(&g.path))
            .fold(super::scope::Actions::NONE, |set, g| set.union(g.actions))
    }
}

struct Issuer {
    settings: Federation,
    keys: IssuerKeys,
}

/// Every `federation:` entry, as one identity source.
pub struct FederationSource {
    issuers: Vec<Issuer>,
}

impl FederationSource {
    pub fn new(federations: &[Federation]) -> Result<FederationSource, fetch::CaError> {
        let issuers = federations
            .iter()
            .map(|f| {
                let fetcher = fetch::Fetcher::new(f.ca.as_deref())?;
                Ok(Issuer {
                    keys: IssuerKeys::new(&f.name, &f.issuer, f.jwks_uri.clone(), fetcher),
                    settings: f.clone(),
                })
            })
            .collect::<Result<_, fetch::CaError>>()?;
        Ok(FederationSource { issuers })
    }

    async fn check(&self, secret: &str, now: OffsetDateTime) -> Lookup {
        let refused = |federation: Option<&str>, error: IdTokenError| {
            Lookup::Refused(AuthFailure::IdToken {
                federation: federation.map(str::to_owned),
                error,
            })
        };
        let token = secret.trim();
        let peeked = match verify::peek(token) {
            Ok(peeked) => peeked,
            Err(error) => return refused(None, error),
        };
        // The issuer, and among federations of one issuer the audience, pick the federation.
        let Some(issuer) = self
            .issuers
            .iter()
            .filter(|i| i.settings.issuer == peeked.issuer)
            .max_by_key(|i| peeked.audiences.contains(&i.settings.audience))
        else {
            return refused(
                None,
                IdTokenError::UnknownIssuer(peeked.issuer.chars().take(200).collect()),
            );
        };
        let name = issuer.settings.name.as_str();
        let key = match issuer.keys.key(&peeked.kid).await {
            Ok(key) => key,
            Err(KeyLookup::Unknown) => {
                return refused(
                    Some(name),
                    IdTokenError::UnknownKey(peeked.kid.chars().take(100).collect()),
                )
            }
            Err(KeyLookup::Unavailable(why)) => return Lookup::Unavailable(why),
        };
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let claims = match verify::verify(
            token,
            &peeked,
            &key,
            &issuer.settings.issuer,
            &issuer.settings.audience,
            issuer.settings.max_token_age,
            unix,
        ) {
            Ok(claims) => claims,
            Err(error) => return refused(Some(name), error),
        };
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        match rules::evaluate(&issuer.settings.rules, &claims) {
            Ok(earned) => Lookup::Found(Principal::Federated(Arc::new(Federated {
                account: format!("federation:{name}:{subject}"),
                federation: name.to_owned(),
                issuer: issuer.settings.issuer.clone(),
                subject,
                grants: earned.grants,
                matched: earned.matched,
            }))),
            Err(miss) => Lookup::Refused(AuthFailure::NoFederationRule {
                federation: name.to_owned(),
                subject,
                failed: miss.failed.join("; "),
            }),
        }
    }
}

impl IdentitySource for FederationSource {
    fn name(&self) -> &str {
        "federation"
    }

    fn authenticate<'a>(
        &'a self,
        credentials: &'a BasicCredentials,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            if credentials.username != OIDC_USERNAME || self.issuers.is_empty() {
                return Lookup::NotMine;
            }
            self.check(&credentials.secret, now).await
        })
    }

    fn health(&self) -> Health {
        let down: Vec<String> = self
            .issuers
            .iter()
            .filter_map(|i| {
                i.keys
                    .outage()
                    .map(|why| format!("federation {:?}: {why}", i.settings.name))
            })
            .collect();
        if down.is_empty() {
            Health::Up
        } else {
            Health::Degraded(down.join("; "))
        }
    }
}
