//! `portcullis serve --config FILE`: load, bind, serve until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use crate::config::reload::changes_needing_restart;
use crate::config::{Config, LogFormat};
use crate::diagnose::trust;
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
    tokio::spawn(watch_config(
        path.to_owned(),
        gateway.clone(),
        config.clone(),
    ));
    let probe = gateway.clone();
    tokio::spawn(async move { trust::report(&probe.trust().await, "start-up") });
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

/// How often the config file is looked at for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Reload users, groups, projects and tokens on SIGHUP and when the config file changes
/// (polled by modification time and size: editors and config managers often replace the file
/// by renaming, which inotify-style watches on the old inode would miss). A broken file keeps
/// the running configuration and logs every problem. `running` is the config the process was
/// started with: settings outside the directory only change with a restart, and are reported.
async fn watch_config(path: PathBuf, gateway: Gateway, running: Config) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut stamp = file_stamp(&path);
    let mut tick = tokio::time::interval(CONFIG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup_signal = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_signal = std::future::pending::<Option<()>>();
        let trigger = tokio::select! {
            _ = hangup_signal => "SIGHUP",
            _ = tick.tick() => {
                if file_stamp(&path) == stamp {
                    continue;
                }
                "file changed"
            }
        };
        stamp = file_stamp(&path);
        match Config::load(&path) {
            Ok(new) => {
                gateway.reload_directory(&new);
                tracing::info!(
                    trigger,
                    users = new.directory.users().count(),
                    groups = new.directory.groups().len(),
                    projects = new.directory.projects().len(),
                    "configuration reloaded: users, groups, projects and tokens are in force"
                );
                let restart = changes_needing_restart(&running, &new);
                if !restart.is_empty() {
                    tracing::warn!(keys = ?restart, "these settings changed in the file but only take effect after a restart");
                }
            }
            Err(error) => {
                tracing::error!(trigger, "configuration reload failed, the running configuration stays in force: {error}");
            }
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
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
