//! LDAP / Active Directory logins against Debian's slapd, started by the tests
//! (tests/support/ldap.rs): search-then-bind over ldaps with a test CA, group links from
//! groupOfNames, groupOfUniqueNames, posixGroup and memberOf, AD's disabled bit, injection in
//! the username, membership changes within sync_interval, and the directory going down.

use crate::support;

use std::time::Duration;

use support::docker::Dockerd;
use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::http::{get, series};
use support::ldap::{people::*, Slapd, SERVICE_PASSWORD};
use support::process::ImageCli;
use support::stack::{Stack, StackOptions};

/// A stack whose gateway logs in against `slapd`, with an operations listener; its URL.
fn stack(slapd: &Slapd, sync_interval: &str) -> (Stack, String) {
    stack_with(&slapd.gateway_section(sync_interval))
}

/// A stack whose gateway has the `ldap:` section `section`.
fn stack_with(section: &str) -> (Stack, String) {
    // The gateway inherits the test's environment: `${LDAP_BIND_PASSWORD}` in gateway.yaml.
    std::env::set_var("LDAP_BIND_PASSWORD", SERVICE_PASSWORD);
    let ops_port = support::free_port();
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            extra: format!(
                "metrics: {{ listen: \"127.0.0.1:{ops_port}\" }}\nbrute_force: {{ max_failures: 1000 }}\n{section}"
            ),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    (stack, format!("http://127.0.0.1:{ops_port}"))
}

/// GET /jwt/auth with Basic credentials and `scopes`.
fn token_reply(stack: &Stack, user: &str, secret: &str, scopes: &[&str]) -> support::http::Reply {
    let mut url = format!("{}/jwt/auth?service=container_registry", stack.gateway.url);
    for scope in scopes {
        url.push_str("&scope=");
        url.push_str(scope);
    }
    get(&url).basic(user, secret).send()
}

fn granted(stack: &Stack, user: &str, secret: &str, scope: &str) -> Vec<String> {
    Stack::granted(&stack.token(user, secret, &[scope]))
}

/// No password of the directory's people, nor the service account's, in any log line.
fn assert_no_secret_logged(log: &str) {
    assert!(
        !log.contains(SERVICE_PASSWORD),
        "the bind password was logged:\n{log}"
    );
    for (uid, password) in ALL {
        assert!(
            !log.contains(password),
            "{uid}'s directory password was logged:\n{log}"
        );
    }
}

