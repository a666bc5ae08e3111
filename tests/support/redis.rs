//! Debian's `redis-server` on a free loopback port, in its own temp dir, no persistence;
//! stopped by pid (SIGTERM) when dropped. It can be restarted on the same port, frozen
//! (SIGSTOP) and thawed (SIGCONT), and asked things with `redis-cli`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{process, require_tool};

pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    frozen: bool,
}

const STOP: &[(&str, Duration)] = &[("TERM", Duration::from_secs(5))];

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    let binary = require_tool("redis-server", "redis-server");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .unwrap();
    Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start redis-server")
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = process::start_on_free_port(|port| {
            let mut child = spawn(dir.path(), port);
            let log = || std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
            process::wait_ready(
                &mut child,
                "redis-server",
                Duration::from_secs(10),
                log,
                || log().contains("Ready to accept connections"),
            )
            .map(|()| (child, port))
        });
        RedisServer {
            child,
            dir,
            port,
            frozen: false,
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stop it (SIGTERM) and start it again on the same port: everything in it is lost.
    pub fn restart(&mut self) {
        process::stop_or_fail(&mut self.child, "redis-server", STOP);
        let before = self.log().matches("Ready to accept connections").count();
        self.child = spawn(self.dir.path(), self.port);
        let dir = self.dir.path().to_owned();
        let log = || std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        process::wait_ready(
            &mut self.child,
            "redis-server",
            Duration::from_secs(10),
            log,
            || log().matches("Ready to accept connections").count() > before,
        )
        .expect("redis-server restarts");
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn freeze(&mut self) {
        self.signal("STOP");
        self.frozen = true;
    }

    /// SIGCONT.
    pub fn thaw(&mut self) {
        self.signal("CONT");
        self.frozen = false;
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// `redis-cli -p PORT ARGS`: its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let binary = require_tool("redis-cli", "redis-tools");
        let mut command = Command::new(binary);
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args);
        process::run(command, None).stdout
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.frozen {
            self.signal("CONT");
        }
        process::stop_or_fail(&mut self.child, "redis-server", STOP);
    }
}
