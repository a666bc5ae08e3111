//! `/jwt/auth` as clients see it: status codes, error JSON, challenges, and the token's claims.

use crate::support;

use support::gateway::secrets::*;
use support::http::{get, jwt_part};
use support::stack::Stack;

fn auth_url(stack: &Stack, query: &str) -> String {
    format!(
        "{}/jwt/auth?service=container_registry{query}",
        stack.gateway.url
    )
}

#[test]
fn login_without_credentials_is_access_forbidden() {
    let stack = Stack::start();
    let reply = get(&auth_url(&stack, "&account=alice")).send();
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.body,
        r#"{"errors":[{"code":"DENIED","message":"access forbidden"}]}"#
    );
}

#[test]
fn wrong_credentials_get_401_with_a_basic_challenge_and_no_hint_which_part_was_wrong() {
    let stack = Stack::start();
    let wrong_secret = get(&auth_url(&stack, ""))
        .basic("alice", "not-her-password")
        .send();
    let unknown_user = get(&auth_url(&stack, ""))
        .basic("mallory", "whatever")
        .send();
    for reply in [&wrong_secret, &unknown_user] {
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Basic realm="portcullis""#)
        );
        assert_eq!(reply.error_code(), "UNAUTHORIZED");
        assert!(
            reply
                .error_message()
                .starts_with("HTTP Basic: Access denied"),
            "{}",
            reply.body
        );
    }
    assert_eq!(
        wrong_secret.body, unknown_user.body,
        "the client cannot tell the two apart"
    );
    // The operator can.
    let log = stack.gateway.log();
    assert!(log.contains("reason=\"wrong_secret\""), "{log}");
    assert!(log.contains("reason=\"unknown_user\""), "{log}");
}

#[test]
fn an_expired_personal_access_token_is_refused_and_says_so() {
    let stack = Stack::start();
    let reply = get(&auth_url(&stack, ""))
        .basic("alice", ALICE_EXPIRED_PAT)
        .send();
    assert_eq!(reply.status, 401);
    assert!(reply.error_message().contains("expired"), "{}", reply.body);
    assert!(stack.gateway.log().contains("reason=\"token_expired\""));
}

#[test]
fn password_and_personal_access_token_logins_get_a_token() {
    let stack = Stack::start();
    for secret in [ALICE_PASSWORD, ALICE_PAT] {
        let reply = get(&auth_url(
            &stack,
            "&account=alice&offline_token=true&client_id=docker",
        ))
        .basic("alice", secret)
        .send();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        assert_eq!(body["token"], body["access_token"]);
        assert_eq!(body["expires_in"], 300);
        assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
}

#[test]
fn the_token_is_what_distribution_requires() {
    let stack = Stack::start();
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygroup/myproject:pull,push"],
    );
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap();
    assert_eq!(kid.split(':').count(), 12, "libtrust key id: {kid}");
    assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], "portcullis");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["aud"], "container_registry",
        "aud must be a plain string"
    );
    let (iat, nbf, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    // iat and nbf are backdated 5 s (registries with a clock a little behind, Zot's zero
    // leeway); exp counts the 5 minutes from the moment of issue.
    assert_eq!(exp - iat, 300 + 5);
    assert_eq!(nbf, iat);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject:pull,push"]
    );
}

#[test]
fn scopes_are_down_scoped_to_what_the_caller_may_do() {
    let stack = Stack::start();
    // A reporter asking to push gets pull only.
    let token = stack.token("bob", BOB_PAT, &["repository:mygroup/myproject:pull,push"]);
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject:pull"]
    );
    // A read-only token of a developer: pull only.
    let token = stack.token(
        "alice",
        ALICE_READ_ONLY_PAT,
        &["repository:mygroup/myproject:pull,push"],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject:pull"]
    );
    // Several scopes, one repository nobody owns, one unknown type: only what is allowed stays.
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &[
            "repository:mygroup/myproject/sub:pull,push",
            "repository:other/app:pull",
            "helmchart:x:pull",
            "registry:catalog:*",
        ],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:mygroup/myproject/sub:pull,push"]
    );
    // Internal projects are readable by any signed-in user.
    let token = stack.token("bob", BOB_PAT, &["repository:internal/app:pull,push"]);
    assert_eq!(Stack::granted(&token), vec!["repository:internal/app:pull"]);
    // Administrators get every project's repositories and the catalog, but nothing where no
    // project owns the repository (GitLab CRAS#process_repository_access returns without a
    // project).
    let token = stack.token(
        "root",
        ROOT_PAT,
        &[
            "repository:other/app:pull,push",
            "repository:public/app:pull,push",
            "registry:catalog:*",
        ],
    );
    assert_eq!(
        Stack::granted(&token),
        vec!["repository:public/app:pull,push", "registry:catalog:*"]
    );
}

#[test]
fn a_scope_name_may_carry_a_registry_host_but_no_project_owns_it() {
    // The scope parses (a 200, not a 400), and as in GitLab, where no project has that path
    // (ContainerRegistry::Path#repository_project), nothing is granted, even to an admin.
    let stack = Stack::start();
    let token = stack.token(
        "root",
        ROOT_PAT,
        &["repository:127.0.0.1:5000/mygroup/myproject:pull"],
    );
    assert!(Stack::granted(&token).is_empty());
}

#[test]
fn anonymous_callers_get_pull_tokens_for_public_projects_only() {
    let stack = Stack::start();
    let reply = get(&auth_url(
        &stack,
        "&scope=repository:public/app:pull,push&scope=repository:mygroup/myproject:pull",
    ))
    .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(Stack::granted(&token), vec!["repository:public/app:pull"]);
    assert_eq!(jwt_part(&token, 1)["sub"], "");
}

