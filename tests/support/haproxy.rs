//! Debian's haproxy in front of one or more gateways, the way a load balancer sits in front of
//! replicas: round robin, no stickiness, optionally the PROXY protocol v2 (`send-proxy-v2`) to
//! the servers or `option forwardfor` in HTTP mode.
//!
//! haproxy runs in the foreground (`-db`) as the test's own process, on a free loopback port,
//! and logs every connection (`option tcplog` / `option httplog`) to its stderr, which goes to
//! a file the test reads with [`Haproxy::log`]. It is stopped by pid: SIGUSR1 (soft stop:
//! close the listener, let connections finish), then SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{process, require_tool};

/// `mode tcp` (bytes through, TLS untouched: what the PROXY protocol is for) or `mode http`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

/// One frontend on a free port, one round-robin backend over `servers`.
#[derive(Clone, Debug)]
pub struct HaproxyConfig {
    pub mode: Mode,
    /// `127.0.0.1:PORT` of each server, in order (`s0`, `s1`, ...).
    pub servers: Vec<String>,
    /// Appended to every `server` line, e.g. `send-proxy-v2`, `send-proxy-v2 check`.
    pub server_options: String,
    /// More lines inside the frontend (e.g. `option forwardfor`, `http-request ...`).
    pub frontend_extra: String,
    /// More lines inside the backend.
    pub backend_extra: String,
    /// Appended to the frontend's `bind` line (e.g. `accept-proxy`).
    pub bind_options: String,
    /// `timeout client` / `timeout server` (a push of a large layer needs more than a GET).
    pub timeout: Duration,
}

impl HaproxyConfig {
    /// TCP mode, round robin over `servers`, each sent the PROXY protocol v2 header when
    /// `send_proxy_v2`.
    pub fn tcp(servers: &[String], send_proxy_v2: bool) -> HaproxyConfig {
        HaproxyConfig {
            mode: Mode::Tcp,
            servers: servers.to_vec(),
            server_options: if send_proxy_v2 {
                "send-proxy-v2".into()
            } else {
                String::new()
            },
            frontend_extra: String::new(),
            backend_extra: String::new(),
            bind_options: String::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// HTTP mode, round robin over `servers`, with `option forwardfor` (X-Forwarded-For
    /// appended with the client's address) when `forwardfor`.
    pub fn http(servers: &[String], forwardfor: bool) -> HaproxyConfig {
        HaproxyConfig {
            mode: Mode::Http,
            frontend_extra: if forwardfor {
                "  option forwardfor\n".into()
            } else {
                String::new()
            },
            ..HaproxyConfig::tcp(servers, false)
        }
    }

    /// The haproxy.cfg for a frontend on `port`.
    pub fn render(&self, port: u16) -> String {
        let (mode, log_option) = match self.mode {
            Mode::Tcp => ("tcp", "tcplog"),
            Mode::Http => ("http", "httplog"),
        };
        let timeout = self.timeout.as_millis();
        let mut config = format!(
            "global\n  log stderr format raw local0 info\n  maxconn 512\n  hard-stop-after 5s\n\ndefaults\n  log global\n  mode {mode}\n  option {log_option}\n  timeout connect 2s\n  timeout client {timeout}ms\n  timeout server {timeout}ms\n\nfrontend fe\n  bind 127.0.0.1:{port} {bind}\n  default_backend be\n{frontend}\nbackend be\n  balance roundrobin\n{backend}",
            bind = self.bind_options,
            frontend = self.frontend_extra,
            backend = self.backend_extra,
        );
        for (i, server) in self.servers.iter().enumerate() {
            config.push_str(&format!("  server s{i} {server} {}\n", self.server_options));
        }
        config
    }
}

/// A running haproxy, stopped by pid on drop (soft stop, then SIGTERM); a process left behind
/// fails the test.
pub struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Haproxy {
    /// haproxy with `config` on a free loopback port.
    pub fn start(config: &HaproxyConfig) -> Haproxy {
        Haproxy::start_with(|port| config.render(port))
    }

    /// haproxy with the whole haproxy.cfg that `config(port)` writes (it must bind
    /// `127.0.0.1:port`), for set-ups [`HaproxyConfig`] does not cover.
    pub fn start_with(config: impl Fn(u16) -> String) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = process::start_on_free_port(|port| {
            spawn(dir.path(), port, &config(port)).map(|child| (child, port))
        });
        Haproxy { child, dir, port }
    }

    /// haproxy with `config` on `port`, chosen beforehand (with [`super::free_port`]) because
    /// the servers behind it must know it: a gateway whose `public_url` is the balancer.
    pub fn start_on(port: u16, config: &HaproxyConfig) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let child =
            spawn(dir.path(), port, &config.render(port)).unwrap_or_else(|log| panic!("{log}"));
        Haproxy { child, dir, port }
    }

    /// `127.0.0.1:PORT`, the address clients connect to.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `SCHEME://127.0.0.1:PORT`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.host())
    }

    /// haproxy's pid (signals from the test, e.g. SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything haproxy logged so far: one line per connection (tcplog) or request
    /// (httplog), naming the server (`be/s0`) that served it, plus its own warnings.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Stop haproxy now (what drop does).
    pub fn stop(&mut self) {
        process::stop_or_fail(&mut self.child, "haproxy", HAPROXY_STOP);
    }
}

/// Write `config` into `dir`, check it, start haproxy and wait until `port` accepts; `Err`
/// carries haproxy's log when it exited (a port taken meanwhile).
fn spawn(dir: &Path, port: u16, config: &str) -> Result<Child, String> {
    let binary = require_tool("haproxy", "haproxy");
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    check_config(&binary, &path);
    let log_path = dir.join("haproxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(&binary)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start haproxy");
    process::wait_ready(
        &mut child,
        "haproxy",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    )
    .map(|()| child)
}

/// `haproxy -c`: a bad config fails the test with haproxy's own words, not with a timeout.
fn check_config(binary: &Path, path: &Path) {
    let mut command = Command::new(binary);
    command.arg("-c").arg("-q").arg("-f").arg(path);
    let out = process::run(command, None);
    assert!(
        out.ok,
        "haproxy rejects its config:\n{}\n{}",
        std::fs::read_to_string(path).unwrap_or_default(),
        out.combined()
    );
}

/// SIGUSR1 is haproxy's soft stop (stop listening, finish the connections it has); SIGTERM
/// its hard stop.
const HAPROXY_STOP: &[(&str, Duration)] = &[
    ("USR1", Duration::from_secs(5)),
    ("TERM", Duration::from_secs(5)),
];

impl Drop for Haproxy {
    fn drop(&mut self) {
        process::stop_or_fail(&mut self.child, "haproxy", HAPROXY_STOP);
    }
}
