//! `gateway.yaml`: its shape on disk, and the validated [`Config`] the gateway runs on.
//!
//! Loading is two steps. [`file`] mirrors the YAML exactly (serde, unknown keys refused with
//! their path, every one of them listed by [`shape`]); [`validate`] turns it into typed values and collects every problem it finds,
//! each naming its key, so `portcullis check` can list them all at once.

mod direct;
mod directory;
mod duration;
mod env;
pub mod federation;
pub mod file;
pub mod ldap;
pub mod reload;
mod settings;
mod shape;
mod split;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;
pub(crate) use shape::distance as edit_distance;

use crate::auth::directory::Directory;

/// One thing wrong with the configuration, and the key where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key's path, for example `users[0].personal_access_tokens[1].token_sha256`.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {} problem(s):\n{}", path.display(), problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Every problem, for listing one per line.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem::new(
                "",
                format!("cannot read {}: {source}", path.display()),
            )],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// The public address clients use, e.g. `https://registry.example.com:4567`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]` exactly as written.
    pub authority: String,
}

impl PublicUrl {
    /// `scheme://authority`, no trailing slash.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The token endpoint clients are sent to: `public_url + "/jwt/auth"`.
    pub fn realm(&self) -> String {
        format!("{}/jwt/auth", self.origin())
    }
}

/// Where the TLS certificate chain and key live (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The registry behind the gateway.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Scheme and authority only, e.g. `http://127.0.0.1:5000`.
    pub url: http::Uri,
    /// Extra CA certificate(s) to trust for an `https` upstream.
    pub ca: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// How long the registry may take to start answering once the request body is sent.
    pub response_timeout: Duration,
}

/// How tokens are issued: the values the registry's `auth.token` must match.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub service: String,
    pub expiry: Duration,
    pub signing_key: PathBuf,
    pub certificate: PathBuf,
    /// Certificates of retired signing keys, still accepted until their tokens expire.
    pub previous_certificates: Vec<PathBuf>,
    /// How a registry token's header names its key (`token.header`).
    pub header: TokenHeader,
    /// How long a refresh token (docker's stored identity token) lives at most
    /// (`token.refresh_lifetime`); never longer than the credential it came from.
    pub refresh_lifetime: Duration,
}

/// How a registry token's header names the key that signed it (`token.header`).
///
/// distribution 3.x checks an `x5c` chain against its `rootcertbundle` first and fails the
/// token if the chain is not there, without looking at `kid`; only a token with no `x5c` and an
/// RFC 7638 `kid` is looked up in its `auth.token.jwks` file. So one header cannot serve both.
/// distribution 2.8 verifies an `x5c` chain when there is one, and otherwise looks the `kid`
/// up among its `rootcertbundle`'s keys by libtrust key id: that is `kid` mode, the shortest
/// token (no certificate), which matters because clients resend the whole token with every
/// request (HTTP/2 clients never index it in HPACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenHeader {
    /// `kid` (libtrust) and `x5c` (the certificate chain): distribution 2.8, 3.x with
    /// `rootcertbundle`, Zot.
    #[default]
    X5c,
    /// `kid` = the RFC 7638 thumbprint `/jwt/jwks.json` publishes, no `x5c`: distribution 3.x
    /// with only `auth.token.jwks`.
    Jwks,
    /// `kid` = the libtrust key id, no `x5c` (what GitLab issues): distribution 2.8 with
    /// `rootcertbundle` (its trusted keys are keyed by libtrust id) and Zot (which verifies
    /// with its `http.auth.bearer.cert` key whatever the header says). Not distribution 3.x:
    /// it keys its trusted keys by RFC 7638 thumbprint and refuses a libtrust `kid`.
    Kid,
}

