//! `portcullis doctor`: the client-side walk, against a healthy setup and each broken one; the
//! failing step it names is the one that is broken.

use crate::support;

use support::gateway::run_cli;
use support::gateway::secrets::*;
use support::gateway::GatewayOptions;
use support::nginx::Nginx;
use support::stack::{RegistryAuth, Stack, StackOptions};

fn doctor(url: &str, secret: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["doctor", url, "-u", "alice", "--password-stdin"];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args, Some(secret));
    (code, format!("{out}{err}"))
}

fn failing_step(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("FAIL"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn a_healthy_gateway_passes_every_step_including_an_upload() {
    let stack = Stack::start();
    let (code, out) = doctor(
        &stack.gateway.url,
        ALICE_PAT,
        &["--repository", "mygroup/myproject/doctor"],
    );
    assert_eq!(code, 0, "{out}");
    for step in ["dns", "tcp", "challenge", "realm", "token", "claims", "v2"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.split_whitespace().nth(1) == Some(step)),
            "{step} did not pass:\n{out}"
        );
    }
    // A developer may push but not delete, so cannot cancel the session: not a PASS.
    assert!(
        out.contains("WARN upload    session started (202), NOT cancelled")
            && out.contains("upload_sessions_open"),
        "{out}"
    );
    // A maintainer with an api token cancels it.
    let (code, out, err) = run_cli(
        &[
            "doctor",
            &stack.gateway.url,
            "-u",
            "carol",
            "--password-stdin",
            "--repository",
            "mygroup/myproject/doctor",
        ],
        Some(CAROL_API_PAT),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("PASS upload    session started (202) and cancelled (204"),
        "{out}"
    );
    let (code, out) = doctor(&stack.gateway.url, ALICE_PAT, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let steps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(steps.as_array().unwrap().iter().all(|s| s["ok"] == true));
}

#[test]
fn each_broken_setup_fails_at_its_own_step() {
    // Wrong secret: the token step.
    let stack = Stack::start();
    let (code, out) = doctor(&stack.gateway.url, "wrong", &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "token"), "{out}");
    assert!(out.contains("401"), "{out}");

    // A proxy stripping Authorization: the token step, naming the cause.
    let port = support::free_port();
    let behind = Stack::with(StackOptions {
        gateway: GatewayOptions {
            public_url: Some(format!("http://127.0.0.1:{port}")),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    let nginx = Nginx::start(
        port,
        &behind.gateway.host,
        "    location / { proxy_pass http://{upstream}; proxy_set_header Authorization \"\"; }",
    );
    let (code, out) = doctor(&format!("http://{}", nginx.host()), ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "token"), "{out}");
    assert!(out.contains("removes the Authorization header"), "{out}");

    // A registry that does not trust the gateway: the v2 step.
    let distrusted = Stack::with(StackOptions {
        registry_auth: RegistryAuth::WrongIssuer,
        ..StackOptions::default()
    });
    let (code, out) = doctor(&distrusted.gateway.url, ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "v2"), "{out}");

    // The bare registry, whose realm names an unreachable host: the realm step.
    let (code, out) = doctor(&stack.registry.url(), ALICE_PAT, &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "realm"), "{out}");

    // Nothing listening: the tcp step.
    let (code, out) = doctor(
        &format!("http://127.0.0.1:{}", support::free_port()),
        ALICE_PAT,
        &[],
    );
    assert_eq!((code, failing_step(&out).as_str()), (1, "tcp"), "{out}");
}

