//! CI workload identity: `docker login -u oidc` with an OIDC ID token as the password,
//! verified against a local HTTPS issuer (nginx serving the discovery document and JWKS the
//! test writes, with a test CA), with GitHub-, GitLab- and Kubernetes-shaped claims.

use crate::support;

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::json;

use support::docker::Dockerd;
use support::gateway::{run_cli, GatewayFiles, GatewayOptions};
use support::http::{get, jwt_part, Reply};
use support::issuer::{github_claims, gitlab_claims, kubernetes_claims, now, Issuer};
use support::process::ImageCli;
use support::stack::{Stack, StackOptions};

const AUDIENCE: &str = "https://registry.test";

/// The `federation:` section for the three issuers `issuer` serves.
fn federation_yaml(issuer: &Issuer) -> String {
    let ca = issuer.ca().display().to_string();
    format!(
        r#"audit: {{ path: audit.log }}
federation:
  - name: github
    issuer: "{github}"
    audience: "{AUDIENCE}"
    ca: "{ca}"
    max_token_age: 10m
    rules:
      - claims: {{ repository: "myorg/app", ref: "refs/heads/main" }}
        grant: {{ path: mygroup/myproject, actions: [pull, push] }}
      - claims: {{ repository_owner: "myorg" }}
        grant: {{ path: mygroup, actions: [pull] }}
      - claims: {{ repository: "myorg/reader" }}
        grant: {{ path: ci/other, actions: [pull] }}
      - claims: {{ repository: "myorg/prot" }}
        grant: {{ path: prot/app, actions: [pull, push, delete] }}
      - claims: {{ repository: "myorg/prot" }}
        grant: {{ path: frozen/app, actions: [pull, push] }}
  - name: gitlab
    issuer: "{gitlab}"
    audience: "{AUDIENCE}"
    ca: "{ca}"
    rules:
      - claims: {{ project_path: "mygroup/*", ref_protected: "true" }}
        grant: {{ path: mygroup/second, actions: [pull, push] }}
  - name: k8s
    issuer: "{k8s}"
    audience: "{AUDIENCE}"
    jwks_uri: "{k8s}/openid/v1/jwks"
    ca: "{ca}"
    rules:
      - claims: {{ "kubernetes.io/namespace": ci, "kubernetes.io/serviceaccount/name": builder }}
        grant: {{ path: erin/app, actions: [pull, push] }}
"#,
        github = issuer.url("github"),
        gitlab = issuer.url("gitlab"),
        k8s = issuer.url("k8s"),
    )
}

/// An issuer with key `gh1` published for github, `gl1` for gitlab, `k1` for k8s (only at
/// the configured jwks_uri: no discovery for it).
fn issuer() -> Issuer {
    let mut issuer = Issuer::start();
    issuer.add_key("gh1", Algorithm::RS256);
    issuer.add_key("gl1", Algorithm::RS256);
    issuer.add_key("k1", Algorithm::ES256);
    issuer.publish("github", &["gh1"]);
    issuer.publish("gitlab", &["gl1"]);
    let jwks = json!({ "keys": [issuer.key("k1").jwk.clone()] }).to_string();
    issuer.write("k8s/openid/v1/jwks", jwks.as_bytes());
    issuer
}

fn stack(issuer: &Issuer, more: &str) -> Stack {
    Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: format!("{}{more}", federation_yaml(issuer)),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    })
}

fn ask(stack: &Stack, token: &str, scopes: &[&str]) -> Reply {
    let mut url = format!("{}/jwt/auth?service=container_registry", stack.gateway.url);
    for scope in scopes {
        url.push_str("&scope=");
        url.push_str(scope);
    }
    get(&url).basic("oidc", token).send()
}

fn main_token(issuer: &Issuer) -> String {
    issuer.sign(
        "gh1",
        &github_claims(
            &issuer.url("github"),
            AUDIENCE,
            "myorg/app",
            "refs/heads/main",
        ),
    )
}

