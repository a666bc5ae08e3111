//! `portcullis check --config FILE`: load everything `serve` would load and list every problem,
//! each naming its key.

use std::path::Path;

use crate::config::{Config, Problem};
use crate::diagnose::trust::Trust;
use crate::server::tls;
use crate::Gateway;

/// What a successful check reports.
pub struct Report {
    pub config: Config,
    pub summary: String,
    /// The gateway built from it, for `--upstream`'s trust probe.
    pub gateway: Gateway,
}

/// `--upstream`: ask the registry whether it trusts the gateway's tokens; the text to print,
/// and whether it found a problem.
pub fn check_upstream(gateway: &Gateway) -> (String, bool) {
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
        Trust::Unreachable(error) => format!("upstream: could not ask the registry: {error}\n"),
    };
    (text, trust.is_problem())
}

/// Validate the config, the signing key and certificate, the TLS pair and the upstream CA.
pub fn check(path: &Path) -> Result<Report, Vec<Problem>> {
    let config = Config::load(path).map_err(|e| e.problems())?;
    let mut problems = Vec::new();
    let gateway = Gateway::new(&config)
        .map_err(|e| problems.push(e.to_problem()))
        .ok();
    if let Some(files) = &config.tls {
        if let Err(e) = tls::acceptor(files) {
            let key = match e {
                tls::TlsError::Cert { .. } => "tls.cert",
                tls::TlsError::Key { .. } => "tls.key",
                tls::TlsError::Pair(_) => "tls",
            };
            problems.push(Problem::new(key, e.to_string()));
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
    );
    Ok(Report {
        config,
        summary,
        gateway,
    })
}
