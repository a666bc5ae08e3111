//! The client's real address behind a load balancer: the PROXY protocol v2 from Debian's
//! haproxy (`send-proxy-v2`), `X-Forwarded-For` from trusted hops (haproxy's
//! `option forwardfor`), and nothing a client sends when neither is set up.
//!
//! 127.0.0.0/8 all routes to this machine, so `curl --interface 127.0.0.2` is a second client
//! behind the same haproxy (which reaches the gateway from 127.0.0.1).

mod support;

use std::time::Duration;

use support::docker::Dockerd;
use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayOptions};
use support::haproxy::{Haproxy, HaproxyConfig};
use support::http::get;
use support::process::ImageCli;
use support::raw::{self, RawRequest};
use support::stack::{RegistryAuth, Stack, StackOptions};

/// A stack whose gateway has `server` settings (inside `server: { ... }`), `extra` YAML, an
/// audit log and an operations listener; the metrics URL.
fn stack_with(server: &str, extra: &str) -> (Stack, String) {
    let (stack, ops) = Stack::with_ops(
        &format!("server: {{ {server} }}\naudit: {{ path: audit.log }}\n{extra}"),
        RegistryAuth::TrustsGateway,
    );
    (stack, format!("{ops}/metrics"))
}

fn port_of(host: &str) -> u16 {
    host.rsplit(':').next().unwrap().parse().unwrap()
}

fn series(metrics_url: &str, name: &str) -> f64 {
    support::http::series(&get(metrics_url).send().body, name).unwrap_or(0.0)
}

fn refused(metrics_url: &str, reason: &str) -> f64 {
    series(
        metrics_url,
        &format!("portcullis_proxy_protocol_refused_total{{reason=\"{reason}\"}}"),
    )
}

fn auth_url(base: &str) -> String {
    format!("{base}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull")
}

