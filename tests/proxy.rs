//! The `/v2/` path as clients see it: the gateway's own token check, the registry's answers
//! rewritten, what reaches the registry, and failures of the registry itself.

use crate::support;

use std::time::Duration;

use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::{get, request};
use support::stack::{RegistryAuth, Stack, StackOptions};
use support::wire::{head_value, silent_upstream, CaptureUpstream};

const REPO: &str = "mygroup/myproject";

fn challenge_of(reply: &support::http::Reply) -> String {
    reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_request_without_a_token_gets_the_gateways_challenge_with_the_scope_it_needs() {
    let stack = Stack::start();
    let reply = get(&format!("{}/v2/", stack.gateway.url)).send();
    assert_eq!(reply.status, 401);
    assert_eq!(
        challenge_of(&reply),
        format!(
            r#"Bearer realm="{}/jwt/auth",service="container_registry""#,
            stack.gateway.url
        )
    );
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let reply = get(&format!("{}/v2/{REPO}/manifests/latest", stack.gateway.url)).send();
    assert_eq!(reply.status, 401);
    assert_eq!(
        challenge_of(&reply),
        format!(
            r#"Bearer realm="{}/jwt/auth",service="container_registry",scope="repository:{REPO}:pull""#,
            stack.gateway.url
        )
    );
    assert_eq!(reply.error_code(), "UNAUTHORIZED");
    assert_eq!(reply.json()["errors"][0]["detail"][0]["Name"], REPO);
}

#[test]
fn forged_foreign_and_expired_tokens_are_invalid_tokens() {
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            expiry: "2s".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let url = format!("{}/v2/{REPO}/tags/list", stack.gateway.url);
    let good = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    assert_eq!(
        get(&url).bearer(&good).send().status,
        404,
        "a valid token reaches the registry (no tags yet)"
    );

    // A token signed by another gateway's key, and one with a tampered payload.
    let other = Stack::start();
    let foreign = other.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = parts.join(".");
    std::thread::sleep(Duration::from_millis(3100));
    for token in [
        foreign.as_str(),
        tampered.as_str(),
        "garbage",
        good.as_str(),
    ] {
        let reply = get(&url).bearer(token).send();
        assert_eq!(reply.status, 401, "{token}: {}", reply.body);
        assert!(
            challenge_of(&reply).ends_with(r#"error="invalid_token""#),
            "{}",
            challenge_of(&reply)
        );
        assert_eq!(reply.error_code(), "UNAUTHORIZED");
    }
}

/// GET `path` with `authorization` as the header's value, byte for byte (`\xff` and all):
/// the status and the challenge.
fn raw_authorization(host: &str, path: &str, authorization: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: ").into_bytes();
    head.extend_from_slice(authorization);
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    stream.write_all(&head).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let challenge = answer
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    (status, challenge)
}

#[test]
fn a_bearer_token_counts_byte_for_byte_even_once_its_verdict_is_cached() {
    let stack = Stack::start();
    let host = &stack.gateway.host;
    let path = format!("/v2/{REPO}/tags/list");
    let good = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    // Verified once, so every variant below meets a cached verdict for the genuine token.
    for value in [
        format!("Bearer {good}"),
        format!("bearer {good}"),
        format!("BEARER {good} \t "),
    ] {
        let (status, challenge) = raw_authorization(host, &path, value.as_bytes());
        assert_eq!(
            status, 404,
            "{value:?} reaches the registry (no tags): {challenge}"
        );
    }
    let mut latin1 = format!("Bearer {good}").into_bytes();
    latin1.push(0xff);
    let mut inside = format!("Bearer {good}").into_bytes();
    let middle = inside.len() - 20;
    inside[middle] = 0xe9;
    for value in [
        format!("Bearer {good}\u{a0}").into_bytes(), // a no-break space is not HTTP whitespace
        format!("Bearer \u{3000}{good}").into_bytes(),
        latin1,
        inside,
        b"Bearer \xff\xfe".to_vec(),
        format!("Bearer {}", &good[..good.len() - 1]).into_bytes(),
        format!("Bearer {good}x").into_bytes(),
        // distribution reads the token from just after the first space: so does the gate.
        format!("Bearer  {good}").into_bytes(),
        format!("Bearer \t{good}").into_bytes(),
    ] {
        let (status, challenge) = raw_authorization(host, &path, &value);
        let shown = String::from_utf8_lossy(&value);
        assert_eq!(status, 401, "{shown:?}: {challenge}");
        assert!(
            challenge.ends_with(r#"error="invalid_token""#),
            "{shown:?}: {challenge}"
        );
    }
    // Not a Bearer value at all: the plain challenge, no error.
    for value in [
        format!("Bearer\t{good}"),
        format!("Bearer{good}"),
        "Bearer ".into(),
    ] {
        let (status, challenge) = raw_authorization(host, &path, value.as_bytes());
        assert_eq!(status, 401, "{value:?}");
        assert!(!challenge.contains("error="), "{value:?}: {challenge}");
    }
}

#[test]
fn a_token_without_the_needed_scope_is_insufficient_and_the_challenge_names_the_scope() {
    let stack = Stack::start();
    let pull_only = stack.token("bob", BOB_PAT, &["repository:mygroup/myproject:pull,push"]);
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&pull_only)
    .send();
    assert_eq!(reply.status, 401);
    assert!(challenge_of(&reply)
        .starts_with(&format!(r#"Bearer realm="{}/jwt/auth""#, stack.gateway.url)));
    assert!(
        challenge_of(&reply).ends_with(&format!(
            r#",scope="repository:{REPO}:pull,push",error="insufficient_scope""#
        )),
        "{}",
        challenge_of(&reply)
    );
    // The same token on another repository, and on the catalog.
    let reply = get(&format!("{}/v2/public/app/tags/list", stack.gateway.url))
        .bearer(&pull_only)
        .send();
    assert_eq!(reply.status, 401);
    let reply = get(&format!("{}/v2/_catalog", stack.gateway.url))
        .bearer(&pull_only)
        .send();
    assert!(
        challenge_of(&reply).contains(r#"scope="registry:catalog:*",error="insufficient_scope""#)
    );
}

#[test]
fn invalid_names_and_oversized_heads_get_registry_style_4xx() {
    let stack = Stack::start();
    let reply = get(&format!(
        "{}/v2/My/Repo/manifests/latest",
        stack.gateway.url
    ))
    .send();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "NAME_INVALID")
    );
    let big = "x".repeat(80 * 1024);
    let reply = get(&format!("{}/v2/", stack.gateway.url))
        .header("X-Big", &big)
        .send();
    assert_eq!(reply.status, 431);
    assert!(
        reply.error_message().contains("max_header_bytes"),
        "{}",
        reply.body
    );
}

#[test]
fn the_registrys_own_challenge_is_rewritten_to_the_gateway_realm() {
    // A registry that expects another issuer refuses our valid token with its own challenge,
    // naming its (unreachable) realm: the client must be sent to the gateway instead.
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::WrongIssuer,
        ..StackOptions::default()
    });
    let token = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    let reply = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
        .bearer(&token)
        .send();
    assert_eq!(reply.status, 401);
    let challenge = challenge_of(&reply);
    assert!(
        challenge.starts_with(&format!(r#"Bearer realm="{}/jwt/auth""#, stack.gateway.url)),
        "{challenge}"
    );
    assert!(!challenge.contains("internal.invalid"), "{challenge}");
    assert!(
        challenge.contains(r#"service="container_registry""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

#[test]
fn upload_locations_naming_the_registry_itself_point_at_the_gateway() {
    // http.host makes the registry name its internal address in Locations, whatever the
    // forwarded headers say.
    let internal = "http://registry.internal:5000".to_owned();
    let stack = Stack::with(StackOptions {
        registry_http_host: Some(internal),
        ..StackOptions::default()
    });
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject:pull,push"],
    );
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&token)
    .send();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url)),
        "{location}"
    );
    // Reported once, with the registry setting that avoids it.
    let again = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&token)
    .send();
    assert_eq!(again.status, 202);
    let log = stack.gateway.log();
    assert_eq!(
        log.matches("the registry names an address other than public_url")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("registry.internal:5000") && log.contains("set its http.host to"),
        "{log}"
    );
}

#[test]
fn a_registry_without_auth_is_guarded_by_the_gateway() {
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        ..StackOptions::default()
    });
    let catalog = format!("{}/v2/_catalog", stack.gateway.url);
    assert_eq!(get(&catalog).send().status, 401);
    let alice = stack.token("alice", ALICE_PAT, &["registry:catalog:*"]);
    assert_eq!(get(&catalog).bearer(&alice).send().status, 401);
    let root = stack.token("root", ROOT_PAT, &["registry:catalog:*"]);
    let reply = get(&catalog).bearer(&root).send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["repositories"].is_array());
    // Writes are refused before anything reaches the open registry.
    let reply = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .send();
    assert_eq!(reply.status, 401);
}

