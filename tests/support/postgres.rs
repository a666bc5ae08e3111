//! A PostgreSQL cluster of its own for a test (Debian's `postgresql`, 15): `initdb` in a temp
//! dir, `postgres` on a free loopback port, stopped by pid (SIGINT: a fast shutdown).
//!
//! PostgreSQL refuses to run as root, and the tests run as root here and in CI: the cluster
//! then runs as the `postgres` user the Debian package creates (`setpriv`, which execs, so
//! the pid we hold is the postmaster's), its folder chowned to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn is_root() -> bool {
    let mut id = Command::new("id");
    id.arg("-u");
    process::run(id, None).stdout.trim() == "0"
}

/// `program` with `args`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let initdb = PathBuf::from(BIN).join("initdb");
        assert!(
            initdb.exists(),
            "{} is missing: install the Debian package postgresql (scripts/install-deps does)",
            initdb.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("pc-postgres-")
            .tempdir_in("/tmp")
            .unwrap();
        if is_root() {
            let out = process::run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                None,
            );
            assert!(out.ok, "chown: {}", out.combined());
        }
        let data = dir.path().join("data");
        let mut command = as_postgres(&initdb);
        command.arg("-D").arg(&data).args([
            "-U",
            "portcullis",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let out = process::run(command, None);
        assert!(out.ok, "initdb failed:\n{}", out.combined());
        let mut postgres = Postgres {
            child: None,
            dir,
            port: 0,
        };
        postgres.run();
        postgres
    }

    /// Start (again) on a free port.
    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let log_path = self.dir.path().join("postgres.log");
        let socket_dir = self.dir.path().to_owned();
        let (child, port) = process::start_on_free_port(|port| {
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = as_postgres(&PathBuf::from(BIN).join("postgres"));
            command
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&socket_dir)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", "fsync=off", "-c", "max_connections=20"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let mut child = command.spawn().expect("start postgres");
            let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            process::wait_ready(
                &mut child,
                "postgres",
                Duration::from_secs(30),
                read_log,
                || read_log().contains("ready to accept connections"),
            )
            .map(|()| (child, port))
        });
        self.child = Some(child);
        self.port = port;
    }

    /// The `store.url` for it.
    pub fn url(&self) -> String {
        format!("postgres://portcullis@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop the server (the data stays): the store is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop_or_fail(&mut child, "postgres", &[("INT", Duration::from_secs(10))]);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