impl std::str::FromStr for TokenHeader {
    type Err = String;
    fn from_str(text: &str) -> Result<TokenHeader, String> {
        match text {
            "x5c" => Ok(TokenHeader::X5c),
            "jwks" => Ok(TokenHeader::Jwks),
            "kid" => Ok(TokenHeader::Kid),
            other => Err(format!(
                "{other:?} is not a header mode: x5c (the default: the certificate in the header, for distribution 2.8, 3.x with rootcertbundle, and Zot), jwks (an RFC 7638 kid and no certificate, for distribution 3.x trusting only its auth.token.jwks file) or kid (the libtrust kid and no certificate, the shortest token: for distribution 2.8 with rootcertbundle and Zot, not distribution 3.x)"
            )),
        }
    }
}

/// Push grace settings (on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushGrace {
    pub enabled: bool,
    /// No session is extended beyond this age.
    pub max_session: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of the listener that protect it from slow or oversized clients.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its request headers within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// A connection with no request under way and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond it, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long requests under way may run before the process exits.
    pub shutdown_grace: Duration,
    /// Threads serving connections (default: the cores this process may use).
    pub workers: usize,
    /// Requests being sent to the registry at once, all clients together: each holds one
    /// registry connection (a file descriptor) while its body streams.
    pub max_upstream_requests: usize,
    /// The share of `max_upstream_requests` one client connection may hold, so one client
    /// (an HTTP/2 connection opening 100 streams) cannot take what the others need.
    pub max_upstream_requests_per_connection: usize,
    /// The share one client address may hold over all its connections, so one client with
    /// many connections cannot take what the others need either.
    pub max_upstream_requests_per_client: usize,
    /// How long a request waits for a free upstream slot before it is refused.
    pub upstream_queue_timeout: Duration,
    /// A request body must arrive at least this fast (bytes/s) ...
    pub min_body_rate: u64,
    /// ... averaged over this window of time spent waiting for the client.
    pub body_rate_window: Duration,
    /// A whole `/jwt/auth` request (its small form included) must be answered within this.
    pub token_request_timeout: Duration,
    /// TLS is terminated by a proxy in front of the gateway (nginx, a load balancer), so an
    /// https `public_url` with no `tls:` here is intended rather than a mistake.
    pub behind_tls_proxy: bool,
    /// `server.trusted_proxies`: whose X-Forwarded-For names the client (see
    /// `server::client_addr`), and who may send a PROXY protocol header.
    pub trusted_proxies: crate::server::client_addr::TrustedProxies,
    /// `server.proxy_protocol`: every connection must start with a PROXY protocol v2 header
    /// (see `server::proxy_protocol`).
    pub proxy_protocol: bool,
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (relative paths were resolved against its folder).
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub public_url: PublicUrl,
    pub tls: Option<TlsFiles>,
    pub upstream: UpstreamSettings,
    pub token: TokenSettings,
    pub server: ServerSettings,
    pub log_format: LogFormat,
    /// Push grace: extend upload sessions whose token expired mid-push.
    pub push_grace: PushGrace,
    /// Bans after failed logins.
    pub brute_force: crate::auth::brute_force::Limits,
    pub log_level: Option<String>,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`); `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// The audit log; `None` = off.
    pub audit: Option<AuditTarget>,
    /// Users, their credentials, and projects with their members.
    pub directory: Directory,
    /// CI workload identity (`federation:`): issuers whose ID tokens log in.
    pub federation: Vec<federation::Federation>,
    /// `ci.signing_key`: the key CI job tokens are signed with; `None`: `token.signing_key`.
    pub ci_signing_key: Option<PathBuf>,
    /// The directory service (`ldap:`); `None` = off.
    pub ldap: Option<ldap::LdapSettings>,
    /// `shared_state:`: Redis for several replicas; `None` = in-process (one replica).
    pub shared_state: Option<crate::shared::Settings>,
    /// `store.url`: where tokens made through the API live (default: `sqlite://` a file
    /// `portcullis.db` beside gateway.yaml).
    pub store_url: String,
    /// `tokens.max_lifetime` in days: the longest a token made through the API may live, and
    /// the expiry of one made without a date (GitLab's 365 days).
    pub token_max_lifetime_days: i64,
    /// The token page's session limits (`page:`).
    pub page: crate::page::session::SessionLimits,
}

