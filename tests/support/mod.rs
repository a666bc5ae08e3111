//! The shared set-up of the end-to-end tests: real processes on ephemeral loopback ports,
//! torn down by pid when dropped.
//!
//! - [`Registry`]: Debian's `docker-registry` (CNCF distribution 2.8).
//! - [`gateway`]: the real `portcullis` binary with the fixture users.
//! - [`stack`]: a registry and a gateway wired together as an operator would.
//! - [`http`]: raw requests through curl; [`wire`]: instruments for what a registry can't show.

#![allow(dead_code)]

pub mod docker;
pub mod gateway;
pub mod haproxy;
pub mod http;
pub mod issuer;
pub mod ldap;
pub mod nginx;
pub mod oci;
pub mod page;
pub mod podman;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod redis;
pub mod replicas;
pub mod stack;
pub mod wire;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl`: a self-signed certificate for localhost / 127.0.0.1 with `serial`, written as
/// `dir/NAME.crt` and `dir/NAME.key`.
pub fn self_signed(dir: &Path, name: &str, serial: &str) -> (PathBuf, PathBuf) {
    let openssl = require_tool("openssl", "openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .args(["-set_serial", serial, "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The path of a tool the tests drive; fails the test, naming the Debian package, if missing.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("`{name}` is not installed: install the Debian package `{package}` (scripts/install-deps does)");
}

/// `auth.token` of the registry's config.
#[derive(Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

#[derive(Clone, Default)]
pub struct RegistryOptions {
    pub token_auth: Option<TokenAuth>,
    /// `http.host`: the URL the registry names itself by in Locations.
    pub http_host: Option<String>,
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Registry {
    /// Stop the registry (the gateway in front of it now finds nothing listening).
    pub fn stop(&mut self) {
        process::stop_or_fail(&mut self.child, "docker-registry", REGISTRY_STOP);
    }

    /// Start it again, same config, same port.
    pub fn restart(&mut self) {
        let binary = require_tool("docker-registry", "docker-registry");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let port = self.port;
        self.child = Command::new(&binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart docker-registry");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not come back on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Registry {
        Registry::start_with_config("docker-registry", |port, dir| {
            let mut config = format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            );
            if let Some(host) = &options.http_host {
                config.push_str(&format!("  host: \"{host}\"\n"));
            }
            if let Some(auth) = &options.token_auth {
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: \"{}\"\n    service: \"{}\"\n    issuer: \"{}\"\n    rootcertbundle: \"{}\"\n",
                    auth.realm,
                    auth.service,
                    auth.issuer,
                    auth.rootcertbundle.display()
                ));
            }
            config
        })
    }

    /// Start docker-registry on a free port with the config `config(port, its folder)` makes
    /// (`what` names it in failures).
    pub fn start_with_config(what: &str, config: impl Fn(u16, &Path) -> String) -> Registry {
        let binary = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = process::start_on_free_port(|port| {
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config(port, dir.path())).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            process::wait_ready(
                &mut child,
                what,
                Duration::from_secs(15),
                || std::fs::read_to_string(&log_path).unwrap_or_default(),
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            )
            .map(|()| (child, port))
        });
        Registry { child, dir, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("registry.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

/// distribution exits at once on SIGTERM (it has nothing to drain in a test).
const REGISTRY_STOP: &[(&str, Duration)] = &[("TERM", Duration::from_secs(5))];

impl Drop for Registry {
    fn drop(&mut self) {
        process::stop_or_fail(&mut self.child, "docker-registry", REGISTRY_STOP);
    }
}