/// A registry whose realm is plain HTTP on another origin (`localhost` for `127.0.0.1`, the
/// same socket): it answers `/v2/` with that realm, the realm with a token, and records every
/// request head it gets, so the test sees whether a password reached it.
struct ForeignRealmRegistry {
    url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ForeignRealmRegistry {
    fn start() -> ForeignRealmRegistry {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = heads.clone();
        std::thread::spawn(move || {
            // A bounded number of connections: the walk makes fewer than ten requests.
            for stream in listener.incoming().take(32) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                recorded.lock().unwrap().push(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let authorized = head
                    .to_ascii_lowercase()
                    .contains("\nauthorization: bearer");
                let (status, extra, body) = if path.starts_with("/token") {
                    let claims = base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        r#"{"iss":"fake","aud":"fake","iat":0,"nbf":0,"exp":99999999999,"access":[]}"#,
                    );
                    (
                        "200 OK",
                        String::new(),
                        format!(r#"{{"token":"e30.{claims}.sig"}}"#),
                    )
                } else if authorized {
                    ("200 OK", String::new(), "{}".to_owned())
                } else {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://localhost:{port}/token\",service=\"fake\"\r\n"),
                        "{}".to_owned(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        ForeignRealmRegistry {
            url: format!("http://127.0.0.1:{port}"),
            heads,
        }
    }

    fn saw_basic_credentials(&self) -> bool {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("\nauthorization: basic"))
    }
}

/// A registry on http://127.0.0.1 naming a plain-HTTP realm on another origin: doctor warns
/// and, unless told otherwise, does not send the password there; with --allow-insecure-realm
/// it sends it, still warning.
#[test]
fn doctor_refuses_to_send_credentials_over_plain_http_to_another_origin() {
    let registry = ForeignRealmRegistry::start();
    let (code, out) = doctor(&registry.url, "s3cret", &[]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "token"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("WARN realm") && l.contains("plain HTTP")),
        "{out}"
    );
    assert!(out.contains("--allow-insecure-realm"), "{out}");
    assert!(
        !registry.saw_basic_credentials(),
        "the password was sent:\n{out}"
    );

    let (code, out) = doctor(&registry.url, "s3cret", &["--allow-insecure-realm"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("WARN token") && l.contains("plain HTTP")),
        "{out}"
    );
    assert!(registry.saw_basic_credentials(), "{out}");
}

/// The usual `openssl req -x509` certificate (CA:TRUE, self-signed) on the gateway: docker,
/// podman, skopeo and buildah (Go) accept it when it is itself the trusted certificate, so
/// doctor does too; another self-signed certificate as --ca-file is still refused, with the fix.
#[test]
fn a_self_signed_ca_certificate_given_as_ca_file_passes_the_tls_step() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(certs.path(), "tls", "0x51");
    let (other, _) = support::self_signed(certs.path(), "other", "0x52");
    let stack = Stack::with(StackOptions {
        gateway: GatewayOptions {
            tls: Some((cert.clone(), key)),
            ..GatewayOptions::new("")
        },
        ..StackOptions::default()
    });
    assert!(stack.gateway.url.starts_with("https://127.0.0.1:"));
    let (code, out) = doctor(
        &stack.gateway.url,
        ALICE_PAT,
        &["--ca-file", cert.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS tls       handshake done, certificate trusted"),
        "{out}"
    );

    let (code, out) = doctor(
        &stack.gateway.url,
        ALICE_PAT,
        &["--ca-file", other.to_str().unwrap()],
    );
    assert_eq!((code, failing_step(&out).as_str()), (1, "tls"), "{out}");
    assert!(
        out.contains("is a CA certificate (basicConstraints CA:TRUE")
            && out.contains("not one of the certificates given with --ca-file")
            && out.contains("fix: give that very certificate with --ca-file"),
        "{out}"
    );
}

/// A repository no project owns: the token grants nothing on it, and doctor says that either
/// no project owns it or the user has no role, naming both, and quotes the gateway's log line
/// (which the gateway does write, naming the nearest path).
#[test]
fn doctor_on_a_repository_no_project_owns_names_the_gateways_log_line() {
    let stack = Stack::start();
    let repository = "mygroup/myprojekt/doctor";
    let (code, out) = doctor(&stack.gateway.url, ALICE_PAT, &["--repository", repository]);
    assert_eq!((code, failing_step(&out).as_str()), (1, "claims"), "{out}");
    assert!(
        out.contains(&format!(
            "the token grants \"alice\" nothing on \"{repository}\": either no project owns \"{repository}\", or \"alice\" has no role on the project that does"
        )),
        "{out}"
    );
    let quoted = "no project owns this repository, so nothing is granted on it";
    assert!(
        out.contains(&format!(
            "grep it for `{quoted}` with repository=\"{repository}\""
        )) && out.contains("`nearest` field"),
        "{out}"
    );
    stack
        .gateway
        .wait_for_log(quoted, 1, std::time::Duration::from_secs(5));
    let log = stack.gateway.log();
    let line = log.lines().find(|l| l.contains(quoted)).unwrap();
    assert!(
        line.contains(&format!("repository=\"{repository}\""))
            && line.contains("nearest=Some(\"mygroup"),
        "{line}"
    );
}
