//! Running the real programs the tests drive: one way to run a command with optional stdin,
//! one way to wait for a server to come up, one way to stop it (by pid, gracefully, failing
//! the test when it leaves a process behind), one way to make a small image tarball.

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

/// A process that still ran after the process that started it was stopped.
#[derive(Debug)]
pub struct Leftover {
    pub pid: u32,
    pub command: String,
}

/// `(parent pid, start time in clock ticks, state)` of a live process, from `/proc/PID/stat`.
/// The start time tells a process from a later one that got its pid.
fn stat(pid: u32) -> Option<(u32, u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start, state))
}

/// Every process below `pid` (children, their children, ...), with their start times.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut all = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    let table: Vec<(u32, u32, u64)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(ppid, start, _)| (p, ppid, start)))
        .collect();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for &(p, ppid, start) in &table {
            if ppid == parent {
                all.push((p, start));
                parents.push(p);
            }
        }
    }
    all
}

/// Whether the process `pid` that started at `start` still runs (a zombie does not).
fn still_runs(pid: u32, start: u64) -> bool {
    matches!(stat(pid), Some((_, s, state)) if s == start && state != 'Z')
}

fn send(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Stop `child` by its pid: each of `signals` in turn (e.g. `[("QUIT", 10s), ("TERM", 5s)]`,
/// graceful first), each given its time to end the process, then SIGKILL. Then wait (up to
/// 2 s: a master waits for its workers, so they are normally gone already) for every process it had started to end too; those still running are killed and
/// returned, so the caller can fail the test that left them (an nginx master killed with
/// SIGKILL leaves its workers listening on the port for ever).
pub fn stop(child: &mut Child, signals: &[(&str, Duration)]) -> Vec<Leftover> {
    let pid = child.id();
    let family = descendants(pid);
    let mut exited = matches!(child.try_wait(), Ok(Some(_)));
    for (signal, grace) in signals {
        if exited {
            break;
        }
        send(pid, signal);
        let deadline = Instant::now() + *grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left: Vec<(u32, u64)> = family;
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&(p, start)| still_runs(p, start));
        std::thread::sleep(Duration::from_millis(20));
    }
    left.retain(|&(p, start)| still_runs(p, start));
    left.into_iter()
        .map(|(p, _)| {
            let command = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            send(p, "KILL");
            Leftover { pid: p, command }
        })
        .collect()
}

/// [`stop`], failing the test (unless it is already failing) when `what` left a process
/// running: a leak that would otherwise hold ports and files for every later test.
pub fn stop_or_fail(child: &mut Child, what: &str, signals: &[(&str, Duration)]) {
    let left = stop(child, signals);
    if !left.is_empty() && !std::thread::panicking() {
        panic!(
            "{what} (pid {}) left processes running after it stopped (now killed): {left:?}",
            child.id()
        );
    }
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

    /// Import an image as `remote`, push it, remove it, pull it back, and check the pulled
    /// image is the pushed one.
    fn push_then_pull_back(&self, remote: &str) {
        self.import_image(remote);
        let id = self.image_id(remote);
        let out = self.ok(&["push", remote], None);
        assert!(out.contains("digest: sha256:"), "{out}");
        self.ok(&["rmi", remote], None);
        self.ok(&["pull", remote], None);
        assert_eq!(
            self.image_id(remote),
            id,
            "the pulled image is the pushed one"
        );
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
