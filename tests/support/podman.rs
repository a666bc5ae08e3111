//! podman as root with its own storage (vfs), run root and auth file in a temp dir, so tests
//! never touch the machine's images or credentials.

use std::process::Command;

use super::process::{self, ImageCli};
use super::require_tool;

pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        require_tool("podman", "podman");
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl ImageCli for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let d = self.dir.path();
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"));
        let out = process::run(command, stdin);
        (out.ok, out.combined())
    }
}