#[test]
fn docker_logs_in_with_the_directory_password_group_links_decide_push_and_removal_ends_it() {
    let slapd = Slapd::start();
    let (stack, _) = stack(&slapd, "2s");
    let docker = Dockerd::start();
    let host = stack.gateway.host.as_str();

    let (ok, out) = docker.run(
        &["login", host, "-u", JDOE.0, "--password-stdin"],
        Some("not-the-password"),
    );
    assert!(!ok, "a wrong directory password logged in: {out}");
    let out = docker.ok(
        &["login", host, "-u", JDOE.0, "--password-stdin"],
        Some(JDOE.1),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    // registry-devs -> developer of group mygroup: pushes to a project in it.
    let remote = format!("{host}/mygroup/myproject/ldap:1.0");
    docker.import_image(&remote);
    let out = docker.ok(&["push", &remote], None);
    assert!(out.contains("digest: sha256:"), "{out}");

    // registry-readers (posixGroup) -> reporter: pulls, never pushes.
    docker.ok(
        &["login", host, "-u", RITA.0, "--password-stdin"],
        Some(RITA.1),
    );
    let other = format!("{host}/mygroup/myproject/ldap:rita");
    docker.ok(&["tag", &remote, &other], None);
    let (ok, out) = docker.run(&["push", &other], None);
    assert!(!ok, "a reporter pushed: {out}");
    docker.ok(&["rmi", &remote], None);
    docker.ok(&["pull", &remote], None);

    // jdoe leaves registry-devs in the directory: within sync_interval (2s) his push ends,
    // though his password is still in the cache window.
    docker.ok(
        &["login", host, "-u", JDOE.0, "--password-stdin"],
        Some(JDOE.1),
    );
    slapd.remove_member("registry-devs", JDOE.0);
    std::thread::sleep(Duration::from_millis(2500));
    let again = format!("{host}/mygroup/myproject/ldap:2.0");
    docker.ok(&["tag", &remote, &again], None);
    let (ok, out) = docker.run(&["push", &again], None);
    assert!(!ok, "a user removed from the group still pushed: {out}");
    assert!(
        out.contains("denied") || out.contains("unauthorized"),
        "{out}"
    );
    assert_no_secret_logged(&stack.gateway.log());
}

#[test]
fn every_kind_of_group_counts_and_gateway_yaml_settings_still_apply() {
    let slapd = Slapd::start();
    let (stack, _) = stack(&slapd, "5m");
    let push = |repo: &str| format!("repository:{repo}:pull,push");

    // groupOfUniqueNames -> developer of mygroup/second only.
    assert_eq!(
        granted(&stack, UNA.0, UNA.1, &push("mygroup/second/app")),
        ["repository:mygroup/second/app:pull,push"]
    );
    assert!(granted(&stack, UNA.0, UNA.1, &push("mygroup/myproject/app")).is_empty());
    // The same with skopeo, a real client: una pushes where her link says, nowhere else.
    let dir = tempfile::tempdir().unwrap();
    let image = support::oci::OciImage::create(dir.path().join("image"), 64 * 1024);
    let host = stack.gateway.host.as_str();
    let (ok, out) = image.push_to(host, "mygroup/second/app", UNA.0, UNA.1);
    assert!(ok, "skopeo push with the directory password failed:\n{out}");
    let (ok, out) = image.push_to(host, "mygroup/myproject/app", UNA.0, UNA.1);
    assert!(!ok, "una pushed outside her group link:\n{out}");
    // memberOf on the user's own entry (Active Directory's way).
    assert_eq!(
        granted(&stack, MONA.0, MONA.1, &push("mygroup/myproject/app")),
        ["repository:mygroup/myproject/app:pull,push"]
    );
    // The admin group: the catalog, which only administrators get.
    assert_eq!(
        granted(&stack, ADAM.0, ADAM.1, "registry:catalog:*"),
        ["registry:catalog:*"]
    );
    assert!(granted(&stack, RITA.0, RITA.1, "registry:catalog:*").is_empty());
    // bob: gateway.yaml has him (reporter, PATs, no password): the directory password works,
    // with his gateway.yaml role, and so does his PAT.
    assert_eq!(
        granted(&stack, BOB.0, BOB.1, &push("mygroup/myproject/app")),
        ["repository:mygroup/myproject/app:pull"]
    );
    assert_eq!(
        granted(&stack, BOB.0, BOB_PAT, &push("mygroup/myproject/app")),
        ["repository:mygroup/myproject/app:pull"]
    );

    // Refusals, each with the reason local users get.
    let refused = |user: &str, secret: &str, reason: &str| {
        let reply = token_reply(&stack, user, secret, &[]);
        assert_eq!(reply.status, 401, "{user:?}: {}", reply.body);
        assert_eq!(reply.error_code(), "UNAUTHORIZED", "{user:?}");
        assert_eq!(
            reply.json()["errors"][0]["detail"]["reason"],
            reason,
            "{user:?}: {}",
            reply.body
        );
    };
    refused(JDOE.0, "wrong", "invalid_credentials");
    refused(JDOE.0, "", "invalid_credentials");
    refused("nobody", "whatever", "invalid_credentials");
    // A disabled AD account, and a user blocked in gateway.yaml, with their right passwords.
    refused(DIS.0, DIS.1, "user_blocked");
    refused(DAVE.0, DAVE.1, "user_blocked");
    // alice is a local account (password_hash): the directory's alice may not log in as her;
    // her own password still works.
    refused(ALICE.0, ALICE.1, "invalid_credentials");
    assert_eq!(
        token_reply(&stack, "alice", ALICE_PASSWORD, &[]).status,
        200
    );

    // Injection in the username, with a real password of someone the filter would match:
    // each is a literal value that matches nobody.
    for hostile in [
        "*",
        ")(uid=*",
        "jdoe)(|(uid=*",
        "*)(uid=jdoe",
        "jd*",
        "jdoe\0",
        "jdoe\\",
        "\\2a",
    ] {
        refused(hostile, JDOE.1, "invalid_credentials");
    }
    let log = stack.gateway.log();
    // No injected username ever matched an entry: every refusal of them says unknown_user.
    let injected = log
        .lines()
        .filter(|l| l.contains("login refused"))
        .filter(|l| l.contains("reason=\"wrong_secret\"") || l.contains("reason=wrong_secret"))
        .count();
    // Only the two wrong/empty passwords of jdoe, and alice's directory password, are wrong
    // secrets; the injection attempts are unknown users.
    assert_eq!(injected, 3, "{log}");
    assert_no_secret_logged(&log);
}

#[test]
fn a_user_deleted_or_disabled_in_the_directory_is_refused_within_sync_interval() {
    let slapd = Slapd::start();
    let (stack, _) = stack(&slapd, "2s");
    let scope = "repository:mygroup/second/app:pull,push";
    assert_eq!(granted(&stack, UNA.0, UNA.1, scope).len(), 1);
    assert_eq!(token_reply(&stack, MONA.0, MONA.1, &[]).status, 200);
    slapd.delete_person(UNA.0);
    slapd.disable(MONA.0);
    // Within sync_interval the cached answer stands; after it the directory is asked again.
    std::thread::sleep(Duration::from_millis(2500));
    let reply = token_reply(&stack, UNA.0, UNA.1, &[scope]);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.json()["errors"][0]["detail"]["reason"],
        "invalid_credentials"
    );
    let reply = token_reply(&stack, MONA.0, MONA.1, &[]);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.json()["errors"][0]["detail"]["reason"],
        "user_blocked"
    );
    assert_no_secret_logged(&stack.gateway.log());
}

