//! From the file's strings to typed settings, collecting every problem with its key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use time::{macros::format_description, Date, OffsetDateTime, PrimitiveDateTime, Time};

use super::file::GatewayFile;
use super::{
    parse_duration, Config, LogFormat, Problem, PublicUrl, ServerSettings, TlsFiles, TokenHeader,
    TokenSettings, UpstreamSettings,
};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Well under the usual 1,024 open files of a service, leaving room for client connections.
const DEFAULT_MAX_UPSTREAM_REQUESTS: usize = 256;
/// A pull or push runs 3 to 5 transfers at once; 16 leaves room for several clients behind
/// one connection (a proxy) while one attacker holds at most 1/16 of the registry slots.
const DEFAULT_MAX_UPSTREAM_REQUESTS_PER_CONNECTION: usize = 16;
const DEFAULT_MAX_UPSTREAM_REQUESTS_PER_CLIENT: usize = 64;
const DEFAULT_UPSTREAM_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// 1 KiB/s: far below any real uplink, far above a byte-a-second dribble.
const DEFAULT_MIN_BODY_RATE: u64 = 1024;
const DEFAULT_BODY_RATE_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `token.refresh_lifetime` bounds: an hour at least (docker refreshes with it all day), 400
/// days at most (the longest GitLab lets any token live).
const MIN_REFRESH_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_REFRESH_LIFETIME: Duration = Duration::from_secs(400 * 86_400);
/// More threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Collects problems while turning values into types.
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    /// Record the error of `result` under `key`; give back the value if there was one.
    pub(super) fn check<T>(
        &mut self,
        key: impl Into<String>,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.problems.push(Problem::new(key, message));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(text) => self.check(key, parse_duration(text)).unwrap_or(default),
        }
    }
}

