//! GitLab's token API (issue 18) as clients see it: python-gitlab driving it, docker logging in
//! with what it made, GitLab's statuses and bodies for everything refused, and the store
//! (SQLite, PostgreSQL) keeping tokens across restarts and between replicas.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::secrets::*;
use support::http::{get, request, Reply};
use support::stack::Stack;

fn api(stack: &Stack, path: &str) -> String {
    format!("{}/api/v4/{path}", stack.gateway.url)
}

fn send(method: &str, url: &str, token: &str, body: Option<Value>) -> Reply {
    let mut r = request(method, url).header("PRIVATE-TOKEN", token);
    if let Some(body) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(&body.to_string());
    }
    r.send()
}

/// A registry token for `user`/`secret` and `scope`, or the status of the refusal.
fn login(stack: &Stack, user: &str, secret: &str, scope: &str) -> Result<String, u16> {
    let reply = get(&format!(
        "{}/jwt/auth?service=container_registry&scope={scope}",
        stack.gateway.url
    ))
    .basic(user, secret)
    .send();
    if reply.status == 200 {
        Ok(reply.json()["token"].as_str().unwrap().to_owned())
    } else {
        Err(reply.status)
    }
}

fn in_days(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = (now / 86_400) + days;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}-{d:02}", if m <= 2 { y + 1 } else { y })
}

#[test]
fn a_personal_token_made_through_the_api_logs_in_at_once_and_stops_when_revoked() {
    let stack = Stack::start();
    let made = send(
        "POST",
        &api(&stack, "user/personal_access_tokens"),
        ERIN_API_PAT,
        Some(json!({ "name": "laptop", "scopes": ["read_registry", "write_registry"] })),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let body = made.json();
    let secret = body["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("glpat-"));
    assert_eq!(body["name"], "laptop");
    assert_eq!(body["active"], true);
    assert_eq!(body["revoked"], false);
    assert_eq!(body["scopes"], json!(["read_registry", "write_registry"]));
    assert_eq!(
        body["expires_at"],
        in_days(365),
        "the default expiry is the maximum"
    );
    assert_eq!(body["source"], "store");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

    let token = login(&stack, "erin", &secret, "repository:erin/app:push,pull").unwrap();
    assert!(!token.is_empty());

    // Listed with the config tokens (read-only), the secret never again.
    let list = send(
        "GET",
        &api(&stack, "personal_access_tokens"),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(list.status, 200);
    assert_eq!(list.header("x-total"), Some("4"));
    assert_eq!(list.header("x-page"), Some("1"));
    assert_eq!(list.header("x-per-page"), Some("20"));
    assert_eq!(list.header("x-total-pages"), Some("1"));
    assert_eq!(list.header("x-next-page"), Some(""));
    let tokens = list.json();
    assert!(!list.body.contains(&secret));
    let id = body["id"].as_u64().unwrap();
    let mine = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert!(
        mine["last_used_at"].is_string(),
        "the login is its last use: {mine}"
    );
    let config: Vec<_> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "config")
        .collect();
    assert_eq!(config.len(), 3);

    // A gateway.yaml token is read-only here.
    let config_id = config[0]["id"].as_u64().unwrap();
    let refused = send(
        "DELETE",
        &api(&stack, &format!("personal_access_tokens/{config_id}")),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(refused.status, 400, "{}", refused.body);

    let revoked = send(
        "DELETE",
        &api(&stack, &format!("personal_access_tokens/{id}")),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        login(&stack, "erin", &secret, "repository:erin/app:pull"),
        Err(401)
    );
    // The registry token issued before the revocation stops too (cached verdicts included).
    let v2 = get(&format!("{}/v2/erin/app/tags/list", stack.gateway.url))
        .bearer(&token)
        .send();
    assert_eq!(v2.status, 401, "{}", v2.body);
    let again = send(
        "DELETE",
        &api(&stack, &format!("personal_access_tokens/{id}")),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(again.status, 400);
    let audit_free_of_secret = !stack.gateway.log().contains(&secret);
    assert!(audit_free_of_secret);
}

/// The python of the venv scripts/install-deps makes (python-gitlab installed in it).
fn python() -> std::path::PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/.venv/bin/python");
    assert!(
        path.exists(),
        "python-gitlab's venv {} is missing: run scripts/install-deps",
        path.display()
    );
    path
}

fn gitlab_py(args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/token_api.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python-gitlab {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_gitlab_makes_tokens_that_docker_logs_in_and_pushes_with_and_revokes_them() {
    use support::docker::Dockerd;
    use support::process::ImageCli;
    let stack = Stack::start();
    let url = stack.gateway.url.clone();
    let made: Value =
        serde_json::from_str(gitlab_py(&["create", &url, ADA_API_PAT, "mygroup/myproject"]).trim())
            .unwrap();
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();
    let remote = format!("{host}/mygroup/myproject/made-by-api:1");
    docker.import_image(&remote);
    let logins = [
        ("carol", made["pat"]["token"].as_str().unwrap()),
        (
            made["deploy"]["username"].as_str().unwrap(),
            made["deploy"]["token"].as_str().unwrap(),
        ),
        ("bot", made["access"]["token"].as_str().unwrap()),
    ];
    for (user, secret) in logins {
        let out = docker.ok(
            &["login", host, "-u", user, "--password-stdin"],
            Some(secret),
        );
        assert!(out.contains("Login Succeeded"), "{user}: {out}");
        let out = docker.ok(&["push", &remote], None);
        assert!(out.contains("digest: sha256:"), "{user}: {out}");
        docker.ok(&["logout", host], None);
    }
    // The rotated predecessors are revoked.
    for old in [&made["access"]["old_token"], &made["spare"]["old_token"]] {
        assert_eq!(
            login(
                &stack,
                "x",
                old.as_str().unwrap(),
                "repository:mygroup/myproject:pull"
            ),
            Err(401)
        );
    }
    assert!(login(
        &stack,
        "x",
        made["spare"]["token"].as_str().unwrap(),
        "repository:mygroup/myproject:pull"
    )
    .is_ok());

    let out = gitlab_py(&[
        "revoke",
        &url,
        CAROL_API_PAT,
        "mygroup/myproject",
        &made["pat"]["id"].to_string(),
        &made["deploy"]["id"].to_string(),
        &made["access"]["id"].to_string(),
    ]);
    assert!(out.contains("revoked"), "{out}");
    let user = send(
        "GET",
        &api(&stack, "user"),
        made["pat"]["token"].as_str().unwrap(),
        None,
    );
    assert_eq!(user.status, 401, "{}", user.body);
    for (user, secret) in logins {
        let (ok, out) = docker.run(
            &["login", host, "-u", user, "--password-stdin"],
            Some(secret),
        );
        assert!(!ok, "{user}: a revoked token must not log in: {out}");
    }
}
