//! Log lines cannot be forged or made to keep a secret through what a client sends.

use crate::support;

use support::gateway::secrets::*;
use support::http::{get, request};
use support::stack::{RegistryAuth, Stack, StackOptions};

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn client_strings_cannot_forge_log_lines_and_a_pasted_token_is_not_logged() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth: auth,
            ..StackOptions::default()
        });
        let url = format!("{}/jwt/auth?service=container_registry", stack.gateway.url);
        // A newline in the Basic username, the form username and the account parameter.
        let forged = "evil\nINFO forged";
        assert_eq!(get(&url).basic(forged, "x").send().status, 401);
        let form = format!(
            "grant_type=password&service=container_registry&username={}&password=x",
            percent(forged)
        );
        assert_eq!(request("POST", &url).body(&form).send().status, 401);
        let reply = get(&format!("{url}&account={}", percent(forged))).send();
        assert_eq!(reply.status, 403);
        // A token pasted into the username field (and the password into the password field).
        assert_eq!(get(&url).basic(ALICE_PAT, "x").send().status, 401);
        let form = format!(
            "grant_type=password&service=container_registry&username={ALICE_READ_ONLY_PAT}&password=x"
        );
        assert_eq!(request("POST", &url).body(&form).send().status, 401);

        let log = stack.gateway.log();
        assert!(
            log.matches("login refused").count() >= 4,
            "the refusals are logged:\n{log}"
        );
        for line in log.lines() {
            assert!(
                !line.trim_start().starts_with("INFO forged"),
                "forged line:\n{log}"
            );
        }
        for secret in [ALICE_PAT, ALICE_READ_ONLY_PAT] {
            assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        }
        // The operator can still tell the attempts apart, and sees known names.
        assert!(log.contains("user_hash="), "{log}");
        assert_eq!(get(&url).basic("alice", "wrong").send().status, 401);
        assert!(stack.gateway.log().contains("user=\"alice\""));
    }
}

/// `connections` curl processes at once, each sending `requests` GETs on one kept-alive
/// connection to `/v2/order/c<connection>/r<request>`: returns when all were answered.
fn requests_on_connections(url: &str, connections: usize, requests: usize, tag: &str) {
    let curls: Vec<_> = (0..connections)
        .map(|c| {
            let mut curl = std::process::Command::new("curl");
            curl.args(["-sS", "-w", "%{http_code} %{num_connects}\n"]);
            for r in 0..requests {
                curl.args(["-o", "/dev/null"])
                    .arg(format!("{url}/v2/order/{tag}c{c}/r{r}"));
            }
            curl.stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for curl in curls {
        let out = curl.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text.lines().count(), requests, "{text}");
        let connects: u32 = text
            .lines()
            .map(|line| line.split(' ').nth(1).unwrap().parse::<u32>().unwrap())
            .sum();
        assert_eq!(connects, 1, "one kept-alive connection each:\n{text}");
    }
}

/// Every line of `tag`'s requests is in `log`, once, and each connection's in the order sent,
/// all from one client port.
fn assert_every_line_in_order(log: &str, connections: usize, requests: usize, tag: &str) {
    for c in 0..connections {
        let prefix = format!("path=/v2/order/{tag}c{c}/r");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&prefix)).collect();
        let order: Vec<usize> = lines
            .iter()
            .map(|line| {
                let rest = &line[line.find(&prefix).unwrap() + prefix.len()..];
                rest.split(' ').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(
            order,
            (0..requests).collect::<Vec<_>>(),
            "connection {c}'s lines, in order:\n{log}"
        );
        fn client(line: &str) -> Option<&str> {
            line.split(" client=").nth(1)?.split(' ').next()
        }
        assert!(
            lines.iter().all(|line| client(line) == client(lines[0])),
            "one connection, one client port:\n{log}"
        );
    }
}

/// The access lines are gathered per worker thread and written after the answers (see
/// `telemetry::gather`): none is lost, none is written twice or out of order on its connection,
/// each arrives within a bound while the gateway runs, and those still gathered when it is
/// stopped are written before it exits.
#[test]
fn every_access_line_arrives_in_order_per_connection_and_on_shutdown() {
    let mut stack = Stack::start();
    let url = stack.gateway.url.clone();
    let (connections, requests) = (4, 60);

    requests_on_connections(&url, connections, requests, "run-");
    for c in 0..connections {
        // Generous: the bound is 50 ms, this proves one exists.
        stack.gateway.wait_for_log(
            &format!("path=/v2/order/run-c{c}/r{} ", requests - 1),
            1,
            std::time::Duration::from_secs(5),
        );
    }
    assert_every_line_in_order(&stack.gateway.log(), connections, requests, "run-");

    // Stopped right after the last answers: every line is there when it has exited.
    requests_on_connections(&url, connections, requests, "stop-");
    stack.gateway.signal("TERM");
    let status = stack
        .gateway
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the gateway exits after a SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", stack.gateway.log());
    let log = stack.gateway.log();
    assert_every_line_in_order(&log, connections, requests, "stop-");
    assert_every_line_in_order(&log, connections, requests, "run-");
}
