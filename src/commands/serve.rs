//! `portcullis serve --config FILE`: load, bind, serve until SIGINT or SIGTERM, then drain.
//!
//! Signals: SIGTERM/SIGINT drain (a second one exits at once), SIGHUP reloads the directory
//! and the TLS certificate, SIGUSR1 reopens the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use crate::config::reload::changes_needing_restart;
use crate::config::{Config, LogFormat};
use crate::diagnose::trust;
use crate::server::ops::{self, Ops};
use crate::server::{self, tls, Drained};
use crate::telemetry::metrics::metrics;
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
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{key}: cannot listen on {addr}: {}", bind_reason(source, key))]
    Bind {
        /// `listen` or `metrics.listen`: the key to change.
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Why a bind failed, with the fix for the two usual causes.
fn bind_reason(error: &std::io::Error, key: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{error}: another portcullis or another service holds the port (`ss -ltnp` shows which); stop it, or set {key} to a free port"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{error}: ports below 1024 need root or CAP_NET_BIND_SERVICE; set {key} to a port such as 4567"
        ),
        _ => error.to_string(),
    }
}

pub async fn serve(path: &Path, log_format: Option<LogFormat>) -> Result<(), ServeError> {
    let mut config = Config::load(path)?;
    telemetry::init(
        log_format.unwrap_or(config.log_format),
        config.log_level.as_deref(),
    );
    // The directory moves into the gateway; the config kept for the reload's restart check
    // (and its clone below) need none: with 100,000 projects each copy was a third of the
    // process's memory, and making it a tenth of the start-up.
    let directory = std::mem::take(&mut config.directory);
    let gateway = Gateway::new(&config)?;
    gateway.replace_directory(directory);
    crate::config::release_freed_memory();
    let (acceptor, certificates) = match config.tls.as_ref().map(tls::acceptor).transpose()? {
        Some((acceptor, certificates)) => (Some(acceptor), Some(certificates)),
        None => (None, None),
    };
    let listener = bind("listen", config.listen).await?;
    let ops_listener = match config.metrics_listen {
        Some(addr) => Some(bind("metrics.listen", addr).await?),
        None => None,
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(
        public_url = %config.public_url.origin(),
        upstream = %config.upstream.url,
        tls = acceptor.is_some(),
        "listening on {addr}"
    );
    if let Some(warning) = super::check::plain_listener_warning(&config) {
        tracing::warn!("{warning}");
    }
    tokio::spawn(watch_config(
        path.to_owned(),
        gateway.clone(),
        config.clone(),
        certificates,
    ));
    let probe = gateway.clone();
    tokio::spawn(async move { trust::report(&probe.trust().await, "start-up") });
    #[cfg(unix)]
    tokio::spawn(reopen_audit_on_usr1(gateway.clone()));

    let ready_gateway = gateway.clone();
    let ops = Ops::new(Arc::new(move || {
        let gateway = ready_gateway.clone();
        Box::pin(async move { gateway.ready().await })
    }))
    .with_sources({
        let gateway = gateway.clone();
        Arc::new(move || gateway.identity_health())
    });
    let noting = gateway.clone();
    let ops = ops.with_note(Arc::new(move || noting.shared_state_degraded()));
    let ops_task = ops_listener.map(|listener| {
        let addr = listener.local_addr().ok();
        tracing::info!(
            "operations listener on {}: /metrics, /healthz, /readyz",
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(ops::serve(listener, ops.clone(), std::future::pending()))
    });

    let service = tower::ServiceBuilder::new()
        .layer(telemetry::AccessLogLayer)
        .service(gateway);
    let draining = ops.clone();
    let shutdown = async move {
        let signal = shutdown_signal().await;
        tracing::info!("{signal} received: draining (a second signal exits at once)");
        draining.start_draining();
        tokio::spawn(async {
            let signal = shutdown_signal().await;
            tracing::warn!("{signal} received again: exiting at once, requests under way are cut");
            telemetry::gather::flush_everywhere();
            std::process::exit(1);
        });
    };
    let grace = config.server.shutdown_grace;
    let drained = server::serve(listener, acceptor, config.server.clone(), service, shutdown)
        .await
        .map_err(ServeError::Workers)?;
    match drained {
        Drained::All => tracing::info!("stopped: every request under way finished"),
        Drained::Abandoned(open) => tracing::warn!(
            open_connections = open,
            "stopped: server.shutdown_grace ({grace:?}) ran out with connections still open; they are cut"
        ),
    }
    if let Some(task) = ops_task {
        task.abort();
    }
    Ok(())
}

async fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

/// Reopen the audit log on SIGUSR1 (logrotate's `postrotate`).
#[cfg(unix)]
async fn reopen_audit_on_usr1(gateway: Gateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        gateway.audit().reopen();
    }
}

/// How often the config file is looked at for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Reload users, groups, projects and tokens on SIGHUP and when the config file changes
/// (polled by modification time and size: editors and config managers often replace the file
/// by renaming, which inotify-style watches on the old inode would miss). A broken file keeps
/// the running configuration and logs every problem. `running` is the config the process was
/// started with: settings outside the directory only change with a restart, and are reported.
/// The TLS certificate is looked at the same way (see [`tls::Certificates`]).
async fn watch_config(
    path: PathBuf,
    gateway: Gateway,
    running: Config,
    certificates: Option<Arc<tls::Certificates>>,
) {
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
            _ = tick.tick() => "file changed",
        };
        let forced = trigger == "SIGHUP";
        if let Some(certificates) = &certificates {
            match certificates.reload(forced) {
                Ok(true) => tracing::info!(
                    trigger,
                    "TLS certificate reloaded: new connections get the new certificate"
                ),
                Ok(false) => {}
                Err(error) => tracing::error!(
                    trigger,
                    "TLS certificate reload failed, the certificate in service stays: {error}"
                ),
            }
        }
        if !forced && file_stamp(&path) == stamp {
            continue;
        }
        stamp = file_stamp(&path);
        // Off the runtime: a large directory takes a while to read, and the runtime's
        // other tasks (the operations listener, signals) should not wait for it.
        let load = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load_beside_traffic(&path)).await
        };
        let Ok(load) = load else {
            tracing::error!(trigger, "configuration reload failed: the load panicked");
            continue;
        };
        match load {
            Ok(mut new) => {
                let (users, groups, projects) = (
                    new.directory.users().count(),
                    new.directory.groups().len(),
                    new.directory.projects().len(),
                );
                // Moved in, not copied: a copy of 100,000 projects was most of a reload.
                gateway.replace_directory(std::mem::take(&mut new.directory));
                // The directory replaced is freed now (unless a request still holds it): give
                // its pages back, off the runtime, or the process stays at two directories'
                // size (312 MiB after a reload at 100,000 projects, against 169 after start).
                tokio::task::spawn_blocking(crate::config::release_freed_memory);
                metrics().config_reload(true);
                tracing::info!(
                    trigger,
                    users,
                    groups,
                    projects,
                    "configuration reloaded: users, groups, projects and tokens are in force"
                );
                let restart = changes_needing_restart(&running, &new);
                if !restart.is_empty() {
                    tracing::warn!(keys = ?restart, "these settings changed in the file but only take effect after a restart");
                }
            }
            Err(error) => {
                metrics().config_reload(false);
                tracing::error!(trigger, "configuration reload failed, the running configuration stays in force: {error}");
            }
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// SIGINT or SIGTERM: which one arrived.
async fn shutdown_signal() -> &'static str {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return "SIGINT";
                }
            };
        tokio::select! {
            _ = interrupt => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        "interrupt"
    }
}
