//! Running the real programs the tests drive: one way to run a command with optional stdin,
//! one way to wait for a server to come up, one way to make a small image tarball.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed.
pub struct Output {
    pub ok: bool,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `command` to completion, writing `stdin` to it when given.
pub fn run(mut command: Command, stdin: Option<&str>) -> Output {
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Output {
        ok: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Poll `ready` until it holds. If the process exits first, `Err` carries its log; if
/// `timeout` passes, the test fails with the log.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} was not ready within {timeout:?}:\n{}", log());
}

/// Start a server on a free port, once more on another port when the one picked was taken
/// between [`super::free_port`] and the server's bind (tests run in parallel).
pub fn start_on_free_port<T>(mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        match start(super::free_port()) {
            Ok(server) => return server,
            Err(log) if log.to_ascii_lowercase().contains("address already in use") => last = log,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("no free port after 5 attempts:\n{last}");
}

/// `size` random bytes.
pub fn random_bytes(size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes
}

/// A root filesystem tarball in `dir` for `docker import` / `podman import`: a file naming
/// `label` and `size` random bytes.
pub fn image_tarball(dir: &Path, label: &str, size: usize) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hello"), format!("hello from {label}\n")).unwrap();
    std::fs::write(root.join("random.bin"), random_bytes(size)).unwrap();
    let tar = dir.join("image.tar");
    assert!(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap()
            .success(),
        "tar failed"
    );
    tar
}

/// The image CLI docker and podman share: `run` is theirs, the rest is common.
pub trait ImageCli {
    fn name(&self) -> &'static str;

    /// Run the CLI (stdin optional); return success and the combined output.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String);

    /// Like [`ImageCli::run`], panicking with the output on failure.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(ok, "{} {args:?} failed:\n{out}", self.name());
        out
    }

    /// Import a small tarball as `reference` (nothing can be pulled from outside).
    fn import_image(&self, reference: &str) {
        let staging = tempfile::tempdir().unwrap();
        let tar = image_tarball(staging.path(), reference, 512 * 1024);
        self.ok(&["import", tar.to_str().unwrap(), reference], None);
    }

    /// The image id the CLI has for `reference`.
    fn image_id(&self, reference: &str) -> String {
        self.ok(
            &["image", "inspect", "--format", "{{.Id}}", reference],
            None,
        )
        .trim()
        .to_owned()
    }
}
