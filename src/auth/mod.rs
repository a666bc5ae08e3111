//! The token service: who is asking, what they may do, and the signed token that says so.
//!
//! - [`scope`]: the scope grammar and repository names.
//! - [`directory`]: users, credentials, projects, roles.
//! - [`identity`]: identity sources beside gateway.yaml (LDAP, federation, the token store).
//! - [`ldap`]: the directory service (LDAP, Active Directory) as an identity source.
//! - [`credentials`]: turning a Basic `Authorization` header into a [`credentials::Principal`].
//! - [`password_cache`]: remembering successful password checks, bounded.
//! - [`brute_force`]: bans after too many failed logins.
//! - [`slow_hash`]: password hashes run bounded, and a dummy one for unknown users.
//! - [`policy`]: GitLab's rules and down-scoping (pure functions).
//! - [`protection`]: project and user settings, container protection rules (pure functions).
//! - [`keys`]: the signing key, its certificate, key ids.
//! - [`ci_key`]: `ci.signing_key`, the CI job tokens' own key.
//! - [`token`]: minting and verifying JWTs.
//! - [`endpoint`]: the `/jwt/auth` endpoint.
//! - [`federation`]: CI workload identity, an OIDC ID token as the password.

pub mod brute_force;
pub mod ci_key;
pub mod credentials;
pub mod directory;
pub mod endpoint;
pub mod federation;
pub mod identity;
pub mod keys;
pub mod ldap;
pub mod password_cache;
pub mod policy;
pub mod protection;
pub mod scope;
pub mod slow_hash;
pub mod token;
pub mod verdicts;
