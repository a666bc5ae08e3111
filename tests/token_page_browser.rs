//! The token page in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/browser/token_page.mjs`; `npm ci` there is part of `scripts/install-deps`). The
//! browser signs in, creates a token and copies it with the copy button (read back from the
//! clipboard); a real docker logs in with it and pushes; the browser revokes it; the next
//! docker login is refused. Without JavaScript the forms still work (a group maintainer, who
//! also sees the group's and its projects' deploy and access tokens). Screenshots are kept in
//! `target/test-artifacts/`.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::docker::Dockerd;
use support::gateway::secrets::{ALICE_PASSWORD, CAROL_API_PAT};
use support::process::ImageCli;
use support::stack::Stack;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn the_page_in_chromium_makes_a_token_docker_pushes_with_it_and_revoking_it_ends_the_login() {
    support::require_tool("chromium", "chromium");
    let node = support::require_tool("node", "nodejs");
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/install-deps (npm ci in tests/browser)"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();

    let stack = Stack::start();
    let docker = Dockerd::start();
    let host = stack.gateway.host.clone();

    let mut child = Command::new(node)
        .arg(browser_dir().join("token_page.mjs"))
        .current_dir(browser_dir())
        .env("BASE_URL", &stack.gateway.url)
        .env("PAGE_USER", "alice")
        .env("PAGE_PASSWORD", ALICE_PASSWORD)
        .env("MAINTAINER", "carol")
        .env("MAINTAINER_TOKEN", CAROL_API_PAT)
        .env("ARTIFACTS", &artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut to_browser = child.stdin.take().unwrap();
    let mut from_browser = BufReader::new(child.stdout.take().unwrap());
    let mut next = || {
        let mut line = String::new();
        from_browser.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).ok()
    };
    let fail = |child: &mut std::process::Child| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        panic!(
            "the browser run failed:\n{stderr}\ngateway log:\n{}",
            stack.gateway.log()
        );
    };

    let Some(created) = next().filter(|m| m["step"] == "created") else {
        fail(&mut child)
    };
    let secret = created["secret"].as_str().unwrap().to_owned();
    let login_line = created["login"].as_str().unwrap().to_owned();
    assert_eq!(
        login_line,
        format!("docker login {host} -u alice --password-stdin")
    );
    // The line from the page, as a user pastes it, with the copied token on stdin.
    let args: Vec<&str> = login_line.split_whitespace().skip(1).collect();
    docker.ok(&args, Some(&secret));
    let remote = format!("{host}/mygroup/myproject/from-browser:v1");
    docker.import_image(&remote);
    let out = docker.ok(&["push", &remote], None);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    writeln!(to_browser, "continue").unwrap();

    let Some(_) = next().filter(|m| m["step"] == "revoked") else {
        fail(&mut child)
    };
    let (ok, out) = docker.run(&args, Some(&secret));
    assert!(!ok, "docker login with the revoked token worked: {out}");
    assert!(out.contains("unauthorized") || out.contains("401"), "{out}");
    writeln!(to_browser, "continue").unwrap();

    let Some(_) = next().filter(|m| m["step"] == "done") else {
        fail(&mut child)
    };
    drop(to_browser);
    let status = child.wait().unwrap();
    assert!(status.success());
    for shot in [
        "token-page-created.png",
        "token-page-revoked.png",
        "token-page-maintainer-no-js.png",
    ] {
        let size = std::fs::metadata(artifacts.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot} is {size} bytes");
    }
    assert!(
        !stack.gateway.log().contains(&secret),
        "the secret was logged"
    );
}
