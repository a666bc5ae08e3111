//! `token.header: kid`: registry tokens that name the signing key by its libtrust key id and
//! carry no certificate (what GitLab issues), a third of the default token's size. Proven
//! against the real distribution 2.8 (Debian's `docker-registry`) with its `rootcertbundle`:
//! the registry accepts them directly, the trust check says so, docker pushes and pulls, and
//! a registry trusting another key is named with the registries that accept such tokens.
//! Tokens that only look like the gateway's (its `kid`, a foreign `x5c`, or both, signed with
//! another key) are refused by the gateway itself.

use crate::support;

use std::time::Duration;

use support::docker::Dockerd;
use support::gateway::run_cli;
use support::gateway::secrets::*;
use support::gateway::{GatewayFiles, GatewayOptions};
use support::http::{get, jwt_part, Reply};
use support::process::ImageCli;
use support::stack::{RegistryAuth, Stack, StackOptions};

const PULL_PUSH: &str = "repository:mygroup/myproject:pull,push";

fn kid_stack(registry_auth: RegistryAuth) -> Stack {
    Stack::with(StackOptions {
        registry_auth,
        gateway: GatewayOptions {
            token_extra: ", header: kid".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    })
}

fn challenge_of(reply: &Reply) -> String {
    reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned()
}

/// A libtrust key id: twelve groups of four base32 characters.
fn is_libtrust_kid(kid: &str) -> bool {
    let groups: Vec<&str> = kid.split(':').collect();
    groups.len() == 12
        && groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

#[test]
fn distribution_2_8_accepts_kid_only_tokens_and_the_trust_check_says_so() {
    let stack = kid_stack(RegistryAuth::TrustsGateway);
    let token = stack.token("alice", ALICE_PAT, &[PULL_PUSH]);
    let header = jwt_part(&token, 0);
    let kid = header["kid"].as_str().unwrap_or_default();
    assert!(is_libtrust_kid(kid), "{header}");
    assert!(
        header.get("x5c").is_none() && header.get("jwk").is_none(),
        "{header}"
    );
    // The default token carries the certificate (about 600 bytes more).
    let x5c = Stack::start();
    let long = x5c.token("alice", ALICE_PAT, &[PULL_PUSH]);
    assert!(
        long.len() > token.len() + 500,
        "x5c {} bytes, kid {} bytes",
        long.len(),
        token.len()
    );

    // The registry itself verifies it, without the gateway in between.
    let reply = get(&format!("{}/v2/", stack.registry.url()))
        .bearer(&token)
        .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    stack.gateway.assert_registry_trusts_its_tokens();
}

#[test]
fn docker_pushes_and_pulls_through_a_kid_mode_gateway() {
    let stack = kid_stack(RegistryAuth::TrustsGateway);
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();
    docker.ok(
        &["login", host, "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    docker.push_then_pull_back(&format!("{host}/mygroup/myproject/kid:1.0"));
}

fn doctor(url: &str) -> (i32, String) {
    let (code, out, err) = run_cli(
        &["doctor", url, "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    (code, format!("{out}{err}"))
}

#[test]
fn doctor_names_the_kid_only_header_and_what_refuses_it() {
    let stack = kid_stack(RegistryAuth::TrustsGateway);
    let (code, out) = doctor(&stack.gateway.url);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PASS claims")
            && l.contains("by its libtrust kid alone (no certificate")),
        "{out}"
    );
    let x5c = Stack::start();
    let (code, out) = doctor(&x5c.gateway.url);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("signing certificate chain (x5c, 1 certificate(s))"),
        "{out}"
    );

    let distrusted = kid_stack(RegistryAuth::OtherCertificate);
    let (code, out) = doctor(&distrusted.gateway.url);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL v2")), "{out}");
    assert!(
        out.contains("distribution 3.x refuses: for 3.x use token.header: x5c or jwks"),
        "{out}"
    );
}

#[test]
fn a_registry_trusting_another_key_is_named_with_the_registries_that_accept_kid_tokens() {
    let stack = kid_stack(RegistryAuth::OtherCertificate);
    let (code, out) = stack.gateway.check_upstream();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSES")
            && out.contains("token.header: kid")
            && out.contains("distribution 2.8")
            && out.contains("rootcertbundle, which must be the gateway's certificate")
            && out.contains("distribution 3.x refuses such tokens"),
        "{out}"
    );
    stack.gateway.wait_for_log(
        "the registry refuses tokens the gateway considers valid",
        1,
        Duration::from_secs(10),
    );
    assert!(stack.gateway.log().contains("token.header: kid"));
}

/// The PEM certificate's DER as standard base64, as an `x5c` entry.
fn x5c_of(files: &GatewayFiles) -> String {
    std::fs::read_to_string(files.certificate())
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("-----END"))
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[test]
fn tokens_naming_the_gateways_kid_or_a_foreign_x5c_signed_with_another_key_are_refused() {
    let stack = kid_stack(RegistryAuth::TrustsGateway);
    let url = format!("{}/v2/mygroup/myproject/tags/list", stack.gateway.url);
    let good = stack.token("alice", ALICE_PAT, &[PULL_PUSH]);
    assert_eq!(get(&url).bearer(&good).send().status, 404, "no tags yet");
    let gateway_kid = jwt_part(&good, 0)["kid"].as_str().unwrap().to_owned();
    let claims = jwt_part(&good, 1);

    // The attacker's own key and certificate, and the same claims signed with them.
    let attacker = GatewayFiles::init("ec", "http://127.0.0.1:1");
    let key = std::fs::read(attacker.path("token.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    let forge = |kid: Option<&str>, x5c: Option<String>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        header.x5c = x5c.map(|c| vec![c]);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let wrong_kid = "AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL";
    for (what, token) in [
        ("the gateway's kid", forge(Some(&gateway_kid), None)),
        ("a wrong kid", forge(Some(wrong_kid), None)),
        ("a foreign x5c", forge(None, Some(x5c_of(&attacker)))),
        (
            "the gateway's kid and a foreign x5c",
            forge(Some(&gateway_kid), Some(x5c_of(&attacker))),
        ),
        (
            "the gateway's own certificate as x5c",
            forge(Some(&gateway_kid), Some(x5c_of(&stack.gateway.files))),
        ),
    ] {
        let reply = get(&url).bearer(&token).send();
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert_eq!(reply.error_code(), "UNAUTHORIZED", "{what}");
        assert!(
            challenge_of(&reply).ends_with(r#"error="invalid_token""#),
            "{what}: {}",
            challenge_of(&reply)
        );
    }
    assert_eq!(
        get(&url).bearer(&good).send().status,
        404,
        "the real one still works"
    );
}
