//! The token page (`/-/profile/personal_access_tokens`) as a browser meets it, over real HTTP
//! (curl): sign-in, the session cookie's flags, CSRF and Origin checks, bounds, expiry,
//! sign-out, who sees which tokens, escaping. The headless browser run is
//! `tests/token_page_browser.rs`.

use crate::support;

use std::time::Duration;

use support::gateway::secrets::*;
use support::gateway::{Gateway, GatewayFiles, GatewayOptions};
use support::http::request;
use support::page::{PageClient, PAGE};

fn gateway(extra: &str) -> Gateway {
    let options = GatewayOptions {
        extra: format!("audit: {{ path: audit.log }}\n{extra}"),
        ..GatewayOptions::new("http://127.0.0.1:1")
    };
    Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options)
}

fn audit(gateway: &Gateway) -> String {
    std::fs::read_to_string(gateway.dir().join("audit.log")).unwrap_or_default()
}

/// Wait until the audit log holds `needle` (the writer is a thread of its own).
fn wait_audit(gateway: &Gateway, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = audit(gateway);
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn session_cookie_line(client: &PageClient) -> String {
    client
        .set_cookies
        .iter()
        .rev()
        .find(|l| l.starts_with("portcullis_session=") && !l.contains("Max-Age=0"))
        .cloned()
        .expect("a session cookie was set")
}

#[test]
fn a_password_signs_in_with_a_strict_http_only_cookie_and_the_page_lists_the_users_tokens() {
    let gateway = gateway("");
    let mut client = PageClient::new(&gateway.url);
    let form = client.get(PAGE);
    assert_eq!(form.status, 200);
    assert!(form
        .body
        .contains("<label for=\"username\">Username</label>"));
    let csp = form.header("content-security-policy").unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(form.header("cache-control"), Some("no-store"));

    let reply = client.sign_in("alice", ALICE_PASSWORD);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.header("location"), Some(PAGE));
    let cookie = session_cookie_line(&client);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/-/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    let page = client.get(PAGE);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed in as <strong>alice</strong>"));
    // gateway.yaml's tokens, read-only, with their scopes and expiry.
    assert!(
        page.body.contains("<th scope=\"row\">laptop</th>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("read_registry, write_registry"));
    assert!(page.body.contains("2020-01-01"));
    assert!(page.body.contains("in gateway.yaml"));
    // No layout tables: the only tables are token lists with captions.
    assert_eq!(
        page.body.matches("<table>").count(),
        page.body.matches("<caption>").count()
    );

    let audit = wait_audit(&gateway, "page_sign_in");
    assert!(audit.contains("\"event\":\"page_sign_in\""), "{audit}");
    let log = gateway.log();
    let session = client.session().unwrap().to_owned();
    for secret in [ALICE_PASSWORD, session.as_str()] {
        assert!(
            !log.contains(secret) && !audit.contains(secret),
            "a secret was logged"
        );
    }
}

#[test]
fn a_wrong_password_a_blocked_user_and_a_token_without_api_are_refused_without_a_session() {
    let gateway = gateway("");
    let mut client = PageClient::new(&gateway.url);
    let reply = client.sign_in("alice", "not-her-password");
    assert_eq!(reply.status, 401);
    assert!(
        reply.body.contains("Wrong username, password or token."),
        "{}",
        reply.body
    );
    assert!(client.session().is_none());

    let reply = client.sign_in("dave", DAVE_PAT);
    assert_eq!(reply.status, 401);
    assert!(
        reply.body.contains("The account is blocked."),
        "{}",
        reply.body
    );
    assert!(client.session().is_none());

    // A registry-only token is a good credential, but not for this page.
    let reply = client.sign_in("alice", ALICE_PAT);
    assert_eq!(reply.status, 403);
    assert!(
        reply.body.contains("it needs the api scope"),
        "{}",
        reply.body
    );
    assert!(client.session().is_none());

    // A deploy token is not a person.
    let reply = client.sign_in("gitlab+deploy-token-1", DEPLOY_READ_ONLY);
    assert_eq!(reply.status, 403);
    assert!(client.session().is_none());

    // An `api` token signs in.
    let reply = client.sign_in("carol", CAROL_API_PAT);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(client.session().is_some());

    let audit = wait_audit(&gateway, "page_needs_api_scope");
    assert!(audit.contains("wrong_secret"), "{audit}");
    assert!(audit.contains("user_blocked"), "{audit}");
    let log = gateway.log();
    for secret in [
        "not-her-password",
        DAVE_PAT,
        ALICE_PAT,
        CAROL_API_PAT,
        DEPLOY_READ_ONLY,
    ] {
        assert!(
            !log.contains(secret) && !audit.contains(secret),
            "{secret} was logged"
        );
    }
}

#[test]
fn sign_in_failures_count_toward_the_same_ban_as_jwt_auth() {
    let gateway = gateway("brute_force: { max_failures: 3, window: 1m, ban: 1h }\n");
    let mut client = PageClient::new(&gateway.url);
    for _ in 0..3 {
        assert_eq!(client.sign_in("alice", "guess").status, 401);
    }
    let reply = client.sign_in("alice", ALICE_PASSWORD);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains("too many failed logins"),
        "{}",
        reply.body
    );
    // The ban is the token endpoint's own: docker login is refused too.
    let token = request(
        "GET",
        &format!("{}/jwt/auth?service=container_registry", gateway.url),
    )
    .basic("alice", ALICE_PASSWORD)
    .send();
    assert_eq!(token.status, 403, "{}", token.body);
}

#[test]
fn with_an_https_public_url_the_cookies_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(dir.path(), "tls", "7");
    let options = GatewayOptions {
        tls: Some((cert, key)),
        ..GatewayOptions::new("http://127.0.0.1:1")
    };
    let gateway = Gateway::start(GatewayFiles::init("ec", "http://127.0.0.1:1"), &options);
    assert!(gateway.url.starts_with("https://"));
    let mut client = PageClient::new(&gateway.url);
    client.get(PAGE);
    let pre = client.set_cookies.last().unwrap().clone();
    assert!(pre.contains("Secure") && pre.contains("HttpOnly"), "{pre}");
    let reply = client.sign_in("alice", ALICE_PASSWORD);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let cookie = session_cookie_line(&client);
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/-/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
}

