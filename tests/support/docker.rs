//! One private docker daemon (Debian's docker.io) per test: its own data root, exec root, pid
//! file and socket in a temp dir, no iptables, no bridge. `DOCKER_HOST` and `DOCKER_CONFIG`
//! point into that dir, so the machine's daemon and credentials are never touched. Stopped with
//! SIGTERM (it takes its managed containerd down with it), SIGKILL if it lingers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{self, ImageCli};
use super::require_tool;

pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    client: PathBuf,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dockerd = require_tool("dockerd", "docker.io");
        // Debian's client, matching the daemon (another docker may be earlier on PATH).
        let client = require_tool("docker", "docker.io");
        let client = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            client
        };
        // A short path: the socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("pc-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("config")).unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut daemon = Dockerd { child, dir, client };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let (client, dir) = (self.client.clone(), self.dir.path().to_owned());
        if let Err(log) = process::wait_ready(
            &mut self.child,
            "dockerd",
            Duration::from_secs(60),
            || std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default(),
            || {
                let mut command = client_command(&client, &dir);
                command.arg("version");
                process::run(command, None).ok
            },
        ) {
            panic!("{log}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `DOCKER_CONFIG`: where `docker login` stores what it keeps.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }
}

impl ImageCli for Dockerd {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut command = client_command(&self.client, self.dir.path());
        command.args(args);
        let out = process::run(command, stdin);
        (out.ok, out.combined())
    }
}

/// The docker CLI pointed at the daemon whose files are in `dir`.
fn client_command(client: &Path, dir: &Path) -> Command {
    let mut command = Command::new(client);
    command
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dir.join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", dir.join("config"));
    command
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
