//! `portcullis check --config FILE`: load everything `serve` would load and list every problem,
//! each naming its key.

use std::path::Path;

use crate::config::{AuditTarget, Config, Problem};
use crate::diagnose::trust::Trust;
use crate::server::tls;
use crate::telemetry::audit::Audit;
use crate::Gateway;

/// What a successful check reports.
pub struct Report {
    pub config: Config,
    pub summary: String,
    /// The gateway built from it, for `--upstream`'s trust probe.
    pub gateway: Gateway,
}

/// `--upstream`: ask the registry whether it trusts the gateway's tokens; the text to print,
/// and the one-line verdict to exit with when it found a problem (a registry that is down is
/// not one that distrusts the gateway: the fixes differ).
pub fn check_upstream(report: &Report) -> (String, Option<&'static str>) {
    let gateway = &report.gateway;
    let trust = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(gateway.trust()),
        Err(error) => Trust::Unreachable(format!("cannot start the runtime: {error}")),
    };
    let text = match &trust {
        Trust::Trusted => "upstream: OK, the registry accepts the gateway's tokens\n".to_owned(),
        Trust::NoAuth => "upstream: OK, the registry has no auth of its own: portcullis is its only guard (keep it unreachable except through the gateway)\n".to_owned(),
        Trust::Refused(causes) => format!(
            "upstream: the registry REFUSES tokens the gateway considers valid:\n{}\n",
            causes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
        ),
        Trust::Unreachable(error) => format!(
            "upstream: the registry at {} is UNREACHABLE: {error}\n  fix: start it (systemctl status docker-registry), or set upstream.url to where it listens\n",
            report.config.upstream.url
        ),
    };
    let verdict = match trust {
        Trust::Trusted | Trust::NoAuth => None,
        Trust::Refused(_) => Some("the registry does not accept the gateway's tokens (see above)"),
        Trust::Unreachable(_) => Some("the registry is unreachable (see above)"),
    };
    (text, verdict)
}

/// Validate the config, the signing key and certificate, the TLS pair and the upstream CA.
pub fn check(path: &Path) -> Result<Report, Vec<Problem>> {
    let mut config = Config::load(path).map_err(|e| e.problems())?;
    let mut problems = Vec::new();
    // The gateway is built for `--upstream`'s trust probe, which asks nothing of the
    // directory: it gets none rather than a copy (a copy and its drop were a tenth of
    // `check` at 100,000 projects).
    let directory = std::mem::take(&mut config.directory);
    let gateway = Gateway::with_audit(&config, Audit::default())
        .map_err(|e| problems.push(e.to_problem(&config.token)))
        .ok();
    config.directory = directory;
    if let Some(AuditTarget::File(path)) = &config.audit {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        if folder.is_some_and(|folder| !folder.is_dir()) {
            problems.push(Problem::new(
                "audit.path",
                format!(
                    "the folder of {} does not exist: the audit log cannot be created",
                    path.display()
                ),
            ));
        }
    }
    if let Some(files) = &config.tls {
        if let Err(e) = tls::acceptor(files) {
            // The key goes in front; the error's own text starts with it too.
            let (key, message) = match e {
                tls::TlsError::Cert { path, message } => {
                    ("tls.cert", format!("{}: {message}", path.display()))
                }
                tls::TlsError::Key { path, message } => {
                    ("tls.key", format!("{}: {message}", path.display()))
                }
                tls::TlsError::Pair(message) => (
                    "tls",
                    format!("the certificate and key do not belong together: {message}"),
                ),
            };
            problems.push(Problem::new(key, message));
        }
    }
    let Some(gateway) = gateway.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let summary = format!(
        "{}: OK\n  listen:    {}{}\n  public:    {}\n  realm:     {}\n  upstream:  {}\n  tokens:    issuer {:?}, service {:?}, expiry {:?}\n  users:     {}\n  projects:  {}\n",
        path.display(),
        config.listen,
        if config.tls.is_some() { " (TLS)" } else { " (plain HTTP)" },
        config.public_url.origin(),
        config.public_url.realm(),
        config.upstream.url,
        config.token.issuer,
        config.token.service,
        config.token.expiry,
        config.directory.users().count(),
        config.directory.projects().len(),
    ) + &operations(&config, &gateway)
        + &client_addresses(&config)
        + &plain_listener_warning(&config)
            .map(|w| format!("WARNING: {w}\n"))
            .unwrap_or_default();
    Ok(Report {
        config,
        summary,
        gateway,
    })
}