#[test]
fn a_post_without_or_with_a_wrong_csrf_token_or_from_another_origin_is_refused() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "carol", CAROL_API_PAT);
    let token = client.csrf();
    let fields = |csrf: Option<&'static str>| {
        let mut f = vec![("name", "sneaky"), ("scopes", "api")];
        if let Some(csrf) = csrf {
            f.push(("authenticity_token", csrf));
        }
        f
    };
    let missing = client.post(PAGE, &fields(None));
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(
        missing.body.contains("cross-site request forgery"),
        "{}",
        missing.body
    );
    assert!(missing.body.contains("Nothing was changed."));
    let wrong = client.post(
        PAGE,
        &fields(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
    );
    assert_eq!(wrong.status, 403);
    let leaked: &'static str = Box::leak(token.clone().into_boxed_str());
    let cross = client.post_with(PAGE, &fields(Some(leaked)), Some("https://evil.example"));
    assert_eq!(cross.status, 403);
    assert!(
        cross.body.contains("sent from another site"),
        "{}",
        cross.body
    );
    let null = client.post_with(PAGE, &fields(Some(leaked)), Some("null"));
    assert_eq!(null.status, 403);
    // No Origin, but the browser says the form came from another site.
    let body = format!("authenticity_token={token}&name=sneaky&scopes=api");
    let reply = request("POST", &format!("{}{PAGE}", gateway.url))
        .header(
            "Cookie",
            &format!("portcullis_session={}", client.session().unwrap()),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Sec-Fetch-Site", "cross-site")
        .body(&body)
        .send();
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Revoke and sign-out need it too.
    let revoke = client.post(support::page::PAGE_REVOKE, &[("id", "1")]);
    assert_eq!(revoke.status, 403);
    let out = client.post("/-/sign_out", &[]);
    assert_eq!(out.status, 403);
    // The session is still good, and nothing was made.
    let page = client.get(PAGE);
    assert!(page.body.contains("Signed in as"));
    assert!(!page.body.contains("sneaky"));
    let audit = wait_audit(&gateway, "cross_origin");
    assert!(audit.contains("\"reason\":\"csrf\""), "{audit}");

    // The sign-in form: without its cookie, or from another origin.
    let mut stranger = PageClient::new(&gateway.url);
    let form = [
        ("authenticity_token", "x"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ];
    assert_eq!(stranger.post("/-/sign_in", &form).status, 403);
    assert!(stranger.session().is_none());
    stranger.get(PAGE);
    let pre = stranger.csrf();
    let reply = stranger.post_with(
        "/-/sign_in",
        &[
            ("authenticity_token", &pre),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
        Some("http://evil.example"),
    );
    assert_eq!(reply.status, 403);
    assert!(stranger.session().is_none());
}

#[test]
fn an_oversized_or_non_form_body_is_refused_and_nothing_changes() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "carol", CAROL_API_PAT);
    let token = client.csrf();
    let big = "n".repeat(20 * 1024);
    let reply = client.post(
        PAGE,
        &[
            ("authenticity_token", &token),
            ("name", &big),
            ("scopes", "api"),
        ],
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("larger than 16384 bytes"));
    // Chunked, no declared length: cut at the same size.
    let body = format!("authenticity_token={token}&name={big}");
    let reply = request("POST", &format!("{}{PAGE}", gateway.url))
        .header(
            "Cookie",
            &format!("portcullis_session={}", client.session().unwrap()),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Transfer-Encoding", "chunked")
        .header("Origin", &gateway.url)
        .body(&body)
        .send();
    assert_eq!(reply.status, 413, "{}", reply.body);
    let reply = request("POST", &format!("{}{PAGE}", gateway.url))
        .header(
            "Cookie",
            &format!("portcullis_session={}", client.session().unwrap()),
        )
        .header("Content-Type", "application/json")
        .body("{}")
        .send();
    assert_eq!(reply.status, 415);
    assert!(client.get(PAGE).body.contains("Signed in as"));
}

#[test]
fn a_session_ends_when_idle_and_at_its_lifetime() {
    let gateway = gateway("page: { session_idle_timeout: 2s, session_lifetime: 4s }\n");
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    std::thread::sleep(Duration::from_millis(2500));
    let page = client.get(PAGE);
    assert!(
        page.body.contains("Your session has ended"),
        "{}",
        page.body
    );
    assert!(client.session().is_none(), "the dead cookie is cleared");

    // Busy all along, it still ends at the lifetime.
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let started = std::time::Instant::now();
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(700));
        if !client.get(PAGE).body.contains("Signed in as") {
            ended = true;
            break;
        }
    }
    assert!(ended, "the session outlived session_lifetime");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[test]
fn sign_out_ends_the_session_and_the_old_cookie_is_worth_nothing() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let old = client.session().unwrap().to_owned();
    let token = client.csrf();
    let reply = client.post("/-/sign_out", &[("authenticity_token", &token)]);
    assert_eq!(reply.status, 303);
    assert!(client.session().is_none());
    let mut replay = PageClient::new(&gateway.url);
    replay.cookies.insert("portcullis_session".into(), old);
    let page = replay.get(PAGE);
    assert!(page
        .body
        .contains("<form method=\"post\" action=\"/-/sign_in\">"));
    let reply = replay.post(
        PAGE,
        &[
            ("authenticity_token", &token),
            ("name", "x"),
            ("scopes", "api"),
        ],
    );
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("not signed in"), "{}", reply.body);
    wait_audit(&gateway, "page_sign_out");
}

