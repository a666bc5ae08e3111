//! The GitLab doc's first troubleshooting entry: a proxy in front that removes the
//! Authorization header. An nginx with `proxy_set_header Authorization "";` sits before the
//! gateway (public_url is nginx's address, so the realm goes through it too); podman logs in
//! through it, fails, and the gateway names the cause. A correct nginx raises no alarm.

use crate::support;

use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::nginx::Nginx;
use support::podman::Podman;
use support::process::ImageCli;
use support::stack::{Stack, StackOptions};

const PASS: &str = "    location / { proxy_pass http://{upstream}; }";
// nginx does not inherit server-level proxy_set_header into a location that sets its own, so
// the forwarding header is repeated here (many real configs forget it: the account rule alone
// still catches those).
const STRIP_ALL: &str = "    location / { proxy_pass http://{upstream}; proxy_set_header Authorization \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }";
const STRIP_V2: &str = "    location /v2/ { proxy_pass http://{upstream}; proxy_set_header Authorization \"\"; }\n    location / { proxy_pass http://{upstream}; }";

/// A stack whose clients come through an nginx with `locations`.
fn behind_nginx(locations: &str) -> (Stack, Nginx) {
    let port = support::free_port();
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some(format!("http://127.0.0.1:{port}")),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let nginx = Nginx::start(port, &stack.gateway.host, locations);
    (stack, nginx)
}

fn login(podman: &Podman, host: &str) -> (bool, String) {
    podman.run(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            host,
        ],
        Some(ALICE_PAT),
    )
}

#[test]
fn stripped_before_the_token_endpoint_is_access_forbidden_and_named() {
    let (stack, nginx) = behind_nginx(STRIP_ALL);
    let (ok, out) = login(&Podman::new(), &nginx.host());
    assert!(!ok, "login through a stripping proxy cannot work: {out}");
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("reached /jwt/auth WITHOUT an Authorization header"))
        .unwrap_or_else(|| panic!("no WARN line:\n{log}"));
    for expected in [
        "WARN",
        "account=\"alice\"",
        "x-forwarded-for: 127.0.0.1",
        "proxy_set_header Authorization",
        "do not redirect to /jwt/auth",
    ] {
        assert!(line.contains(expected), "{expected:?} not in {line}");
    }
    assert!(
        log.contains("path=/jwt/auth version=HTTP/1.0 status=403")
            || log.contains("path=/jwt/auth version=HTTP/1.1 status=403"),
        "{log}"
    );
}

#[test]
fn stripped_on_v2_only_is_named_for_the_client_that_just_got_a_token() {
    let (stack, nginx) = behind_nginx(STRIP_V2);
    let (ok, out) = login(&Podman::new(), &nginx.host());
    assert!(!ok, "{out}");
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("calls /v2/ WITHOUT an Authorization header"))
        .unwrap_or_else(|| panic!("no WARN line:\n{log}"));
    assert!(
        line.contains("WARN")
            && line.contains("user_agent=")
            && line.contains("pass the Authorization header through"),
        "{line}"
    );
    assert_eq!(
        log.matches("calls /v2/ WITHOUT an Authorization header")
            .count(),
        1,
        "reported once:\n{log}"
    );
}

#[test]
fn a_correct_proxy_and_normal_logins_raise_no_alarm() {
    let (stack, nginx) = behind_nginx(PASS);
    let podman = Podman::new();
    let (ok, out) = login(&podman, &nginx.host());
    assert!(ok, "{out}");
    // A second command right after the login: its first ping is unauthenticated, as always.
    let image = format!("{}/mygroup/myproject/app:1", nginx.host());
    podman.import_image(&image);
    podman.ok(&["push", "--tls-verify=false", &image], None);
    let (ok, out) = login(&podman, &nginx.host());
    assert!(ok, "{out}");
    let log = stack.gateway.log();
    assert!(
        !log.contains("WITHOUT an Authorization header"),
        "false alarm:\n{log}"
    );
}