/// No part of an ID token in the gateway's log or audit log.
fn assert_not_logged(stack: &Stack, tokens: &[&str]) {
    let logs = format!(
        "{}{}",
        stack.gateway.log(),
        std::fs::read_to_string(stack.gateway.files.path("audit.log")).unwrap_or_default()
    );
    for token in tokens {
        for part in token.split('.').filter(|p| p.len() > 16) {
            assert!(
                !logs.contains(part),
                "a part of an ID token is in the logs: {part}"
            );
        }
    }
}

#[test]
fn docker_logs_in_with_a_github_id_token_and_pushes_where_the_rules_allow() {
    let issuer = issuer();
    let stack = stack(&issuer, "");
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();
    let token = main_token(&issuer);
    let out = docker.ok(
        &["login", host, "-u", "oidc", "--password-stdin"],
        Some(&token),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let image = format!("{host}/mygroup/myproject/app:1");
    docker.import_image(&image);
    let out = docker.ok(&["push", &image], None);
    assert!(out.contains("digest: sha256:"), "{out}");
    // The group rule gives pull only: no push into mygroup/second.
    let elsewhere = format!("{host}/mygroup/second/app:1");
    docker.ok(&["tag", &image, &elsewhere], None);
    let (ok, out) = docker.run(&["push", &elsewhere], None);
    assert!(!ok, "a pull-only grant pushed: {out}");

    let account = "federation:github:repo:myorg/app:ref:refs/heads/main";
    let audit = std::fs::read_to_string(stack.gateway.files.path("audit.log")).unwrap();
    let record: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"] == "token" && r["user"] == account)
        .unwrap_or_else(|| panic!("no token record for {account} in:\n{audit}"));
    assert_eq!(record["credential"], "oidc_id_token");
    assert_eq!(record["credential_name"], "github");
    assert_eq!(record["issuer"], issuer.url("github"));
    assert_eq!(record["subject"], "repo:myorg/app:ref:refs/heads/main");
    let matched: Vec<&str> = record["matched_claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        matched,
        [
            "ref=refs/heads/main",
            "repository=myorg/app",
            "repository_owner=myorg"
        ]
    );
    assert!(audit.contains("\"event\":\"push\""), "{audit}");
    assert_not_logged(&stack, &[&token]);
}

#[test]
fn every_matching_rule_adds_its_grant_and_no_match_is_a_403_naming_the_federation() {
    let issuer = issuer();
    let stack = stack(&issuer, "");
    let token = main_token(&issuer);
    let reply = ask(
        &stack,
        &token,
        &[
            "repository:mygroup/myproject/app:pull,push,delete",
            "repository:mygroup/myproject/vault/img:pull,push",
            "repository:mygroup/second/app:pull,push",
            "repository:ci/other/app:pull",
            "repository:public/app:pull",
            "repository:nowhere/app:pull",
            "registry:catalog:*",
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let registry_token = reply.json()["token"].as_str().unwrap().to_owned();
    // The union of the main-branch rule and the owner rule; nothing outside their paths (a
    // public project included), never delete, never the catalog.
    assert_eq!(
        Stack::granted(&registry_token),
        vec![
            "repository:mygroup/myproject/app:pull,push",
            "repository:mygroup/myproject/vault/img:pull,push",
            "repository:mygroup/second/app:pull",
        ]
    );
    let claims = jwt_part(&registry_token, 1);
    assert_eq!(
        claims["sub"],
        "federation:github:repo:myorg/app:ref:refs/heads/main"
    );
    assert_eq!(claims["auth_type"], "oidc_id_token");
    assert!(
        claims.get("cred").is_none(),
        "no push grace binding: {claims}"
    );
    // No refresh token: a new ID token is minted per job.
    let url = format!(
        "{}/jwt/auth?service=container_registry&offline_token=true&scope=repository:mygroup/myproject/app:pull",
        stack.gateway.url
    );
    let reply = get(&url).basic("oidc", &token).send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.json().get("refresh_token").is_none(),
        "{}",
        reply.body
    );

    // A pull-only rule (and the owner rule): pull, never push.
    let reader = issuer.sign(
        "gh1",
        &github_claims(
            &issuer.url("github"),
            AUDIENCE,
            "myorg/reader",
            "refs/heads/main",
        ),
    );
    let reply = ask(&stack, &reader, &["repository:ci/other/app:pull,push"]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let granted = Stack::granted(reply.json()["token"].as_str().unwrap());
    assert_eq!(granted, vec!["repository:ci/other/app:pull"]);

    // Another organisation's job: a good token that no rule grants anything.
    let stranger = issuer.sign(
        "gh1",
        &github_claims(
            &issuer.url("github"),
            AUDIENCE,
            "evil/app",
            "refs/heads/main",
        ),
    );
    let reply = ask(
        &stack,
        &stranger,
        &["repository:mygroup/myproject/app:pull"],
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.error_code(), "DENIED");
    assert!(
        reply.error_message().contains("\"github\""),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.contains("repository_owner"),
        "the client is told which claim: {}",
        reply.body
    );
    let log = stack.gateway.log();
    assert!(
        log.contains("reason=\"no_federation_rule\"") || log.contains("reason=no_federation_rule"),
        "{log}"
    );
    assert!(
        log.contains("repository_owner is \\\"evil\\\"")
            || log.contains("repository_owner is \"evil\""),
        "which claim failed is logged:\n{log}"
    );

    // GitLab CI's id_tokens: a protected branch of a project under mygroup.
    let gitlab = |protected| {
        issuer.sign(
            "gl1",
            &gitlab_claims(
                &issuer.url("gitlab"),
                AUDIENCE,
                "mygroup/app",
                "main",
                protected,
            ),
        )
    };
    let reply = ask(
        &stack,
        &gitlab(true),
        &["repository:mygroup/second/img:pull,push"],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let registry_token = reply.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        Stack::granted(&registry_token),
        vec!["repository:mygroup/second/img:pull,push"]
    );
    assert_eq!(
        jwt_part(&registry_token, 1)["sub"],
        "federation:gitlab:project_path:mygroup/app:ref_type:branch:ref:main"
    );
    let reply = ask(
        &stack,
        &gitlab(false),
        &["repository:mygroup/second/img:pull"],
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.error_message().contains("\"gitlab\""),
        "{}",
        reply.body
    );

    // A Kubernetes projected service-account token (nested claims, aud a list, keys from the
    // configured jwks_uri: this issuer publishes no discovery document).
    let k8s = |namespace: &str| {
        issuer.sign(
            "k1",
            &kubernetes_claims(&issuer.url("k8s"), AUDIENCE, namespace, "builder"),
        )
    };
    let reply = ask(&stack, &k8s("ci"), &["repository:erin/app:pull,push"]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let registry_token = reply.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        Stack::granted(&registry_token),
        vec!["repository:erin/app:pull,push"]
    );
    assert_eq!(
        jwt_part(&registry_token, 1)["sub"],
        "federation:k8s:system:serviceaccount:ci:builder"
    );
    let reply = ask(&stack, &k8s("default"), &["repository:erin/app:pull"]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_not_logged(
        &stack,
        &[&token, &reader, &stranger, &gitlab(true), &k8s("ci")],
    );
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

#[test]
fn bad_id_tokens_are_refused_with_401_and_the_log_names_why() {
    let mut issuer = issuer();
    // A key the issuer never published.
    issuer.add_key("rogue", Algorithm::RS256);
    let stack = stack(&issuer, "");
    let url = issuer.url("github");
    let good = github_claims(&url, AUDIENCE, "myorg/app", "refs/heads/main");
    let with = |changes: serde_json::Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let now = now();
    let valid = issuer.sign("gh1", &good);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = b64(with(json!({"repository": "myorg/other"}))
        .to_string()
        .as_bytes());
    let hs256 = {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "gh1"});
        let key = jsonwebtoken::EncodingKey::from_secret(&issuer.key("gh1").public_der);
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.kid = Some("gh1".into());
        let _ = header;
        jsonwebtoken::encode(&h, &good, &key).unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another audience",
            issuer.sign("gh1", &with(json!({"aud": "https://other.example"}))),
            "wrong_audience",
        ),
        (
            "expired",
            issuer.sign(
                "gh1",
                &with(json!({"iat": now - 600, "nbf": now - 600, "exp": now - 120})),
            ),
            "expired",
        ),
        (
            "nbf in the future",
            issuer.sign("gh1", &with(json!({"nbf": now + 600}))),
            "not_yet_valid",
        ),
        (
            "iat too old",
            issuer.sign("gh1", &with(json!({"iat": now - 3600, "nbf": now - 3600}))),
            "too_old",
        ),
        (
            "iat in the future",
            issuer.sign("gh1", &with(json!({"iat": now + 600}))),
            "issued_in_future",
        ),
        ("an unknown key", issuer.sign("rogue", &good), "unknown_key"),
        (
            "signed by another key under a published kid",
            {
                let t = issuer.sign("rogue", &good);
                let p: Vec<&str> = t.split('.').collect();
                format!(
                    "{}.{}.{}",
                    b64(json!({"alg": "RS256", "kid": "gh1"}).to_string().as_bytes()),
                    p[1],
                    p[2]
                )
            },
            "bad_signature",
        ),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","kid":"gh1"}"#), parts[1]),
            "algorithm_not_allowed",
        ),
        (
            "HS256 with the public key as the secret",
            hs256,
            "algorithm_not_allowed",
        ),
        (
            "a tampered payload",
            format!("{}.{}.{}", parts[0], tampered_payload, parts[2]),
            "bad_signature",
        ),
        (
            "an unconfigured issuer",
            issuer.sign("gh1", &with(json!({"iss": "https://evil.example"}))),
            "unknown_issuer",
        ),
        (
            "no sub",
            issuer.sign("gh1", &with(json!({"sub": null}))),
            "missing_claim",
        ),
        ("garbage", "not-a-jwt".to_owned(), "malformed"),
        ("garbage parts", "a.b.c".to_owned(), "malformed"),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
            "oversized",
        ),
    ];
    for (what, token, reason) in &cases {
        let reply = ask(&stack, token, &["repository:mygroup/myproject/app:pull"]);
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert_eq!(reply.error_code(), "UNAUTHORIZED", "{what}: {}", reply.body);
        assert!(
            reply.error_message().contains("ID token"),
            "{what}: {}",
            reply.body
        );
        let log = stack.gateway.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("login refused"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.contains(&format!(": {reason}: ")),
            "{what}: the log line names {reason}:\n{line}"
        );
    }
    // The good token still works after all that (no ban by username; the address's count was
    // below the limit).
    assert_eq!(
        ask(&stack, &valid, &["repository:mygroup/myproject/app:pull"]).status,
        200
    );
    let tokens: Vec<&str> = cases
        .iter()
        .map(|(_, t, _)| t.as_str())
        .chain([valid.as_str()])
        .collect();
    assert_not_logged(&stack, &tokens);
}