/// `every_core`: start-up or `portcullis check` (a large directory is indexed on two threads),
/// not a reload beside traffic.
pub(super) fn validate(
    raw: GatewayFile,
    base: &Path,
    source: &Path,
    every_core: bool,
) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let resolve = |p: &str| base.join(p);

    let listen = c.check("listen", parse_listen(&raw.listen));
    let public_url = c.check("public_url", parse_public_url(&raw.public_url));
    let upstream_url = c.check("upstream.url", parse_upstream_url(&raw.upstream.url));
    if let (Some(url), None) = (&upstream_url, &raw.upstream.ca) {
        let _ = url; // plain http or https with the system's roots: both fine without `ca`.
    }
    let upstream_ca = raw.upstream.ca.as_deref().map(resolve);
    if upstream_ca.is_some() && upstream_url.as_ref().and_then(|u| u.scheme_str()) == Some("http") {
        c.problems.push(Problem::new(
            "upstream.ca",
            "a CA only applies to an https upstream, but upstream.url is http",
        ));
    }
    let connect_timeout = c.duration(
        "upstream.connect_timeout",
        raw.upstream.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let response_timeout = c.duration(
        "upstream.response_timeout",
        raw.upstream.response_timeout.as_deref(),
        DEFAULT_RESPONSE_TIMEOUT,
    );

    let expiry = c.duration("token.expiry", Some(&raw.token.expiry), Duration::ZERO);
    if raw.token.expiry.trim() != ""
        && expiry.is_zero()
        && c.problems.iter().all(|p| p.key != "token.expiry")
    {
        c.problems
            .push(Problem::new("token.expiry", "must be longer than 0s"));
    }
    let header = match raw.token.header.as_deref() {
        None => TokenHeader::default(),
        Some(text) => c
            .check("token.header", text.trim().parse())
            .unwrap_or_default(),
    };
    let refresh_lifetime = c.duration(
        "token.refresh_lifetime",
        raw.token.refresh_lifetime.as_deref(),
        crate::auth::credentials::REFRESH_TTL,
    );
    if c.problems.iter().all(|p| p.key != "token.refresh_lifetime")
        && !(MIN_REFRESH_LIFETIME..=MAX_REFRESH_LIFETIME).contains(&refresh_lifetime)
    {
        c.problems.push(Problem::new(
            "token.refresh_lifetime",
            format!(
                "must be between 1h and 400d (GitLab's longest token lifetime), not {}s",
                refresh_lifetime.as_secs()
            ),
        ));
    }
    for (key, value) in [
        ("token.issuer", &raw.token.issuer),
        ("token.service", &raw.token.service),
    ] {
        if value.trim().is_empty() {
            c.problems.push(Problem::new(key, "must not be empty"));
        }
    }

    let header_read_timeout = c.duration(
        "server.header_read_timeout",
        raw.server.header_read_timeout.as_deref(),
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    let max_header_bytes = raw
        .server
        .max_header_bytes
        .unwrap_or(DEFAULT_MAX_HEADER_BYTES);
    if max_header_bytes < 8192 {
        c.problems.push(Problem::new(
            "server.max_header_bytes",
            "must be at least 8192 (docker sends long Authorization headers)",
        ));
    }

    let idle_timeout = c.duration(
        "server.idle_timeout",
        raw.server.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    if idle_timeout.is_zero() {
        c.problems.push(Problem::new(
            "server.idle_timeout",
            "must be longer than 0s",
        ));
    }
    let max_connections = raw
        .server
        .max_connections
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        c.problems
            .push(Problem::new("server.max_connections", "must be at least 1"));
    }
    let workers = raw
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !(1..=MAX_WORKERS).contains(&workers) {
        c.problems.push(Problem::new(
            "server.workers",
            format!("must be between 1 and {MAX_WORKERS} (threads serving connections; leave it out for one per core)"),
        ));
    }
    let shutdown_grace = c.duration(
        "server.shutdown_grace",
        raw.server.shutdown_grace.as_deref(),
        DEFAULT_SHUTDOWN_GRACE,
    );
    let max_upstream_requests = raw
        .server
        .max_upstream_requests
        .unwrap_or(DEFAULT_MAX_UPSTREAM_REQUESTS);
    if max_upstream_requests == 0 {
        c.problems.push(Problem::new(
            "server.max_upstream_requests",
            "must be at least 1",
        ));
    }
    let max_upstream_requests_per_connection = raw
        .server
        .max_upstream_requests_per_connection
        .unwrap_or(DEFAULT_MAX_UPSTREAM_REQUESTS_PER_CONNECTION.min(max_upstream_requests));
    if max_upstream_requests_per_connection == 0
        || max_upstream_requests_per_connection > max_upstream_requests
    {
        c.problems.push(Problem::new(
            "server.max_upstream_requests_per_connection",
            format!("must be between 1 and server.max_upstream_requests ({max_upstream_requests})"),
        ));
    }
    let max_upstream_requests_per_client = raw
        .server
        .max_upstream_requests_per_client
        .unwrap_or(DEFAULT_MAX_UPSTREAM_REQUESTS_PER_CLIENT.min(max_upstream_requests))
        .max(max_upstream_requests_per_connection.min(max_upstream_requests));
    if raw
        .server
        .max_upstream_requests_per_client
        .is_some_and(|n| n < max_upstream_requests_per_connection || n > max_upstream_requests)
    {
        c.problems.push(Problem::new(
            "server.max_upstream_requests_per_client",
            format!(
                "must be between server.max_upstream_requests_per_connection ({max_upstream_requests_per_connection}) and server.max_upstream_requests ({max_upstream_requests})"
            ),
        ));
    }
    let upstream_queue_timeout = c.duration(
        "server.upstream_queue_timeout",
        raw.server.upstream_queue_timeout.as_deref(),
        DEFAULT_UPSTREAM_QUEUE_TIMEOUT,
    );
    let min_body_rate = raw.server.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE);
    if min_body_rate == 0 {
        c.problems.push(Problem::new(
            "server.min_body_rate",
            "must be at least 1 (bytes per second): a body that may take forever holds a connection forever",
        ));
    }
    let body_rate_window = c.duration(
        "server.body_rate_window",
        raw.server.body_rate_window.as_deref(),
        DEFAULT_BODY_RATE_WINDOW,
    );
    let trusted_proxies = trusted_proxies(&mut c, raw.server.trusted_proxies.as_deref());
    let token_request_timeout = c.duration(
        "server.token_request_timeout",
        raw.server.token_request_timeout.as_deref(),
        DEFAULT_TOKEN_REQUEST_TIMEOUT,
    );
    for (key, value) in [
        ("server.header_read_timeout", header_read_timeout),
        ("server.body_rate_window", body_rate_window),
        ("server.token_request_timeout", token_request_timeout),
    ] {
        if value.is_zero() && c.problems.iter().all(|p| p.key != key) {
            c.problems.push(Problem::new(key, "must be longer than 0s"));
        }
    }
    let metrics_listen = raw
        .metrics
        .as_ref()
        .and_then(|m| c.check("metrics.listen", parse_listen(&m.listen)));
    if let (Some(ops), Some(public)) = (metrics_listen, listen) {
        if ops.port() == public.port() && ops.port() != 0 {
            c.problems.push(Problem::new(
                "metrics.listen",
                format!(
                    "must not be the public port {}: metrics and probes are for operators only",
                    public.port()
                ),
            ));
        }
    }
    let audit = match raw.audit.as_ref().map(|a| a.path.trim()) {
        None => None,
        Some("") => {
            c.problems.push(Problem::new(
                "audit.path",
                "must not be empty: a file, or - for standard output",
            ));
            None
        }
        Some("-") => Some(super::AuditTarget::Stdout),
        Some(path) => Some(super::AuditTarget::File(resolve(path))),
    };

    let log_format = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.problems.push(Problem::new(
                "log.format",
                format!("unknown format {other:?}: use text or json"),
            ));
            LogFormat::Text
        }
    };

    let defaults = crate::auth::brute_force::Limits::default();
    let brute_force = crate::auth::brute_force::Limits {
        max_failures: raw
            .brute_force
            .max_failures
            .unwrap_or(defaults.max_failures),
        window: c.duration(
            "brute_force.window",
            raw.brute_force.window.as_deref(),
            defaults.window,
        ),
        ban: c.duration(
            "brute_force.ban",
            raw.brute_force.ban.as_deref(),
            defaults.ban,
        ),
    };
    let push_grace = super::PushGrace {
        enabled: raw.push_grace.enabled.unwrap_or(true),
        max_session: c.duration(
            "push_grace.max_session",
            raw.push_grace.max_session.as_deref(),
            Duration::from_secs(6 * 3600),
        ),
    };
    let page = page_limits(&mut c, &raw.page);
    let directory =
        super::directory::validate(&mut c, raw.users, raw.groups, raw.projects, every_core);
    let federation = super::federation::validate(&mut c, raw.federation, &directory, base);
    if raw
        .ci
        .as_ref()
        .and_then(|ci| ci.signing_key.as_deref())
        .is_some_and(|k| k.trim().is_empty())
    {
        c.problems.push(Problem::new(
            "ci.signing_key",
            "must not be empty: a PEM key file (portcullis init makes ci.key), or leave ci out",
        ));
    }
    let ci_signing_key = super::federation::ci_signing_key(raw.ci.as_ref(), base);
    let ldap = super::ldap::validate(&mut c, raw.ldap, base, &directory);
    let shared_state = raw.shared_state.and_then(|raw| shared_state(&mut c, raw));
    let store_url = crate::store::validate_url(
        &mut c.problems,
        raw.store.and_then(|s| s.url).as_deref(),
        base,
    );
    let token_max_lifetime_days =
        crate::store::validate_lifetime(&mut c.problems, raw.tokens.max_lifetime.as_deref());

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    // Every `check` above recorded a problem when it returned None, so these are all present.
    let (Some(listen), Some(public_url), Some(upstream_url)) = (listen, public_url, upstream_url)
    else {
        return Err(vec![Problem::new("", "internal: missing validated value")]);
    };
    Ok(Config {
        source: source.to_owned(),
        listen,
        public_url,
        tls: raw.tls.map(|t| TlsFiles {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
        }),
        upstream: UpstreamSettings {
            url: upstream_url,
            ca: upstream_ca,
            connect_timeout,
            response_timeout,
        },
        token: TokenSettings {
            issuer: raw.token.issuer,
            service: raw.token.service,
            expiry,
            signing_key: resolve(&raw.token.signing_key),
            certificate: resolve(&raw.token.certificate),
            previous_certificates: raw
                .token
                .previous_certificates
                .iter()
                .map(|p| resolve(p))
                .collect(),
            header,
            refresh_lifetime,
        },
        server: ServerSettings {
            header_read_timeout,
            max_header_bytes,
            idle_timeout,
            max_connections,
            shutdown_grace,
            workers,
            max_upstream_requests,
            max_upstream_requests_per_connection,
            max_upstream_requests_per_client,
            upstream_queue_timeout,
            min_body_rate,
            body_rate_window,
            token_request_timeout,
            behind_tls_proxy: raw.server.behind_tls_proxy.unwrap_or(false),
            trusted_proxies,
            proxy_protocol: raw.server.proxy_protocol.unwrap_or(false),
        },
        metrics_listen,
        audit,
        log_format,
        brute_force,
        push_grace,
        log_level: raw.log.level,
        directory,
        federation,
        ci_signing_key,
        ldap,
        shared_state,
        store_url,
        token_max_lifetime_days,
        page,
    })
}

