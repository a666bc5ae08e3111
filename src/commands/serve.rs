//! `portcullis serve --config FILE`: load, bind, serve until SIGINT or SIGTERM.

use std::path::Path;

use tokio::net::TcpListener;

use crate::config::{Config, LogFormat};
use crate::server::{self, tls};
use crate::{telemetry, Gateway};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Build(#[from] crate::router::BuildError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub async fn serve(path: &Path, log_format: Option<LogFormat>) -> Result<(), ServeError> {
    let config = Config::load(path)?;
    telemetry::init(
        log_format.unwrap_or(config.log_format),
        config.log_level.as_deref(),
    );
    let gateway = Gateway::new(&config)?;
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(
        public_url = %config.public_url.origin(),
        upstream = %config.upstream.url,
        tls = acceptor.is_some(),
        "listening on {addr}"
    );
    let service = tower::ServiceBuilder::new()
        .layer(telemetry::AccessLogLayer)
        .service(gateway);
    server::serve(
        listener,
        acceptor,
        config.server.clone(),
        service,
        shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
