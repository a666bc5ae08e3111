//! The command line as an operator uses it: init, check, token generate, hash-password.

use crate::support;

use support::gateway::run_cli;

#[test]
fn init_writes_a_key_a_certificate_and_a_config_and_prints_the_registry_block() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "init",
            "--dir",
            d,
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-url",
            "https://registry.example.com:4567",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    for file in ["token.key", "token.crt", "gateway.yaml"] {
        assert!(dir.path().join(file).exists(), "{file} written");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("token.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(out.contains("auth:\n  token:\n    realm: \"https://registry.example.com:4567/jwt/auth\"\n    service: \"container_registry\"\n    issuer: \"portcullis\"\n    rootcertbundle: \""), "{out}");
    // The starter config is valid as written.
    let config = dir.path().join("gateway.yaml");
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("listen: \"0.0.0.0:4567\""));
    // A second init does not overwrite the key.
    let (code, _, err) = run_cli(
        &[
            "init",
            "--dir",
            d,
            "--upstream",
            "http://x:1",
            "--public-url",
            "https://y",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("exists; pass --force"), "{err}");
}

/// `init --force` over an existing key must not inherit the old file's mode: a key that was
/// world-readable (copied in with 0644, say) is replaced by one only its owner can read.
#[test]
fn init_force_writes_a_new_key_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, "old key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run_cli(
        &[
            "init",
            "--force",
            "--dir",
            dir.path().to_str().unwrap(),
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-url",
            "https://registry.example.com:4567",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let written = std::fs::read_to_string(&key).unwrap();
    assert!(written.contains("PRIVATE KEY"), "the key was rewritten");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token.key is {mode:o}");
}

#[test]
fn init_makes_rsa_keys_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = run_cli(
        &[
            "init",
            "--dir",
            d,
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-url",
            "http://127.0.0.1:4567",
            "--key-type",
            "rsa",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        &[
            "check",
            "--config",
            dir.path().join("gateway.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn check_lists_every_problem_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "public_url: https://registry.example.com:4567\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: missing.key, certificate: missing.crt, expiry: forever }\nusers:\n  - username: alice\n    personal_access_tokens: [{ name: t, token_sha256: nothex, scopes: [read_registry] }]\nprojects:\n  - { path: g/app, members: { carol: developer } }\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    for key in [
        "token.expiry:",
        "users[0].personal_access_tokens[0].token_sha256:",
        "projects[0].members.carol: no user",
    ] {
        assert!(err.contains(key), "{key} missing in:\n{err}");
    }
    // Once the file is valid, the key files themselves are checked.
    std::fs::write(&config, "public_url: https://r.example\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: missing.key, certificate: missing.crt }\n").unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("token.signing_key: cannot read") && err.contains("missing.key"),
        "{err}"
    );
}

#[test]
fn check_names_unknown_keys_and_unset_variables() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "public_url: https://r.example\nupstrem: { url: http://127.0.0.1:5000 }\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("upstrem: unknown field `upstrem`"), "{err}");
    std::fs::write(&config, "public_url: \"https://${PORTCULLIS_TEST_UNSET_HOST}\"\nupstream: { url: http://127.0.0.1:5000 }\ntoken: { signing_key: k, certificate: c }\n").unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("public_url: environment variable PORTCULLIS_TEST_UNSET_HOST is not set"),
        "{err}"
    );
}

