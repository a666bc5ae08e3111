//! The Prometheus metrics, served by the operations listener at `/metrics`.
//!
//! One process-wide set, reached through [`metrics()`]: the counters are bumped from deep in
//! the request path (token endpoint, proxy, body streams) where threading a handle through
//! every constructor would buy nothing. Every label value is a `&'static str` or a status
//! code: repository names, user names and paths never become label values, so the number of
//! series stays bounded whatever clients send.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    credential: &'static str,
    algorithm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// An identity source's name (`ldap`, `federation:github`, `store`): one series per source
/// configured in gateway.yaml, so the set is bounded by the file, never by clients.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhichLabel {
    which: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to ~1 h: a manifest GET and a 10 GiB layer upload on one scale.
    Histogram::new(exponential_buckets(0.0005, 4.0, 12))
}

/// Which kind of diagnosis fired (`portcullis_diagnostics_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    StrippedTokenEndpoint,
    StrippedV2,
    ExpiredMidPush,
    UpstreamDistrust,
    InternalLocation,
    ClockSkew,
}

const HELP_REQUESTS: &str = "Requests answered, by route, method and status";
const HELP_TOKENS_ISSUED: &str = "Registry tokens issued, by credential kind and signing algorithm";
const HELP_CERTIFICATE_EXPIRY: &str =
    "When the TLS certificate (tls) and the token-signing certificate (token) expire, Unix seconds";

const HELP_IDENTITY_SOURCE_UP: &str = "Whether each identity source beside gateway.yaml (ldap, federation, the token store) answered its last request: 1 up, 0 down";

/// The families whose label sets are open (a status, a credential and algorithm, a
/// certificate that may not be configured): until their first series exists the encoder
/// would leave them out, so [`Metrics::render`] describes them itself.
const OPEN_FAMILIES: [(&str, &str, &str); 4] = [
    ("portcullis_http_requests", "counter", HELP_REQUESTS),
    ("portcullis_tokens_issued", "counter", HELP_TOKENS_ISSUED),
    (
        "portcullis_certificate_expiry_timestamp_seconds",
        "gauge",
        HELP_CERTIFICATE_EXPIRY,
    ),
    (
        "portcullis_identity_source_up",
        "gauge",
        HELP_IDENTITY_SOURCE_UP,
    ),
];

/// Every route label (see `RouteLabel`): the duration histogram has each at zero.
const ROUTES: [&str; 8] = [
    "token", "ping", "manifest", "blob", "upload", "tags", "catalog", "other",
];

/// Every `portcullis_auth_failures_total` reason, created at zero at start-up.
const AUTH_FAILURE_REASONS: [&str; 22] = [
    "unknown_user",
    "wrong_secret",
    "token_expired",
    "token_revoked",
    "insufficient_scope",
    "user_blocked",
    "user_locked",
    "password_needs_token",
    "protected_repository",
    "anonymous_denied",
    "banned",
    "too_many_attempts",
    "username_too_long",
    "malformed_authorization",
    "missing_authorization",
    "missing_token",
    "invalid_token",
    "expired_token",
    "invalid_id_token",
    "no_federation_rule",
    "source_unavailable",
    "directory_unavailable",
];

impl Diagnosis {
    const ALL: [Diagnosis; 6] = [
        Diagnosis::StrippedTokenEndpoint,
        Diagnosis::StrippedV2,
        Diagnosis::ExpiredMidPush,
        Diagnosis::UpstreamDistrust,
        Diagnosis::InternalLocation,
        Diagnosis::ClockSkew,
    ];