#[test]
fn the_directory_down_is_a_503_for_its_logins_only_logged_once_and_recovers() {
    let mut slapd = Slapd::start();
    let (stack, ops) = stack(&slapd, "1s");
    let scope = "repository:mygroup/myproject/app:pull,push";
    // jdoe logs in once: his password is in the cache window.
    assert_eq!(granted(&stack, JDOE.0, JDOE.1, scope).len(), 1);
    let metrics = get(&format!("{ops}/metrics")).send().body;
    assert_eq!(
        series(&metrics, "portcullis_identity_source_up{source=\"ldap\"}"),
        Some(1.0)
    );

    // mona logs in, then is deleted: after sync_interval she is refused, and what was kept
    // of her is dropped, so her cached password does not carry her through the outage.
    assert_eq!(token_reply(&stack, MONA.0, MONA.1, &[]).status, 200);
    slapd.delete_person(MONA.0);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(token_reply(&stack, MONA.0, MONA.1, &[]).status, 401);

    slapd.stop();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(token_reply(&stack, MONA.0, MONA.1, &[]).status, 503);
    for _ in 0..5 {
        let reply = token_reply(&stack, RITA.0, RITA.1, &[]);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.error_code(), "UNAVAILABLE", "{}", reply.body);
        assert!(
            reply.error_message().contains("directory"),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.json()["errors"][0]["detail"]["reason"],
            "directory_unavailable"
        );
    }
    // A directory login still in the password cache keeps working (its last known groups).
    assert_eq!(granted(&stack, JDOE.0, JDOE.1, scope).len(), 1);
    // Local users and tokens are not affected.
    assert_eq!(
        token_reply(&stack, "alice", ALICE_PASSWORD, &[]).status,
        200
    );
    assert_eq!(token_reply(&stack, "alice", ALICE_PAT, &[]).status, 200);
    assert_eq!(token_reply(&stack, BOB.0, BOB_PAT, &[]).status, 200);
    // The replica still serves: /readyz is 200 and names the directory as degraded.
    let ready = get(&format!("{ops}/readyz")).send();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("ldap: degraded"), "{}", ready.body);
    let metrics = get(&format!("{ops}/metrics")).send().body;
    assert_eq!(
        series(&metrics, "portcullis_identity_source_up{source=\"ldap\"}"),
        Some(0.0)
    );
    let log = stack.gateway.log();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot be reached"))
        .count();
    assert_eq!(errors, 1, "one ERROR per outage, not per request:\n{log}");

    slapd.restart();
    let reply = token_reply(&stack, RITA.0, RITA.1, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    stack
        .gateway
        .wait_for_log("answers again", 1, Duration::from_secs(5));
    let ready = get(&format!("{ops}/readyz")).send();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let metrics = get(&format!("{ops}/metrics")).send().body;
    assert_eq!(
        series(&metrics, "portcullis_identity_source_up{source=\"ldap\"}"),
        Some(1.0)
    );
    assert_no_secret_logged(&stack.gateway.log());
}

#[test]
fn check_names_every_bad_ldap_key() {
    let files = support::gateway::GatewayFiles::init("ec", "http://127.0.0.1:1");
    let config = files.path("gateway.yaml");
    let base = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{}\nldap:\n  url: ldap://ldap.example.com\n  bind_dn: \"\"\n  bind_password: \"\"\n  user_base: \"ou=people,dc=x\"\n  uid_attribute: \"uid)(x\"\n  user_filter: \"objectClass=person\"\n  group_links:\n    - {{ cn: devs, path: nowhere, role: developer }}\n    - {{ cn: devs, path: known/app, role: boss }}\n  sync_interval: 0s\n  colour: blue\n",
            base.replace("projects: []", "projects:\n  - path: known/app")
        ),
    )
    .unwrap();
    let (code, out, err) =
        support::gateway::run_cli(&["check", "--config", config.to_str().unwrap()], None);
    let text = format!("{out}{err}");
    assert_ne!(code, 0, "{text}");
    for key in [
        "ldap.url",
        "ldap.bind_dn",
        "ldap.bind_password",
        "ldap.uid_attribute",
        "ldap.user_filter",
        "ldap.group_links[0].path",
        "ldap.group_links[1].role",
        "ldap.sync_interval",
        "ldap.colour",
    ] {
        assert!(text.contains(key), "{key} not named:\n{text}");
    }
}

