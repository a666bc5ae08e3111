//! Logging, metrics and the audit trail: tracing set-up, the one-line-per-request access log
//! (which also feeds the request metrics), the Prometheus registry, and audit records.
//!
//! No secret ever reaches a log line: handlers record the user name (never a credential) in
//! the response's extensions as [`RequestUser`], and the access log prints the path without
//! its query string.

mod access_log;
pub mod audit;
pub mod gather;
mod line;
pub mod metrics;

pub use access_log::{AccessLog, AccessLogLayer, Logged};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The authenticated user of a request, attached to the response for the access log.
#[derive(Debug, Clone)]
pub struct RequestUser(pub String);

/// What the proxy tells the access log about a `/v2/` answer, in one extension: one
/// allocation, where a [`RouteLabel`] and a [`RequestUser`] each (and a reason for a
/// refusal) cost one apiece and a bigger map. Read before those two, which other handlers
/// attach.
#[derive(Debug, Clone, Default)]
pub struct AnswerNote {
    /// The route's metrics label (see [`RouteLabel`]).
    pub route: Option<&'static str>,
    /// The token's subject, when the token could be read.
    pub user: Option<String>,
    /// Why the gateway refused the request (`insufficient_scope`, `invalid_token`, ...): the
    /// same words as the audit log and the metrics.
    pub reason: Option<&'static str>,
}

/// The route of a request as a bounded metrics label (`token`, `ping`, `manifest`, `blob`,
/// `upload`, `tags`, `catalog`), attached to the response by the handler; absent = `other`.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Install the global subscriber: human-readable or JSON lines on stderr. `RUST_LOG` wins over
/// the configured level.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Our subscriber, writing plain lines: the access log can write its lines itself.
    if installed.is_ok() && !(ansi && format == LogFormat::Text) {
        line::install(format);
    }
}