/// An https `public_url` in front of a plain listener, with no word that TLS ends in a proxy
/// before the gateway: every client would speak TLS to a port answering plain HTTP and fail
/// with "server gave HTTP response to HTTPS client". `serve` logs the same text at WARN.
pub fn plain_listener_warning(config: &Config) -> Option<String> {
    if config.public_url.scheme != "https" || config.tls.is_some() || config.server.behind_tls_proxy
    {
        return None;
    }
    Some(format!(
        "public_url is {} but listen {} serves plain HTTP (no tls: section): every client will fail \
         with \"server gave HTTP response to HTTPS client\". Add tls: {{ cert, key }} \
         (portcullis init --tls-host NAME writes a pair), or set server.behind_tls_proxy: true \
         if TLS ends in a proxy in front of portcullis",
        config.public_url.origin(),
        config.listen
    ))
}

/// The operations lines of the summary, and the registry's `rootcertbundle` during a key
/// rotation: every certificate tokens may still be signed with.
fn operations(config: &Config, gateway: &Gateway) -> String {
    let ops = match config.metrics_listen {
        Some(addr) => format!("{addr} (/metrics, /healthz, /readyz)"),
        None => "off (metrics.listen)".to_owned(),
    };
    let audit = match &config.audit {
        Some(AuditTarget::File(path)) => path.display().to_string(),
        Some(AuditTarget::Stdout) => "standard output".to_owned(),
        None => "off (audit.path)".to_owned(),
    };
    let server = &config.server;
    let mut text = format!(
        "  ops:       {ops}\n  audit:     {audit}\n  limits:    {} connections, idle {:?}, header read {:?}, shutdown grace {:?}\n",
        server.max_connections, server.idle_timeout, server.header_read_timeout, server.shutdown_grace
    );
    let keys: Vec<_> = gateway.tokens().verifying_keys().collect();
    if let Some(current) = keys.first() {
        text.push_str(&format!(
            "  signing:   {} key, kid {}\n",
            current.algorithm_name(),
            current.kid
        ));
    }
    if keys.len() > 1 {
        let mut bundle = vec![config.token.certificate.display().to_string()];
        bundle.extend(
            config
                .token
                .previous_certificates
                .iter()
                .map(|p| p.display().to_string()),
        );
        text.push_str(&format!(
            "  rotation:  {} previous key(s) still verify their tokens until they expire\n  registry:  rootcertbundle must hold every one of these certificates until then:\n             cat {} > rootcertbundle.pem\n",
            keys.len() - 1,
            bundle.join(" ")
        ));
    }
    text.push_str(&match &config.ci_signing_key {
        Some(path) => format!("  ci jobs:   job tokens signed by ci.signing_key {}\n", path.display()),
        None => "  ci jobs:   job tokens signed by token.signing_key: whatever runs `portcullis ci-token` could mint registry tokens too; give job tokens their own key with ci: { signing_key: ci.key } (portcullis init writes one)\n".to_owned(),
    });
    if !config.federation.is_empty() {
        let names: Vec<String> = config
            .federation
            .iter()
            .map(|f| format!("{} ({}, {} rules)", f.name, f.issuer, f.rules.len()))
            .collect();
        text.push_str(&format!(
            "  federation: {} (docker login -u oidc)\n",
            names.join(", ")
        ));
    }
    text
}

/// The summary line saying whose word about the client's address is taken (README: "Behind a
/// load balancer").
fn client_addresses(config: &Config) -> String {
    let trusted = config.server.trusted_proxies.blocks();
    let list = trusted
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let how = match (config.server.proxy_protocol, trusted.is_empty()) {
        (false, true) => {
            "the TCP peer (no server.trusted_proxies, no server.proxy_protocol)".to_owned()
        }
        (false, false) => format!("X-Forwarded-For from {list}; any other peer is the client"),
        (true, true) => {
            "the PROXY protocol v2 header, from any peer (only the balancer may reach the port)"
                .to_owned()
        }
        (true, false) => format!(
            "the PROXY protocol v2 header, only from {list}; then X-Forwarded-For from {list}"
        ),
    };
    format!("  clients:   {how}\n")
}