#[test]
fn a_session_id_planted_before_sign_in_is_replaced() {
    let gateway = gateway("");
    let mut client = PageClient::new(&gateway.url);
    let planted = "planted-by-an-attacker-0123456789abcdefghijk".to_owned();
    client
        .cookies
        .insert("portcullis_session".into(), planted.clone());
    let reply = client.sign_in("alice", ALICE_PASSWORD);
    assert_eq!(reply.status, 303);
    assert_ne!(client.session(), Some(planted.as_str()));
    let mut attacker = PageClient::new(&gateway.url);
    attacker
        .cookies
        .insert("portcullis_session".into(), planted);
    assert!(!attacker.get(PAGE).body.contains("Signed in as"));
}

#[test]
fn a_non_maintainer_neither_sees_nor_manages_project_tokens() {
    let gateway = gateway("");
    // carol maintains group mygroup, so its projects.
    let mut carol = PageClient::signed_in(&gateway.url, "carol", CAROL_API_PAT);
    let page = carol.get(PAGE);
    assert!(page.body.contains("Group mygroup</h2>"), "{}", page.body);
    assert!(page.body.contains("Project mygroup/myproject</h2>"));
    assert!(!page.body.contains("Project erin/app"));

    // alice is a developer there: no such section, and a forged form is refused as unknown.
    let mut alice = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let page = alice.get(PAGE);
    assert!(!page.body.contains("mygroup/myproject</h2>"));
    assert!(!page.body.contains("Deploy tokens"));
    let token = alice.csrf();
    for path in [support::page::NAMESPACE, support::page::NAMESPACE_REVOKE] {
        for kind in ["deploy", "access"] {
            let reply = alice.post(
                path,
                &[
                    ("authenticity_token", &token),
                    ("namespace", "mygroup/myproject"),
                    ("namespace_kind", "project"),
                    ("token_kind", kind),
                    ("name", "mine-now"),
                    ("scopes", "read_registry"),
                    ("id", "1"),
                ],
            );
            assert_eq!(reply.status, 404, "{path} {kind}: {}", reply.body);
            assert!(reply.body.contains("that you maintain"));
        }
    }
}

