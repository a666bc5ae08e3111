//! `portcullis check --config FILE`: load everything `serve` would load and list every problem,
//! each naming its key.

use std::path::Path;

use crate::config::{Config, Problem};
use crate::server::tls;
use crate::Gateway;

/// What a successful check reports.
pub struct Report {
    pub config: Config,
    pub summary: String,
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
    if !problems.is_empty() || gateway.is_none() {
        return Err(problems);
    }
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
    Ok(Report { config, summary })
}
