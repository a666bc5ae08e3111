//! The OAuth2 form of the token endpoint and refresh tokens, as docker uses them: `docker login`
//! stores an identity token (never the secret) and every later push refreshes with it.

use crate::support;

use std::time::Duration;
use support::docker::Dockerd;
use support::gateway::secrets::*;

use support::gateway::{sha256_hex, Gateway, GatewayOptions};
use support::http::{get, request, Reply};
use support::process::ImageCli;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn offline_login(stack_url: &str, user: &str, secret: &str) -> Reply {
    get(&format!(
        "{stack_url}/jwt/auth?service=container_registry&offline_token=true&client_id=docker"
    ))
    .basic(user, secret)
    .send()
}

fn post(url: &str, form: &str) -> Reply {
    request("POST", &format!("{url}/jwt/auth"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
}

#[test]
fn offline_logins_get_a_refresh_token_that_works_over_post() {
    let stack = Stack::start();
    let url = &stack.gateway.url;
    let reply = offline_login(url, "alice", ALICE_PAT);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let refresh = reply.json()["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    assert!(get(&format!("{url}/jwt/auth?service=container_registry"))
        .basic("alice", ALICE_PAT)
        .send()
        .json()["refresh_token"]
        .is_null());

    // docker's refresh: one space-separated scope field.
    let reply = post(
        url,
        &format!("grant_type=refresh_token&service=container_registry&client_id=docker&refresh_token={refresh}&scope=repository%3Amygroup%2Fmyproject%3Apull%2Cpush+repository%3Apublic%2Fapp%3Apull"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        Stack::granted(&token),
        vec![
            "repository:mygroup/myproject:pull,push",
            "repository:public/app:pull"
        ]
    );

    // The password grant, with access_type=offline.
    let reply = post(url, &format!("grant_type=password&username=alice&password={ALICE_PASSWORD}&service=container_registry&client_id=containers%2Fimage&access_type=offline&scope=repository%3Amygroup%2Fmyproject%3Apull"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["refresh_token"].is_string());
    assert_eq!(
        Stack::granted(reply.json()["access_token"].as_str().unwrap()),
        vec!["repository:mygroup/myproject:pull"]
    );
    // A refresh token is never a registry token, and a registry token never a refresh token.
    let reply = get(&format!("{url}/v2/")).bearer(&refresh).send();
    assert_eq!(reply.status, 401);
    assert_eq!(
        post(
            url,
            &format!("grant_type=refresh_token&refresh_token={token}")
        )
        .status,
        401
    );
}

#[test]
fn bad_oauth_forms_are_clear_4xx() {
    let stack = Stack::start();
    let url = &stack.gateway.url;
    for (form, status, message) in [
        (
            "grant_type=client_credentials",
            400,
            "unsupported grant_type",
        ),
        (
            "grant_type=password&username=alice",
            400,
            "missing form field password",
        ),
        (
            "username=alice&password=x",
            400,
            "missing form field grant_type",
        ),
        (
            "grant_type=password&username=alice&password=wrong",
            401,
            "HTTP Basic: Access denied",
        ),
        (
            "grant_type=refresh_token&refresh_token=garbage",
            401,
            "HTTP Basic: Access denied",
        ),
    ] {
        let reply = post(url, form);
        assert_eq!(reply.status, status, "{form}: {}", reply.body);
        assert!(
            reply.error_message().contains(message),
            "{form}: {}",
            reply.body
        );
    }
}

#[test]
fn a_refresh_token_dies_with_the_credential_it_came_from() {
    let stack = Stack::start();
    let from_password = offline_login(&stack.gateway.url, "alice", ALICE_PASSWORD).json()
        ["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let from_pat = offline_login(&stack.gateway.url, "alice", ALICE_PAT).json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // No refresh tokens for CI jobs or anonymous callers.
    assert!(get(&format!("{}/jwt/auth?service=container_registry&offline_token=true&scope=repository:public/app:pull", stack.gateway.url)).send().json()["refresh_token"].is_null());

    // Same signing key, new config: alice's password hash changed (a password change), her
    // PAT did not.
    let changed = Gateway::start(
        stack.gateway.files.copy_keys(),
        &GatewayOptions::new(&stack.registry.url()),
    );
    let refresh = |token: &str| {
        post(&changed.url, &format!("grant_type=refresh_token&refresh_token={token}&scope=repository%3Amygroup%2Fmyproject%3Apull"))
    };
    assert_eq!(refresh(&from_pat).status, 200);
    let reply = refresh(&from_password);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.error_message().contains("revoked"), "{}", reply.body);
}

#[test]
fn docker_stores_an_identity_token_not_the_secret_and_pushes_with_it() {
    let stack = Stack::start();
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();
    docker.ok(
        &["login", host, "-u", "alice", "--password-stdin"],
        Some(ALICE_PAT),
    );
    let config = std::fs::read_to_string(docker.config_dir().join("config.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(
        parsed["auths"][host]["identitytoken"].is_string(),
        "{config}"
    );
    assert!(!config.contains(ALICE_PAT), "the PAT is not stored");

    let remote = format!("{host}/mygroup/myproject/refresh:1");
    docker.import_image(&remote);
    docker.ok(&["push", &remote], None);
    let log = stack.gateway.log();
    assert!(
        log.contains("method=POST path=/jwt/auth") && log.contains("user=\"alice\""),
        "the push refreshed over POST:\n{log}"
    );
}

/// Revoke one configured token (by its digest) and reload.
fn revoke(gateway: &Gateway, secret: &str) {
    let path = gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let digest = format!("token_sha256: \"{}\"", sha256_hex(secret));
    assert!(text.contains(&digest));
    std::fs::write(
        &path,
        text.replacen(&digest, &format!("{digest}, revoked: true"), 1),
    )
    .unwrap();
    let reloads = gateway.log().matches("configuration reloaded").count();
    gateway.signal("HUP");
    gateway.wait_for_log(
        "configuration reloaded",
        reloads + 1,
        Duration::from_secs(10),
    );
}

fn refresh_token_of(url: &str, user: &str, secret: &str) -> String {
    let reply = offline_login(url, user, secret);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

#[test]
fn a_refresh_token_follows_its_own_token_never_a_namesake() {
    // erin's `api`, read-only and read-write tokens are all named `shared` (GitLab allows it).
    for auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth: auth,
            ..StackOptions::default()
        });
        let url = &stack.gateway.url;
        let from_read_only = refresh_token_of(url, "erin", ERIN_READ_ONLY_PAT);
        let from_api = refresh_token_of(url, "erin", ERIN_API_PAT);
        let refresh = |token: &str| {
            post(
                url,
                &format!("grant_type=refresh_token&service=container_registry&refresh_token={token}&scope=repository%3Aerin%2Fapp%3Apull%2Cpush"),
            )
        };

        // The read-only token's refresh keeps the read-only token's scopes...
        let reply = refresh(&from_read_only);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let token = reply.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(Stack::granted(&token), vec!["repository:erin/app:pull"]);
        // ...and the registry behind the gateway gets no push with it.
        let reply = request("POST", &format!("{url}/v2/erin/app/blobs/uploads/"))
            .bearer(&token)
            .send();
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="insufficient_scope""#));

        // Revoking the read-only token ends its refresh token, not its namesake's.
        revoke(&stack.gateway, ERIN_READ_ONLY_PAT);
        let reply = refresh(&from_read_only);
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply.error_message().contains("revoked"), "{}", reply.body);
        let reply = refresh(&from_api);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let token = reply.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            Stack::granted(&token),
            vec!["repository:erin/app:pull,push"]
        );
        let reply = request("POST", &format!("{url}/v2/erin/app/blobs/uploads/"))
            .bearer(&token)
            .send();
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
}

#[test]
fn the_refresh_tokens_lifetime_follows_token_refresh_lifetime() {
    use support::http::jwt_part;
    let lifetime = |token_extra: &str| {
        let stack = Stack::with(StackOptions {
            gateway: GatewayOptions {
                token_extra: token_extra.into(),
                ..GatewayOptions::new("")
            },
            ..StackOptions::default()
        });
        let reply = offline_login(&stack.gateway.url, "alice", ALICE_PAT);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
        let claims = jwt_part(&refresh, 1);
        let (exp, iat) = (
            claims["exp"].as_u64().unwrap(),
            claims["iat"].as_u64().unwrap(),
        );
        // It still works for a refresh.
        let refreshed = post(
            &stack.gateway.url,
            &format!("grant_type=refresh_token&service=container_registry&refresh_token={refresh}"),
        );
        assert_eq!(refreshed.status, 200, "{}", refreshed.body);
        exp - iat
    };
    // Alice's PAT in the fixture does not expire within 90 days.
    assert_eq!(lifetime(""), 90 * 86_400, "the default: 90 days");
    assert_eq!(lifetime(", refresh_lifetime: 7d"), 7 * 86_400);
}