#[test]
fn a_key_rotated_at_the_issuer_is_picked_up_and_unknown_kids_refetch_at_most_once_a_minute() {
    let mut issuer = issuer();
    let stack = stack(&issuer, "");
    let scope = ["repository:mygroup/myproject/app:pull"];
    let claims = github_claims(
        &issuer.url("github"),
        AUDIENCE,
        "myorg/app",
        "refs/heads/main",
    );
    let old = issuer.sign("gh1", &claims);
    assert_eq!(ask(&stack, &old, &scope).status, 200);
    assert_eq!(
        issuer.fetches("/github/.well-known/openid-configuration"),
        1
    );
    assert_eq!(issuer.fetches("/github/jwks"), 1);
    // Cached: a second login fetches nothing.
    assert_eq!(ask(&stack, &old, &scope).status, 200);
    assert_eq!(issuer.fetches("/github/jwks"), 1);

    // The issuer rotates: gh2 in, gh1 out.
    issuer.add_key("gh2", Algorithm::RS256);
    issuer.publish("github", &["gh2"]);
    let new = issuer.sign("gh2", &claims);
    let reply = ask(&stack, &new, &scope);
    assert_eq!(reply.status, 200, "the new kid is fetched: {}", reply.body);
    assert_eq!(issuer.fetches("/github/jwks"), 2);
    let reply = ask(&stack, &old, &scope);
    assert_eq!(
        reply.status, 401,
        "the removed key no longer verifies: {}",
        reply.body
    );

    // Made-up kids: refused, and no more than one refetch a minute (that one was spent).
    for i in 0..20 {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some(format!("made-up-{i}"));
        let parts: Vec<String> = new.split('.').map(str::to_owned).collect();
        let forged = format!(
            "{}.{}.{}",
            b64(serde_json::to_string(&header).unwrap().as_bytes()),
            parts[1],
            parts[2]
        );
        assert_eq!(ask(&stack, &forged, &scope).status, 401);
    }
    assert_eq!(
        issuer.fetches("/github/jwks"),
        2,
        "unknown kids made the gateway refetch"
    );
    assert_eq!(ask(&stack, &new, &scope).status, 200);
}