#[test]
fn other_methods_and_paths_are_refused() {
    let gateway = gateway("");
    let reply = request("DELETE", &format!("{}{PAGE}", gateway.url)).send();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = request("GET", &format!("{}/-/sign_in", gateway.url)).send();
    assert_eq!(reply.status, 303);
    // Anything else under /-/ is not the page's.
    let reply = request("GET", &format!("{}/-/profile/other", gateway.url)).send();
    assert_eq!(reply.status, 404);
}

/// Create a personal token through the page; its id (from the revoke form) and secret.
fn create(client: &mut PageClient, name: &str, scopes: &[&str], expires: &str) -> (String, String) {
    let token = client.csrf();
    let mut fields = vec![
        ("authenticity_token", token.as_str()),
        ("name", name),
        ("expires_at", expires),
    ];
    for scope in scopes {
        fields.push(("scopes", scope));
    }
    let reply = client.post(PAGE, &fields);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let page = client.get(PAGE);
    let secret = support::page::revealed_secret(&page.body).expect("the new secret on the page");
    let row = page
        .body
        .find(&format!(
            "aria-label=\"Revoke {}\"",
            support::page::escape(name)
        ))
        .expect("a revoke button");
    let before = &page.body[..row];
    let marker = "name=\"id\" value=\"";
    let start = before.rfind(marker).unwrap() + marker.len();
    let id = before[start..].split('"').next().unwrap().to_owned();
    (id, secret)
}

fn token_status(gateway: &Gateway, user: &str, secret: &str) -> u16 {
    request(
        "GET",
        &format!(
            "{}/jwt/auth?service=container_registry&scope=repository:mygroup/myproject:pull",
            gateway.url
        ),
    )
    .basic(user, secret)
    .send()
    .status
}

#[test]
fn a_token_made_on_the_page_is_shown_once_works_at_once_and_stops_when_revoked() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let (id, secret) = create(
        &mut client,
        "laptop-2",
        &["read_registry", "write_registry"],
        "",
    );
    let page = &client.last;
    assert!(
        page.contains("Created personal access token laptop-2."),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "docker login {} -u alice --password-stdin",
            gateway.host
        )),
        "{page}"
    );
    assert!(page.contains("data-copy=\"new-token\""));
    // Expiry: the longest allowed when left empty.
    assert!(page.contains("Empty: the longest allowed, 365 days."));
    assert_eq!(token_status(&gateway, "alice", &secret), 200);
    // Shown once: a reload no longer has it.
    let again = client.get(PAGE);
    assert!(!again.body.contains(&secret));
    assert!(again.body.contains("<th scope=\"row\">laptop-2</th>"));

    let csrf = client.csrf();
    let reply = client.post(
        support::page::PAGE_REVOKE,
        &[("authenticity_token", &csrf), ("id", &id)],
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let page = client.get(PAGE);
    assert!(
        page.body
            .contains("Revoked personal access token laptop-2."),
        "{}",
        page.body
    );
    assert_eq!(token_status(&gateway, "alice", &secret), 401);
    let audit = wait_audit(&gateway, "token_revoked");
    assert!(audit.contains("laptop-2"), "{audit}");
    assert!(
        !gateway.log().contains(&secret) && !audit.contains(&secret),
        "the secret was logged"
    );
}

#[test]
fn a_token_name_with_html_is_rendered_escaped() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let evil = "<img src=x onerror=alert(1)>\"'&";
    create(&mut client, evil, &["read_registry"], "");
    let page = client.get(PAGE);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"),
        "{}",
        page.body
    );
}