/// `shared_state:`: a `redis://` URL the client library accepts, a short prefix, a timeout
/// between 1ms and 5s (every Redis call on the request path waits at most this long).
fn shared_state(
    c: &mut Checker,
    raw: super::file::SharedStateFile,
) -> Option<crate::shared::Settings> {
    let timeout = c.duration(
        "shared_state.timeout",
        raw.timeout.as_deref(),
        crate::shared::DEFAULT_TIMEOUT,
    );
    if !(Duration::from_millis(1)..=Duration::from_secs(5)).contains(&timeout) {
        c.problems.push(Problem::new(
            "shared_state.timeout",
            "must be between 1ms and 5s: the request path waits for Redis at most this long",
        ));
    }
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis:".to_owned());
    if key_prefix.len() > 64
        || key_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.problems.push(Problem::new(
            "shared_state.key_prefix",
            "at most 64 characters, no spaces or control characters",
        ));
    }
    let url = raw.redis.trim();
    if !(url.starts_with("redis://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        c.problems.push(Problem::new(
            "shared_state.redis",
            "must be a redis:// URL (redis://host:port/db, password as redis://:secret@host:port)",
        ));
        return None;
    }
    if let Err(error) = redis::Client::open(url) {
        c.problems.push(Problem::new(
            "shared_state.redis",
            format!("not a Redis URL the client accepts ({})", error.category()),
        ));
        return None;
    }
    Some(crate::shared::Settings {
        redis: url.to_owned(),
        key_prefix,
        timeout,
    })
}

