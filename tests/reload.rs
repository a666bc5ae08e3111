//! Reloading users, groups, projects and tokens without a restart: on SIGHUP and when the file
//! changes; a broken file keeps the running configuration.

use crate::support;

use std::time::Duration;

use support::gateway::secrets::*;
use support::http::get;
use support::stack::Stack;

const RELOADED: &str = "configuration reloaded";

fn login(stack: &Stack, user: &str, secret: &str) -> support::http::Reply {
    get(&format!(
        "{}/jwt/auth?service=container_registry",
        stack.gateway.url
    ))
    .basic(user, secret)
    .send()
}

fn edit_config(stack: &Stack, from: &str, to: &str) {
    let path = stack.gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn sighup_reloads_tokens_and_a_broken_file_keeps_the_running_config() {
    let stack = Stack::start();
    assert_eq!(login(&stack, "alice", ALICE_PAT).status, 200);

    // Revoke alice's token and tell the gateway.
    edit_config(&stack, "{ name: laptop,", "{ name: laptop, revoked: true,");
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log(RELOADED, 1, Duration::from_secs(10));
    let reply = login(&stack, "alice", ALICE_PAT);
    assert_eq!(reply.status, 401);
    assert!(reply.error_message().contains("revoked"), "{}", reply.body);

    // A broken file: every problem is logged, the running config stays.
    let path = stack.gateway.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("role: developer", "role: boss")
            .replace("visibility: internal", "visibility: secret"),
    )
    .unwrap();
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log("configuration reload failed", 1, Duration::from_secs(10));
    let log = stack.gateway.log();
    assert!(
        log.contains("unknown role \\\"boss\\\"") || log.contains("unknown role \"boss\""),
        "{log}"
    );
    assert!(log.contains("visibility"), "{log}");
    assert_eq!(
        login(&stack, "bob", BOB_PAT).status,
        200,
        "still serving with the last good config"
    );
    assert_eq!(
        login(&stack, "alice", ALICE_PAT).status,
        401,
        "and that config still has the revocation"
    );
}

#[test]
fn a_changed_file_is_picked_up_without_a_signal_and_restart_only_keys_are_named() {
    let stack = Stack::start();
    assert_eq!(login(&stack, "bob", BOB_PAT).status, 200);
    // One write, so one reload sees both changes.
    let path = stack.gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replacen(
            "  - username: bob\n",
            "  - username: bob\n    blocked: true\n",
            1,
        )
        .replacen("response_timeout: 3s", "response_timeout: 4s", 1);
    std::fs::write(&path, text).unwrap();
    stack
        .gateway
        .wait_for_log(RELOADED, 1, Duration::from_secs(10));
    let reply = login(&stack, "bob", BOB_PAT);
    assert_eq!(reply.status, 401);
    assert!(reply.error_message().contains("blocked"), "{}", reply.body);
    let log = stack.gateway.log();
    assert!(log.contains("trigger=\"file changed\""), "{log}");
    assert!(
        log.contains("only take effect after a restart") && log.contains("upstream"),
        "{log}"
    );
}

#[test]
fn a_reload_does_not_drop_open_connections() {
    use std::io::{BufRead, BufReader, Read, Write};
    let stack = Stack::start();
    let stream = std::net::TcpStream::connect(&stack.gateway.host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut ask = || {
        writer
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        status
    };
    assert!(ask().starts_with("HTTP/1.1 401"));
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert!(
        ask().starts_with("HTTP/1.1 401"),
        "the same connection still answers after the reload"
    );
}
