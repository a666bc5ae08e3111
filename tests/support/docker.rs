//! One private docker daemon (Debian's docker.io) per test: its own data root, exec root, pid
//! file and socket in a temp dir, no iptables, no bridge. `DOCKER_HOST` and `DOCKER_CONFIG`
//! point into that dir, so the machine's daemon and credentials are never touched. Stopped with
//! SIGTERM (it takes its managed containerd down with it), SIGKILL if it lingers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.run(&["version"], None).0 {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not answer within 60 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `DOCKER_CONFIG`: where `docker login` stores what it keeps.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Run the docker CLI against this daemon; return success and the combined output.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut child = Command::new(&self.client)
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.config_dir())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(ok, "docker {args:?} failed:\n{out}");
        out
    }

    /// `docker import` of a small tarball (nothing can be pulled from outside).
    pub fn import_image(&self, reference: &str) {
        let staging = tempfile::tempdir().unwrap();
        let root = staging.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hello"), format!("hello from {reference}\n")).unwrap();
        let mut bytes = vec![0u8; 512 * 1024];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut bytes,
        )
        .unwrap();
        std::fs::write(root.join("random.bin"), bytes).unwrap();
        let tar = staging.path().join("image.tar");
        assert!(Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap()
            .success());
        self.ok(&["import", tar.to_str().unwrap(), reference], None);
    }

    pub fn image_id(&self, reference: &str) -> String {
        self.ok(
            &["image", "inspect", "--format", "{{.Id}}", reference],
            None,
        )
        .trim()
        .to_owned()
    }
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