#[test]
fn check_refuses_a_key_that_does_not_match_its_certificate() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [&a, &b] {
        let (code, _, err) = run_cli(
            &[
                "init",
                "--dir",
                dir.path().to_str().unwrap(),
                "--upstream",
                "http://127.0.0.1:5000",
                "--public-url",
                "http://127.0.0.1:4567",
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
    }
    std::fs::copy(b.path().join("token.crt"), a.path().join("token.crt")).unwrap();
    let (code, _, err) = run_cli(
        &[
            "check",
            "--config",
            a.path().join("gateway.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("does not match the certificate"), "{err}");
}

#[test]
fn token_generate_prints_a_token_and_its_sha256() {
    let (code, out, _) = run_cli(&["token", "generate"], None);
    assert_eq!(code, 0);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim();
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("token_sha256:"))
        .unwrap()
        .trim();
    assert!(token.starts_with("pat-"));
    let expected = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{token}' | sha256sum"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&expected.stdout)
            .split_whitespace()
            .next()
            .unwrap(),
        digest
    );
}

#[test]
fn hash_password_reads_stdin_and_refuses_an_empty_password() {
    let (code, out, _) = run_cli(&["hash-password"], Some("s3cret\n"));
    assert_eq!(code, 0);
    assert!(out.trim().starts_with("$argon2id$"), "{out}");
    let (code, out, _) = run_cli(
        &["hash-password", "--algorithm", "bcrypt", "--cost", "4"],
        Some("s3cret"),
    );
    assert_eq!(code, 0);
    assert!(out.trim().starts_with("$2b$04$"), "{out}");
    // htpasswd -B hashes verify too.
    let (code, _, err) = run_cli(&["hash-password"], Some(""));
    assert_eq!(code, 1);
    assert!(err.contains("no password"), "{err}");
}

/// `init` takes origins: a URL without its scheme, or an upstream with a path, is refused at
/// once, naming the flag (and the fix), before any file is written.
#[test]
fn init_refuses_a_public_url_without_scheme_and_an_upstream_with_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases = [
        (
            ["http://127.0.0.1:5000", "registry.example.com:4567"],
            "--public-url \"registry.example.com:4567\" has no scheme: write https://registry.example.com:4567",
        ),
        (
            ["http://127.0.0.1:5000/v2", "https://registry.example.com:4567"],
            "--upstream \"http://127.0.0.1:5000/v2\" must not have a path",
        ),
        (
            ["http://127.0.0.1:5000", "https://registry.example.com:4567/gitlab"],
            "--public-url \"https://registry.example.com:4567/gitlab\" must not have a path",
        ),
        (
            ["127.0.0.1:5000", "https://registry.example.com:4567"],
            "--upstream \"127.0.0.1:5000\" has no scheme",
        ),
    ];
    for ([upstream, public], expected) in cases {
        let (code, out, err) = run_cli(
            &[
                "init",
                "--dir",
                d,
                "--upstream",
                upstream,
                "--public-url",
                public,
            ],
            None,
        );
        assert_eq!(code, 1, "{upstream} {public}: {out}{err}");
        assert!(err.contains(expected), "{upstream} {public}: {err}");
        assert!(!dir.path().join("gateway.yaml").exists(), "nothing written");
    }
}

fn check_config(dir: &std::path::Path, extra: &str) -> (i32, String, String) {
    let d = dir.to_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "init",
            "--dir",
            d,
            "--force",
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-url",
            "https://registry.example.com:4567",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let config = dir.join("gateway.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    run_cli(&["check", "--config", config.to_str().unwrap()], None)
}

/// An https public_url in front of a plain listener breaks every client ("server gave HTTP
/// response to HTTPS client"): `check` says so, unless `server.behind_tls_proxy` says TLS ends
/// in a proxy in front. Both are valid configurations (exit 0).
#[test]
fn check_warns_when_public_url_is_https_but_the_listener_is_plain() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(dir.path(), "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("WARNING: public_url is https://registry.example.com:4567 but listen 0.0.0.0:4567 serves plain HTTP (no tls: section): every client will fail with \"server gave HTTP response to HTTPS client\""),
        "{out}"
    );
    assert!(out.contains("server.behind_tls_proxy: true"), "{out}");

    let (code, out, err) = check_config(dir.path(), "server:\n  behind_tls_proxy: true\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("WARNING"), "{out}");

    let (code, out, err) = check_config(dir.path(), "server:\n  behind_tls_proxy: maybe\n");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("server.behind_tls_proxy"), "{err}");
}