#[test]
fn with_the_issuer_down_cached_keys_keep_working_with_one_error_and_readyz_is_unaffected() {
    let mut issuer = issuer();
    // A low ban limit: an outage must not count against the clients.
    let extra = format!(
        "{}brute_force: {{ max_failures: 3 }}\n",
        federation_yaml(&issuer)
    );
    let (stack, ops) = Stack::with_ops(&extra, support::stack::RegistryAuth::TrustsGateway);
    let scope = ["repository:mygroup/myproject/app:pull"];
    let claims = github_claims(
        &issuer.url("github"),
        AUDIENCE,
        "myorg/app",
        "refs/heads/main",
    );
    assert_eq!(
        ask(&stack, &issuer.sign("gh1", &claims), &scope).status,
        200
    );
    issuer.add_key("gh2", Algorithm::RS256);
    issuer.stop();

    // Keys in the cache keep working.
    for _ in 0..3 {
        assert_eq!(
            ask(&stack, &issuer.sign("gh1", &claims), &scope).status,
            200
        );
    }
    // A key the cache lacks cannot be fetched: 503 in the registry's shape, one ERROR.
    // More times than brute_force.max_failures: an outage bans nobody.
    for _ in 0..6 {
        let reply = ask(&stack, &issuer.sign("gh2", &claims), &scope);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.error_code(), "UNAVAILABLE");
    }
    let log = stack.gateway.log();
    let errors = log
        .lines()
        .filter(|l| l.contains("cannot fetch the issuer's signing keys"))
        .count();
    assert_eq!(errors, 1, "one ERROR per outage, not per request:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("cannot fetch the issuer's signing keys")),
        "{log}"
    );
    // Other logins and the replica's readiness do not depend on the issuer.
    stack.token("alice", support::gateway::secrets::ALICE_PAT, &scope);
    let ready = get(&format!("{ops}/readyz")).send();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ask(&stack, &issuer.sign("gh1", &claims), &scope).status,
        200
    );
}

