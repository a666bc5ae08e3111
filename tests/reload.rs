//! Reloading users, groups, projects and tokens without a restart: on SIGHUP and when the file
//! changes; a broken file keeps the running configuration.

mod support;

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
