//! The brute-force limits as an attacker meets them: simultaneous guesses, junk CI job
//! tokens, unknown usernames (timing), and absurd usernames (memory).

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use support::gateway::secrets::*;
use support::http::get;
use support::stack::{RegistryAuth, Stack};

/// A stack with `extra` gateway config and an operations listener; its metrics URL.
fn stack_with(extra: &str, registry_auth: RegistryAuth) -> (Stack, String) {
    let (stack, ops) = Stack::with_ops(extra, registry_auth);
    (stack, format!("{ops}/metrics"))
}

fn auth_url(stack: &Stack) -> String {
    format!("{}/jwt/auth?service=container_registry", stack.gateway.url)
}

/// The value of one series (`name{labels}` exactly as exported); 0 when absent.
fn series(metrics_url: &str, name: &str) -> f64 {
    support::http::series(&get(metrics_url).send().body, name).unwrap_or(0.0)
}

const STORED_HASHES: &str = "portcullis_password_hashes_total{kind=\"stored\"}";
const DUMMY_HASHES: &str = "portcullis_password_hashes_total{kind=\"dummy\"}";

#[test]
fn simultaneous_wrong_passwords_get_no_more_checks_than_the_limit() {
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let (stack, metrics) = stack_with(
            "brute_force: { max_failures: 3, window: 60s, ban: 1h }\n",
            auth,
        );
        let url = auth_url(&stack);
        // 150 curl processes at once, each with another wrong password for alice.
        let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
            let guesses: Vec<_> = (0..150)
                .map(|i| {
                    let url = &url;
                    scope.spawn(move || {
                        let reply = get(url).basic("alice", &format!("guess-{i}")).send();
                        (reply.status, reply.error_code())
                    })
                })
                .collect();
            guesses.into_iter().map(|g| g.join().unwrap()).collect()
        });
        let verified = statuses.iter().filter(|(s, _)| *s == 401).count();
        assert!(
            (1..=3).contains(&verified),
            "{verified} guesses were checked, the limit is 3: {statuses:?}"
        );
        for (status, code) in &statuses {
            assert!(
                matches!(
                    (*status, code.as_str()),
                    (401, "UNAUTHORIZED") | (403, "DENIED") | (429, "TOOMANYREQUESTS")
                ),
                "{status} {code}"
            );
        }
        assert!(
            series(&metrics, STORED_HASHES) <= 3.0,
            "slow hashes: {}",
            series(&metrics, STORED_HASHES)
        );
        // The right password, after the limit, is refused with the ban's answer.
        let reply = get(&url).basic("alice", ALICE_PASSWORD).send();
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(
            reply.error_message().contains("too many failed logins"),
            "{}",
            reply.body
        );
    }
}

#[test]
fn junk_job_tokens_do_not_lock_ci_jobs_out() {
    let (stack, _) = stack_with(
        "brute_force: { max_failures: 10, window: 60s, ban: 1h }\n",
        RegistryAuth::TrustsGateway,
    );
    let url = format!(
        "{}&scope=repository:mygroup/myproject:push,pull",
        auth_url(&stack)
    );
    for i in 0..40 {
        let reply = get(&url)
            .basic("gitlab-ci-token", &format!("junk.job.token-{i}"))
            .send();
        assert!(matches!(reply.status, 401 | 403), "{}", reply.body);
    }
    // This address is banned (the per-address count still applies)...
    let token = stack.ci_job_token("mygroup/myproject", "alice");
    let reply = get(&url).basic("gitlab-ci-token", &token).send();
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.error_message().contains("from this client"),
        "{}",
        reply.body
    );
    // ...but a job on another machine logs in: the username is not banned.
    let reply = get(&url)
        .basic("gitlab-ci-token", &token)
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_login_with_an_unknown_username_costs_a_slow_hash_like_a_known_one() {
    let (stack, metrics) = stack_with("", RegistryAuth::TrustsGateway);
    let url = auth_url(&stack);
    let login = |user: &str, secret: &str| get(&url).basic(user, secret).send().status;
    assert_eq!(login("alice", "wrong"), 401);
    assert_eq!(series(&metrics, STORED_HASHES), 1.0);
    assert_eq!(series(&metrics, DUMMY_HASHES), 0.0);
    // Nobody, a user without a password, a deploy token's name with a wrong secret, a blocked
    // user: each pays one slow hash too, so none answers faster than alice's wrong password.
    for (user, secret) in [
        ("mallory", "whatever"),
        ("bob", "wrong"),
        ("gitlab+deploy-token-1", "wrong"),
        ("dave", "wrong"),
    ] {
        let before = series(&metrics, DUMMY_HASHES);
        assert_eq!(login(user, secret), 401, "{user}");
        assert_eq!(series(&metrics, DUMMY_HASHES), before + 1.0, "{user}");
    }
    // A good token costs no slow hash at all, and a remembered password none the second time.
    assert_eq!(login("bob", BOB_PAT), 200);
    assert_eq!(login("alice", ALICE_PASSWORD), 200);
    assert_eq!(login("alice", ALICE_PASSWORD), 200);
    assert_eq!(series(&metrics, STORED_HASHES), 2.0);
    assert_eq!(series(&metrics, DUMMY_HASHES), 4.0);
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// POST one password-grant form on a kept-alive connection; the answer's status.
fn post_login(stream: &mut BufReader<TcpStream>, host: &str, username: &str) -> u16 {
    let body =
        format!("grant_type=password&service=container_registry&username={username}&password=x");
    let head = format!(
        "POST /jwt/auth HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let writer = stream.get_mut();
    writer.write_all(head.as_bytes()).unwrap();
    writer.write_all(body.as_bytes()).unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut discard = vec![0; length];
    stream.read_exact(&mut discard).unwrap();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn two_thousand_logins_with_60_kib_usernames_leave_memory_bounded() {
    // A limit high enough that the client is never banned (an office behind one NAT address
    // might set it so): the ban must not be what keeps memory bounded.
    let (stack, _) = stack_with(
        "brute_force: { max_failures: 100000, window: 60s, ban: 1h }\n",
        RegistryAuth::None,
    );
    let pid = stack.gateway.pid();
    let before = rss_kib(pid);
    let mut stream =
        BufReader::new(TcpStream::connect(&stack.gateway.host).expect("connect to the gateway"));
    for i in 0..2000 {
        // 60 KiB of letters, different in its first characters each time.
        let username = format!("{i:06}{}", "u".repeat(60 * 1024 - 6));
        assert_eq!(post_login(&mut stream, &stack.gateway.host, &username), 401);
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 48 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Nothing of the names reached the log either.
    assert!(!stack.gateway.log().contains(&"u".repeat(300)));
}