#[test]
fn a_refused_post_creates_nothing_and_bad_values_get_the_stores_message() {
    let gateway = gateway("");
    let mut client = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let before = client.get(PAGE).body.matches("<tr>").count();
    let reply = client.post(PAGE, &[("name", "no-csrf"), ("scopes", "api")]);
    assert_eq!(reply.status, 403);
    let csrf = client.csrf();
    let reply = client.post_with(
        PAGE,
        &[
            ("authenticity_token", &csrf),
            ("name", "cross"),
            ("scopes", "api"),
        ],
        Some("http://evil.example"),
    );
    assert_eq!(reply.status, 403);
    for (fields, status, message) in [
        (
            vec![("name", "x"), ("scopes", "sudo_everything")],
            400,
            "scopes does not have a valid value",
        ),
        (
            vec![
                ("name", "x"),
                ("scopes", "api"),
                ("expires_at", "2001-01-01"),
            ],
            400,
            "Expiration date must be in the future",
        ),
        (
            vec![
                ("name", "x"),
                ("scopes", "api"),
                ("expires_at", "2999-01-01"),
            ],
            400,
            "Expiration date must be before",
        ),
        (
            vec![("name", "x"), ("scopes", "api"), ("expires_at", "tomorrow")],
            400,
            "must be a date",
        ),
        (
            vec![("name", ""), ("scopes", "api")],
            400,
            "Give the token a name.",
        ),
        (vec![("name", "x")], 400, "Choose at least one scope."),
        (
            vec![("name", "a"), ("name", "b"), ("scopes", "api")],
            400,
            "Give the token a name.",
        ),
    ] {
        let mut fields = fields;
        fields.push(("authenticity_token", &csrf));
        let reply = client.post(PAGE, &fields);
        assert_eq!(reply.status, status, "{fields:?}: {}", reply.body);
        assert!(reply.body.contains(message), "{fields:?}: {}", reply.body);
    }
    let after = client.get(PAGE).body;
    assert_eq!(after.matches("<tr>").count(), before, "{after}");
}

#[test]
fn another_users_token_id_is_no_such_token_and_stays_in_force() {
    let gateway = gateway("");
    let mut alice = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let (id, secret) = create(&mut alice, "alices", &["read_registry"], "");
    // root is an administrator: on this page too, only their own tokens.
    for (user, secret_of) in [("carol", CAROL_API_PAT), ("root", ROOT_PAT)] {
        let mut other = PageClient::new(&gateway.url);
        let reply = other.sign_in(user, secret_of);
        if reply.status != 303 {
            continue; // root's token has no api scope: it cannot sign in at all
        }
        other.get(PAGE);
        assert!(!other.last.contains("alices"));
        let csrf = other.csrf();
        let reply = other.post(
            support::page::PAGE_REVOKE,
            &[("authenticity_token", &csrf), ("id", &id)],
        );
        assert_eq!(reply.status, 404, "{user}: {}", reply.body);
        assert!(reply.body.contains("no such token among yours"));
        for bad in ["0", "-1", "99999999999999999999999", "1e3", ""] {
            let reply = other.post(
                support::page::PAGE_REVOKE,
                &[("authenticity_token", &csrf), ("id", bad)],
            );
            assert!(
                reply.status == 400 || reply.status == 404,
                "{bad}: {}",
                reply.status
            );
        }
    }
    assert_eq!(token_status(&gateway, "alice", &secret), 200);
}

