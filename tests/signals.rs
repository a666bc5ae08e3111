//! The signals operators alert on, end to end against the real registry: the metrics exported
//! from start-up, the anonymous `/v2/` ping counted as a challenge (not a refusal), the access
//! line of a refused request, `pull` audit records that keep the tag, and the tokens as the
//! registries behind the gateway read them (header mode, `iat`, the refresh token's lifetime).

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::http::{get, request, series};
use support::oci::OciImage;
use support::stack::{RegistryAuth, Stack, StackOptions};

const REPO: &str = "mygroup/myproject/app";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A stack with an operations listener, the audit log in `audit.log` and `extra` YAML; the
/// operations base URL.
fn stack_with(extra: &str, registry_auth: RegistryAuth) -> (Stack, String) {
    Stack::with_ops(
        &format!("audit: {{ path: audit.log }}\n{extra}"),
        registry_auth,
    )
}

/// The audit log's records, once one of them contains `until` (or after 10 s).
fn audit_lines(path: &Path, until: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(until) || Instant::now() > deadline {
            return text
                .lines()
                .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn push_image(stack: &Stack, dir: &Path) -> OciImage {
    let image = OciImage::create(dir.join("image"), 64 * 1024);
    let (pushed, out) = image.push_to(&stack.gateway.host, REPO, "alice", ALICE_PAT);
    assert!(pushed, "skopeo push failed:\n{out}");
    image
}

/// The metric families the README's metrics table lists.
fn readme_families() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let families: Vec<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `portcullis_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("portcullis_{name}"))
        .collect();
    assert!(
        families.len() >= 15,
        "the README's metrics table: {families:?}"
    );
    families
}

#[test]
fn every_metric_family_the_readme_lists_is_exported_from_start_up() {
    let (_stack, ops) = stack_with("", RegistryAuth::TrustsGateway);
    // Nothing has happened yet: no request, no login, no refusal.
    let text = get(&format!("{ops}/metrics")).send().body;
    for family in readme_families() {
        // Counters are described under their name without `_total` (OpenMetrics).
        let described = family.strip_suffix("_total").unwrap_or(&family);
        for line in ["HELP", "TYPE"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# {line} {described} "))),
                "no {line} for {family} right after start-up:\n{text}"
            );
        }
    }
    // Closed label sets are there at zero, so `rate()` and `increase()` have a series to read.
    for name in [
        r#"portcullis_auth_failures_total{reason="wrong_secret"}"#,
        r#"portcullis_auth_failures_total{reason="banned"}"#,
        r#"portcullis_auth_failures_total{reason="insufficient_scope"}"#,
        r#"portcullis_diagnostics_total{kind="upstream_distrust"}"#,
        r#"portcullis_config_reloads_total{result="failure"}"#,
        r#"portcullis_upstream_errors_total{kind="connect"}"#,
        "portcullis_challenges_total",
    ] {
        assert_eq!(series(&text, name), Some(0.0), "{name} in:\n{text}");
    }
}

#[test]
fn an_anonymous_ping_is_a_challenge_not_a_refusal_in_both_deployments() {
    for registry_auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let (stack, ops) = stack_with("", registry_auth);
        let ping = get(&format!("{}/v2/", stack.gateway.url)).send();
        assert_eq!(ping.status, 401);
        assert!(ping
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm="));
        // A healthy session: skopeo pings anonymously, then logs in, then pushes.
        let dir = tempfile::tempdir().unwrap();
        push_image(&stack, dir.path());
        // A real refusal, for contrast: a read-only token trying to push.
        let read_only = stack.token(
            "alice",
            ALICE_READ_ONLY_PAT,
            &[&format!("repository:{REPO}:pull,push")],
        );
        let refused = request(
            "POST",
            &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
        )
        .bearer(&read_only)
        .send();
        assert_eq!(refused.status, 401);

        let metrics = get(&format!("{ops}/metrics")).send().body;
        let value = |name: &str| series(&metrics, name).unwrap_or(0.0);
        assert!(value("portcullis_challenges_total") >= 2.0, "{metrics}");
        assert_eq!(
            value(r#"portcullis_auth_failures_total{reason="missing_token"}"#),
            0.0,
            "{metrics}"
        );
        assert_eq!(
            value(r#"portcullis_auth_failures_total{reason="insufficient_scope"}"#),
            1.0,
            "{metrics}"
        );
        let lines = audit_lines(&stack.gateway.dir().join("audit.log"), "insufficient_scope");
        let refusals: Vec<_> = lines.iter().filter(|l| l["event"] == "refused").collect();
        assert_eq!(refusals.len(), 1, "only the real refusal: {refusals:#?}");
        assert_eq!(refusals[0]["reason"], "insufficient_scope");
    }
}

#[test]
fn the_access_line_of_a_refused_request_names_the_user_and_the_reason() {
    let (stack, _ops) = stack_with("", RegistryAuth::None);
    let read_only = stack.token(
        "alice",
        ALICE_READ_ONLY_PAT,
        &[&format!("repository:{REPO}:pull,push")],
    );
    let refused = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&read_only)
    .send();
    assert_eq!(refused.status, 401);
    let forged = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
        .bearer("e30.e30.AAAA")
        .send();
    assert_eq!(forged.status, 401);
    stack
        .gateway
        .wait_for_log("reason=\"invalid_token\"", 1, Duration::from_secs(5));
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("portcullis::access") && l.contains("/blobs/uploads/"))
        .unwrap_or_else(|| panic!("no access line for the upload:\n{log}"));
    assert!(
        line.contains("status=401")
            && line.ends_with("user=\"alice\" reason=\"insufficient_scope\""),
        "{line}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("portcullis::access") && l.contains("/tags/list"))
        .unwrap();
    assert!(
        line.ends_with("user=\"\" reason=\"invalid_token\""),
        "a token that cannot be read names no user: {line}"
    );
    for secret in [ALICE_READ_ONLY_PAT, read_only.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn json_access_lines_carry_durations_as_numbers_and_the_refusal_reason() {
    let (stack, _ops) = stack_with("log: { format: json }\n", RegistryAuth::TrustsGateway);
    let read_only = stack.token(
        "alice",
        ALICE_READ_ONLY_PAT,
        &[&format!("repository:{REPO}:push")],
    );
    let refused = request(
        "POST",
        &format!("{}/v2/{REPO}/blobs/uploads/", stack.gateway.url),
    )
    .bearer(&read_only)
    .send();
    assert_eq!(refused.status, 401);
    stack
        .gateway
        .wait_for_log("insufficient_scope\",\"target", 1, Duration::from_secs(5));
    let access: Vec<serde_json::Value> = stack
        .gateway
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "portcullis::access")
        .collect();
    assert!(access.len() >= 2, "{access:#?}");
    for line in &access {
        assert!(
            line["duration_ms"].is_f64() || line["duration_ms"].is_u64(),
            "{line}"
        );
    }
    let upload = access
        .iter()
        .find(|l| l["path"] == format!("/v2/{REPO}/blobs/uploads/"))
        .unwrap();
    assert_eq!(upload["status"], 401);
    assert_eq!(upload["user"], "alice");
    assert_eq!(upload["reason"], "insufficient_scope");
}

#[test]
fn a_pull_by_tag_then_digest_is_recorded_with_the_tag() {
    let (stack, _ops) = stack_with("", RegistryAuth::TrustsGateway);
    let dir = tempfile::tempdir().unwrap();
    push_image(&stack, dir.path());
    let token = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    // What docker does: resolve the tag with a HEAD, then fetch by digest.
    let head = request(
        "HEAD",
        &format!("{}/v2/{REPO}/manifests/v1", stack.gateway.url),
    )
    .arg("-I")
    .header("Accept", OCI_MANIFEST)
    .bearer(&token)
    .send();
    assert_eq!(head.status, 200);
    let digest = head.header("docker-content-digest").unwrap().to_owned();
    let pulled = get(&format!(
        "{}/v2/{REPO}/manifests/{digest}",
        stack.gateway.url
    ))
    .header("Accept", OCI_MANIFEST)
    .bearer(&token)
    .send();
    assert_eq!(pulled.status, 200);
    // Another user fetching the same digest without asking for a tag gets no tag.
    let bob = stack.token("bob", BOB_PAT, &[&format!("repository:{REPO}:pull")]);
    let by_digest = get(&format!(
        "{}/v2/{REPO}/manifests/{digest}",
        stack.gateway.url
    ))
    .header("Accept", OCI_MANIFEST)
    .bearer(&bob)
    .send();
    assert_eq!(by_digest.status, 200);
    // And a GET by tag names it directly.
    let by_tag = get(&format!("{}/v2/{REPO}/manifests/v1", stack.gateway.url))
        .header("Accept", OCI_MANIFEST)
        .bearer(&token)
        .send();
    assert_eq!(by_tag.status, 200);

    let audit = stack.gateway.dir().join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pulls = loop {
        let pulls: Vec<_> = audit_lines(&audit, "\"pull\"")
            .into_iter()
            .filter(|l| l["event"] == "pull")
            .collect();
        if pulls.len() >= 3 || Instant::now() > deadline {
            break pulls;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(pulls.len(), 3, "{pulls:#?}");
    assert_eq!(pulls[0]["user"], "alice");
    assert_eq!(pulls[0]["reference"], digest);
    assert_eq!(pulls[0]["tag"], "v1", "{:?}", pulls[0]);
    assert_eq!(pulls[1]["user"], "bob");
    assert!(pulls[1].get("tag").is_none(), "{:?}", pulls[1]);
    assert_eq!(pulls[2]["reference"], "v1");
    assert_eq!(pulls[2]["tag"], "v1");
    assert_eq!(pulls[2]["digest"], digest);
}

/// A registry token's header (`jwt_part` 0) and claims (1).
fn token_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    (
        support::http::jwt_part(token, 0),
        support::http::jwt_part(token, 1),
    )
}

#[test]
fn in_jwks_mode_the_tokens_kid_is_the_one_jwks_json_publishes_and_there_is_no_x5c() {
    // distribution 2.8 cannot take a token without x5c: the gateway alone guards here.
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::None,
        gateway: GatewayOptions {
            token_extra: ", header: jwks".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let jwks = get(&format!("{}/jwt/jwks.json", stack.gateway.url))
        .send()
        .json();
    let published = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let token = stack.token("alice", ALICE_PAT, &[&format!("repository:{REPO}:pull")]);
    let (header, claims) = token_parts(&token);
    assert_eq!(header["kid"], published.as_str(), "{header}");
    assert!(header.get("x5c").is_none(), "{header}");
    assert!(header.get("jwk").is_none(), "{header}");
    assert_eq!(header["alg"], "ES256");
    // The gateway verifies its own jwks-mode tokens.
    let tags = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
        .bearer(&token)
        .send();
    assert_ne!(tags.status, 401, "{}", tags.body);
    assert_eq!(claims["iat"], claims["nbf"]);
}

#[test]
fn in_the_default_mode_tokens_carry_x5c_and_iat_is_backdated_like_nbf() {
    let stack = Stack::start();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reply = get(&format!(
        "{}/jwt/auth?service=container_registry&scope=repository:{REPO}:pull",
        stack.gateway.url
    ))
    .basic("alice", ALICE_PAT)
    .send();
    assert_eq!(reply.status, 200);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let (header, claims) = token_parts(&token);
    assert!(
        header["x5c"].as_array().is_some_and(|c| !c.is_empty()),
        "{header}"
    );
    assert_eq!(
        header["kid"].as_str().unwrap().split(':').count(),
        12,
        "libtrust kid"
    );
    let (iat, nbf, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    // A registry whose clock is a few seconds behind (Zot: no leeway on iat) accepts it.
    assert_eq!(iat, nbf);
    assert!(
        iat + 5 >= before && iat + 5 <= before + 2,
        "iat {iat}, now {before}"
    );
    // expires_in stays the configured 5 minutes, counted from the moment of issue.
    assert_eq!(reply.json()["expires_in"], 300);
    assert_eq!(exp - iat, 300 + 5);
    // The registry (distribution 2.8 with the gateway's certificate) takes it.
    let tags = get(&format!("{}/v2/{REPO}/tags/list", stack.gateway.url))
        .bearer(&token)
        .send();
    assert_ne!(tags.status, 401, "{}", tags.body);
}

#[test]
fn the_distrust_advice_sends_a_jwks_only_registry_to_token_header_jwks() {
    let stack = Stack::with(StackOptions {
        registry_auth: RegistryAuth::OtherCertificate,
        ..StackOptions::default()
    });
    let config = stack.gateway.config_path();
    let (code, out, err) = support::gateway::run_cli(
        &["check", "--config", config.to_str().unwrap(), "--upstream"],
        None,
    );
    let out = format!("{out}{err}");
    assert_eq!(code, 1, "{out}");
    // distribution 3.x reads a local JWKS file and refuses x5c tokens it cannot chain: the
    // advice says so, and no longer says a JWKS file works with the default tokens.
    assert!(out.contains("needs token.header: jwks"), "{out}");
    assert!(out.contains("which it does not fetch"), "{out}");
    assert!(!out.contains("can also take the keys"), "{out}");
}
