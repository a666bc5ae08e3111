//! The shape of `gateway.yaml` on disk, one struct per mapping.
//!
//! Every struct refuses unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting. Values stay strings here; [`super::validate`] gives them types and
//! reports every bad one.

use std::collections::BTreeMap;

use serde::Deserialize;

fn default_listen() -> String {
    "0.0.0.0:4567".into()
}
fn default_issuer() -> String {
    "portcullis".into()
}
fn default_service() -> String {
    "container_registry".into()
}
fn default_expiry() -> String {
    "5m".into()
}
fn default_visibility() -> String {
    "private".into()
}

/// A duration key's text. A bare number is refused here with the fix (`5` could mean seconds
/// or minutes); the text itself is parsed by [`super::parse_duration`] during validation.
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(DurationText)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(DurationText).map(Some)
}

struct DurationText;

impl serde::de::Visitor<'_> for DurationText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as 5m (units: ms, s, m, h, d)")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<String, E> {
        Err(E::custom(format!(
            "{n} has no unit: write a duration such as {n}m or {n}s (units: ms, s, m, h, d)"
        )))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<String, E> {
        Err(E::custom(format!(
            "{n} is not a duration: write one such as 5m (units: ms, s, m, h, d)"
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of keys such as public_url, upstream and token"
)]
pub struct GatewayFile {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub public_url: String,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    pub upstream: UpstreamFile,
    pub token: TokenFile,
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub brute_force: BruteForceFile,
    #[serde(default)]
    pub push_grace: PushGraceFile,
    #[serde(default)]
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub audit: Option<AuditFile>,
    #[serde(default)]
    pub users: Vec<UserFile>,
    #[serde(default)]
    pub groups: Vec<GroupFile>,
    #[serde(default)]
    pub projects: Vec<ProjectFile>,
    /// CI workload identity: issuers whose OIDC ID tokens log in (see `super::federation`).
    #[serde(default)]
    pub federation: Vec<super::federation::FederationFile>,
    /// The CI job tokens' own key.
    #[serde(default)]
    pub ci: Option<super::federation::CiFile>,
    /// The directory service users may log in with (see [`super::ldap`]).
    #[serde(default)]
    pub ldap: Option<super::ldap::LdapFile>,
    /// State shared by several replicas (Redis); absent: in-process.
    #[serde(default)]
    pub shared_state: Option<SharedStateFile>,
    #[serde(default)]
    pub store: Option<StoreFile>,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub page: PageFile,
}

/// Where tokens made through the API are kept (issue 18).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url (sqlite:///path or postgres://...)"
)]
pub struct StoreFile {
    #[serde(default)]
    pub url: Option<String>,
}

/// Rules for tokens made through the API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with max_lifetime")]
pub struct TokensFile {
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_lifetime: Option<String>,
}

/// The token page's sessions (`crate::page`); absent keys take the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with session_idle_timeout, session_lifetime and max_sessions"
)]
pub struct PageFile {
    #[serde(default, deserialize_with = "optional_duration")]
    pub session_idle_timeout: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub session_lifetime: Option<String>,
    #[serde(default)]
    pub max_sessions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cert and key (paths of PEM files)"
)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url (and optionally ca, connect_timeout, response_timeout)"
)]
pub struct UpstreamFile {
    pub url: String,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub connect_timeout: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub response_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with signing_key and certificate (paths of PEM files)"
)]
pub struct TokenFile {
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_expiry", deserialize_with = "duration")]
    pub expiry: String,
    pub signing_key: String,
    pub certificate: String,
    /// Certificates of retired signing keys: their tokens keep verifying until they expire.
    #[serde(default)]
    pub previous_certificates: Vec<String>,
    /// `x5c` (default) or `jwks`: how a registry token's header names its key.
    #[serde(default)]
    pub header: Option<String>,
    /// How long a refresh token lives (default 90d).
    #[serde(default)]
    pub refresh_lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of server settings")]
pub struct ServerFile {
    #[serde(default, deserialize_with = "optional_duration")]
    pub header_read_timeout: Option<String>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default)]
    pub max_upstream_requests: Option<usize>,
    #[serde(default)]
    pub max_upstream_requests_per_connection: Option<usize>,
    #[serde(default)]
    pub max_upstream_requests_per_client: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub upstream_queue_timeout: Option<String>,
    #[serde(default)]
    pub min_body_rate: Option<u64>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub body_rate_window: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub token_request_timeout: Option<String>,
    /// TLS ends in a proxy in front of the gateway: an https `public_url` over a plain listener
    /// is then intended, and `check`/`serve` do not warn about it.
    #[serde(default)]
    pub behind_tls_proxy: Option<bool>,
    /// Address blocks (CIDRs) of the balancers and proxies whose word about the client's
    /// address is taken (X-Forwarded-For, and who may send the PROXY protocol header).
    #[serde(default)]
    pub trusted_proxies: Option<Vec<String>>,
    /// Every connection starts with a PROXY protocol v2 header (a TCP balancer in front).
    #[serde(default)]
    pub proxy_protocol: Option<bool>,
}