#[test]
fn the_registry_gets_the_clients_authorization_byte_for_byte_and_forwarded_headers() {
    let upstream = CaptureUpstream::start();
    let files = GatewayFiles::init("ec", &upstream.url);
    let gateway = Gateway::start(files, &GatewayOptions::new(&upstream.url));
    let token = {
        let reply = get(&format!(
            "{}/jwt/auth?service=container_registry&scope=repository:{REPO}:pull",
            gateway.url
        ))
        .basic("alice", ALICE_PAT)
        .send();
        reply.json()["token"].as_str().unwrap().to_owned()
    };
    let reply = get(&format!("{}/v2/{REPO}/manifests/latest?x=1", gateway.url))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "dropped")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example;proto=http")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Custom", "kept")
        .send();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-hop-from-upstream"),
        None,
        "hop-by-hop headers of the answer are dropped"
    );
    let heads = upstream.heads();
    let head = heads.last().expect("the request reached the upstream");
    assert!(
        head.starts_with(&format!("GET /v2/{REPO}/manifests/latest?x=1 HTTP/1.1\r\n")),
        "{head}"
    );
    assert_eq!(
        head_value(head, "authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(head_value(head, "x-hop"), None);
    assert_eq!(head_value(head, "forwarded"), None);
    assert_eq!(
        head_value(head, "x-forwarded-host"),
        Some(gateway.host.as_str())
    );
    assert_eq!(head_value(head, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        head_value(head, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(head_value(head, "x-custom"), Some("kept"));
}

#[test]
fn an_unreachable_registry_is_502_and_a_hung_one_is_504_naming_the_upstream_only_in_the_log() {
    for (upstream, status) in [
        (format!("http://127.0.0.1:{}", support::free_port()), 502),
        (silent_upstream(), 504),
    ] {
        let files = GatewayFiles::init("ec", &upstream);
        let gateway = Gateway::start(files, &GatewayOptions::new(&upstream));
        let token = get(&format!(
            "{}/jwt/auth?service=container_registry",
            gateway.url
        ))
        .basic("alice", ALICE_PAT)
        .send()
        .json()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let reply = get(&format!("{}/v2/", gateway.url)).bearer(&token).send();
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.error_code(), "UNAVAILABLE");
        // The internal address is for the operator, not for any caller.
        let address = upstream.trim_start_matches("http://");
        assert!(!reply.body.contains(address), "{}", reply.body);
        gateway.wait_for_log(address, 1, Duration::from_secs(5));
    }
}