#[test]
fn check_names_every_bad_federation_key() {
    let files = GatewayFiles::init("ec", "http://127.0.0.1:1");
    let config = files.path("gateway.yaml");
    let users = support::gateway::fixture_users();
    std::fs::write(
        &config,
        format!(
            r#"public_url: "http://127.0.0.1:4567"
upstream: {{ url: "http://127.0.0.1:1" }}
token: {{ signing_key: token.key, certificate: token.crt }}
ci: {{ signing_key: "" }}
{users}federation:
  - name: github
    issuer: "http://token.actions.githubusercontent.com"
    audience: ""
    max_token_age: 2d
    rules:
      - claims: {{}}
        grant: {{ path: nosuch/group, actions: [pull, fly] }}
      - claims: {{ repository: "*" }}
        grant: {{ path: mygroup, actions: [] }}
  - name: github
    issuer: "https://token.actions.githubusercontent.com"
    audience: "https://registry.test"
    jwks_uri: "http://keys.example/jwks"
    rules: []
  - name: "Bad Name"
    issuer: "https://gitlab.example.com"
    audience: "x"
    rules:
      - claims: {{ project_path: "g/*" }}
        grant: {{ path: mygroup, actions: [pull] }}
        extra: 1
"#
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    for key in [
        "ci.signing_key: must not be empty",
        "federation[0].issuer: \"http://token.actions.githubusercontent.com\" must be an https:// URL",
        "federation[0].audience: must not be empty",
        "federation[0].max_token_age: must be between 1s and 24h",
        "federation[0].rules[0].claims: must name at least one claim",
        "federation[0].rules[0].grant.path: \"nosuch/group\" is not a group or project",
        "federation[0].rules[0].grant.actions[1]: unknown action \"fly\"",
        "federation[0].rules[1].claims.repository: \"*\" matches anything",
        "federation[0].rules[1].grant.actions: must list at least one",
        "federation[1].name: \"github\" is already the name of federation[0]",
        "federation[1].jwks_uri: \"http://keys.example/jwks\" must be an https:// URL",
        "federation[1].rules: has no rules",
        "federation[2].name: \"Bad Name\" is not a federation name",
        "federation[2].rules[0].extra: unknown field `extra`",
    ] {
        assert!(err.contains(key), "{key} missing in:\n{err}");
    }
}

#[test]
fn an_issuer_that_hangs_or_sends_too_much_is_cut_off() {
    let mut issuer = Issuer::start();
    issuer.add_key("b1", Algorithm::RS256);
    issuer.publish("big", &["b1"]);
    // A JWKS of 1 MiB: more than the gateway reads.
    let padding = "x".repeat(1 << 20);
    issuer.write(
        "big/jwks",
        format!("{{\"keys\":[],\"pad\":\"{padding}\"}}").as_bytes(),
    );
    // An "issuer" that accepts connections and never answers (not even the TLS handshake).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let slow_url = format!("https://127.0.0.1:{silent_port}/slow");
    let ca = issuer.ca().display().to_string();
    let extra = format!(
        r#"federation:
  - name: big
    issuer: "{big}"
    audience: "{AUDIENCE}"
    ca: "{ca}"
    rules: [{{ claims: {{ sub: "*x*" }}, grant: {{ path: mygroup, actions: [pull] }} }}]
  - name: slow
    issuer: "{slow_url}"
    audience: "{AUDIENCE}"
    rules: [{{ claims: {{ sub: "*x*" }}, grant: {{ path: mygroup, actions: [pull] }} }}]
"#,
        big = issuer.url("big"),
    );
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra,
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let scope = ["repository:mygroup/myproject/app:pull"];
    let big = issuer.sign(
        "b1",
        &github_claims(&issuer.url("big"), AUDIENCE, "myorg/app", "x"),
    );
    let reply = ask(&stack, &big, &scope);
    assert_eq!(reply.status, 503, "{}", reply.body);
    let log = stack.gateway.log();
    assert!(log.contains("sent more than 262144 bytes"), "{log}");

    let slow = issuer.sign("b1", &github_claims(&slow_url, AUDIENCE, "myorg/app", "x"));
    let started = std::time::Instant::now();
    let reply = ask(&stack, &slow, &scope);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "the fetch has no timeout"
    );
    let log = stack.gateway.log();
    assert!(log.contains("did not answer within 5s"), "{log}");
}

#[test]
fn project_settings_and_protection_rules_still_bind_a_federated_grant() {
    let issuer = issuer();
    let stack = stack(&issuer, "");
    let token = issuer.sign(
        "gh1",
        &github_claims(
            &issuer.url("github"),
            AUDIENCE,
            "myorg/prot",
            "refs/heads/main",
        ),
    );
    // The grant reaches prot/app, and an archived project stays pull-only.
    let reply = ask(
        &stack,
        &token,
        &[
            "repository:prot/app/img:pull,push,delete",
            "repository:frozen/app:pull,push",
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        Stack::granted(reply.json()["token"].as_str().unwrap()),
        vec![
            "repository:prot/app/img:pull,push,delete",
            "repository:frozen/app:pull"
        ]
    );
    // A protected repository path (maintainer+ to push): the grant has no role, so it is
    // refused as a deploy token would be.
    let reply = ask(&stack, &token, &["repository:prot/app/release-1:pull,push"]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.error_message().contains("protected repository"),
        "{}",
        reply.body
    );
}