    fn label(self) -> &'static str {
        match self {
            Diagnosis::StrippedTokenEndpoint => "stripped_token_endpoint",
            Diagnosis::StrippedV2 => "stripped_v2",
            Diagnosis::ExpiredMidPush => "expired_mid_push",
            Diagnosis::UpstreamDistrust => "upstream_distrust",
            Diagnosis::InternalLocation => "internal_location",
            Diagnosis::ClockSkew => "clock_skew",
        }
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_bytes: Family<DirectionLabel, Counter>,
    /// The two `upstream_bytes` series, held so body streams skip the family lookup.
    bytes_sent: Counter,
    bytes_received: Counter,
    upstream_errors: Family<KindLabel, Counter>,
    tokens_issued: Family<TokenLabels, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    challenges: Counter,
    password_hashes: Family<KindLabel, Counter>,
    connections_open: Gauge,
    upload_sessions_open: Gauge,
    push_grace_extensions: Counter,
    diagnostics: Family<KindLabel, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    certificate_expiry: Family<WhichLabel, Gauge>,
    audit_write_failures: Counter,
    shared_state_degraded: Gauge,
    proxy_protocol_refused: Family<ReasonLabel, Counter>,
    identity_source_up: Family<SourceLabel, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The series of one label set of the request metrics, as handles: they share the family's
/// atomics, and the families never drop a series, so they count where the family would.
struct RequestSeries {
    labels: RequestLabels,
    count: Counter,
    duration: Histogram,
}

impl RequestSeries {
    /// Label sets kept per thread (routes x methods x statuses seen; beyond, the families).
    const PER_THREAD: usize = 64;
}

thread_local! {
    static SERIES: std::cell::RefCell<Vec<RequestSeries>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram as fn() -> _),
            upstream_bytes: Family::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            upstream_errors: Family::default(),
            tokens_issued: Family::default(),
            auth_failures: Family::default(),
            challenges: Counter::default(),
            password_hashes: Family::default(),
            connections_open: Gauge::default(),
            upload_sessions_open: Gauge::default(),
            push_grace_extensions: Counter::default(),
            diagnostics: Family::default(),
            config_reloads: Family::default(),
            certificate_expiry: Family::default(),
            audit_write_failures: Counter::default(),
            shared_state_degraded: Gauge::default(),
            proxy_protocol_refused: Family::default(),
            identity_source_up: Family::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the registry.
        registry.register("http_requests", HELP_REQUESTS, m.requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the response head, by route",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_bytes",
            "Body bytes moved to (sent) and from (received) the registry",
            m.upstream_bytes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Registry requests that failed: connect, timeout, reset",
            m.upstream_errors.clone(),
        );
        registry.register("tokens_issued", HELP_TOKENS_ISSUED, m.tokens_issued.clone());
        registry.register(
            "auth_failures",
            "Refused logins and tokens, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "challenges",
            "Anonymous version checks (the API base) answered with the 401 Bearer challenge: how every docker/podman command starts, not a refusal",
            m.challenges.clone(),
        );
        registry.register(
            "password_hashes",
            "Slow password hash verifications run: against a stored hash, or against the dummy hash that makes an unknown user cost as much as a known one",
            m.password_hashes.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open on the public port",
            m.connections_open.clone(),
        );
        registry.register(
            "upload_sessions_open",
            "Blob upload sessions started and not yet finished",
            m.upload_sessions_open.clone(),
        );
        registry.register(
            "push_grace_extensions",
            "Requests of a push let through with a replacement token after theirs expired",
            m.push_grace_extensions.clone(),
        );
        registry.register(
            "diagnostics",
            "Problems diagnosed and logged, by kind",
            m.diagnostics.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "shared_state_degraded",
            "1 while shared_state.redis is set and Redis does not answer (this replica keeps its state in process), else 0",
            m.shared_state_degraded.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            HELP_CERTIFICATE_EXPIRY,
            m.certificate_expiry.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written",
            m.audit_write_failures.clone(),
        );
        registry.register(
            "proxy_protocol_refused",
            "Connections closed because they did not start with a valid PROXY protocol v2 header (server.proxy_protocol), by reason",
            m.proxy_protocol_refused.clone(),
        );
        registry.register(
            "identity_source_up",
            HELP_IDENTITY_SOURCE_UP,
            m.identity_source_up.clone(),
        );
        let sent = m
            .upstream_bytes
            .get_or_create(&DirectionLabel { direction: "sent" })
            .clone();
        let received = m
            .upstream_bytes
            .get_or_create(&DirectionLabel {
                direction: "received",
            })
            .clone();
        m.zero_series();
        Metrics {
            registry,
            bytes_sent: sent,
            bytes_received: received,
            ..m
        }
    }

    /// Create the series of every closed label set at zero, so an alert on
    /// `rate(portcullis_auth_failures_total{reason="banned"}[5m])` has a series to read before
    /// the first such event (an absent series is not a zero rate).
    fn zero_series(&self) {
        for route in ROUTES {
            let _ = self.request_duration.get_or_create(&RouteLabel { route });
        }
        for reason in AUTH_FAILURE_REASONS {
            let _ = self.auth_failures.get_or_create(&ReasonLabel { reason });
        }
        for kind in ["connect", "timeout", "reset"] {
            let _ = self.upstream_errors.get_or_create(&KindLabel { kind });
        }
        for kind in ["stored", "dummy"] {
            let _ = self.password_hashes.get_or_create(&KindLabel { kind });
        }
        for kind in Diagnosis::ALL {
            let _ = self
                .diagnostics
                .get_or_create(&KindLabel { kind: kind.label() });
        }
        for result in ["success", "failure"] {
            let _ = self.config_reloads.get_or_create(&ResultLabel { result });
        }
        for reason in crate::server::proxy_protocol::ProxyError::LABELS {
            let _ = self
                .proxy_protocol_refused
                .get_or_create(&ReasonLabel { reason });
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        describe_open_families(&mut text);
        text
    }

    /// Count one answered request. The process's own metrics ([`metrics`]) keep the series of
    /// the label sets this thread has seen at hand ([`RequestSeries`]): a family's lookup is a
    /// read lock and a SipHash of the labels, twice a request (0.5% of a small request's
    /// instructions, callgrind), where the handles share the same atomics.
    pub fn request(&self, route: &'static str, method: &http::Method, status: u16, seconds: f64) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status,
        };
        if std::ptr::eq(self, metrics()) {
            let found = SERIES.with(|series| {
                let Ok(mut series) = series.try_borrow_mut() else {
                    return false;
                };
                let known = series.iter().find(|s| s.labels == labels);
                let known = match known {
                    Some(known) => known,
                    None if series.len() < RequestSeries::PER_THREAD => {
                        series.push(RequestSeries {
                            count: self.requests.get_or_create(&labels).clone(),
                            duration: self
                                .request_duration
                                .get_or_create(&RouteLabel { route })
                                .clone(),
                            labels: labels.clone(),
                        });
                        &series[series.len() - 1]
                    }
                    None => return false,
                };
                known.count.inc();
                known.duration.observe(seconds);
                true
            });
            if found {
                return;
            }
        }
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }

    /// The counter of request body bytes sent to the registry.
    pub fn upstream_sent(&self) -> Counter {
        self.bytes_sent.clone()
    }

    /// The counter of response body bytes received from the registry.
    pub fn upstream_received(&self) -> Counter {
        self.bytes_received.clone()
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    pub fn token_issued(&self, credential: &'static str, algorithm: &'static str) {
        self.tokens_issued
            .get_or_create(&TokenLabels {
                credential,
                algorithm,
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// An anonymous `GET /v2/` was answered with the Bearer challenge: the protocol's first
    /// step, counted apart from refusals so `auth_failures` stays a signal.
    pub fn challenge(&self) {
        self.challenges.inc();
    }

    /// One slow hash verification ran; `kind` is `stored` or `dummy`.
    pub fn password_hash(&self, kind: &'static str) {
        self.password_hashes
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn upload_sessions(&self, open: usize) {
        self.upload_sessions_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Redis (shared_state) does not answer: 1, or answers again: 0.
    pub fn shared_state_degraded(&self, degraded: bool) {
        self.shared_state_degraded.set(i64::from(degraded));
    }

    pub fn push_grace_extension(&self) {
        self.push_grace_extensions.inc();
    }

    pub fn diagnosis(&self, kind: Diagnosis) {
        self.diagnostics
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// `which` is `tls` or `token`.
    pub fn certificate_expiry(&self, which: &'static str, not_after: time::OffsetDateTime) {
        self.certificate_expiry
            .get_or_create(&WhichLabel { which })
            .set(not_after.unix_timestamp());
    }

    pub fn audit_write_failure(&self) {
        self.audit_write_failures.inc();
    }

    /// A connection refused by `server.proxy_protocol`; `reason` is a [`ProxyError`] label.
    ///
    /// [`ProxyError`]: crate::server::proxy_protocol::ProxyError
    pub fn proxy_protocol_refused(&self, reason: &'static str) {
        self.proxy_protocol_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Whether the identity source `source` answers (see `auth::identity::SourceHealth`).
    pub fn identity_source_up(&self, source: &str, up: bool) {
        self.identity_source_up
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .set(i64::from(up));
    }
}

/// Add `# HELP` and `# TYPE` for each of [`OPEN_FAMILIES`] that has no series yet, before the
/// closing `# EOF`: a dashboard or an alert finds every family from start-up.
fn describe_open_families(text: &mut String) {
    use std::fmt::Write as _;
    let mut missing = String::new();
    for (name, kind, help) in OPEN_FAMILIES {
        if !text.contains(&format!("# HELP {name} ")) {
            let _ = write!(missing, "# HELP {name} {help}.\n# TYPE {name} {kind}\n");
        }
    }
    if missing.is_empty() {
        return;
    }
    let at = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(at, &missing);
}

/// The method as a bounded label: the registry API's methods, anything else is `other`.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_without_series_are_described_once_before_eof() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (name, kind, _) in OPEN_FAMILIES {
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{text}"
            );
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
        }
        m.token_issued("password", "ES256");
        let text = m.render();
        assert_eq!(
            text.matches("# HELP portcullis_tokens_issued ").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn families_render_with_their_prefix_and_suffix() {
        let m = Metrics::new();
        m.request("manifest", &http::Method::GET, 200, 0.01);
        m.request(
            "manifest",
            &http::Method::from_bytes(b"BREW").unwrap(),
            405,
            0.01,
        );
        m.token_issued("personal_access_token", "ES256");
        let text = m.render();
        assert!(text.contains(
            "portcullis_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(text.contains("portcullis_http_request_duration_seconds_bucket{le=\"0.0005\",route=\"manifest\"} 0"), "{text}");
        assert!(text.contains(
            "portcullis_tokens_issued_total{credential=\"personal_access_token\",algorithm=\"ES256\"} 1"
        ));
        assert!(text.contains("# TYPE portcullis_connections_open gauge"));
    }

    #[test]
    fn requests_counted_through_a_threads_kept_series_reach_the_families() {
        let count = |text: &str| {
            let series = "portcullis_http_requests_total{route=\"kept_series\",method=\"GET\",status=\"299\"} ";
            text.lines()
                .find_map(|line| line.strip_prefix(series))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        };
        let before = count(&metrics().render());
        for _ in 0..3 {
            metrics().request("kept_series", &http::Method::GET, 299, 0.001);
        }
        std::thread::spawn(|| {
            for _ in 0..2 {
                metrics().request("kept_series", &http::Method::GET, 299, 0.001);
            }
        })
        .join()
        .unwrap();
        let text = metrics().render();
        assert_eq!(count(&text), before + 5, "{text}");
        assert!(
            text.contains(
                "portcullis_http_request_duration_seconds_count{route=\"kept_series\"} 5"
            ),
            "{text}"
        );
    }
}
