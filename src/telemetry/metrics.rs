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

impl Diagnosis {
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
    password_hashes: Family<KindLabel, Counter>,
    connections_open: Gauge,
    upload_sessions_open: Gauge,
    push_grace_extensions: Counter,
    diagnostics: Family<KindLabel, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    certificate_expiry: Family<WhichLabel, Gauge>,
    audit_write_failures: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

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
            password_hashes: Family::default(),
            connections_open: Gauge::default(),
            upload_sessions_open: Gauge::default(),
            push_grace_extensions: Counter::default(),
            diagnostics: Family::default(),
            config_reloads: Family::default(),
            certificate_expiry: Family::default(),
            audit_write_failures: Counter::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the registry.
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status",
            m.requests.clone(),
        );
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
        registry.register(
            "tokens_issued",
            "Registry tokens issued, by credential kind and signing algorithm",
            m.tokens_issued.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused logins and tokens, by reason",
            m.auth_failures.clone(),
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
            "certificate_expiry_timestamp_seconds",
            "When the TLS certificate (tls) and the token-signing certificate (token) expire, Unix seconds",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written",
            m.audit_write_failures.clone(),
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
        Metrics {
            registry,
            bytes_sent: sent,
            bytes_received: received,
            ..m
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn request(&self, route: &'static str, method: &http::Method, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
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
}
