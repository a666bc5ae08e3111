//! podman as root with its own storage (vfs), run root and auth file in a temp dir, so tests
//! never touch the machine's images or credentials.

use std::io::Write;
use std::process::{Command, Stdio};

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

    /// Run `podman ARGS` (stdin optional); return success and the combined output.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let d = self.dir.path();
        let mut child = Command::new("podman")
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
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start podman");
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

    /// Like [`Podman::run`], panicking with the output on failure.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(ok, "podman {args:?} failed:\n{out}");
        out
    }

    /// `podman import` a small tarball (a few files with random bytes) as `reference`.
    pub fn import_image(&self, reference: &str) {
        let staging = tempfile::tempdir().unwrap();
        let root = staging.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hello"), format!("hello from {reference}\n")).unwrap();
        let mut bytes = vec![0u8; 300 * 1024];
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

    /// The image id podman has for `reference`.
    pub fn image_id(&self, reference: &str) -> String {
        self.ok(
            &["image", "inspect", "--format", "{{.Id}}", reference],
            None,
        )
        .trim()
        .to_owned()
    }
}
