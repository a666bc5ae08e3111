//! The test support stops what it started by pid, gracefully, and fails a test that leaves a
//! process behind: an nginx master killed with SIGKILL left its workers listening for ever.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::nginx::Nginx;
use support::process;

/// The pids of `parent`'s children, from /proc.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                rest.split_whitespace().nth(1) == Some(&parent.to_string())
            })
        })
        .collect()
}

fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'))
}

#[test]
fn nginx_is_stopped_with_its_workers_and_its_port_is_free_again() {
    let port = support::free_port();
    let nginx = Nginx::start(port, "127.0.0.1:9", "location / { return 204; }");
    let workers = children(nginx.pid());
    assert!(!workers.is_empty(), "nginx has a worker process");
    drop(nginx);
    for worker in workers {
        assert!(!runs(worker), "nginx worker {worker} still runs");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on nginx's port {port}"
    );
}

#[test]
fn a_process_left_behind_by_a_stopped_one_is_reported_and_killed() {
    // `sleep 301` (exec of sh) dies of SIGTERM; its child `sleep 300` would be orphaned and keep
    // running.
    let mut child = Command::new("sh")
        .args(["-c", "sleep 300 & exec sleep 301"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while children(child.id()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "sh started no sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = process::stop(&mut child, &[("TERM", Duration::from_secs(5))]);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].command, "sleep 300", "{left:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while runs(left[0].pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the leftover was not killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut child = Command::new("sh")
        .args(["-c", "sleep 300 & exec sleep 301"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    while children(child.id()).is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        process::stop_or_fail(&mut child, "sleep", &[("TERM", Duration::from_secs(5))])
    }));
    let message = failed.expect_err("stop_or_fail fails the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("sleep (pid") && message.contains("left processes running"),
        "{message}"
    );
}