/// The access lines of requests to `path`, waiting up to 5 s for `count` of them (the line is
/// written when the response head is ready, so it may trail curl by a moment).
fn access_lines(gateway: &Gateway, path: &str, count: usize) -> Vec<String> {
    let needle = format!(" path={path} ");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = gateway
            .log()
            .lines()
            .filter(|l| l.contains("portcullis::access") && l.contains(&needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit log's records.
fn audit(gateway: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gateway.dir().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// haproxy in TCP mode with `send-proxy-v2` (and health checks, which send `LOCAL`) in front
/// of `gateway`.
fn haproxy_v2(gateway: &Gateway) -> Haproxy {
    let mut config = HaproxyConfig::tcp(std::slice::from_ref(&gateway.host), true);
    config.server_options.push_str(" check inter 200ms");
    Haproxy::start(&config)
}

#[test]
fn haproxy_send_proxy_v2_names_each_client_in_the_access_and_audit_logs() {
    let (stack, metrics) = stack_with("proxy_protocol: true", "");
    let haproxy = haproxy_v2(&stack.gateway);
    let url = auth_url(&haproxy.url("http"));
    for source in ["127.0.0.2", "127.0.0.3"] {
        let reply = get(&url)
            .basic("alice", ALICE_PAT)
            .arg("--interface")
            .arg(source)
            .send();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let lines = access_lines(&stack.gateway, "/jwt/auth", 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The client is who connected to haproxy; the peer, haproxy.
    assert!(lines[0].contains("client=127.0.0.2:"), "{}", lines[0]);
    assert!(lines[1].contains("client=127.0.0.3:"), "{}", lines[1]);
    for line in &lines {
        assert!(line.contains(" peer=127.0.0.1:"), "{line}");
    }
    let clients: Vec<String> = audit(&stack.gateway)
        .iter()
        .filter_map(|r| r["client"].as_str().map(str::to_owned))
        .collect();
    assert!(clients.contains(&"127.0.0.2".to_owned()), "{clients:?}");
    assert!(clients.contains(&"127.0.0.3".to_owned()), "{clients:?}");
    assert!(!clients.contains(&"127.0.0.1".to_owned()), "{clients:?}");
    // haproxy's health checks (a LOCAL header each, every 200 ms) are accepted, not refused.
    std::thread::sleep(Duration::from_millis(800));
    for reason in ["no_header", "malformed", "closed", "timeout", "too_long"] {
        assert_eq!(
            refused(&metrics, reason),
            0.0,
            "{reason}: {}",
            stack.gateway.log()
        );
    }
    assert!(!haproxy.log().contains("is DOWN"), "{}", haproxy.log());
}

#[test]
fn docker_login_through_haproxy_with_send_proxy_v2() {
    // The realm docker is sent to must be the balancer too: public_url names it.
    let port = support::free_port();
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "server: { proxy_protocol: true }\naudit: { path: audit.log }\n".into(),
            public_url: Some(format!("http://127.0.0.1:{port}")),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let haproxy = Haproxy::start_on(
        port,
        &HaproxyConfig::tcp(std::slice::from_ref(&stack.gateway.host), true),
    );
    let docker = Dockerd::start();
    docker.ok(
        &["login", &haproxy.host(), "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    // dockerd (on 127.0.0.1) logged in through haproxy: the gateway saw it as itself, with
    // haproxy as the peer, and issued its token.
    let lines = access_lines(&stack.gateway, "/jwt/auth", 1);
    assert!(!lines.is_empty(), "{}", stack.gateway.log());
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" peer=127.0.0.1:") && l.contains("status=200")),
        "{lines:?}"
    );
    assert!(
        audit(&stack.gateway)
            .iter()
            .any(|r| r["client"] == "127.0.0.1" && r.to_string().contains("alice")),
        "{:?}",
        audit(&stack.gateway)
    );
}

#[test]
fn a_ban_earned_by_one_client_behind_haproxy_does_not_ban_the_other() {
    let (stack, _) = stack_with(
        "proxy_protocol: true",
        "brute_force: { max_failures: 5, window: 60s, ban: 1h }\n",
    );
    let haproxy = haproxy_v2(&stack.gateway);
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:push,pull",
        haproxy.url("http")
    );
    // 127.0.0.2 guesses job tokens until its address is banned.
    for i in 0..12 {
        let reply = get(&url)
            .basic("gitlab-ci-token", &format!("junk.job.token-{i}"))
            .arg("--interface")
            .arg("127.0.0.2")
            .send();
        assert!(matches!(reply.status, 401 | 403), "{}", reply.body);
    }
    let token = stack.ci_job_token("mygroup/myproject", "alice");
    let from = |source: &str| {
        get(&url)
            .basic("gitlab-ci-token", &token)
            .arg("--interface")
            .arg(source)
            .send()
    };
    let banned = from("127.0.0.2");
    assert_eq!(banned.status, 403, "{}", banned.body);
    assert!(
        banned.error_message().contains("from this client"),
        "{}",
        banned.body
    );
    // The other client behind the same haproxy (same TCP peer) is not banned.
    let other = from("127.0.0.3");
    assert_eq!(other.status, 200, "{}", other.body);
}

#[test]
fn a_direct_connection_without_the_proxy_header_is_refused() {
    let (stack, metrics) = stack_with("proxy_protocol: true", "");
    let reply = get(&format!("{}/v2/", stack.gateway.url)).send();
    assert_eq!(
        reply.status, 0,
        "answered without a PROXY header: {}",
        reply.body
    );
    let ending = raw::send_and_wait(
        port_of(&stack.gateway.host),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(ending.closed_after.is_some(), "{ending:?}");
    assert!(ending.received.is_empty(), "{ending:?}");
    assert_eq!(refused(&metrics, "no_header"), 2.0);
    // One line, not one per connection, says why.
    let log = stack.gateway.log();
    assert!(
        log.contains(
            "connection refused: the connection did not start with a PROXY protocol v2 header"
        ),
        "{log}"
    );
    assert_eq!(
        log.matches("at most one such line a minute").count(),
        1,
        "{log}"
    );
    // Nothing reached the request path.
    assert!(access_lines(&stack.gateway, "/v2/", 0).is_empty());
}

#[test]
fn garbage_oversized_truncated_and_slow_proxy_headers_are_refused_within_the_timeout() {
    // header_read_timeout bounds the wait for the PROXY header too (at most 5 s).
    let (stack, metrics) = stack_with("proxy_protocol: true, header_read_timeout: 2s", "");
    let port = port_of(&stack.gateway.host);
    let limit = Duration::from_secs(15);
    let source = "198.51.100.7:5000".parse().unwrap();
    let destination = "127.0.0.1:443".parse().unwrap();
    let valid = raw::proxy_v2_from(source, destination);

    let mut oversized = valid.clone();
    oversized[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let mut bad_version = valid.clone();
    bad_version[12] = 0x11;
    let mut udp = valid.clone();
    udp[13] = 0x12;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
            "no_header",
        ),
        (
            "TLS without a header",
            b"\x16\x03\x01\x02\x00\x01".to_vec(),
            "no_header",
        ),
        (
            "version 1",
            b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 443\r\n".to_vec(),
            "no_header",
        ),
        ("version 1 in the v2 frame", bad_version, "no_header"),
        ("oversized", oversized, "too_long"),
        ("UDP", udp, "malformed"),
        (
            "short addresses",
            raw::proxy_v2(1, 0x21, &[0; 12]),
            "malformed",
        ),
        (
            "slow: half a signature",
            raw::PROXY_V2_SIGNATURE[..6].to_vec(),
            "timeout",
        ),
        ("slow: the fixed part only", valid[..16].to_vec(), "timeout"),
    ];
    for (what, bytes, reason) in &cases {
        let before = refused(&metrics, reason);
        let ending = raw::send_and_wait(port, bytes, limit);
        let took = ending
            .closed_after
            .unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        assert!(ending.received.is_empty(), "{what}: answered {ending:?}");
        if *reason == "timeout" {
            assert!(
                took < Duration::from_secs(10),
                "{what}: closed after {took:?}"
            );
        }
        assert_eq!(refused(&metrics, reason), before + 1.0, "{what}");
    }
    // A header that ends with the connection.
    let ending = raw::send_and_wait(port, &valid[..20], limit);
    assert!(ending.closed_after.is_some());
    // The gateway still serves a valid header after all that, and believes it (no
    // trusted_proxies: any peer may send one).
    let reply = RawRequest::new("GET", "/v2/").send_after(port, &valid);
    assert_eq!(reply.status, 401, "{}", reply.text());
    let lines = access_lines(&stack.gateway, "/v2/", 1);
    assert!(lines[0].contains("client=198.51.100.7:5000"), "{lines:?}");
    // LOCAL: the peer is the client.
    let reply = RawRequest::new("GET", "/v2/").send_after(port, &raw::proxy_v2(0, 0, &[]));
    assert_eq!(reply.status, 401, "{}", reply.text());
    let lines = access_lines(&stack.gateway, "/v2/", 2);
    assert!(
        lines[1].contains("client=127.0.0.1:") && !lines[1].contains("peer="),
        "{lines:?}"
    );
}

#[test]
fn a_proxy_header_is_believed_only_from_trusted_proxies() {
    let (stack, metrics) = stack_with(
        "proxy_protocol: true, trusted_proxies: [10.0.0.0/8, \"fd00::/8\"]",
        "",
    );
    let port = port_of(&stack.gateway.host);
    let header = raw::proxy_v2_from(
        "198.51.100.7:5000".parse().unwrap(),
        "127.0.0.1:443".parse().unwrap(),
    );
    // 127.0.0.1 is not a trusted proxy: its header is not even read.
    let reply = RawRequest::new("GET", "/v2/").send_after(port, &header);
    assert_eq!(reply.status, 0, "{}", reply.text());
    assert_eq!(refused(&metrics, "untrusted"), 1.0);
    // With loopback trusted, the same header names the client.
    let (stack, metrics) = stack_with("proxy_protocol: true, trusted_proxies: [127.0.0.1]", "");
    let reply = RawRequest::new("GET", "/v2/").send_after(port_of(&stack.gateway.host), &header);
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(refused(&metrics, "untrusted"), 0.0);
    let lines = access_lines(&stack.gateway, "/v2/", 1);
    assert!(lines[0].contains("client=198.51.100.7:5000"), "{lines:?}");
}

#[test]
fn spoofed_x_forwarded_for_is_ignored_from_an_untrusted_peer() {
    for server in ["", "trusted_proxies: [10.0.0.0/8]"] {
        let (stack, _) = stack_with(server, "");
        let reply = get(&auth_url(&stack.gateway.url))
            .basic("alice", ALICE_PAT)
            .header("X-Forwarded-For", "198.51.100.7")
            .header("Forwarded", "for=198.51.100.8")
            .header("X-Real-IP", "198.51.100.9")
            .arg("--interface")
            .arg("127.0.0.2")
            .send();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let lines = access_lines(&stack.gateway, "/jwt/auth", 1);
        assert!(
            lines[0].contains("client=127.0.0.2:"),
            "{server}: {lines:?}"
        );
        assert!(!lines[0].contains("peer="), "{lines:?}");
        assert!(
            !stack.gateway.log().contains("198.51.100"),
            "{}",
            stack.gateway.log()
        );
        assert_eq!(audit(&stack.gateway)[0]["client"], "127.0.0.2");
    }
}

#[test]
fn a_trusted_hop_chain_is_read_from_the_right() {
    let (stack, _) = stack_with(
        "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8, \"fd00::/8\"]",
        "",
    );
    let url = format!("{}/v2/", stack.gateway.url);
    let cases: [(&[&str], &str); 6] = [
        // The client's own claim (6.6.6.6) is left of the first untrusted hop: not believed.
        (&["6.6.6.6, 198.51.100.7, 10.0.0.3"], "client=198.51.100.7 "),
        // Several headers are one list, in order.
        (
            &["198.51.100.8", "10.1.1.1, [fd00::5]:80"],
            "client=198.51.100.8 ",
        ),
        (&["[2001:db8::9]:4444, fd00::1"], "client=2001:db8::9 "),
        // Every hop trusted: the leftmost.
        (&["10.0.0.7, 10.0.0.3"], "client=10.0.0.7 "),
        // Malformed right of the client, or missing: the peer itself.
        (&["198.51.100.7, ev\"il"], "client=127.0.0.1:"),
        (&[], "client=127.0.0.1:"),
    ];
    for (i, (values, expected)) in cases.iter().enumerate() {
        let mut request = get(&url);
        for v in *values {
            request = request.header("X-Forwarded-For", v);
        }
        assert_eq!(request.send().status, 401);
        let lines = access_lines(&stack.gateway, "/v2/", i + 1);
        assert!(lines[i].contains(expected), "{values:?}: {}", lines[i]);
    }
    // A peer not in the list (127.0.0.2) gets no say.
    let reply = get(&url)
        .header("X-Forwarded-For", "198.51.100.7")
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert_eq!(reply.status, 401);
    let lines = access_lines(&stack.gateway, "/v2/", cases.len() + 1);
    assert!(
        lines[cases.len()].contains("client=127.0.0.2:"),
        "{lines:?}"
    );
    // The malformed header was logged once, escaped.
    let log = stack.gateway.log();
    assert_eq!(
        log.matches("sent no usable X-Forwarded-For").count(),
        2,
        "{log}"
    );
    assert!(log.contains(r#"ev\"il"#), "{log}");
}

#[test]
fn haproxy_http_mode_with_forwardfor_and_trusted_proxies_names_the_client() {
    let (stack, _) = stack_with(
        "trusted_proxies: [127.0.0.1/32]",
        "brute_force: { max_failures: 5, window: 60s, ban: 1h }\n",
    );
    let haproxy = Haproxy::start(&HaproxyConfig::http(
        std::slice::from_ref(&stack.gateway.host),
        true,
    ));
    // The client's own X-Forwarded-For is left of the address haproxy appends.
    let reply = get(&auth_url(&haproxy.url("http")))
        .basic("alice", ALICE_PAT)
        .header("X-Forwarded-For", "198.51.100.7")
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let lines = access_lines(&stack.gateway, "/jwt/auth", 1);
    assert!(
        lines[0].contains("client=127.0.0.2 ") && lines[0].contains(" peer=127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(audit(&stack.gateway)[0]["client"], "127.0.0.2");
    // Bans key on that client: 127.0.0.3 guessing does not lock 127.0.0.2 out.
    let url = format!(
        "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:push,pull",
        haproxy.url("http")
    );
    for i in 0..12 {
        let reply = get(&url)
            .basic("gitlab-ci-token", &format!("junk.job.token-{i}"))
            .arg("--interface")
            .arg("127.0.0.3")
            .send();
        assert!(matches!(reply.status, 401 | 403), "{}", reply.body);
    }
    let token = stack.ci_job_token("mygroup/myproject", "alice");
    let from = |source: &str| {
        get(&url)
            .basic("gitlab-ci-token", &token)
            .arg("--interface")
            .arg(source)
            .send()
            .status
    };
    assert_eq!(from("127.0.0.3"), 403);
    assert_eq!(from("127.0.0.2"), 200);
}

#[test]
fn tls_and_http2_through_the_proxy_header() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(certs.path(), "gateway", "7");
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            tls: Some((cert, key)),
            extra: "server: { proxy_protocol: true }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let haproxy = haproxy_v2(&stack.gateway);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let reply = get(&format!("{}/v2/", haproxy.url("https")))
            .arg("-k")
            .arg(flag)
            .arg("--interface")
            .arg("127.0.0.2")
            .send();
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(reply.http_version, version);
    }
    let lines = access_lines(&stack.gateway, "/v2/", 2);
    assert!(
        lines[0].contains("client=127.0.0.2:") && lines[0].contains("version=HTTP/2.0"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("client=127.0.0.2:") && lines[1].contains("version=HTTP/1.1"),
        "{lines:?}"
    );
    // h2c (HTTP/2 with prior knowledge) on a plain listener too.
    let (plain, _) = stack_with("proxy_protocol: true", "");
    let haproxy = haproxy_v2(&plain.gateway);
    let reply = get(&format!("{}/v2/", haproxy.url("http")))
        .arg("--http2-prior-knowledge")
        .arg("--interface")
        .arg("127.0.0.3")
        .send();
    assert_eq!((reply.status, reply.http_version.as_str()), (401, "2"));
    let lines = access_lines(&plain.gateway, "/v2/", 1);
    assert!(lines[0].contains("client=127.0.0.3:"), "{lines:?}");
}

#[test]
fn bad_trusted_proxies_are_refused_naming_the_key() {
    let stack = Stack::start();
    let config = std::fs::read_to_string(stack.gateway.config_path()).unwrap();
    let path = stack.gateway.dir().join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "{config}\nserver: {{ trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, 300.0.0.0/8, \"fd00::/200\"] }}\n"
        ),
    )
    .unwrap();
    let (code, out, err) =
        support::gateway::run_cli(&["check", "--config", path.to_str().unwrap()], None);
    let text = format!("{out}{err}");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("server.trusted_proxies[1]") && text.contains("10.0.0.0/8"),
        "{text}"
    );
    assert!(text.contains("server.trusted_proxies[2]"), "{text}");
    assert!(text.contains("server.trusted_proxies[3]"), "{text}");
    assert!(!text.contains("server.trusted_proxies[0]"), "{text}");
    // A good list: check says whose word it takes.
    std::fs::write(
        &path,
        format!("{config}\nserver: {{ proxy_protocol: true, trusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.0.2.1] }}\n"),
    )
    .unwrap();
    let (code, out, err) =
        support::gateway::run_cli(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "clients:   the PROXY protocol v2 header, only from 10.0.0.0/8, fd00::/8, 192.0.2.1/32"
        ),
        "{out}"
    );
}

#[test]
fn the_stripped_header_diagnosis_keys_on_the_client_behind_haproxy() {
    let (stack, _) = stack_with("proxy_protocol: true", "");
    let haproxy = haproxy_v2(&stack.gateway);
    let base = haproxy.url("http");
    let reply = get(&auth_url(&base))
        .basic("alice", ALICE_PAT)
        .header("User-Agent", "docker/27 (client-address test)")
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v2 = |source: &str| {
        get(&format!("{base}/v2/mygroup/myproject/tags/list"))
            .header("User-Agent", "docker/27 (client-address test)")
            .arg("--interface")
            .arg(source)
            .send()
            .status
    };
    // Another client behind the same haproxy, same user agent, no token: not the one that
    // just got a token, so no alarm (keyed on haproxy's address, this would be one).
    assert_eq!(v2("127.0.0.3"), 401);
    assert_eq!(
        access_lines(&stack.gateway, "/v2/mygroup/myproject/tags/list", 1).len(),
        1
    );
    assert!(
        !stack
            .gateway
            .log()
            .contains("WITHOUT an Authorization header"),
        "{}",
        stack.gateway.log()
    );
    // The client that got the token, calling without it: named.
    assert_eq!(v2("127.0.0.2"), 401);
    stack.gateway.wait_for_log(
        "calls /v2/ WITHOUT an Authorization header",
        1,
        Duration::from_secs(5),
    );
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("calls /v2/ WITHOUT an Authorization header"))
        .unwrap();
    assert!(line.contains("client=127.0.0.2:"), "{line}");
}

#[test]
fn the_per_client_limit_keys_on_the_address_the_proxy_header_names() {
    let (stack, _) = stack_with(
        "proxy_protocol: true, max_upstream_requests: 24, max_upstream_requests_per_connection: 2, max_upstream_requests_per_client: 3, upstream_queue_timeout: 1s, body_rate_window: 120s",
        "",
    );
    let haproxy = haproxy_v2(&stack.gateway);
    let base = haproxy.url("http");
    let repo = "mygroup/myproject/app";
    let token = get(&format!(
        "{base}/jwt/auth?service=container_registry&scope=repository:{repo}:push,pull"
    ))
    .basic("alice", ALICE_PAT)
    .send()
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Six connections whose PROXY header names 198.51.100.7, each a PATCH of an upload
    // session whose body sends a byte and stalls: each one let through holds a registry slot.
    let header = raw::proxy_v2_from(
        "198.51.100.7:5000".parse().unwrap(),
        "127.0.0.1:4567".parse().unwrap(),
    );
    let mut streams: Vec<std::net::TcpStream> = (0..6)
        .map(|_| {
            let reply = support::http::request("POST", &format!("{base}/v2/{repo}/blobs/uploads/"))
                .bearer(&token)
                .send();
            assert_eq!(reply.status, 202, "{}", reply.body);
            let location = reply.header("location").unwrap();
            let path = &location[location.find("/v2/").unwrap()..];
            let mut stream = std::net::TcpStream::connect(&stack.gateway.host).unwrap();
            use std::io::Write;
            stream.write_all(&header).unwrap();
            stream
                .write_all(format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nx").as_bytes())
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut refused = 0;
    for stream in &mut streams {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut seen = [0u8; 4096];
        if let Ok(n) = stream.read(&mut seen) {
            let text = String::from_utf8_lossy(&seen[..n]);
            if n > 0 {
                assert!(text.starts_with("HTTP/1.1 429"), "{text}");
                assert!(
                    text.contains("server.max_upstream_requests_per_client"),
                    "{text}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(
        refused, 3,
        "three of the six stalled uploads are over 198.51.100.7's share"
    );
    // That client is refused at once for anything more...
    let url = format!("/v2/{repo}/tags/list");
    let same = RawRequest::new("GET", &url)
        .bearer(&token)
        .send_after(port_of(&stack.gateway.host), &header);
    assert_eq!(same.status, 429, "{}", same.text());
    // ...while another client, through haproxy from the same machine, still gets its answer.
    let other = get(&format!("{base}{url}")).bearer(&token).send();
    assert!(
        matches!(other.status, 200 | 404),
        "{}: {}",
        other.status,
        other.body
    );
    drop(streams);
}