#[test]
fn bad_input_gets_a_clear_4xx_in_the_registry_error_shape() {
    let stack = Stack::start();
    let cases = [
        (
            get(&auth_url(&stack, "&scope=repository"))
                .basic("alice", ALICE_PAT)
                .send(),
            400,
            "UNSUPPORTED",
            "malformed scope",
        ),
        (
            get(&auth_url(&stack, "&scope=repository:not..valid/x:pull"))
                .basic("alice", ALICE_PAT)
                .send(),
            400,
            "NAME_INVALID",
            "invalid repository name",
        ),
        (
            get(&auth_url(&stack, ""))
                .header("Authorization", "Basic !!!notbase64")
                .send(),
            401,
            "UNAUTHORIZED",
            "not valid Basic",
        ),
        (
            get(&auth_url(&stack, ""))
                .header("Authorization", "Bearer abc")
                .send(),
            401,
            "UNAUTHORIZED",
            "takes Basic",
        ),
        (
            get(&auth_url(&stack, "")).arg("-X").arg("DELETE").send(),
            405,
            "UNSUPPORTED",
            "answers GET",
        ),
        (
            get(&format!("{}/nowhere", stack.gateway.url)).send(),
            404,
            "UNSUPPORTED",
            "no such endpoint",
        ),
    ];
    for (reply, status, code, message) in cases {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.error_code(), code, "{}", reply.body);
        assert!(
            reply.error_message().contains(message),
            "{message:?} not in {}",
            reply.body
        );
    }
}

#[test]
fn no_secret_reaches_the_log() {
    let stack = Stack::start();
    let token = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    let _ = get(&auth_url(&stack, ""))
        .basic("alice", ALICE_PASSWORD)
        .send();
    let _ = get(&auth_url(&stack, ""))
        .basic("alice", "a-wrong-secret-value")
        .send();
    let _ = get(&format!(
        "{}/v2/mygroup/myproject/tags/list",
        stack.gateway.url
    ))
    .bearer(&token)
    .send();
    let _ = get(&format!("{}/v2/", stack.gateway.url))
        .bearer("forged.token.value")
        .send();
    let log = stack.gateway.log();
    // The access line of the tags request (404: nothing was pushed), as tracing-subscriber's
    // text format writes it.
    let line = log
        .lines()
        .find(|line| line.contains("path=/v2/mygroup/myproject/tags/list"))
        .unwrap_or_else(|| panic!("no access line for the tags request: {log}"));
    let (timestamp, rest) = line
        .split_once("  INFO portcullis::access: request client=127.0.0.1:")
        .unwrap_or_else(|| panic!("not an access line: {line}"));
    assert!(
        timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "an RFC 3339 UTC timestamp with microseconds: {line}"
    );
    assert!(
        rest.contains(" method=GET path=/v2/mygroup/myproject/tags/list version=HTTP/1.1 status=404 duration_ms=")
            && rest.ends_with(" user=\"alice\""),
        "{line}"
    );
    for secret in [
        ALICE_PAT,
        ALICE_PASSWORD,
        "a-wrong-secret-value",
        token.as_str(),
        "forged.token.value",
        "Basic ",
        "Bearer ",
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} appears in the log:\n{log}"
        );
    }
}

#[test]
fn logs_are_json_lines_when_configured() {
    use support::gateway::GatewayOptions;
    use support::stack::StackOptions;
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: "log: { format: json }\n".into(),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let _ = stack.token("alice", ALICE_PAT, &["repository:mygroup/myproject:pull"]);
    let log = stack.gateway.log();
    let request_line = log
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .find(|line| line["target"] == "portcullis::access")
        .expect("an access log line");
    assert_eq!(request_line["path"], "/jwt/auth");
    assert_eq!(request_line["status"], 200);
    assert_eq!(request_line["user"], "alice");
}

#[test]
fn the_public_keys_are_served_as_a_jwks_with_rfc7638_kids() {
    for key_type in ["ec", "rsa"] {
        let stack = Stack::with(support::stack::StackOptions {
            key_type,
            ..Default::default()
        });
        let reply = get(&format!("{}/jwt/jwks.json", stack.gateway.url)).send();
        assert_eq!(reply.status, 200);
        let jwks = reply.json();
        let key = &jwks["keys"][0];
        // The thumbprint, computed independently (Python) from the members the JWKS publishes.
        let members = if key["kty"] == "EC" {
            format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                key["crv"].as_str().unwrap(),
                key["x"].as_str().unwrap(),
                key["y"].as_str().unwrap()
            )
        } else {
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                key["e"].as_str().unwrap(),
                key["n"].as_str().unwrap()
            )
        };
        let mut python = std::process::Command::new("python3");
        python.arg("-c").arg("import sys,hashlib,base64; print(base64.urlsafe_b64encode(hashlib.sha256(sys.stdin.read().encode()).digest()).decode().rstrip('='))");
        let expected = support::process::run(python, Some(&members))
            .stdout
            .trim()
            .to_owned();
        assert_eq!(key["kid"].as_str().unwrap(), expected, "{key_type}");
        assert_eq!(key["alg"], if key_type == "ec" { "ES256" } else { "RS256" });
        // The same certificate the tokens carry in x5c.
        let token = stack.token("alice", ALICE_PAT, &[]);
        assert_eq!(jwt_part(&token, 0)["x5c"], key["x5c"]);
    }
}