#[test]
fn start_tls_works_and_a_directory_certificate_nobody_trusts_is_refused() {
    let slapd = Slapd::start();
    let start_tls = format!(
        "url: {}\n  start_tls: true\n  ca: \"{}\"",
        slapd.plain_url(),
        slapd.ca().display()
    );
    let (stack, _) = stack_with(&slapd.gateway_section_with(&start_tls, "5m"));
    assert_eq!(token_reply(&stack, JDOE.0, JDOE.1, &[]).status, 200);
    drop(stack);

    // ldaps without the test CA: the certificate is checked, so nothing is sent, and the
    // login is a 503 naming the directory (never a success, never a 401 for a good password).
    let untrusted = format!("url: {}", slapd.url());
    let (stack, _) = stack_with(&slapd.gateway_section_with(&untrusted, "5m"));
    let reply = token_reply(&stack, JDOE.0, JDOE.1, &[]);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "UNAVAILABLE");
    assert_no_secret_logged(&stack.gateway.log());
}

#[test]
fn a_directory_that_never_answers_costs_at_most_the_timeout_and_max_connections() {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // A "directory" that accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    {
        let open = open.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                open.fetch_add(1, Ordering::SeqCst);
                let open = open.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    let section = format!(
        "ldap:\n  url: ldap://127.0.0.1:{port}\n  bind_dn: \"cn=x\"\n  bind_password: \"x\"\n  user_base: \"dc=x\"\n  timeout: 1s\n  max_connections: 2\n"
    );
    let (stack, _) = stack_with(&section);
    let started = std::time::Instant::now();
    // The gateway's sockets to the directory that are open (ESTABLISHED: the gateway has not
    // closed its side), sampled from the kernel's table while the logins run.
    let most = AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let replies: Vec<u16> = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(established_to(port), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let stack = &stack;
                scope.spawn(move || token_reply(stack, &format!("user{i}"), "pw", &[]).status)
            })
            .collect();
        let replies = handles.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        replies
    });
    assert_eq!(replies, [503; 6]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ldap.timeout did not bound the logins: {:?}",
        started.elapsed()
    );
    assert!(
        (1..=2).contains(&most.load(Ordering::SeqCst)),
        "more than ldap.max_connections connections at once: {}",
        most.load(Ordering::SeqCst)
    );
    // The timed-out conversations closed their connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open.load(Ordering::SeqCst), 0, "connections left open");
}

/// How many ESTABLISHED TCP connections have remote port `port` (from /proc/net/tcp): the
/// client sides of connections to a local server on that port.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields
                .get(2)
                .is_some_and(|remote| remote.ends_with(&format!(":{port}")))
                && fields.get(3) == Some(&"01")
        })
        .count()
}

#[test]
fn the_annotated_ldap_section_of_gateway_yaml_passes_check_once_uncommented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("gateway.yaml")).unwrap();
    let (before, section) = text.split_once("#ldap:").expect("the ldap section");
    let uncommented: String = std::iter::once("ldap:".to_owned())
        // The section ends at the first line that is not one of its own (`#  ...`).
        .chain(
            section
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("#  "))
                .map(|l| {
                    l.strip_prefix('#')
                        .filter(|rest| !rest.trim_start().starts_with('#'))
                        .unwrap_or("")
                        .to_owned()
                }),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let files = support::gateway::GatewayFiles::init("ec", "http://127.0.0.1:1");
    for name in ["token.key", "token.crt"] {
        std::fs::copy(files.path(name), dir.path().join(name)).unwrap();
    }
    std::fs::copy(
        files.path("token.crt"),
        dir.path().join("previous-token.crt"),
    )
    .unwrap();
    support::self_signed(dir.path(), "tls", "0x10");
    support::self_signed(dir.path(), "ldap-ca", "0x11");
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, format!("{before}{uncommented}\n")).unwrap();
    std::env::set_var("LDAP_BIND_PASSWORD", SERVICE_PASSWORD);
    let (code, out, err) =
        support::gateway::run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}\n{uncommented}");
    assert!(!format!("{out}{err}").contains(SERVICE_PASSWORD));
}