#[test]
fn a_maintainer_makes_and_revokes_a_deploy_token_a_developer_cannot_touch_it() {
    let gateway = gateway("");
    let mut carol = PageClient::signed_in(&gateway.url, "carol", CAROL_API_PAT);
    let csrf = carol.csrf();
    let ns = [
        ("authenticity_token", csrf.as_str()),
        ("namespace", "mygroup/myproject"),
        ("namespace_kind", "project"),
        ("token_kind", "deploy"),
    ];
    let mut fields = ns.to_vec();
    fields.extend([
        ("name", "ci-pull"),
        ("username", "ci-puller"),
        ("scopes", "read_registry"),
    ]);
    let reply = carol.post(support::page::NAMESPACE, &fields);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let page = carol.get(PAGE);
    let secret = support::page::revealed_secret(&page.body).expect("the deploy token's secret");
    assert!(
        page.body.contains(&format!(
            "docker login {} -u ci-puller --password-stdin",
            gateway.host
        )),
        "{}",
        page.body
    );
    assert_eq!(token_status(&gateway, "ci-puller", &secret), 200);
    let start = page.body.find("aria-label=\"Revoke ci-pull\"").unwrap();
    let before = &page.body[..start];
    let marker = "name=\"id\" value=\"";
    let id = before[before.rfind(marker).unwrap() + marker.len()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // A project access token too, with a role no higher than carol's.
    let mut fields = ns.to_vec();
    fields[3] = ("token_kind", "access");
    fields.extend([
        ("name", "bot"),
        ("role", "developer"),
        ("scopes", "read_registry"),
    ]);
    let reply = carol.post(support::page::NAMESPACE, &fields);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(carol.get(PAGE).body.contains("(as developer)"));
    let mut fields = ns.to_vec();
    fields[3] = ("token_kind", "access");
    fields.extend([
        ("name", "too-high"),
        ("role", "owner"),
        ("scopes", "read_registry"),
    ]);
    assert_eq!(carol.post(support::page::NAMESPACE, &fields).status, 400);

    // alice (developer) cannot revoke it.
    let mut alice = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let alice_csrf = alice.csrf();
    let mut fields = ns.to_vec();
    fields[0] = ("authenticity_token", &alice_csrf);
    fields.push(("id", &id));
    assert_eq!(
        alice.post(support::page::NAMESPACE_REVOKE, &fields).status,
        404
    );
    assert_eq!(token_status(&gateway, "ci-puller", &secret), 200);

    let mut fields = ns.to_vec();
    fields.push(("id", &id));
    let reply = carol.post(support::page::NAMESPACE_REVOKE, &fields);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(token_status(&gateway, "ci-puller", &secret), 401);
}

#[test]
fn a_session_opened_with_a_token_ends_when_that_token_is_revoked() {
    let gateway = gateway("");
    let mut alice = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let (id, secret) = create(&mut alice, "page-api", &["api"], "");
    let (_, read_only) = create(&mut alice, "read-api", &["read_api"], "");
    let reply = PageClient::new(&gateway.url).sign_in("alice", &read_only);
    assert_eq!(
        reply.status, 403,
        "a read_api token signed in: {}",
        reply.body
    );
    let mut with_token = PageClient::signed_in(&gateway.url, "alice", &secret);
    let csrf = alice.csrf();
    let reply = alice.post(
        support::page::PAGE_REVOKE,
        &[("authenticity_token", &csrf), ("id", &id)],
    );
    assert_eq!(reply.status, 303);
    let page = with_token.get(PAGE);
    assert!(
        page.body.contains("Your session has ended"),
        "{}",
        page.body
    );
}

#[test]
fn bad_page_settings_are_refused_naming_the_key() {
    let files = GatewayFiles::init("ec", "http://127.0.0.1:1");
    let config = files.path("gateway.yaml");
    let starter = std::fs::read_to_string(&config).unwrap();
    for (page, key) in [
        ("{ session_idle_timeout: 0s }", "page.session_idle_timeout"),
        (
            "{ session_idle_timeout: 2h, session_lifetime: 1h }",
            "page.session_lifetime",
        ),
        ("{ max_sessions: 0 }", "page.max_sessions"),
        ("{ session_lifetime: 12 }", "page.session_lifetime"),
        ("{ sessions: 5 }", "page"),
    ] {
        std::fs::write(&config, format!("{starter}\npage: {page}\n")).unwrap();
        let (code, out, err) =
            support::gateway::run_cli(&["check", "--config", config.to_str().unwrap()], None);
        assert_ne!(code, 0, "{page}: {out}");
        assert!(format!("{out}{err}").contains(key), "{page}: {out}{err}");
    }
}

#[test]
fn sessions_are_bounded_by_max_sessions() {
    let gateway = gateway("page: { max_sessions: 2 }\n");
    let mut first = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    let mut second = PageClient::signed_in(&gateway.url, "carol", CAROL_API_PAT);
    let mut third = PageClient::signed_in(&gateway.url, "alice", ALICE_PASSWORD);
    // The least recently used of three went; the two others are still signed in.
    assert!(third.get(PAGE).body.contains("Signed in as"));
    assert!(second.get(PAGE).body.contains("Signed in as"));
    assert!(first.get(PAGE).body.contains("Your session has ended"));
}