impl Config {
    /// Read, expand and validate a `gateway.yaml`, a large one on every core (start-up and
    /// `portcullis check`: nothing else is running yet).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, true)
    }

    /// [`Config::load`] on this thread alone, for a reload: the gateway is serving, and the
    /// other cores are its requests' (a reload on both of this machine's two cores let a
    /// request wait past wrk's 2 s timeout).
    pub fn load_beside_traffic(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, every_core: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let lookup = |name: &str| std::env::var(name).ok();
        let config = Self::from_yaml_on(&text, path, &lookup, every_core);
        drop(text);
        release_freed_memory();
        config
    }

    /// Parse and validate YAML text as if it had been read from `path`.
    pub fn from_yaml(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::from_yaml_on(text, path, lookup, true)
    }

    /// [`Config::from_yaml`], a large file's lists read on every core or not.
    fn from_yaml_on(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
        every_core: bool,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        // Straight from the text when that reads it exactly as the tree below would (no `${`,
        // no tags, ...): the tree was most of a large directory's load. A large file's lists
        // are read on every core when the text is simple enough to cut (`split`); if it is not,
        // or any piece fails, the whole text is read in one piece. Anything else, errors
        // included, takes the tree path, which reports every problem as it always has.
        let pieces = every_core.then(|| split::read(text)).flatten();
        if let Some(raw) = pieces.or_else(|| direct::read(text)) {
            return validate::validate(raw, base, path, every_core).map_err(invalid);
        }
        Self::from_tree(text, path, base, invalid, lookup, every_core)
    }

    /// [`Config::from_yaml`] through serde_yaml's `Value` tree: `${VAR}` expansion, and every
    /// shape problem listed with its key.
    fn from_tree(
        text: &str,
        path: &Path,
        base: &Path,
        invalid: impl Fn(Vec<Problem>) -> ConfigError,
        lookup: &dyn Fn(&str) -> Option<String>,
        every_core: bool,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| invalid(vec![Problem::new("", format!("not valid YAML: {e}"))]))?;
        if value.is_null() {
            return Err(invalid(vec![Problem::new("", "the file is empty")]));
        }
        let mut problems = Vec::new();
        env::expand_tree(&mut value, "", lookup, &mut problems);
        let shape = shape::read(value, &mut problems);
        let Some(raw) = shape.file else {
            return Err(invalid(problems));
        };
        // A key already blamed for its shape holds a stand-in: what validation says of it
        // would only repeat the problem, or be about a value the user never wrote.
        let real = |p: &Problem| {
            !shape.blamed.iter().any(|key| {
                p.key == *key
                    || p.key
                        .strip_prefix(key.as_str())
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            })
        };
        match validate::validate(raw, base, path, every_core) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(invalid(problems)),
            Err(more) => {
                problems.extend(more.into_iter().filter(real));
                Err(invalid(problems))
            }
        }
    }
}

/// Whether reading `text` straight into the file's structs (the fast path [`Config::from_yaml`]
/// takes when it can) gives exactly what the `Value` tree gives: `Err` says how they differ.
/// For the `config` fuzz target.
#[doc(hidden)]
pub fn direct_read_agrees_with_tree(text: &str) -> Result<(), String> {
    direct::agrees_with_tree(text)
}

/// Whether reading `text` cut into pieces on several cores (what [`Config::from_yaml`] does
/// with a large file) gives exactly what reading it whole gives, whenever it is cut at all:
/// `Err` says how they differ. For the `config` fuzz target.
#[doc(hidden)]
pub fn split_read_agrees_with_single(text: &str) -> Result<(), String> {
    split::agrees_with_single(text)
}

/// Give the memory a load freed back to the kernel. Reading a large directory (100,000
/// projects) allocates several times what the directory keeps (the text, the YAML tree, the
/// file's structs); the allocator keeps freed memory for reuse, and without this the process stayed at
/// its peak of the parse (hundreds of MiB) for good.
pub(crate) fn release_freed_memory() {
    crate::alloc::release_freed_memory();
}