/// `server.trusted_proxies`: each entry a CIDR (`10.0.0.0/8`, `fd00::/8`) or one address; a
/// bad one is named by its index.
fn trusted_proxies(
    c: &mut Checker,
    entries: Option<&[String]>,
) -> crate::server::client_addr::TrustedProxies {
    let blocks = entries
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| c.check(format!("server.trusted_proxies[{i}]"), text.parse()))
        .collect();
    crate::server::client_addr::TrustedProxies::new(blocks)
}

/// `page:`: the token page's session limits. A session must idle out before it ends of age,
/// and the map must hold at least one.
fn page_limits(
    c: &mut Checker,
    raw: &super::file::PageFile,
) -> crate::page::session::SessionLimits {
    let defaults = crate::page::session::SessionLimits::default();
    let idle_timeout = c.duration(
        "page.session_idle_timeout",
        raw.session_idle_timeout.as_deref(),
        defaults.idle_timeout,
    );
    let lifetime = c.duration(
        "page.session_lifetime",
        raw.session_lifetime.as_deref(),
        defaults.lifetime,
    );
    if idle_timeout.is_zero() {
        c.problems.push(Problem::new(
            "page.session_idle_timeout",
            "must be longer than 0s",
        ));
    }
    if lifetime < idle_timeout {
        c.problems.push(Problem::new(
            "page.session_lifetime",
            "must be at least page.session_idle_timeout",
        ));
    }
    let max_sessions = raw.max_sessions.unwrap_or(defaults.max_sessions);
    if max_sessions == 0 {
        c.problems
            .push(Problem::new("page.max_sessions", "must be at least 1"));
    }
    crate::page::session::SessionLimits {
        idle_timeout,
        lifetime,
        max_sessions,
    }
}

