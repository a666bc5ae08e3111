//! What an operator reads when something is wrong: `portcullis check` and `serve` errors that
//! name the key to change and the fix, in the words of the YAML file.

use crate::support;

use support::gateway::{run_cli, GatewayFiles};

/// Write `yaml` next to fresh keys and run `portcullis check` on it: (status, stdout+stderr).
fn check(yaml: &str) -> (i32, String) {
    let files = GatewayFiles::init("ec", "http://127.0.0.1:5000");
    let config = files.path("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    (code, format!("{out}{err}"))
}

const VALID: &str = "public_url: https://registry.example.com:4567\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: token.key, certificate: token.crt }\n";

#[test]
fn check_lists_every_unknown_key_and_suggests_the_right_one() {
    let (code, text) = check(&format!(
        "{VALID}metrcs: {{ listen: 127.0.0.1:9100 }}\nserver: {{ idle_timout: 90s }}\nfoo: 1\n"
    ));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
    assert!(
        text.contains("  - metrcs: unknown field `metrcs`"),
        "{text}"
    );
    assert!(text.contains("did you mean `metrics`?"), "{text}");
    assert!(
        text.contains("  - server.idle_timout: unknown field `idle_timout`"),
        "{text}"
    );
    assert!(text.contains("did you mean `idle_timeout`?"), "{text}");
    assert!(text.contains("  - foo: unknown field `foo`"), "{text}");
}

#[test]
fn check_blames_the_missing_key_itself_and_its_missing_file() {
    let (code, text) = check(
        "public_url: https://registry.example.com:4567\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: token.key }\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("  - token.certificate: is required but missing"),
        "{text}"
    );
    assert!(!text.contains("token: missing field"), "{text}");
    // The key is named, its file does not exist: the certificate is blamed, not the key.
    let (code, text) = check(&VALID.replace("token.crt", "missing.crt"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("  - token.certificate: cannot read ") && text.contains("missing.crt"),
        "{text}"
    );
    assert!(!text.contains("token.signing_key"), "{text}");
}

#[test]
fn check_speaks_yaml_not_rust_and_never_doubles_the_key() {
    let (code, text) = check(&format!(
        "{VALID}server: {{ workers: -1, max_connections: many }}\ntls: registry.pem\naudit: {{ path: [a] }}\n"
    ));
    assert_eq!(code, 1, "{text}");
    for expected in [
        "  - server.workers: invalid value: integer `-1`, expected a whole number of 0 or more",
        "  - server.max_connections: invalid type: string \"many\", expected a whole number of 0 or more",
        "  - tls: invalid type: string \"registry.pem\", expected a mapping with cert and key",
        "  - audit.path: invalid type: sequence, expected a string",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    for rust in ["usize", "struct ", "TlsFile"] {
        assert!(!text.contains(rust), "{rust} in:\n{text}");
    }
    let (code, text) = check(&format!(
        "{VALID}tls: {{ cert: missing.pem, key: missing.key }}\n"
    ));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("  - tls.cert: "), "{text}");
    assert!(!text.contains("tls.cert: tls.cert"), "{text}");
}

#[test]
fn a_duration_without_a_unit_gets_the_fix() {
    let (code, text) = check(&VALID.replace(
        "certificate: token.crt",
        "certificate: token.crt, expiry: 5",
    ));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("  - token.expiry: 5 has no unit: write a duration such as 5m"),
        "{text}"
    );
}

#[test]
fn listen_takes_the_go_forms_and_names_the_fix_for_a_host_name() {
    let (code, text) = check(&format!("listen: \":4567\"\n{VALID}"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("listen:    0.0.0.0:4567"), "{text}");
    let (code, text) = check(&format!("listen: localhost:4567\n{VALID}"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("listen:    127.0.0.1:4567"), "{text}");
    let (code, text) = check(&format!("listen: registry.example.com:4567\n{VALID}"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("  - listen: \"registry.example.com:4567\": listen takes an IP address, not a host name: write 0.0.0.0:4567"),
        "{text}"
    );
}

#[test]
fn a_port_in_use_names_the_key_to_change() {
    for key in ["listen", "metrics.listen"] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = free.local_addr().unwrap().port();
        drop(free);
        let (public, ops) = if key == "listen" {
            (port, other)
        } else {
            (other, port)
        };
        let files = GatewayFiles::init("ec", "http://127.0.0.1:5000");
        let config = files.path("gateway.yaml");
        std::fs::write(
            &config,
            format!("listen: 127.0.0.1:{public}\nmetrics: {{ listen: 127.0.0.1:{ops} }}\n{VALID}"),
        )
        .unwrap();
        let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!(
                "portcullis: {key}: cannot listen on 127.0.0.1:{port}: Address already in use"
            )),
            "{err}"
        );
        assert!(err.contains(&format!("set {key} to a free port")), "{err}");
    }
}

#[test]
fn a_refused_delete_says_it_needs_maintainer_in_the_registrys_error_shape() {
    use support::gateway::secrets::*;
    use support::http::request;
    use support::oci::{skopeo_result, OciImage};
    use support::stack::{RegistryAuth, Stack, StackOptions};
    for registry_auth in [RegistryAuth::TrustsGateway, RegistryAuth::None] {
        let stack = Stack::with(StackOptions {
            registry_auth,
            ..StackOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let image = OciImage::create(dir.path().join("image"), 16 * 1024);
        let repository = "mygroup/myproject/app";
        let (ok, out) = image.push_to(&stack.gateway.host, repository, "alice", ALICE_PASSWORD);
        assert!(ok, "{out}");
        // What skopeo prints: the message of the /v2/ refusal.
        let target = format!("docker://{}/{repository}:v1", stack.gateway.host);
        let creds = format!("alice:{ALICE_PASSWORD}");
        let (ok, out) = skopeo_result(
            &["delete", "--tls-verify=false", "--creds", &creds, &target],
            None,
        );
        assert!(!ok, "a developer deleted: {out}");
        assert!(out.contains("delete needs maintainer"), "{out}");
        // The body keeps the registry's shape: code, message, detail naming the action.
        let token = stack.token(
            "alice",
            ALICE_PASSWORD,
            &[&format!("repository:{repository}:pull,push,delete")],
        );
        let reply = request(
            "DELETE",
            &format!("{}/v2/{repository}/manifests/v1", stack.gateway.url),
        )
        .bearer(&token)
        .send();
        assert_eq!(reply.status, 401, "{}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let error = &body["errors"][0];
        assert_eq!(error["code"], "UNAUTHORIZED", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with("authentication required: delete needs maintainer"),
            "{message}"
        );
        assert_eq!(error["detail"][0]["Action"], "delete", "{body}");
        // A refusal for another reason keeps the usual message.
        let reply = request(
            "DELETE",
            &format!("{}/v2/{repository}/manifests/v1", stack.gateway.url),
        )
        .send();
        assert_eq!(reply.status, 401);
        assert!(!reply.body.contains("maintainer"), "{}", reply.body);
    }
}

#[test]
fn a_pull_of_a_repository_no_project_owns_logs_the_nearest_path() {
    use support::gateway::secrets::*;
    use support::stack::Stack;
    let stack = Stack::start();
    let token = stack.token(
        "alice",
        ALICE_PAT,
        &["repository:mygrup/myproject/app:pull,push"],
    );
    assert!(Stack::granted(&token).is_empty());
    stack.gateway.wait_for_log(
        "no project owns this repository",
        1,
        std::time::Duration::from_secs(5),
    );
    let log = stack.gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("no project owns this repository"))
        .unwrap();
    assert!(
        line.contains("repository=\"mygrup/myproject/app\"")
            && line.contains("nearest=Some(\"mygroup/myproject\")"),
        "{line}"
    );
}

#[test]
fn doctor_says_unreachable_for_a_502_at_the_v2_step() {
    use support::gateway::secrets::*;
    use support::stack::Stack;
    let mut stack = Stack::start();
    stack.registry.stop();
    let (code, out, err) = run_cli(
        &[
            "doctor",
            &stack.gateway.url,
            "-u",
            "alice",
            "--password-stdin",
        ],
        Some(ALICE_PAT),
    );
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "{text}");
    let fail = text.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        fail.contains("v2") && fail.contains("502") && fail.contains("unreachable"),
        "{text}"
    );
    assert!(text.contains("fix: start the registry"), "{text}");
    assert!(!text.contains("rootcertbundle"), "{text}");
}