/// The operations listener: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listen (an address:port)"
)]
pub struct MetricsFile {
    pub listen: String,
}

/// Where audit records go: a file path, or `-` for standard output.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with path (a file, or - for standard output)"
)]
pub struct AuditFile {
    pub path: String,
}

/// Keeping long pushes alive past their token's expiry.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with enabled and max_session"
)]
pub struct PushGraceFile {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_session: Option<String>,
}

/// Bans after failed logins; absent keys take GitLab's defaults (30 within 3 minutes ban for 1h).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with max_failures, window and ban"
)]
pub struct BruteForceFile {
    #[serde(default)]
    pub max_failures: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub window: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub ban: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with format and level")]
pub struct LogFile {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// A tracing filter such as `info` or `portcullis=debug`; `RUST_LOG` wins when set.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with username (and password_hash, personal_access_tokens, ...)"
)]
pub struct UserFile {
    pub username: String,
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub blocked: bool,
    /// Two-factor authentication: the password no longer works for the registry, tokens do.
    #[serde(default)]
    pub two_factor: bool,
    /// GitLab's external users: no access to internal projects they are not members of.
    #[serde(default)]
    pub external: bool,
    /// GitLab's `access_locked`: no credential signs in.
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub personal_access_tokens: Vec<PersonalAccessTokenFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name, token_sha256 and scopes"
)]
pub struct PersonalAccessTokenFile {
    pub name: String,
    pub token_sha256: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

/// A project or a group: the same keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with path (and visibility, members, ...)"
)]
pub struct ProjectFile {
    pub path: String,
    #[serde(default = "default_visibility")]
    pub visibility: String,
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    #[serde(default)]
    pub deploy_tokens: Vec<DeployTokenFile>,
    #[serde(default)]
    pub access_tokens: Vec<AccessTokenFile>,
    /// Project settings (refused on groups): `enabled` (default), `private` or `disabled`.
    #[serde(default)]
    pub container_registry_access_level: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
    /// Projects or groups whose CI jobs may pull here; absent: the setting is off.
    #[serde(default)]
    pub job_token_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub container_protection: Option<ContainerProtectionFile>,
}

pub type GroupFile = ProjectFile;

/// GitLab's container repository protection rules, protected tags and immutable tags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with repositories, tags and immutable_tags"
)]
pub struct ContainerProtectionFile {
    #[serde(default)]
    pub repositories: Vec<RepositoryProtectionFile>,
    #[serde(default)]
    pub tags: Vec<TagProtectionFile>,
    /// RE2 patterns of tags that, once pushed, are never overwritten or deleted.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with repository_path_pattern and minimum_access_level_for_push"
)]
pub struct RepositoryProtectionFile {
    /// `*` wildcards; starts with the project's path.
    pub repository_path_pattern: String,
    pub minimum_access_level_for_push: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with tag_name_pattern, minimum_access_level_for_push and minimum_access_level_for_delete"
)]
pub struct TagProtectionFile {
    /// RE2, matched anywhere in the tag unless anchored.
    pub tag_name_pattern: String,
    pub minimum_access_level_for_push: String,
    pub minimum_access_level_for_delete: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with username, token_sha256 and scopes"
)]
pub struct DeployTokenFile {
    /// GitLab's `gitlab+deploy-token-N`, or a custom name.
    pub username: String,
    pub token_sha256: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with username, token_sha256, role and scopes"
)]
pub struct AccessTokenFile {
    /// The bot identity's username.
    pub username: String,
    pub token_sha256: String,
    pub role: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

/// `shared_state:`: where several replicas keep bans, upload sessions, detector observations
/// and revocations (see `crate::shared`).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with redis, key_prefix and timeout"
)]
pub struct SharedStateFile {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis: String,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<String>,
}