/// An `address:port` to listen on. Also what Go servers (the registry itself) take: `:4567`
/// for every interface, and `localhost:4567`; any other host name is refused with the fix,
/// since a listener binds addresses and a name's addresses can change under it.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').unwrap_or(("", text));
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "{text:?} is not an address:port: write for example 0.0.0.0:4567 (every interface) or 127.0.0.1:4567 (this machine only)"
        ));
    };
    match host {
        "" | "*" => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        "localhost" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        name => Err(format!(
            "{text:?}: listen takes an IP address, not a host name: write 0.0.0.0:{port} (every interface) or the address of {name:?}, such as 127.0.0.1:{port}"
        )),
    }
}

/// `http(s)://host[:port]`, nothing after it: the registry API lives at `/v2/` of the origin.
fn parse_origin(text: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{text:?} must start with https:// or http://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{text:?} must not have a path: the {what} serves the registry API at /v2/ of its origin"
        ));
    }
    Ok(uri)
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let uri = parse_origin(text, "gateway")?;
    Ok(PublicUrl {
        scheme: uri.scheme_str().unwrap_or("https").to_owned(),
        authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
    })
}

fn parse_upstream_url(text: &str) -> Result<http::Uri, String> {
    parse_origin(text, "registry")
}

/// A SHA-256 digest written as 64 hex digits (what `portcullis token generate` prints).
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(format!(
            "expected 64 hex digits (the SHA-256 of the token), got {} characters",
            text.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| format!("{hex:?} is not hex"))?;
    }
    Ok(out)
}

/// `2027-06-30` (the token stops working at the start of that day, UTC, as in GitLab) or a
/// full RFC 3339 time.
pub(super) fn parse_expiry(text: &str) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(date) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::RepositoryName;
    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = "
