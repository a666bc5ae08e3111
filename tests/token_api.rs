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

/// A stack whose gateway keeps its tokens in `store_url` and writes an audit log.
fn stack_with_store(store_url: &str) -> Stack {
    use support::gateway::GatewayOptions;
    use support::stack::StackOptions;
    Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: format!("store: {{ url: \"{store_url}\" }}\naudit: {{ path: audit.log }}\n"),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    })
}

fn audit_log(stack: &Stack) -> String {
    // The audit writer is a thread of its own: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text =
            std::fs::read_to_string(stack.gateway.dir().join("audit.log")).unwrap_or_default();
        if text.contains("token_") || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user_id(stack: &Stack, username: &str) -> u64 {
    let reply = send(
        "GET",
        &api(stack, &format!("users?username={username}")),
        ADA_API_PAT,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()[0]["id"].as_u64().unwrap()
}

/// An `api` token for `username`, made by the admin.
fn api_token_for(stack: &Stack, username: &str) -> (u64, String) {
    let id = user_id(stack, username);
    let made = send(
        "POST",
        &api(stack, &format!("users/{id}/personal_access_tokens")),
        ADA_API_PAT,
        Some(json!({ "name": format!("{username}-api"), "scopes": ["api"] })),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let body = made.json();
    (
        body["id"].as_u64().unwrap(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// What every store must do: deploy and access tokens of projects and groups made, listed,
/// used and revoked by a maintainer; a developer refused as GitLab refuses; pagination.
fn the_api_round_trip(stack: &Stack) {
    let project = api(stack, "projects/mygroup%2Fmyproject");
    let found = send("GET", &project, CAROL_API_PAT, None);
    assert_eq!(found.status, 200, "{}", found.body);
    let project_id = found.json()["id"].as_u64().unwrap();
    // The same project by its numeric id.
    let by_id = send(
        "GET",
        &api(stack, &format!("projects/{project_id}")),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(by_id.json()["path_with_namespace"], "mygroup/myproject");

    let deploy = send(
        "POST",
        &format!("{project}/deploy_tokens"),
        CAROL_API_PAT,
        Some(
            json!({ "name": "ci", "scopes": "read_registry,write_registry", "username": "ci-pusher" }),
        ),
    );
    assert_eq!(deploy.status, 201, "{}", deploy.body);
    let deploy = deploy.json();
    assert_eq!(deploy["username"], "ci-pusher");
    assert_eq!(
        deploy["expires_at"],
        Value::Null,
        "deploy tokens may not expire, as in GitLab"
    );
    let deploy_secret = deploy["token"].as_str().unwrap();
    assert!(login(
        stack,
        "ci-pusher",
        deploy_secret,
        "repository:mygroup/myproject/app:push,pull"
    )
    .is_ok());
    let listed = send(
        "GET",
        &format!("{project}/deploy_tokens"),
        CAROL_API_PAT,
        None,
    )
    .json();
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["username"].clone(), t["source"].clone()))
        .collect();
    assert!(
        names.contains(&(json!("ci-pusher"), json!("store"))),
        "{listed}"
    );
    assert!(
        names.contains(&(json!("gitlab+deploy-token-1"), json!("config"))),
        "{listed}"
    );

    let group = api(stack, "groups/mygroup");
    let access = send(
        "POST",
        &format!("{group}/access_tokens"),
        CAROL_API_PAT,
        Some(
            json!({ "name": "group-bot", "scopes": ["read_registry"], "access_level": 30, "expires_at": in_days(30) }),
        ),
    );
    assert_eq!(access.status, 201, "{}", access.body);
    let access = access.json();
    assert_eq!(access["access_level"], 30);
    assert_eq!(access["expires_at"], in_days(30));
    let access_secret = access["token"].as_str().unwrap();
    assert!(login(
        stack,
        "",
        access_secret,
        "repository:mygroup/second/app:pull"
    )
    .is_ok());

    // A developer (alice, with an api token the admin made her) is refused as GitLab refuses.
    let (_, alice) = api_token_for(stack, "alice");
    let listed = send("GET", &format!("{project}/deploy_tokens"), &alice, None);
    assert_eq!(
        (listed.status, listed.json()),
        (403, json!({ "message": "403 Forbidden" }))
    );
    let listed = send("GET", &format!("{project}/access_tokens"), &alice, None);
    assert_eq!(
        (listed.status, listed.json()),
        (401, json!({ "message": "401 Unauthorized" }))
    );
    let made = send(
        "POST",
        &format!("{project}/access_tokens"),
        &alice,
        Some(json!({ "name": "mine", "scopes": ["api"] })),
    );
    assert_eq!(made.status, 400, "{}", made.body);
    assert_eq!(
        made.json()["message"],
        "400 Bad request - User does not have permission to create project access token"
    );

    let id = deploy["id"].as_u64().unwrap();
    let gone = send(
        "DELETE",
        &format!("{project}/deploy_tokens/{id}"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(
        login(
            stack,
            "ci-pusher",
            deploy_secret,
            "repository:mygroup/myproject/app:pull"
        ),
        Err(401)
    );
    let id = access["id"].as_u64().unwrap();
    let gone = send(
        "DELETE",
        &format!("{group}/access_tokens/{id}"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(
        login(
            stack,
            "",
            access_secret,
            "repository:mygroup/second/app:pull"
        ),
        Err(401)
    );

    // Pagination, as GitLab's offset pagination.
    for n in 0..3 {
        let made = send(
            "POST",
            &api(stack, "user/personal_access_tokens"),
            CAROL_API_PAT,
            Some(json!({ "name": format!("page-{n}"), "scopes": ["read_registry"] })),
        );
        assert_eq!(made.status, 201);
    }
    let page = send(
        "GET",
        &api(stack, "personal_access_tokens?per_page=2&page=2"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("x-total"),
        Some("4"),
        "three made and gateway.yaml's"
    );
    assert_eq!(page.header("x-total-pages"), Some("2"));
    assert_eq!(page.header("x-page"), Some("2"));
    assert_eq!(page.header("x-prev-page"), Some("1"));
    assert_eq!(page.header("x-next-page"), Some(""));
    let link = page.header("link").unwrap();
    assert!(link.contains("page=1&per_page=2>; rel=\"prev\""), "{link}");
    assert!(
        link.contains("rel=\"first\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    assert_eq!(page.json().as_array().unwrap().len(), 2);

    let audit = audit_log(stack);
    assert!(audit.contains(r#""event":"token_created""#), "{audit}");
    assert!(audit.contains(r#""event":"token_revoked""#), "{audit}");
    assert!(audit.contains(r#""token_name":"group-bot""#), "{audit}");
    for secret in [deploy_secret, access_secret, alice.as_str()] {
        assert!(!audit.contains(secret) && !stack.gateway.log().contains(secret));
    }
}

#[test]
fn sqlite_store_passes_the_api_round_trip_and_keeps_tokens_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tokens.db").display());
    let first = stack_with_store(&url);
    the_api_round_trip(&first);
    let (id, secret) = api_token_for(&first, "erin");
    drop(first);
    let second = stack_with_store(&url);
    let me = send(
        "GET",
        &api(&second, "personal_access_tokens/self"),
        &secret,
        None,
    );
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["id"], id);
    assert!(login(&second, "erin", &secret, "repository:erin/app:pull").is_ok());
}

#[test]
fn the_default_store_is_a_file_beside_gateway_yaml() {
    let stack = Stack::start();
    let (_, secret) = api_token_for(&stack, "erin");
    assert!(stack.gateway.dir().join("portcullis.db").exists());
    assert!(login(&stack, "erin", &secret, "repository:erin/app:pull").is_ok());
}

#[test]
fn postgres_store_passes_the_api_round_trip_and_keeps_tokens_across_a_restart() {
    let postgres = support::postgres::Postgres::start();
    let first = stack_with_store(&postgres.url());
    the_api_round_trip(&first);
    let (id, secret) = api_token_for(&first, "erin");
    drop(first);
    let second = stack_with_store(&postgres.url());
    let me = send(
        "GET",
        &api(&second, "personal_access_tokens/self"),
        &secret,
        None,
    );
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["id"], id);
    assert!(login(&second, "erin", &secret, "repository:erin/app:pull").is_ok());
}

/// The bound the README states for a change on one replica to reach another.
const REPLICA_BOUND: Duration = Duration::from_secs(5);

/// Poll `check` until it holds; the time it took, or a failure after the bound (and slack
/// for a loaded machine).
fn within_bound(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < REPLICA_BOUND * 3,
            "{what}: not seen within {:?}",
            REPLICA_BOUND * 3
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn two_gateways_on_one_postgres_see_each_others_creations_and_revocations() {
    let postgres = support::postgres::Postgres::start();
    let a = stack_with_store(&postgres.url());
    let b = stack_with_store(&postgres.url());
    let (id, secret) = api_token_for(&a, "erin");
    // At once: B does not know the secret, so it asks the store.
    assert!(
        login(&b, "erin", &secret, "repository:erin/app:pull").is_ok(),
        "a token made on A logs in on B at once"
    );
    let deploy = send(
        "POST",
        &api(&a, "projects/mygroup%2Fmyproject/deploy_tokens"),
        CAROL_API_PAT,
        Some(json!({ "name": "d", "scopes": ["read_registry"], "username": "replica-deploy" })),
    );
    assert_eq!(deploy.status, 201, "{}", deploy.body);
    let deploy_secret = deploy.json()["token"].as_str().unwrap().to_owned();
    assert!(login(
        &b,
        "replica-deploy",
        &deploy_secret,
        "repository:mygroup/myproject:pull"
    )
    .is_ok());
    // B lists it once it polled.
    within_bound("B lists A's token", || {
        send("GET", &api(&b, "personal_access_tokens"), &secret, None)
            .body
            .contains(&format!("\"id\":{id}"))
    });
    // B revokes it; A stops it within the bound.
    let revoked = send(
        "DELETE",
        &api(&b, &format!("personal_access_tokens/{id}")),
        &secret,
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        login(&b, "erin", &secret, "repository:erin/app:pull"),
        Err(401),
        "at once on B"
    );
    let stopped = within_bound("a token revoked on B stops on A", || {
        login(&a, "erin", &secret, "repository:erin/app:pull") == Err(401)
    });
    eprintln!("revocation reached the other replica in {stopped:?}");
    assert!(stopped < REPLICA_BOUND, "{stopped:?}");
}

#[test]
fn store_down_keeps_known_tokens_and_gateway_yaml_working_and_writes_answer_503() {
    let mut postgres = support::postgres::Postgres::start();
    let stack = stack_with_store(&postgres.url());
    let (_, secret) = api_token_for(&stack, "erin");
    postgres.stop();
    assert!(
        login(&stack, "erin", &secret, "repository:erin/app:pull").is_ok(),
        "a known store token"
    );
    assert!(login(
        &stack,
        "alice",
        ALICE_PASSWORD,
        "repository:mygroup/myproject:pull"
    )
    .is_ok());
    assert!(login(
        &stack,
        "alice",
        ALICE_PAT,
        "repository:mygroup/myproject:pull"
    )
    .is_ok());
    let made = send(
        "POST",
        &api(&stack, "user/personal_access_tokens"),
        ERIN_API_PAT,
        Some(json!({ "name": "while-down", "scopes": ["read_registry"] })),
    );
    assert_eq!(made.status, 503, "{}", made.body);
    let message = made.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("503 Service Unavailable - the token store is unavailable"),
        "{message}"
    );
    // Reads still answer from memory.
    let list = send(
        "GET",
        &api(&stack, "personal_access_tokens"),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(list.status, 200);
}

#[test]
fn hostile_requests_are_refused_with_gitlabs_status_and_message_and_create_nothing() {
    let stack = Stack::start();
    let unauthorized = json!({ "message": "401 Unauthorized" });
    let user = api(&stack, "user");
    // No credential, a password, a deploy token, Basic, an unknown token: 401.
    assert_eq!(get(&user).send().status, 401);
    for secret in [ALICE_PASSWORD, DEPLOY_READ_ONLY, "glpat-not-a-token", ""] {
        let reply = send("GET", &user, secret, None);
        assert_eq!(
            (reply.status, reply.json()),
            (401, unauthorized.clone()),
            "{secret:?}"
        );
    }
    let basic = get(&user).basic("alice", ALICE_PASSWORD).send();
    assert_eq!(basic.status, 401);
    // A token without api: 403 insufficient_scope, GitLab's body.
    let reply = send("GET", &user, ALICE_PAT, None);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"], "insufficient_scope");
    // Bearer works like PRIVATE-TOKEN.
    assert_eq!(get(&user).bearer(ERIN_API_PAT).send().status, 200);
    // An expired token is told so.
    let reply = send("GET", &user, ALICE_EXPIRED_PAT, None);
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (401, json!("invalid_token"))
    );

    let mine = api(&stack, "user/personal_access_tokens");
    let post = |body: Value| send("POST", &mine, ERIN_API_PAT, Some(body));
    let cases = [
        (
            json!({ "scopes": ["api"] }),
            400,
            json!({ "error": "name is missing" }),
        ),
        (
            json!({ "name": "x" }),
            400,
            json!({ "error": "scopes is missing" }),
        ),
        (
            json!({ "name": "x", "scopes": ["api", "sudo_everything"] }),
            400,
            json!({ "error": "scopes does not have a valid value" }),
        ),
        (
            json!({ "name": "x", "scopes": 5 }),
            400,
            json!({ "error": "scopes is invalid" }),
        ),
        (
            json!({ "name": "x", "scopes": ["api"], "expires_at": "2020-01-01" }),
            400,
            json!({ "message": "400 Bad request - Expiration date must be in the future" }),
        ),
        (
            json!({ "name": "x", "scopes": ["api"], "expires_at": in_days(366) }),
            400,
            json!({ "message": format!("400 Bad request - Expiration date must be before {}", in_days(365)) }),
        ),
        (
            json!({ "name": "x", "scopes": ["api"], "expires_at": "tomorrow" }),
            400,
            json!({ "error": "expires_at is invalid" }),
        ),
        (
            json!({ "name": "x".repeat(300), "scopes": ["api"] }),
            400,
            json!({ "error": "name is too long or has control characters (at most 255 characters)" }),
        ),
    ];
    for (body, status, answer) in cases {
        let reply = post(body.clone());
        assert_eq!((reply.status, reply.json()), (status, answer), "{body}");
    }
    let huge = json!({ "name": "x", "scopes": ["api"], "description": "d".repeat(20_000) });
    let reply = post(huge);
    assert_eq!(
        (reply.status, reply.json()),
        (413, json!({ "message": "413 Request Entity Too Large" }))
    );
    let reply = request("POST", &mine)
        .header("PRIVATE-TOKEN", ERIN_API_PAT)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send();
    assert_eq!(reply.status, 400);

    // Another user's token: carol's, by id.
    let carol_tokens = send(
        "GET",
        &api(&stack, "personal_access_tokens"),
        CAROL_API_PAT,
        None,
    )
    .json();
    let carols = carol_tokens[0]["id"].as_u64().unwrap();
    let reply = send(
        "DELETE",
        &api(&stack, &format!("personal_access_tokens/{carols}")),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = send(
        "POST",
        &api(&stack, &format!("personal_access_tokens/{carols}/rotate")),
        ERIN_API_PAT,
        None,
    );
    assert_eq!((reply.status, reply.json()), (401, unauthorized.clone()));
    let carol_id = user_id(&stack, "carol");
    let reply = send(
        "POST",
        &api(&stack, &format!("users/{carol_id}/personal_access_tokens")),
        ERIN_API_PAT,
        Some(json!({ "name": "x", "scopes": ["api"] })),
    );
    assert_eq!(
        (reply.status, reply.json()),
        (403, json!({ "message": "403 Forbidden" }))
    );
    assert_eq!(
        send("GET", &user, CAROL_API_PAT, None).status,
        200,
        "carol's token is untouched"
    );

    // Projects and groups that are not ours, or not there, by id and by path.
    let not_found = json!({ "message": "404 Project Not Found" });
    for path in [
        "projects/999999/deploy_tokens",
        "projects/mygroup%2Fmyproject/deploy_tokens",
        "projects/..%2F..%2Fetc%2Fpasswd/access_tokens",
        "projects/mygroup%2Fnope/access_tokens",
    ] {
        let reply = send(
            "POST",
            &api(&stack, path),
            ERIN_API_PAT,
            Some(json!({ "name": "x", "scopes": ["read_registry"] })),
        );
        assert_eq!(
            (reply.status, reply.json()),
            (404, not_found.clone()),
            "{path}"
        );
    }
    let reply = send(
        "GET",
        &api(&stack, "groups/mygroup/access_tokens"),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(
        (reply.status, reply.json()),
        (404, json!({ "message": "404 Group Not Found" }))
    );
    // A maintainer may not give a token more than her own role; ids of other projects'
    // tokens are not found under hers.
    let reply = send(
        "POST",
        &api(&stack, "projects/mygroup%2Fmyproject/access_tokens"),
        CAROL_API_PAT,
        Some(json!({ "name": "x", "scopes": ["api"], "access_level": 50 })),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = send(
        "DELETE",
        &api(&stack, "projects/mygroup%2Fmyproject/deploy_tokens/1"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(
        (reply.status, reply.json()),
        (404, json!({ "message": "404 Deploy Token Not Found" }))
    );
    // Unknown routes are GitLab's 404, whoever asks.
    assert_eq!(get(&api(&stack, "projects/1/variables")).send().status, 404);

    // Nothing was made.
    let listed = send(
        "GET",
        &api(&stack, "personal_access_tokens"),
        ERIN_API_PAT,
        None,
    );
    assert_eq!(listed.header("x-total"), Some("3"), "{}", listed.body);
    let deploy = send(
        "GET",
        &api(&stack, "projects/mygroup%2Fmyproject/deploy_tokens"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(deploy.header("x-total"), Some("1"), "{}", deploy.body);
    let access = send(
        "GET",
        &api(&stack, "projects/mygroup%2Fmyproject/access_tokens"),
        CAROL_API_PAT,
        None,
    );
    assert_eq!(access.header("x-total"), Some("2"), "{}", access.body);
}

#[test]
fn refresh_tokens_follow_a_store_token_and_stop_when_it_is_revoked() {
    let stack = Stack::start();
    let (id, secret) = api_token_for(&stack, "erin");
    let reply = get(&format!(
        "{}/jwt/auth?service=container_registry&offline_token=true&client_id=docker",
        stack.gateway.url
    ))
    .basic("erin", &secret)
    .send();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    let trade = || {
        request("POST", &format!("{}/jwt/auth", stack.gateway.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(&format!("grant_type=refresh_token&service=container_registry&client_id=docker&refresh_token={refresh}&scope=repository%3Aerin%2Fapp%3Apull"))
            .send()
    };
    assert_eq!(trade().status, 200);
    let revoked = send(
        "DELETE",
        &api(&stack, &format!("personal_access_tokens/{id}")),
        ADA_API_PAT,
        None,
    );
    assert_eq!(
        revoked.status, 204,
        "an admin revokes anyone's: {}",
        revoked.body
    );
    assert_eq!(
        trade().status,
        401,
        "the refresh token died with its credential"
    );
}

#[test]
fn a_reload_of_gateway_yaml_keeps_the_store_tokens() {
    let stack = Stack::start();
    let (_, secret) = api_token_for(&stack, "erin");
    stack.gateway.signal("HUP");
    stack
        .gateway
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    assert!(login(&stack, "erin", &secret, "repository:erin/app:pull").is_ok());
    assert_eq!(send("GET", &api(&stack, "user"), &secret, None).status, 200);
}

#[test]
fn an_api_body_dribbled_a_byte_at_a_time_is_cut_with_a_408() {
    use std::io::{Read, Write};
    use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
    let mut options = GatewayOptions::new("http://127.0.0.1:1");
    options.extra = "server: { token_request_timeout: 2s }\n".into();
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    let mut stream = std::net::TcpStream::connect(&gateway.host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let head = format!(
        "POST /api/v4/user/personal_access_tokens HTTP/1.1\r\nHost: {}\r\nPRIVATE-TOKEN: {ERIN_API_PAT}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n",
        gateway.host
    );
    stream.write_all(head.as_bytes()).unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        if stream.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {:?}: {answer}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