public_url: https://registry.example.com:4567
upstream: { url: http://127.0.0.1:5000 }
token: { signing_key: token.key, certificate: token.crt }
";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/portcullis/gateway.yaml"), &|name| {
            (name == "REGISTRY_HOST").then(|| "registry.example.com".to_owned())
        })
    }

    fn problems(text: &str) -> Vec<String> {
        load(text)
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_minimal_file_gets_safe_defaults_and_resolved_paths() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:4567");
        assert_eq!(
            config.public_url.realm(),
            "https://registry.example.com:4567/jwt/auth"
        );
        assert_eq!(config.token.issuer, "portcullis");
        assert_eq!(config.token.service, "container_registry");
        assert_eq!(config.token.expiry, Duration::from_secs(300));
        assert_eq!(
            config.token.signing_key,
            Path::new("/etc/portcullis/token.key")
        );
        assert!(config.tls.is_none());
    }

    #[test]
    fn shared_state_is_checked_and_names_its_keys_without_echoing_a_password() {
        assert!(load(MINIMAL).unwrap().shared_state.is_none());
        let config = load(&format!(
            "{MINIMAL}shared_state: {{ redis: \"redis://:s3cret@10.0.0.5:6379/2\" }}\n"
        ))
        .unwrap();
        let shared = config.shared_state.unwrap();
        assert_eq!(shared.key_prefix, "portcullis:");
        assert_eq!(shared.timeout, crate::shared::DEFAULT_TIMEOUT);
        for (yaml, expected) in [
            (
                "{ redis: \"http://:s3cret@x:6379\" }",
                "shared_state.redis: must be a redis:// URL",
            ),
            (
                "{ redis: \"redis://:s3cret@[::1:6379\" }",
                "shared_state.redis: not a Redis URL",
            ),
            (
                "{ redis: \"redis://x\", timeout: 10s }",
                "shared_state.timeout: must be between 1ms and 5s",
            ),
            (
                "{ redis: \"redis://x\", timeout: 0ms }",
                "shared_state.timeout: must be between 1ms and 5s",
            ),
            (
                "{ redis: \"redis://x\", key_prefix: \"a b\" }",
                "shared_state.key_prefix:",
            ),
            (
                "{ redis: \"redis://x\", sentinel: true }",
                "shared_state.sentinel: unknown field",
            ),
            ("{ key_prefix: x }", "shared_state.redis: is required"),
        ] {
            let found = problems(&format!("{MINIMAL}shared_state: {yaml}\n"));
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{yaml}: {found:?}"
            );
            assert!(found.iter().all(|p| !p.contains("s3cret")), "{found:?}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let text = format!("{MINIMAL}users:\n  - username: alice\n    passwrd: x\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("users[0].passwrd: unknown field `passwrd`"),
            "{found:?}"
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let text = "
listen: nowhere
public_url: ftp://x
upstream: { url: http://127.0.0.1:5000/v2 }
token: { expiry: 5 minutes, signing_key: k, certificate: c }
users:
  - username: alice
    password_hash: plain
    personal_access_tokens:
      - { name: t, token_sha256: abc, scopes: [read_regsitry], expires_at: someday }
projects:
  - path: Group/App
    visibility: secret
    members: { bob: boss }
";
        let found = problems(text);
        for key in [
            "listen:",
            "public_url:",
            "upstream.url:",
            "token.expiry:",
            "users[0].password_hash:",
            "users[0].personal_access_tokens[0].token_sha256:",
            "users[0].personal_access_tokens[0].scopes:",
            "users[0].personal_access_tokens[0].expires_at:",
            "projects[0].path:",
            "projects[0].visibility:",
            "projects[0].members.bob: no user",
            "projects[0].members.bob: unknown role",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key)),
                "no problem for {key} in {found:#?}"
            );
        }
    }

    #[test]
    fn listen_takes_go_style_addresses_and_names_the_fix_for_host_names() {
        for (written, meant) in [
            (":4567", "0.0.0.0:4567"),
            ("localhost:4567", "127.0.0.1:4567"),
            ("[::1]:4567", "[::1]:4567"),
            ("4567", "0.0.0.0:4567"),
        ] {
            assert_eq!(
                parse_listen(written).unwrap().to_string(),
                meant,
                "{written}"
            );
        }
        assert!(parse_listen("registry.example.com:4567")
            .unwrap_err()
            .contains("write 0.0.0.0:4567"));
        assert!(parse_listen("nowhere")
            .unwrap_err()
            .contains("0.0.0.0:4567"));
    }

    #[test]
    fn the_token_header_mode_and_the_refresh_lifetime_are_checked() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.token.header, TokenHeader::X5c);
        assert_eq!(
            config.token.refresh_lifetime,
            Duration::from_secs(90 * 86_400)
        );
        let with = |keys: &str| {
            MINIMAL.replace(
                "certificate: token.crt",
                &format!("certificate: token.crt, {keys}"),
            )
        };
        let config = load(&with("header: jwks, refresh_lifetime: 7d")).unwrap();
        assert_eq!(config.token.header, TokenHeader::Jwks);
        assert_eq!(
            config.token.refresh_lifetime,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            load(&with("header: kid")).unwrap().token.header,
            TokenHeader::Kid
        );
        let found = problems(&with("header: KID"));
        assert!(
            found.iter().any(|p| p.contains("kid (the libtrust kid")
                && p.contains(
                    "distribution 2.8 with rootcertbundle and Zot, not distribution 3.x"
                )),
            "{found:#?}"
        );
        for (keys, problem) in [
            ("header: jwk", "token.header: \"jwk\" is not a header mode"),
            (
                "refresh_lifetime: \"90\"",
                "token.refresh_lifetime: invalid duration",
            ),
            (
                "refresh_lifetime: 10m",
                "token.refresh_lifetime: must be between 1h and 400d",
            ),
            (
                "refresh_lifetime: 401d",
                "token.refresh_lifetime: must be between 1h and 400d",
            ),
        ] {
            let found = problems(&with(keys));
            assert!(
                found.iter().any(|p| p.starts_with(problem)),
                "{keys}: {found:#?}"
            );
        }
    }

    #[test]
    fn workers_default_to_the_cores_and_zero_is_refused() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(load(MINIMAL).unwrap().server.workers, cores);
        let text = format!("{MINIMAL}server: {{ workers: 3 }}\n");
        assert_eq!(load(&text).unwrap().server.workers, 3);
        let text = format!("{MINIMAL}server: {{ workers: 0 }}\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("server.workers: must be between 1 and 1024"),
            "{found:?}"
        );
    }

    #[test]
    fn environment_variables_are_expanded_and_missing_ones_named() {
        let text = MINIMAL.replace("registry.example.com", "${REGISTRY_HOST}");
        assert_eq!(
            load(&text).unwrap().public_url.authority,
            "registry.example.com:4567"
        );
        let text = MINIMAL.replace("token.key", "\"${KEY_FILE}\"");
        assert_eq!(
            problems(&text),
            vec!["token.signing_key: environment variable KEY_FILE is not set"]
        );
    }

    #[test]
    fn expiry_dates_mean_the_start_of_the_day_utc() {
        let at = parse_expiry("2027-06-30").unwrap();
        assert_eq!(at.unix_timestamp(), 1_814_313_600);
        assert!(parse_expiry("2027-06-30T12:00:00Z").is_ok());
        assert!(parse_expiry("30/06/2027").is_err());
    }

    #[test]
    fn sha256_digests_must_be_64_hex_digits() {
        assert!(parse_sha256_hex(&"ab".repeat(32)).is_ok());
        assert!(parse_sha256_hex(&"zz".repeat(32)).is_err());
        assert!(parse_sha256_hex("abc").is_err());
    }

    #[test]
    fn duplicated_tokens_and_users_are_problems() {
        let digest = "ab".repeat(32);
        let text = format!(
            "{MINIMAL}users:\n  - username: a\n    personal_access_tokens: [{{name: x, token_sha256: {digest}, scopes: [read_registry]}}]\n  - username: a\n    personal_access_tokens: [{{name: y, token_sha256: {digest}, scopes: [read_registry]}}]\n"
        );
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.starts_with(
                "users[1].username: username \"a\" is already used at users[0].username"
            )),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("already configured at users[0]")),
            "{found:?}"
        );
    }

    #[test]
    fn groups_tokens_and_visibility_are_checked_across_the_file() {
        let digest = |n: u8| format!("{n:02x}").repeat(32);
        let text = format!(
            "{MINIMAL}users:
  - username: carol
groups:
  - path: mygroup
    visibility: internal
    members: {{ carol: maintainer }}
    deploy_tokens: [{{ username: carol, token_sha256: {d1}, scopes: [read_registry] }}]
projects:
  - path: mygroup/app
    visibility: public
    access_tokens: [{{ username: app_bot, token_sha256: {d2}, role: boss, scopes: [api] }}]
    deploy_tokens: [{{ username: gitlab+deploy-token-1, token_sha256: {d2}, scopes: [read_registry], revoked: true }}]
",
            d1 = digest(1),
            d2 = digest(2)
        );
        let found = problems(&text);
        for expected in [
            "groups[0].deploy_tokens[0].username: username \"carol\" is already used at users[0].username",
            "projects[0].visibility: mygroup/app is public but its group mygroup is internal",
            "projects[0].access_tokens[0].role: unknown role \"boss\"",
        ] {
            assert!(found.iter().any(|p| p.starts_with(expected)), "no {expected:?} in {found:#?}");
        }
    }

    #[test]
    fn a_valid_directory_loads_with_inherited_members_and_namespace_tokens() {
        let text = format!(
            "{MINIMAL}users:
  - {{ username: carol, blocked: true }}
groups:
  - {{ path: mygroup, visibility: public, members: {{ carol: owner }} }}
projects:
  - path: mygroup/app
    deploy_tokens: [{{ username: gitlab+deploy-token-1, token_sha256: {d}, scopes: [read_registry], expires_at: 2030-01-01 }}]
",
            d = "ab".repeat(32)
        );
        let config = load(&text).unwrap();
        let dir = &config.directory;
        assert!(dir.user("carol").unwrap().blocked);
        let app = dir
            .project_for(&RepositoryName::parse("mygroup/app/x").unwrap())
            .unwrap();
        assert_eq!(
            app.members.get("carol"),
            Some(&crate::auth::directory::Role::Owner)
        );
        let tokens = dir.namespace_tokens("gitlab+deploy-token-1");
        assert_eq!(
            (tokens.len(), tokens[0].kind(), tokens[0].namespace.as_str()),
            (1, "deploy_token", "mygroup/app")
        );
    }
}
